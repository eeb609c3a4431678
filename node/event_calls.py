"""One event subscription to a node, several events per message where the node can send them.

Every follower of a node's events (the client library's merged streams, REST's ``/events`` through the
pool, the cluster leader's child streams) opens its stream here. ``WatchEventBatches`` carries the same
events as ``WatchEvents``, in the same order, with the same initial metadata and errors, but the events
that were ready together arrive in one message: a busy node then spends its CPU on tasks rather than on
one gRPC message per event (bench/RESULTS.md). A node that does not serve it (an older version) answers
``UNIMPLEMENTED`` before sending anything; the call is then made again as ``WatchEvents``, and that node
is asked that way from then on.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import grpc

from taskward.channels import Metadata
from taskward.pb.taskward.v1 import tasks_pb2 as pb
from taskward.pb.taskward.v1 import tasks_pb2_grpc as pb_grpc


class BatchSupport:
    """Whether a node is asked for batches; one per node (connection), turned off by its first
    ``UNIMPLEMENTED``."""

    __slots__ = ("batches",)

    def __init__(self) -> None:
        self.batches = True


class EventCall:
    """A node's event stream as individual ``pb.Event`` messages, whichever method carries them.

    ``await initial_metadata()`` as on a gRPC call (the subscription is registered once it answers);
    iterate for the events; ``cancel()`` ends it. Errors are the gRPC call's (``grpc.aio.AioRpcError``).
    """

    def __init__(self, stub: pb_grpc.TaskManagerStub, request: pb.WatchEventsRequest, metadata: Metadata,
                 support: BatchSupport) -> None:
        self._stub = stub
        self._request = request
        self._metadata = metadata
        self._support = support
        self._batched = support.batches
        self._call: Any = self._open()
        self._started = False  # a message has arrived: no fallback from here on

    def _open(self) -> Any:
        method = self._stub.WatchEventBatches if self._batched else self._stub.WatchEvents
        return method(self._request, metadata=self._metadata)

    def _fall_back(self) -> None:
        """The node does not serve batches: the same request as ``WatchEvents``, and never batches again."""
        self._support.batches = self._batched = False
        self._call.cancel()
        self._call = self._open()

    def _refused_batches(self, code: grpc.StatusCode) -> bool:
        """The call ended with ``code`` before any message: ``UNIMPLEMENTED`` means an older node."""
        return self._batched and not self._started and code == grpc.StatusCode.UNIMPLEMENTED

    async def initial_metadata(self) -> Metadata:
        metadata = await self._call.initial_metadata()
        if self._call.done() and self._refused_batches(await self._call.code()):  # answered at once, no metadata
            self._fall_back()
            metadata = await self._call.initial_metadata()
        return tuple(metadata or ())

    async def __aiter__(self) -> AsyncIterator[pb.Event]:
        while True:
            try:
                if self._batched:
                    async for batch in self._call:
                        self._started = True
                        for ev in batch.events:
                            yield ev
                else:
                    async for ev in self._call:
                        self._started = True
                        yield ev
                return
            except grpc.aio.AioRpcError as exc:
                if not self._refused_batches(exc.code()):
                    raise
            self._fall_back()

    def cancel(self) -> None:
        self._call.cancel()
