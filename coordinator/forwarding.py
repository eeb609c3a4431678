"""Writes sent by a follower to the cluster leader, and how their answers come back.

A follower forwards cluster starts and aborts over gRPC; the leader's own error codes and messages
pass through unchanged (``ForwardedError``), while a leader that never answered is a retryable
``UNAVAILABLE``. A start whose id the follower drew itself is answered as soon as the follower's own
replica shows the committed record, which usually beats the leader's answer back.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable
from typing import TypeVar

import grpc

from taskward.coordinator.cache import ClusterCache
from taskward.coordinator.node_client import NodeClients, StartRequest
from taskward.errors import CoordinatorUnavailable, TaskwardError

logger = logging.getLogger(__name__)
T = TypeVar("T")

_NO_ANSWER = frozenset({grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.CANCELLED, grpc.StatusCode.UNKNOWN})


class ForwardedError(TaskwardError):
    """An error answered by the leader, passed on with the leader's own code and message."""

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self._code = code

    @property
    def code(self) -> grpc.StatusCode:
        return self._code


class Forwarder:
    def __init__(self, clients: NodeClients, cache: ClusterCache, *, timeout_s: float) -> None:
        self._clients = clients
        self._cache = cache
        self._timeout_s = timeout_s
        self._background: set[asyncio.Future[str]] = set()

    async def start(self, leader: str, req: StartRequest, *, early_ack: bool) -> str:
        """Forward a start to the leader at ``leader``. With ``early_ack`` (the id is one we just drew)
        answer as soon as either the leader does or our own replica shows the record: the watch event is
        proof of the commit and usually arrives first, since etcd notifies watchers before the leader's
        answer has made its way back here. The forward is left to finish on its own: cancelling it could
        cancel the leader's handler before it kicks its cycle."""
        forward = asyncio.ensure_future(self._call(self._clients.start(leader, req, timeout_s=self._timeout_s * 3)))
        self._background.add(forward)
        forward.add_done_callback(self._finished)
        if early_ack:
            seen = asyncio.ensure_future(self._cache.wait_for_task(req.cluster_task_id))
            try:
                await asyncio.wait((forward, seen), return_when=asyncio.FIRST_COMPLETED)
            finally:
                seen.cancel()
            if not forward.done():
                return req.cluster_task_id
        task_id = await asyncio.shield(forward)  # may differ from ours: an idempotency key named another task
        await self.until_replicated(task_id)
        return task_id

    async def abort(self, leader: str, task_id: str) -> None:
        await self._call(self._clients.abort(leader, task_id, timeout_s=self._timeout_s * 3))

    async def until_replicated(self, task_id: str) -> None:
        """Read-your-writes: the node that answers a start can be asked about the task at once. Bounded:
        an answer is never withheld for long because this replica lags."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self._timeout_s):
                await self._cache.wait_for_task(task_id)

    def _finished(self, fut: asyncio.Future[str]) -> None:
        self._background.discard(fut)
        if not fut.cancelled() and fut.exception() is not None:
            logger.debug("forwarded start answered after its record was seen: %s", fut.exception())

    @staticmethod
    async def _call(call: Awaitable[T]) -> T:
        try:
            return await call
        except grpc.aio.AioRpcError as exc:
            if exc.code() in _NO_ANSWER:  # the leader never answered: retryable, not the leader's verdict
                raise CoordinatorUnavailable(f"the leader did not answer ({exc.code().name}); retry") from None
            raise ForwardedError(exc.code(), exc.details() or "") from None
