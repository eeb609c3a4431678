"""The node's event stream: sequence numbers, live fan-out, and replay from the store.

Events are written in the same transaction as the state change they describe and published to live
subscribers only after that transaction commits, in commit order. A subscriber that resumes with the
last sequence it saw therefore misses nothing that is still retained.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, fields
from datetime import UTC, datetime
from enum import StrEnum

from node.store import Store

logger = logging.getLogger(__name__)

SUBSCRIBER_BUFFER = 10_000
REPLAY_PAGE = 1_000


class EventType(StrEnum):
    STARTED = "task.started"
    PROGRESS = "task.progress"
    COMPLETED = "task.completed"
    FAILED = "task.failed"
    ABORTED = "task.aborted"
    CRON_FIRED = "cron.fired"


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


class EventLog:
    """Assigns sequence numbers and fans committed events out to subscribers."""

    def __init__(self, store: Store, last_seq: int) -> None:
        self._store = store
        self._seq = last_seq
        self._subscribers: set[asyncio.Queue[Event | None]] = set()

    @property
    def last_sequence(self) -> int:
        return self._seq

    def next_sequence(self) -> int:
        self._seq += 1
        return self._seq

    def publish(self, event: Event) -> None:
        """Called after the event's transaction committed, in commit order."""
        for q in list(self._subscribers):
            if q.qsize() >= SUBSCRIBER_BUFFER - 1:
                self._subscribers.discard(q)
                q.put_nowait(None)  # tells the reader it lagged
            else:
                q.put_nowait(event)

    async def watch(self, after_sequence: int = 0, *, live_only: bool = False) -> AsyncIterator[Event]:
        """Replay retained events after ``after_sequence`` from the store, then follow live ones."""
        q: asyncio.Queue[Event | None] = asyncio.Queue()
        self._subscribers.add(q)
        try:
            last = self._seq if live_only else after_sequence
            while not live_only:
                rows = await self._store.read_events(last, REPLAY_PAGE)
                for seq, body in rows:
                    last = seq
                    yield Event.from_json(body)
                if len(rows) < REPLAY_PAGE:
                    break
            while True:
                ev = await q.get()
                if ev is None:
                    raise SubscriberLagged(f"subscriber fell behind; resume after sequence {last}")
                if ev.sequence <= last:
                    continue
                last = ev.sequence
                yield ev
        finally:
            self._subscribers.discard(q)

    def close(self) -> None:
        for q in list(self._subscribers):
            q.put_nowait(None)
        self._subscribers.clear()
