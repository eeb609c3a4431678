"""Event streams against a real in-process gRPC server that serves ``WatchEvents`` but not
``WatchEventBatches`` (an older node): the client library's streams get every event all the same, and ask
that node for batches once only."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator
from typing import Any

import grpc

from taskward import AsyncClient
from taskward.events import NODE_KEY, POSITION_KEY, SUBSCRIBED
from taskward.pb.taskward.v1 import tasks_pb2 as pb

SERVICE = "taskward.v1.TaskManager"
EVENTS = [pb.Event(sequence=s, type="task.completed", task_id=f"t{s}", module="m", task_type="t") for s in (1, 2, 3)]


class OlderNode(grpc.GenericRpcHandler):
    """Serves ``WatchEvents`` (three events after the asked sequence, then stays open) and nothing else;
    counts every method asked for, served or not."""

    def __init__(self) -> None:
        self.asked: Counter[str] = Counter()

    async def watch(self, request: pb.WatchEventsRequest, context: Any) -> AsyncIterator[pb.Event]:
        await context.send_initial_metadata((SUBSCRIBED, (POSITION_KEY, "0"), (NODE_KEY, "old")))
        for ev in EVENTS:
            if ev.sequence > request.after_sequence:
                yield ev
        await asyncio.Event().wait()  # a live stream: open until the client goes

    def service(self, details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler | None:
        name = details.method.rsplit("/", 1)[-1]  # type: ignore[attr-defined]
        self.asked[name] += 1
        if details.method != f"/{SERVICE}/WatchEvents":  # type: ignore[attr-defined]
            return None  # grpc answers UNIMPLEMENTED
        return grpc.unary_stream_rpc_method_handler(
            self.watch, request_deserializer=pb.WatchEventsRequest.FromString,
            response_serializer=pb.Event.SerializeToString)


async def test_an_older_node_gets_watch_events_and_is_asked_for_batches_once() -> None:
    node = OlderNode()
    server = grpc.aio.server()
    server.add_generic_rpc_handlers((node,))
    address = f"127.0.0.1:{server.add_insecure_port('127.0.0.1:0')}"
    await server.start()
    try:
        # Found out on the first read (the pool's one-node stream: REST's /events) ...
        async with AsyncClient(address, timeout=10) as client:
            seen = []
            async for ev in client._pool().watch_events(0):
                seen.append(ev.sequence)
                if len(seen) == 3:
                    break
            assert seen == [1, 2, 3]
        # ... or from the initial metadata (the merged streams wait for it before reading).
        async with AsyncClient(address, timeout=10) as client:
            for after in (0, 1):
                async with client.events(after=after) as stream, asyncio.timeout(10):
                    got = [(await anext(stream))["task_id"] for _ in range(3 - after)]
                assert got == [f"t{s}" for s in (1, 2, 3)][after:]
    finally:
        await server.stop(None)
    assert node.asked == {"WatchEventBatches": 2, "WatchEvents": 3}  # once per client (per node connection)
