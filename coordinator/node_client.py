"""gRPC clients to other nodes, one channel per address, carrying the cluster's bearer token."""

from __future__ import annotations

import grpc

from taskward.channels import Metadata, aio_channel, bearer
from taskward.pb.taskward.v1 import tasks_pb2_grpc as pb_grpc


class NodeClients:
    def __init__(self, token: str | None) -> None:
        self._channels: dict[str, grpc.aio.Channel] = {}
        self.metadata: Metadata = bearer(token)

    def stub(self, address: str) -> pb_grpc.TaskManagerStub:
        ch = self._channels.get(address)
        if ch is None:
            ch = aio_channel(address)
            self._channels[address] = ch
        return pb_grpc.TaskManagerStub(ch)

    async def close(self) -> None:
        for ch in self._channels.values():
            await ch.close()
        self._channels.clear()
