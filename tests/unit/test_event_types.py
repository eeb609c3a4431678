"""Subscribers of some event types: they get those, in order, and are not even woken by the others
(a completion watcher on a busy node costs nothing for the progress it does not want)."""

from __future__ import annotations

from pathlib import Path

import pytest

from taskward.errors import InvalidArgument
from taskward.events import Event, EventLog, EventLogClosed, EventType, Subscription, parse_event_types
from taskward.store import Store

FINISHED = frozenset({EventType.COMPLETED, EventType.FAILED})


def event(seq: int, etype: EventType, parent: str = "") -> Event:
    return Event(sequence=seq, type=etype, task_id=f"t{seq}", module="m", task_type="t", time=0.0,
                 cluster_parent=parent)


async def drain(sub: Subscription) -> list[int]:
    got: list[int] = []
    with pytest.raises(EventLogClosed):
        async for ev in sub.events():
            got.append(ev.sequence)
    return got


async def test_each_subscriber_gets_its_types_only_and_is_not_woken_by_others(tmp_path: Path) -> None:
    store = Store(tmp_path / "db.sqlite3")
    await store.open()
    log = EventLog(store, 0)
    finished = log.subscribe(live_only=True, types=FINISHED)
    every = log.subscribe(live_only=True)
    children_done = log.subscribe(live_only=True, cluster_only=True, types=frozenset({EventType.COMPLETED}))
    log.publish(event(1, EventType.STARTED))
    log.publish(event(2, EventType.PROGRESS, parent="p"))
    assert (finished._queue.qsize(), every._queue.qsize()) == (0, 2)
    for e in (event(3, EventType.COMPLETED, parent="p"), event(4, EventType.FAILED), event(5, EventType.COMPLETED)):
        log.publish(e)
    log.close()
    assert await drain(finished) == [3, 4, 5]
    assert await drain(every) == [1, 2, 3, 4, 5]
    assert await drain(children_done) == [3]
    assert not any(log._typed.values())  # closed streams are gone from every registry
    await store.close()


def test_event_type_names_are_checked() -> None:
    assert parse_event_types([]) is None
    assert parse_event_types(["task.failed", "task.completed", "task.failed"]) == FINISHED
    with pytest.raises(InvalidArgument) as err:
        parse_event_types(["task.completed", "x" * 100])
    assert err.value.message.startswith(f"unknown event type '{'x' * 64}...'; known: task.started, ")
