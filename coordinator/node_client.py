"""gRPC clients to other nodes, one channel per address, carrying the cluster's bearer token."""

from __future__ import annotations

import grpc

from node.pb.taskward.v1 import tasks_pb2_grpc as pb_grpc

CHANNEL_OPTIONS = [
    ("grpc.keepalive_time_ms", 5000),
    ("grpc.keepalive_timeout_ms", 2000),
    # A restarted node must be reachable again at once: the leader has to stop an orphan child there
    # before it runs to its end, and gRPC's default reconnect backoff grows to 120 s.
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 500),
]


class NodeClients:
    def __init__(self, token: str | None) -> None:
        self._channels: dict[str, grpc.aio.Channel] = {}
        self.metadata: tuple[tuple[str, str], ...] = (("authorization", f"Bearer {token}"),) if token else ()

    def stub(self, address: str) -> pb_grpc.TaskManagerStub:
        ch = self._channels.get(address)
        if ch is None:
            ch = grpc.aio.insecure_channel(address, options=CHANNEL_OPTIONS)
            self._channels[address] = ch
        return pb_grpc.TaskManagerStub(ch)

    async def close(self) -> None:
        for ch in self._channels.values():
            await ch.close()
        self._channels.clear()
