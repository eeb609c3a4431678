"""``Subscription.batches``: the events ready together in one list, in order, never more than asked, and a
stream that lags or closes ends only after the events before the end."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from taskward.events import Event, EventLog, EventLogClosed, EventType, SubscriberLagged, Subscription
from taskward.store import Store


def event(seq: int, etype: EventType = EventType.COMPLETED, parent: str = "") -> Event:
    return Event(sequence=seq, type=etype, task_id=f"t{seq}", module="m", task_type="t", time=0.0,
                 cluster_parent=parent)


@pytest.fixture
async def log(tmp_path: Path) -> AsyncIterator[EventLog]:
    store = Store(tmp_path / "db.sqlite3")
    await store.open()
    try:
        yield EventLog(store, 0)
    finally:
        await store.close()


async def batches(sub: Subscription, most: int) -> tuple[list[list[int]], BaseException]:
    got: list[list[int]] = []
    with pytest.raises((EventLogClosed, SubscriberLagged)) as end:
        async for batch in sub.batches(most):
            got.append([ev.sequence for ev in batch])
    return got, end.value


async def test_events_published_together_arrive_together_up_to_the_cap(log: EventLog) -> None:
    sub = log.subscribe(live_only=True)
    for seq in range(1, 8):
        log.publish(event(seq))
    log.close()
    got, end = await batches(sub, 3)
    assert got == [[1, 2, 3], [4, 5, 6], [7]]
    assert isinstance(end, EventLogClosed) and str(end) == "node shutting down; resume after sequence 7"


async def test_a_batch_is_never_empty_and_skips_what_the_subscriber_did_not_ask_for(log: EventLog) -> None:
    # A cluster subscriber that names types is the one whose registry holds more than it wants.
    sub = log.subscribe(live_only=True, cluster_only=True, types=frozenset({EventType.COMPLETED}))
    log.publish(event(1, EventType.STARTED, parent="p"))
    log.publish(event(2, EventType.PROGRESS, parent="p"))
    log.publish(event(3, EventType.COMPLETED, parent="p"))
    log.publish(event(4, EventType.STARTED, parent="p"))
    log.close()
    got, _ = await batches(sub, 10)
    assert got == [[3]]


async def test_a_lagging_subscriber_gets_what_came_before_the_lag_then_the_error(
        log: EventLog, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("taskward.events.SUBSCRIBER_BUFFER", 4)
    sub = log.subscribe(live_only=True)
    for seq in range(1, 10):  # the queue holds 3, then the lag marker; the rest never reach it
        log.publish(event(seq))
    got, end = await batches(sub, 100)
    assert got == [[1, 2, 3]]
    assert isinstance(end, SubscriberLagged) and str(end) == "subscriber fell behind; resume after sequence 3"


async def test_events_is_batches_one_by_one(log: EventLog) -> None:
    sub = log.subscribe(live_only=True)
    for seq in range(1, 6):
        log.publish(event(seq))
    log.close()
    got: list[int] = []
    with pytest.raises(EventLogClosed):
        async for ev in sub.events():
            got.append(ev.sequence)
    assert got == [1, 2, 3, 4, 5]
