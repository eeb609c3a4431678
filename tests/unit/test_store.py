"""The SQLite store on its own: round trips, group commit, failure isolation, restart."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

from taskward.model import ChildRef, TaskRecord, TaskState
from taskward.store import Store, Tx, record_from_json, record_to_json

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
