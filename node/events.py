"""The node's event stream: sequence numbers, live fan-out, and replay from the store.

Events are written in the same transaction as the state change they describe and published to live
subscribers only after that transaction commits, in commit order. A subscriber that resumes with the
last sequence it saw therefore misses nothing that is still retained.
"""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, fields
from datetime import UTC, datetime
from enum import StrEnum

from taskward.errors import InvalidArgument
from taskward.metrics import NodeMetrics
from taskward.store import Store

logger = logging.getLogger(__name__)

SUBSCRIBER_BUFFER = 10_000
REPLAY_PAGE = 1_000
BATCH_MAX_EVENTS = 256
"""Events in one ``WatchEventBatches`` message. An event is at most ~6 KB (a 4 KB error, a 1 KB progress
message, names), so a full batch stays well under gRPC's 4 MB default message limit on any client."""
CHILD_BATCH_MAX_EVENTS = 32
"""The same on a ``cluster_children_only`` stream, whose completions also carry the child's result (at
most 64 KB, ``limits.MAX_RESULT_BYTES``): 32 x 70 KB is still under 4 MB."""
SUBSCRIBED = ("taskward-events", "subscribed")
"""Initial metadata of a ``WatchEvents`` stream, sent once its subscription is registered: from then on
every published event reaches the stream. Clients that must not miss an event wait for it."""
POSITION_KEY = "taskward-events-after"
"""Initial metadata of a live-only ``WatchEvents`` stream: the last sequence published before it was
registered. Every later event reaches the stream, so a client that loses it resumes with
``after_sequence`` = this (or the last event it saw, if later) and misses nothing."""
NODE_KEY = "taskward-node"
"""Initial metadata of every ``WatchEvents`` stream: the id of the node whose events it carries (a merged
stream keys its positions by node id, whatever address it reached the node at)."""
EPOCH_KEY = "taskward-events-epoch"
"""Initial metadata of every ``WatchEvents`` stream: the epoch of the node's sequence numbers. They are
durable (a restart from the same data dir continues them); a node that comes back with a new database
numbers from 1 again under a new epoch, which tells a resuming reader that its position means nothing
there."""
EVENTS_EPOCH = "events_epoch"
"""The store setting that keeps the epoch with the events it numbers."""


def new_epoch() -> str:
    """A fresh epoch: 16 lowercase hex digits, drawn once per database."""
    return uuid.uuid4().hex[:16]


class EventType(StrEnum):
    STARTED = "task.started"
    PROGRESS = "task.progress"
    RETRYING = "task.retrying"
    COMPLETED = "task.completed"
    FAILED = "task.failed"
    ABORTED = "task.aborted"
    CRON_FIRED = "cron.fired"


MAX_EVENT_TYPE_LEN = 64  # of an unknown name, quoted back
MAX_EVENT_TYPES = 100


def parse_event_types(names: Iterable[str]) -> frozenset[EventType] | None:
    """The event types a subscriber asked for; None (every type) when it named none. An unknown name is
    refused rather than ignored: a typo would otherwise be a stream that never says anything."""
    names = list(names)
    if len(names) > MAX_EVENT_TYPES:
        raise InvalidArgument(f"too many event types ({len(names)}); at most {MAX_EVENT_TYPES}")
    chosen: set[EventType] = set()
    for name in names:
        try:
            chosen.add(EventType(name))
        except ValueError:
            shown = name if len(name) <= MAX_EVENT_TYPE_LEN else name[:MAX_EVENT_TYPE_LEN] + "..."
            raise InvalidArgument(f"unknown event type {shown!r}; known: "
                                  f"{', '.join(t.value for t in EventType)}") from None
    return frozenset(chosen) or None


@dataclass(frozen=True, slots=True, kw_only=True)
class Event:
    sequence: int
    type: EventType
    task_id: str
    module: str
    task_type: str
    time: float
    progress_completed: float = 0.0
    progress_total: float = 0.0
    message: str = ""
    error: str = ""
    cluster_parent: str = ""  # old persisted events lack it
    schedule_id: str = ""  # cron.fired: the schedule and its slot (Unix seconds)
    slot: int = 0
    attempt: int = 0  # task.retrying: the attempt that runs next, at next_attempt_at (Unix seconds)
    next_attempt_at: float = 0.0

    def to_dict(self) -> dict[str, object]:
        """Plain fields only, so no deep copy (``dataclasses.asdict``) on this hot path."""
        return {f: getattr(self, f) for f in _FIELDS} | {"type": self.type.value}

    @classmethod
    def from_json(cls, text: str) -> Event:
        body = json.loads(text)
        body["type"] = EventType(body["type"])
        return cls(**body)

    @property
    def at(self) -> datetime:
        return datetime.fromtimestamp(self.time, UTC)


_FIELDS = tuple(f.name for f in fields(Event))


class SubscriberLagged(Exception):
    """A live subscriber fell more than ``SUBSCRIBER_BUFFER`` events behind; it should resume."""


class EventLogClosed(Exception):
    """The node is shutting down: open streams end now (resumable elsewhere or after the restart)
    rather than holding the server's graceful stop for its whole grace period."""


_CLOSED = object()
"""Queued to a subscriber when the log closes (``None`` means it lagged)."""


