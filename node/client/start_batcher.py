"""Concurrent starts share gRPC calls: ``StartTasks`` carries the starts made while others were under
way, as a group commit does with transactions.

A start made while no call is under way goes out at once, alone, as ``StartTask``: a lone caller waits
for nothing. Starts made meanwhile queue, and go out in the same turn of the event loop (so the callers
one answer woke go together) as calls of up to ``MAX_BATCH`` starts, at most ``IN_FLIGHT`` calls at
once; the rest wait for a call to end. Under load a call then carries many starts for the price of one:
a unary call costs a node ~350 µs of CPU of its own, about as much as the whole task path of a no-op
task.

Each start keeps its own answer: its task id, or its error raised as ``StartTask`` would have raised it;
a start a node answered ``UNAVAILABLE`` goes again on its own, so the pool's failover to the next node
applies to it as to a ``StartTask``. An error of the call as a whole (no node reachable, a refused
token) is every start's error. A node that does not serve ``StartTasks`` (an older version) is sent
``StartTask`` calls from then on.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import grpc

from taskward.errors import CODE_BY_VALUE, TaskwardError, Unavailable, from_status
from taskward.pb.taskward.v1 import tasks_pb2 as pb

logger = logging.getLogger(__name__)

IN_FLIGHT = 4
MAX_BATCH = 16
"""Starts in one call (a node takes up to 1,000). With 64 callers starting no-op tasks, 4 calls of 16
gave a node ~35% less CPU per task than one call per start, and 1.5x the starts of batches of 32 or
500 (bench/RESULTS.md). Likely why: several smaller calls keep the node's work pipelined, and a burst
of 16 fits the executor's default 16 slots, so its tasks run at once instead of queueing as created
(one transition more each)."""

Send = Callable[[str, Any], Awaitable[tuple[Any, Any]]]
"""``(method, request) → (node, response)``: one call through the pool (its failover included)."""


class StartBatcher:
    def __init__(self, send: Send) -> None:
        self._send = send
        self._queue: list[tuple[pb.StartTaskRequest, asyncio.Future[tuple[Any, str]]]] = []
        self._in_flight = 0
        self._batches = True  # until a node says it does not serve StartTasks
        self._senders: set[asyncio.Task[None]] = set()
        self._flush_pending = False

    async def start(self, request: pb.StartTaskRequest) -> tuple[Any, str]:
        """(the node that answered, the new task's id), or the start's error."""
        if not self._in_flight and not self._queue:  # idle: nothing to share the call with
            self._in_flight += 1
            try:
                node, resp = await self._send("StartTask", request)
                return node, resp.task_id
            finally:
                self._in_flight -= 1
                self._flush_soon()
        done: asyncio.Future[tuple[Any, str]] = asyncio.get_running_loop().create_future()
        self._queue.append((request, done))
        self._flush_soon()
        return await done  # a caller that goes away leaves its start to the call that carries it

    def _flush_soon(self) -> None:
        """Flush once the loop has run what is ready now: the callers a call's answer just woke start
        again in this same turn, and go out together instead of the first one alone."""
        if not self._flush_pending:
            self._flush_pending = True
            asyncio.get_running_loop().call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_pending = False
        while self._queue and self._in_flight < IN_FLIGHT:
            # Spread what waits over the free calls: 32 starts and 4 free calls go as 4 x 8, not 16 + 16.
            size = min(MAX_BATCH, -(-len(self._queue) // (IN_FLIGHT - self._in_flight)))
            batch, self._queue = self._queue[:size], self._queue[size:]
            self._in_flight += 1
            sender = asyncio.create_task(self._carry(batch), name="taskward-start-batch")
            self._senders.add(sender)
            sender.add_done_callback(self._senders.discard)

    async def _carry(self, batch: list[tuple[pb.StartTaskRequest, asyncio.Future[tuple[Any, str]]]]) -> None:
        try:
            alone = batch  # the starts that go as StartTask calls of their own
            if len(batch) > 1 and self._batches:
                alone = []
                try:
                    node, resp = await self._send("StartTasks", pb.StartTasksRequest(starts=[r for r, _ in batch]))
                except TaskwardError as exc:
                    if exc.code is not grpc.StatusCode.UNIMPLEMENTED:
                        for _, done in batch:
                            _settle(done, exc)
                        return
                    logger.info("a node does not serve StartTasks; starting tasks one call each")
                    self._batches = False
                    alone = batch
                else:
                    for (req, done), result in zip(batch, resp.results, strict=True):
                        code = CODE_BY_VALUE.get(result.code, grpc.StatusCode.UNKNOWN)
                        if code is grpc.StatusCode.UNAVAILABLE:
                            alone.append((req, done))  # as a StartTask answered so: the next node is asked
                        elif result.code:
                            _settle(done, from_status(code, result.message))
                        elif not done.done():
                            done.set_result((node, result.task_id))
            await asyncio.gather(*(self._one(req, done) for req, done in alone))
        except asyncio.CancelledError:  # the client is closing: no caller is left waiting
            for _, done in batch:
                _settle(done, Unavailable("the client closed before the node answered"))
            raise
        except Exception as exc:  # a bug: each caller gets it, nobody waits forever
            for _, done in batch:
                _settle(done, exc)
        finally:
            self._in_flight -= 1
            self._flush_soon()

    async def _one(self, request: pb.StartTaskRequest, done: asyncio.Future[tuple[Any, str]]) -> None:
        try:
            node, resp = await self._send("StartTask", request)
        except TaskwardError as exc:
            _settle(done, exc)
        else:
            if not done.done():
                done.set_result((node, resp.task_id))


def _settle(done: asyncio.Future[tuple[Any, str]], error: BaseException) -> None:
    if not done.done():
        done.set_exception(error)
