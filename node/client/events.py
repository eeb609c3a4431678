"""Event streams of the client library: every listed node followed at once, resumed by themselves.

``EventStream`` keeps one ``WatchEvents`` stream per listed node and merges them into one async iterator
of event dicts. Each node's sequence numbers are its own (and survive a restart from its data dir), so
the stream remembers the last sequence it took from each node and, when a stream breaks (node killed,
restarted, shutting down, or this reader more than 10,000 events behind), reconnects to that node with
``after_sequence`` = the last one seen: the node replays what it retained after it, then follows live.
Nothing is lost and nothing is repeated, per node, across any number of reconnects. Reconnects back off
from 50 ms to at most 2 s; errors that a retry cannot fix (a wrong token, a refused argument) end the
stream with that error.

A bounded queue sits between the node streams and the reader, so a slow reader holds the streams back
(gRPC flow control) instead of buffering without limit; a node that cuts such a reader off is resumed
like any broken stream.

``TaskEventStream`` is one task's events (``handle.events()``): the events whose ``task_id`` is the task,
or whose ``cluster_parent_id`` is (a cluster task's children), ending once the task has finished. The
end is learnt from ``WaitTask`` on the task's owner rather than from the stream alone, because a cluster
task has no events of its own and a retried attempt's failure is not the end.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

import grpc

from taskward.client.node_pool import NodePool, NodeStubs, rpc_error
from taskward.client.status import TaskStatus
from taskward.convert import event_pb_to_dict
from taskward.errors import (
    InvalidArgument,
    PermissionDenied,
    TaskwardError,
    TestApiDisabled,
    Unauthenticated,
    Unavailable,
    WaitTimeout,
)
from taskward.events import POSITION_KEY
from taskward.pb.taskward.v1 import tasks_pb2 as pb

logger = logging.getLogger(__name__)

QUEUE_SIZE = 1024
BACKOFF_MIN_S = 0.05
BACKOFF_MAX_S = 2.0
END_GRACE_S = 2.0
"""How long a finished task's stream waits for its last events still in flight on the node streams."""
TERMINAL_TYPES = frozenset({"task.completed", "task.failed", "task.aborted"})
FATAL = (InvalidArgument, Unauthenticated, PermissionDenied, TestApiDisabled)
"""Errors a reconnect cannot fix: they end the stream. Anything else is retried."""

Event = dict[str, Any]


def event_to_dict(ev: pb.Event, node: str) -> Event:
    """One event as the client hands it out: the JSON object REST's ``/events`` sends as SSE ``data``
    (``taskward.convert.event_pb_to_dict``: times as ISO-8601 strings; ``cluster_parent_id``,
    ``schedule_id``/``slot`` and ``attempt``/``next_attempt_at`` only on the events they belong to), plus
    ``node``, the address of the node that sent it (sequence numbers are per node)."""
    return {"node": node, **event_pb_to_dict(ev)}


class _End:
    """Queued once the stream is over; stays queued, so every later read ends too."""


class _Failure:
    def __init__(self, error: BaseException) -> None:
        self.error = error


_END = _End()