class Subscription:
    """One subscriber, registered the moment it is created: a caller that confirms the subscription to
    its client before iterating (gRPC initial metadata) thereby promises that nothing published from
    then on is missed."""

    def __init__(self, store: Store, registries: Iterable[set[asyncio.Queue[object]]], *, start: int, replay: bool,
                 closed: bool, cluster_only: bool = False, types: frozenset[EventType] | None = None) -> None:
        self._store = store
        self._registries = tuple(registries)
        self._queue: asyncio.Queue[object] = asyncio.Queue()
        self._last = start
        self._replay = replay
        self._cluster_only = cluster_only
        self._types = types
        if closed:
            self._queue.put_nowait(_CLOSED)
        else:
            for registry in self._registries:
                registry.add(self._queue)

    def _wanted(self, ev: Event) -> bool:
        return (ev.cluster_parent or not self._cluster_only) and (self._types is None or ev.type in self._types)

    async def events(self) -> AsyncIterator[Event]:
        """Replay retained events after the start sequence from the store, then follow live ones (one at a
        time: what waits is in the queue, where the ``SUBSCRIBER_BUFFER`` bound counts it)."""
        async for batch in self.batches(1):
            yield batch[0]

    async def batches(self, max_events: int = REPLAY_PAGE) -> AsyncIterator[list[Event]]:
        """``events`` as lists of at most ``max_events`` (never empty): a replayed page, then every live
        event that was queued at once (those one commit published, or more for a reader that fell a little
        behind). A subscriber that lagged or a log that closed ends only after the events before it."""
        try:
            batch: list[Event]
            while self._replay:
                rows = await self._store.read_events(self._last, REPLAY_PAGE)
                batch = []
                for seq, body in rows:
                    self._last = seq
                    replayed = Event.from_json(body)
                    if self._wanted(replayed):
                        batch.append(replayed)
                        if len(batch) == max_events:
                            yield batch
                            batch = []
                if batch:
                    yield batch
                if len(rows) < REPLAY_PAGE:
                    break
            # Live events come from registries that hold only what this subscriber wants, except a
            # cluster subscriber that also names types (the cluster registry holds every type).
            check = self._cluster_only and self._types is not None
            queue = self._queue
            while True:
                item = await queue.get()
                batch = []
                ending: Exception | None = None
                while True:
                    if item is None:
                        ending = SubscriberLagged(f"subscriber fell behind; resume after sequence {self._last}")
                        break
                    if item is _CLOSED:
                        ending = EventLogClosed(f"node shutting down; resume after sequence {self._last}")
                        break
                    assert isinstance(item, Event)
                    if item.sequence > self._last:
                        self._last = item.sequence
                        if not check or self._wanted(item):
                            batch.append(item)
                    if len(batch) == max_events or queue.empty():
                        break
                    item = queue.get_nowait()
                if batch:
                    yield batch
                if ending is not None:
                    raise ending
        finally:
            self.close()

    def close(self) -> None:
        for registry in self._registries:
            registry.discard(self._queue)


class EventLog:
    """Assigns sequence numbers and fans committed events out to subscribers."""

    def __init__(self, store: Store, last_seq: int, *, epoch: str = "", metrics: NodeMetrics | None = None) -> None:
        self._store = store
        self.epoch = epoch
        self._metrics = metrics or NodeMetrics()
        self._seq = last_seq
        self.published = last_seq  # events are published in sequence order: all up to here are out
        self._subscribers: set[asyncio.Queue[object]] = set()
        # Subscribers of cluster children's events only (a cluster leader): not even woken by the others.
        self._cluster_subscribers: set[asyncio.Queue[object]] = set()
        # Subscribers of some event types only (e.g. completions): woken by those alone.
        self._typed: dict[EventType, set[asyncio.Queue[object]]] = {t: set() for t in EventType}
        self.closed = False

    @property
    def last_sequence(self) -> int:
        return self._seq

    def next_sequence(self) -> int:
        self._seq += 1
        return self._seq

    def publish(self, event: Event) -> None:
        """Called after the event's transaction committed, in commit order."""
        self.published = event.sequence
        self._metrics.events_published += 1
        self._fan_out(self._subscribers, event)
        if typed := self._typed[event.type]:
            self._fan_out(typed, event)
        if event.cluster_parent:
            self._fan_out(self._cluster_subscribers, event)

    @staticmethod
    def _fan_out(subscribers: set[asyncio.Queue[object]], event: Event) -> None:
        for q in list(subscribers):
            if q.qsize() >= SUBSCRIBER_BUFFER - 1:
                subscribers.discard(q)
                q.put_nowait(None)  # tells the reader it lagged
            else:
                q.put_nowait(event)

    def subscribe(self, after_sequence: int = 0, *, live_only: bool = False, cluster_only: bool = False,
                  types: frozenset[EventType] | None = None) -> Subscription:
        """Register a subscriber at once (synchronously); read it with ``Subscription.events``. Live only:
        every event published from now on, even one numbered before now whose transaction was still
        committing: a task's start, for one, is visible to readers only once committed. ``cluster_only``:
        only events of cluster children's subtrees (``cluster_parent`` set); ``types``: only events of
        those types (None: all). Either way sequence numbers then skip."""
        registries: list[set[asyncio.Queue[object]]]
        if cluster_only:
            registries = [self._cluster_subscribers]
        elif types is not None:
            registries = [self._typed[t] for t in types]
        else:
            registries = [self._subscribers]
        return Subscription(self._store, registries, start=0 if live_only else after_sequence,
                            replay=not live_only, closed=self.closed, cluster_only=cluster_only, types=types)

    def close(self) -> None:
        """End every open stream (``EventLogClosed``) and refuse new ones: called first thing on
        shutdown, so streams do not hold the server's graceful stop, and again when the manager stops."""
        self.closed = True
        for subscribers in (self._subscribers, self._cluster_subscribers, *self._typed.values()):
            for q in list(subscribers):
                q.put_nowait(_CLOSED)
            subscribers.clear()
