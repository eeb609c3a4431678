"""Concurrent calls share gRPC calls: ``StartTasks`` carries the starts, ``GetTaskStatuses`` the status
reads of one node, made while others were under way, as a group commit does with transactions.

A call made while none is under way goes out at once, alone, as its unary method (``StartTask``,
``GetTaskStatus``): a lone caller waits for nothing. Calls made meanwhile queue, and go out in the same
turn of the event loop (so the callers one answer woke go together) as batches of up to ``MAX_BATCH``,
at most ``IN_FLIGHT`` at once; the rest wait for a batch to end. Under load a batch then carries many
calls for the price of one: a unary call costs a node ~350 µs of CPU of its own, about as much as the
whole task path of a no-op task, and ten times what it takes to read a status.

Each call keeps its own answer: its result, or its error raised as the unary method would have raised
it; a start a node answered ``UNAVAILABLE`` goes again on its own, so the pool's failover to the next
node applies to it as to a ``StartTask`` (a read's ``UNAVAILABLE`` is its caller's: the pool looks for
the task's owner again). An error of the batch as a whole (no node reachable, a refused token) is
every call's error. A node that does not serve the batch method (an older version) is sent unary calls
from then on.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import grpc

from taskward.errors import CODE_BY_VALUE, TaskwardError, Unavailable, from_status
from taskward.pb.taskward.v1 import tasks_pb2 as pb

logger = logging.getLogger(__name__)

IN_FLIGHT = 4
MAX_BATCH = 16
"""Calls in one batch (a node takes up to 1,000). With 64 callers starting no-op tasks, 4 batches of 16
gave a node ~35% less CPU per task than one call per start, and 1.5x the starts of batches of 32 or
500 (bench/RESULTS.md). Likely why: several smaller batches keep the node's work pipelined, and a burst
of 16 fits the executor's default 16 slots, so its tasks run at once instead of queueing as created
(one transition more each)."""

Req = TypeVar("Req")
Out = TypeVar("Out")
Send = Callable[[str, Any], Awaitable[tuple[Any, Any]]]
"""``(method, request) → (node, response)``: one call through the pool."""


@dataclass(frozen=True)
class Batching(Generic[Req, Out]):
    """How one unary method is carried in its batch method."""

    one: str
    many: str
    pack: Callable[[list[Req]], Any]
    """The batch request of these calls' requests."""
    answer: Callable[[Any], Out]
    """What a caller gets from the unary method's response."""
    item: Callable[[Any], Out]
    """What a caller gets from its item of the batch's results (one whose ``code`` is OK)."""
    unavailable_alone: bool
    """Send an item answered ``UNAVAILABLE`` again as a unary call (the pool's failover then applies)."""


STARTS: Batching[pb.StartTaskRequest, str] = Batching(
    "StartTask", "StartTasks", lambda reqs: pb.StartTasksRequest(starts=reqs), lambda resp: resp.task_id,
    lambda result: result.task_id, unavailable_alone=True)
STATUSES: Batching[pb.TaskIdRequest, pb.TaskStatus] = Batching(
    "GetTaskStatus", "GetTaskStatuses", lambda reqs: pb.GetTaskStatusesRequest(reads=reqs), lambda resp: resp,
    lambda result: result.status, unavailable_alone=False)

class CallBatcher(Generic[Req, Out]):
    def __init__(self, send: Send, batching: Batching[Req, Out]) -> None:
        self._send = send
        self._b = batching
        self._queue: list[tuple[Req, asyncio.Future[tuple[Any, Out]]]] = []
        self._in_flight = 0
        self._batches = True  # until a node says it does not serve the batch method
        self._senders: set[asyncio.Task[None]] = set()
        self._flush_pending = False

    async def call(self, request: Req) -> tuple[Any, Out]:
        """(the node that answered, the caller's answer), or the call's error."""
        if not self._in_flight and not self._queue:  # idle: nothing to share the call with
            self._in_flight += 1
            try:
                node, resp = await self._send(self._b.one, request)
                return node, self._b.answer(resp)
            finally:
                self._in_flight -= 1
                self._flush_soon()
        done: asyncio.Future[tuple[Any, Out]] = asyncio.get_running_loop().create_future()
        self._queue.append((request, done))
        self._flush_soon()
        return await done  # a caller that goes away leaves its call to the batch that carries it

    def _flush_soon(self) -> None:
        """Flush once the loop has run what is ready now: the callers an answer just woke call again in
        this same turn, and go out together instead of the first one alone."""
        if not self._flush_pending:
            self._flush_pending = True
            asyncio.get_running_loop().call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_pending = False
        while self._queue and self._in_flight < IN_FLIGHT:
            # Spread what waits over the free calls: 32 calls and 4 free go as 4 x 8, not 16 + 16.
            size = min(MAX_BATCH, -(-len(self._queue) // (IN_FLIGHT - self._in_flight)))
            batch, self._queue = self._queue[:size], self._queue[size:]
            self._in_flight += 1
            sender = asyncio.create_task(self._carry(batch), name=f"taskward-{self._b.many}")
            self._senders.add(sender)
            sender.add_done_callback(self._senders.discard)

    async def _carry(self, batch: list[tuple[Req, asyncio.Future[tuple[Any, Out]]]]) -> None:
        try:
            alone = batch  # the calls that go unary, each on its own
            if len(batch) > 1 and self._batches:
                alone = []
                try:
                    node, resp = await self._send(self._b.many, self._b.pack([r for r, _ in batch]))
                except TaskwardError as exc:
                    if exc.code is not grpc.StatusCode.UNIMPLEMENTED:
                        for _, done in batch:
                            _settle(done, exc)
                        return
                    logger.info("a node does not serve %s; sending %s calls", self._b.many, self._b.one)
                    self._batches = False
                    alone = batch
                else:
                    alone = self._answer(node, batch, resp.results)
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

    def _answer(self, node: Any, batch: list[tuple[Req, asyncio.Future[tuple[Any, Out]]]],
                results: Sequence[Any]) -> list[tuple[Req, asyncio.Future[tuple[Any, Out]]]]:
        """Settle each caller from its item; the ones to send again alone."""
        alone = []
        for (req, done), result in zip(batch, results, strict=True):
            code = CODE_BY_VALUE.get(result.code, grpc.StatusCode.UNKNOWN)
            if code is grpc.StatusCode.UNAVAILABLE and self._b.unavailable_alone:
                alone.append((req, done))
            elif result.code:
                _settle(done, from_status(code, result.message))
            elif not done.done():
                done.set_result((node, self._b.item(result)))
        return alone

    async def _one(self, request: Req, done: asyncio.Future[tuple[Any, Out]]) -> None:
        try:
            node, resp = await self._send(self._b.one, request)
        except TaskwardError as exc:
            _settle(done, exc)
        else:
            if not done.done():
                done.set_result((node, self._b.answer(resp)))


def _settle(done: asyncio.Future[Any], error: BaseException) -> None:
    if not done.done():
        done.set_exception(error)