class EventStream:
    """Events of every node in ``pool``, merged; an async iterator of event dicts (see the module doc).

    ``after=None`` follows each node live from the moment its stream is subscribed; ``after=N`` replays
    what each node retained after sequence N first; ``after={address: N, ...}`` (an earlier stream's
    ``positions``) resumes each node where that stream stopped (a node not in it: live). Until a node
    has sent its first event, the stream knows no position on it: a break in that window resumes it
    live again (events that node committed while unreachable are then not replayed).
    ``await stream.subscribed()`` returns once every node's first subscription attempt is over, so
    every event published after that reaches the stream.
    Close it with ``aclose()`` (or ``async with``); that cancels every node stream.
    """

    def __init__(self, pool: NodePool, after: int | Mapping[str, int] | None = None, *,
                 on_close: Callable[[EventStream], None] | None = None, types: Sequence[str] = ()) -> None:
        self._pool = pool
        self._types = list(types)
        self._positions: dict[str, int] = (
            {} if after is None else {n.address: after for n in pool.nodes} if isinstance(after, int)
            else {a: int(n) for a, n in after.items() if a in pool.addresses})
        self._queue: asyncio.Queue[Event | _End | _Failure] = asyncio.Queue(QUEUE_SIZE)
        self._tasks: list[asyncio.Task[None]] = []
        self._first_attempts = 0
        self._all_attempted = asyncio.Event()
        self._closed = False
        self._on_close = on_close
        with contextlib.suppress(RuntimeError):  # no running loop: the first read starts it
            self._start()

    # ---------------------------------------------------------------- reader side

    def __aiter__(self) -> EventStream:
        return self

    async def __anext__(self) -> Event:
        if not self._tasks and not self._closed:
            self._start()
        item = await self._queue.get()
        if isinstance(item, _End):
            self._queue.put_nowait(item)
            raise StopAsyncIteration
        if isinstance(item, _Failure):
            await self.aclose()
            raise item.error
        return item

    async def __aenter__(self) -> EventStream:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def subscribed(self) -> None:
        """Until every node's first subscription attempt is over (subscribed, or failed and retrying)."""
        if not self._tasks and not self._closed:
            self._start()
        await self._all_attempted.wait()

    @property
    def positions(self) -> dict[str, int]:
        """The last sequence taken from each node (address → sequence): ``events(after=positions)`` resumes there."""
        return dict(self._positions)

    async def aclose(self) -> None:
        """Cancel every node stream and end the iterator; idempotent, and safe while a read is waiting."""
        if self._closed:
            return
        self._closed = True
        for t in self._tasks:
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        while not self._queue.empty():
            self._queue.get_nowait()
        self._queue.put_nowait(_END)
        self._all_attempted.set()
        if self._on_close is not None:
            self._on_close(self)

    # ---------------------------------------------------------------- node side

    def _start(self) -> None:
        asyncio.get_running_loop()  # raises RuntimeError outside a loop (constructor: start later)
        self._tasks = [asyncio.create_task(self._follow(n), name=f"taskward-events-{n.address}")
                       for n in self._pool.nodes]

    def _attempted(self, first: bool) -> None:
        if first:
            self._first_attempts += 1
            if self._first_attempts == len(self._pool.nodes):
                self._all_attempted.set()

    def accept(self, event: Event) -> bool:
        """Whether the reader gets ``event`` (all of them here; a task's stream filters)."""
        return True

    async def _deliver(self, event: Event) -> None:
        await self._queue.put(event)

    async def _fail(self, error: BaseException) -> None:
        await self._queue.put(_Failure(error))

    async def _follow(self, node: NodeStubs) -> None:
        first, backoff = True, BACKOFF_MIN_S
        while True:
            position = self._positions.get(node.address)
            call = node.watch_events(pb.WatchEventsRequest(live_only=position is None, after_sequence=position or 0,
                                                            types=self._types))
            try:
                # Answered once the node has registered the subscription (or the call failed): either
                # way this attempt is over, and from a registered one no later event is missed. A live
                # stream says where it starts, so a break before its first event resumes from there.
                metadata = dict(await call.initial_metadata() or ())
                if position is None and POSITION_KEY in metadata:
                    position = self._positions[node.address] = int(metadata[POSITION_KEY])
                self._attempted(first)
                first = False
                async for ev in call:
                    if position is not None and ev.sequence <= position:
                        continue  # never repeat one (a node replays strictly after the position anyway)
                    position = self._positions[node.address] = ev.sequence
                    backoff = BACKOFF_MIN_S
                    event = event_to_dict(ev, node.address)
                    if self.accept(event):
                        await self._deliver(event)
                logger.debug("event stream of %s ended; resuming after %s", node.address, position)
            except grpc.aio.AioRpcError as exc:
                err = rpc_error(exc)
                if isinstance(err, FATAL):
                    await self._fail(err)
                    return
                logger.debug("event stream of %s broke (%s); resuming after %s", node.address, err.message,
                             position)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # a bug: end the reader loudly rather than hang it
                logger.exception("following the events of %s failed", node.address)
                await self._fail(exc)
                return
            finally:
                call.cancel()
            self._attempted(first)
            first = False
            await asyncio.sleep(backoff * (0.5 + random.random() / 2))
            backoff = min(backoff * 2, BACKOFF_MAX_S)


class TaskEventStream(EventStream):
    """One task's events, ending once it has finished (see the module docstring).

    ``wait(timeout)`` is the handle's ``WaitTask`` (routed to the owner): after the node streams are
    subscribed, it is asked once without waiting (a task already finished ends the stream at once), then
    without limit; when it answers, the stream waits up to ``END_GRACE_S`` for the last events still on
    their way (the task's own, or each child's, terminal event) and ends. An unknown id ends the stream
    with ``TaskNotFound``; an unreachable owner is asked again with backoff.
    """

    def __init__(self, pool: NodePool, task_id: str, wait: Callable[[float | None], Awaitable[TaskStatus]], *,
                 on_close: Callable[[EventStream], None] | None = None) -> None:
        self.task_id = task_id
        self._wait = wait
        self._ended: set[str] = set()
        self._ended_changed = asyncio.Event()
        self._watcher: asyncio.Task[None] | None = None
        super().__init__(pool, None, on_close=on_close)

    def _start(self) -> None:
        super()._start()
        self._watcher = asyncio.create_task(self._watch_end(), name=f"taskward-task-end-{self.task_id}")
        self._tasks.append(self._watcher)

    def accept(self, event: Event) -> bool:
        return bool(event["task_id"] == self.task_id or event.get("cluster_parent_id") == self.task_id)

    async def _deliver(self, event: Event) -> None:
        await super()._deliver(event)
        if event["type"] in TERMINAL_TYPES:
            self._ended.add(event["task_id"])
            self._ended_changed.set()

    async def _watch_end(self) -> None:
        await self._all_attempted.wait()
        timeout: float | None = 0.0
        backoff = BACKOFF_MIN_S
        while True:
            try:
                status = await self._wait(timeout)
                break
            except WaitTimeout:
                timeout = None
            except Unavailable:
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, BACKOFF_MAX_S)
            except TaskwardError as exc:
                await self._fail(exc)
                return
        if timeout is None:  # it finished while we watched: let its last events arrive
            expect = {c.task_id for c in status.children_ids} if status.kind == "cluster" else {self.task_id}
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(END_GRACE_S):
                    while not expect <= self._ended:
                        self._ended_changed.clear()
                        await self._ended_changed.wait()
        await self._queue.put(_END)
