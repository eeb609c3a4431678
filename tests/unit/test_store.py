"""The SQLite store on its own: round trips, group commit, failure isolation, restart."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import pytest

from taskward import store as store_module
from taskward.metrics import NodeMetrics
from taskward.model import ChildRef, TaskRecord, TaskState
from taskward.store import DEFERRED_S, PUT_SETTING, PUT_TASK, Store, Tx, group_sql, record_from_json, record_to_json

NOW = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)


def rec(i: int) -> TaskRecord:
    return TaskRecord(
        id=f"00000000-0000-4000-8000-{i:012d}", module="m", type="t", created_at=NOW, keyspace="ks",
        children=(ChildRef("c", "n1"),), args='{"a": 1}', progress_total=3.5, expires_at=NOW,
    )


def test_record_json_round_trip() -> None:
    r = replace(rec(1).started(NOW).finished(NOW, error="x"), idempotency_key="k", user_task=True)
    assert record_from_json(record_to_json(r)) == r


async def test_concurrent_commits_are_grouped_and_all_durable(tmp_path: Path) -> None:
    store = Store(tmp_path / "db.sqlite3")
    await store.open()
    order: list[int] = []
    txs = []
    for i in range(200):
        tx = Tx().put(rec(i)).event(i + 1, NOW, {"n": i})
        tx.on_commit.append(lambda i=i: order.append(i))
        txs.append(store.commit(tx))
    await asyncio.gather(*txs)
    assert order == list(range(200))  # callbacks run in submission order
    await store.close()
    again = Store(tmp_path / "db.sqlite3")
    loaded = await again.open()
    assert [t.id for t in loaded.tasks] == [rec(i).id for i in range(200)]
    assert loaded.last_event_seq == 200
    await again.close()


async def test_a_deferred_write_goes_with_the_next_awaited_one(tmp_path: Path) -> None:
    """A progress report costs no commit of its own: it joins the next transaction someone waits for, in
    submission order, and both are durable together."""
    metrics = NodeMetrics()
    store = Store(tmp_path / "db.sqlite3", metrics=metrics)
    await store.open()
    groups = metrics.store_commit_seconds.count
    order: list[str] = []
    progress = Tx().put(rec(1).started(NOW)).event(1, NOW, {"n": 1})
    progress.on_commit.append(lambda: order.append("progress"))
    reported = store.submit(progress, deferred=True)
    end = Tx().put(rec(1).started(NOW).finished(NOW)).event(2, NOW, {"n": 2})
    end.on_commit.append(lambda: order.append("end"))
    await store.commit(end)
    assert reported.done() and order == ["progress", "end"]
    assert metrics.store_commit_seconds.count == groups + 1  # one commit for both
    await store.close()
    again = Store(tmp_path / "db.sqlite3")
    loaded = await again.open()
    assert [t.state for t in loaded.tasks] == [TaskState.DONE] and loaded.last_event_seq == 2
    await again.close()


async def test_a_deferred_write_alone_is_written_after_its_wait(tmp_path: Path) -> None:
    metrics = NodeMetrics()
    store = Store(tmp_path / "db.sqlite3", metrics=metrics)
    await store.open()
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    reported = store.submit(Tx().put(rec(1)).event(1, NOW, {}), deferred=True)
    also = store.submit(Tx().put(rec(2)).event(2, NOW, {}), deferred=True)
    async with asyncio.timeout(5):
        await asyncio.gather(reported, also)
    assert loop.time() - t0 >= DEFERRED_S  # waited for company, then went alone: one commit for both
    assert metrics.store_commit_seconds.count == 1
    await store.close()
    again = Store(tmp_path / "db.sqlite3")
    assert (await again.open()).last_event_seq == 2
    await again.close()


async def test_closing_writes_deferred_writes_at_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(store_module, "DEFERRED_S", 3600.0)
    store = Store(tmp_path / "db.sqlite3")
    await store.open()
    reported = store.submit(Tx().put(rec(1)).event(1, NOW, {}), deferred=True)
    async with asyncio.timeout(5):  # not the hour it could wait for company
        await store.close()
    assert reported.done() and reported.exception() is None
    again = Store(tmp_path / "db.sqlite3")
    loaded = await again.open()
    assert [t.id for t in loaded.tasks] == [rec(1).id] and loaded.last_event_seq == 1
    await again.close()


def test_a_group_writes_a_task_row_once_at_its_last_put() -> None:
    """Rows encoded at write time, each task's only at its last put in the group: the group commits as
    a whole, so the rows in between were never visible. Deletes and events all stay, in order."""
    a, b = rec(1), rec(2)
    txs = [Tx().put(a).event(1, NOW, {"n": 1}), Tx().put(b), Tx().put(a.started(NOW)).event(2, NOW, {"n": 2}),
           Tx().delete([b.id]), Tx().put(a.started(NOW).finished(NOW)).put(b.started(NOW))]
    out = group_sql(txs)
    rows = [(sql, params) for sql, params in out if sql is PUT_TASK]
    assert [(p[0], p[2]) for _, p in rows] == [(a.id, "done"), (b.id, "running")]
    assert [record_from_json(p[4]) for _, p in rows] == [a.started(NOW).finished(NOW), b.started(NOW)]
    kinds = ["row" if sql is PUT_TASK else "event" if "events" in sql else "delete" for sql, _ in out]
    assert kinds == ["event", "event", "delete", "row", "row"]
    assert sum(len(tx.sql()) for tx in txs) == len(out) + 3  # alone, each transaction writes every put


def test_a_group_writes_a_setting_once_at_its_last_put() -> None:
    """A burst of starts writes its module's sequence once: each setting only at its last put in the group,
    with its last value; other settings and statements stay, in order."""
    txs = [Tx().setting("seq:m:0", str(n)).put(rec(n)).setting(f"type:m:t{n % 2}", str(n)) for n in range(1, 6)]
    out = group_sql(txs)
    settings = [params for sql, params in out if sql is PUT_SETTING]
    assert settings == [("type:m:t0", "4"), ("seq:m:0", "5"), ("type:m:t1", "5")]
    assert [p[0] for sql, p in out if sql is PUT_TASK] == [rec(n).id for n in range(1, 6)]
    assert sum(len(tx.sql()) for tx in txs) == len(out) + 7  # alone, each transaction writes every put


async def test_a_grouped_write_leaves_what_the_transactions_one_by_one_leave(tmp_path: Path) -> None:
    grouped, single = Store(tmp_path / "g.sqlite3"), Store(tmp_path / "s.sqlite3")
    await grouped.open()
    await single.open()
    a, b = rec(1), rec(2)

    def txs() -> list[Tx]:
        return [Tx().put(a).setting("seq:m:0", "1"), Tx().put(b).setting("seq:m:0", "2"),
                Tx().put(a.started(NOW)).event(1, NOW, {}).setting("type:m:t", "a"), Tx().delete([b.id]),
                Tx().put(replace(b, state=TaskState.RUNNING)).setting("type:m:t", "b"),
                Tx().put(a.started(NOW).finished(NOW))]

    await asyncio.gather(*(grouped.commit(tx) for tx in txs()))  # one group
    for tx in txs():
        await single.commit(tx)
    await grouped.close()
    await single.close()
    states = []
    for name in ("g.sqlite3", "s.sqlite3"):
        again = Store(tmp_path / name)
        loaded = await again.open()
        states.append((sorted(loaded.tasks, key=lambda t: t.id), loaded.last_event_seq, loaded.settings))
        await again.close()
    assert states[0] == states[1]
    assert [t.state for t in states[0][0]] == [TaskState.DONE, TaskState.RUNNING]
    assert states[0][2] == {"seq:m:0": "2", "type:m:t": "b"}


async def test_a_failing_transition_fails_alone(tmp_path: Path) -> None:
    store = Store(tmp_path / "db.sqlite3")
    await store.open()
    good = store.commit(Tx().put(rec(1)))
    bad = store.commit(Tx().event(1, NOW, {}).event(1, NOW, {}))  # duplicate primary key
    other = store.commit(Tx().put(replace(rec(2), state=TaskState.RUNNING)))
    results = await asyncio.gather(good, bad, other, return_exceptions=True)
    assert results[0] is None and results[2] is None
    assert isinstance(results[1], Exception)
    await store.close()
    again = Store(tmp_path / "db.sqlite3")
    loaded = await again.open()
    assert {t.id for t in loaded.tasks} == {rec(1).id, rec(2).id}
    assert loaded.last_event_seq == 0  # the failed transaction left nothing behind
    await again.close()


async def test_corrupt_rows_are_skipped_not_fatal(tmp_path: Path) -> None:
    store = Store(tmp_path / "db.sqlite3")
    await store.open()
    await store.commit(Tx().put(rec(1)))
    corrupt = "INSERT INTO tasks(id, module, state, body) VALUES ('bad','m','done','{')"
    await store.commit(Tx(statements=[(corrupt, ())]))
    await store.close()
    again = Store(tmp_path / "db.sqlite3")
    loaded = await again.open()
    assert [t.id for t in loaded.tasks] == [rec(1).id]
    assert loaded.corrupt == ["bad"]
    await again.close()


async def test_a_store_locked_by_another_process_fails_its_writers_clearly_and_recovers(tmp_path: Path) -> None:
    """Another writer holds the database past the busy timeout: every pending write fails at once with a
    clear error (none is left unanswered), nothing half-done is kept, and the next write succeeds."""
    import sqlite3

    from taskward.errors import StoreUnavailable
    from taskward.store import Store, Tx

    store = Store(tmp_path / "db.sqlite3", synchronous="NORMAL", busy_timeout_ms=200)
    await store.open()
    other = sqlite3.connect(tmp_path / "db.sqlite3", isolation_level=None)
    other.execute("BEGIN IMMEDIATE")  # the lock
    try:
        futures = [store.submit(Tx().setting(f"k{i}", "v")) for i in range(3)]
        results = await asyncio.gather(*futures, return_exceptions=True)
        assert all(isinstance(r, StoreUnavailable) for r in results), results
        assert str(results[0]) == "the node's store cannot write now: database is locked"
    finally:
        other.execute("ROLLBACK")
        other.close()
    await store.commit(Tx().setting("after", "ok"))  # recovered
    await store.close()
    again = Store(tmp_path / "db.sqlite3")
    loaded = await again.open()
    await again.close()
    assert loaded.settings == {"after": "ok"}


async def test_events_after_any_uint64_are_read_without_error(tmp_path: Path) -> None:
    """``WatchEvents.after_sequence`` is a uint64: one past SQLite's integers (found by the gRPC fuzzer,
    where it was an UNKNOWN OverflowError) asks for what follows every event, which is nothing."""
    store = Store(tmp_path / "db.sqlite3")
    await store.open()
    try:
        await store.commit(Tx().event(1, NOW, {"n": 1}).event(2, NOW, {"n": 2}))
        assert [seq for seq, _ in await store.read_events(0, 10)] == [1, 2]
        assert await store.read_events(2**64 - 1, 10) == []
        assert await store.read_events(2**63 - 1, 10) == []
    finally:
        await store.close()
