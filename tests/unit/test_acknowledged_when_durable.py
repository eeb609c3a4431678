"""A start is answered only from what is committed: a repeat of an idempotency key waits for its first
start's commit, never answers an id a crash could take back, and a new task (or child) is seen only once
durable. In-process, on the real TaskManager and SQLite store, whose writer is held back as a slow or
failing disk would."""

from __future__ import annotations

import asyncio
import sqlite3
import sys
import threading
from pathlib import Path

import pytest

from taskward import TaskContext, task_type
from taskward.errors import StoreUnavailable, TaskNotFound
from taskward.manager import TaskManager
from taskward.store import Store, Tx
from tests.support.managers import in_process_manager

HOLD_S = 0.3  # how long a held commit is shown not to have been answered


@task_type("ack", "noop")
async def noop(ctx: TaskContext, *, n: int = 0) -> None:
    return None


class SlowDisk(Store):
    """The real store, whose writer can be held before a write, and told to fail its next writes."""

    def __init__(self, path: Path) -> None:
        super().__init__(path, synchronous="NORMAL")
        self.gate = threading.Event()
        self.gate.set()
        self.holding = threading.Event()
        self.refuse = 0

    def hold(self) -> None:
        self.holding.clear()
        self.gate.clear()

    def _write_batch(self, txs: list[Tx]) -> list[Exception | None]:
        if not self.gate.is_set():
            self.holding.set()
            self.gate.wait(10)
        if self.refuse:
            self.refuse -= 1
            raise sqlite3.OperationalError("disk I/O error")
        return super()._write_batch(txs)


async def held(store: SlowDisk) -> None:
    assert await asyncio.to_thread(store.holding.wait, 5), "the store never got the write"


async def durable_ids(path: Path) -> set[str]:
    again = Store(path)
    loaded = await again.open()
    await again.close()
    return {r.id for r in loaded.tasks}


async def started(tmp_path: Path) -> tuple[TaskManager, SlowDisk]:
    store = SlowDisk(tmp_path / "db.sqlite3")
    m = in_process_manager(tmp_path, sys.modules[__name__], store=store)
    await m.start()
    return m, store


async def test_a_repeated_key_is_answered_only_once_the_first_start_committed(tmp_path: Path) -> None:
    m, store = await started(tmp_path)
    try:
        store.hold()
        first = asyncio.ensure_future(m.start_task("ack", "noop", '{"n": 1}', idempotency_key="k"))
        await held(store)
        repeat = asyncio.ensure_future(m.start_task("ack", "noop", '{"n": 1}', idempotency_key="k"))
        done, _ = await asyncio.wait({first, repeat}, timeout=HOLD_S)
        assert done == set(), "a start was answered while its record was not durable"
        assert m.list_tasks("ack")[0] == []  # nor is the task seen
        store.gate.set()
        first_id, repeat_id = await asyncio.gather(first, repeat)
        assert first_id == repeat_id
        assert (await m.status(first_id, keep=True)).record.id == first_id
        assert [r.id for r in m.list_tasks("ack")[0]] == [first_id]
    finally:
        store.gate.set()
        await m.stop()
    assert await durable_ids(tmp_path / "db.sqlite3") == {first_id}


async def test_a_repeat_of_a_failed_first_start_never_gets_its_id(tmp_path: Path) -> None:
    """The first start's commit fails: the repeat, which waited for it, starts anew, and what it answers is
    on disk (the first's id never was)."""
    m, store = await started(tmp_path)
    try:
        store.hold()
        first = asyncio.ensure_future(m.start_task("ack", "noop", '{"n": 2}', idempotency_key="f"))
        await held(store)
        repeat = asyncio.ensure_future(m.start_task("ack", "noop", '{"n": 2}', idempotency_key="f"))
        done, _ = await asyncio.wait({repeat}, timeout=HOLD_S)
        assert done == set()
        store.refuse = 1
        store.gate.set()
        with pytest.raises(StoreUnavailable):
            await first
        repeat_id = await repeat
        assert [r.id for r in m.list_tasks("ack")[0]] == [repeat_id]
        again = await m.start_task("ack", "noop", '{"n": 2}', idempotency_key="f")
        assert again == repeat_id
    finally:
        store.gate.set()
        await m.stop()
    assert await durable_ids(tmp_path / "db.sqlite3") == {repeat_id}


async def test_a_start_whose_caller_went_away_still_runs(tmp_path: Path) -> None:
    """The caller is cancelled while the commit is held: the commit goes on, the task is then in the table
    and runs (it is durable, so after a restart it would run too), and a repeat of its key gets its id."""
    m, store = await started(tmp_path)
    tid = "5f0e2a43-9a51-4b8e-8d0e-3f1c2b4a6d77"  # chosen by the first caller (as cron and the leader do)
    try:
        store.hold()
        first = asyncio.ensure_future(m.start_task("ack", "noop", '{"n": 3}', idempotency_key="c", task_id=tid))
        await held(store)
        first.cancel()
        repeat = asyncio.ensure_future(m.start_task("ack", "noop", '{"n": 3}', idempotency_key="c"))
        store.gate.set()
        assert await repeat == tid
        assert (await m.wait(tid, 5)).record.state.value == "done"
    finally:
        store.gate.set()
        await m.stop()
    assert await durable_ids(tmp_path / "db.sqlite3") == {tid}


async def test_a_chosen_id_being_started_is_in_use(tmp_path: Path) -> None:
    """Two starts naming the same id (with different keys): the second is refused while the first commits,
    rather than overwriting its record."""
    m, store = await started(tmp_path)
    tid = "0c6bd1a6-6a8e-4f0a-9d3c-2a6a1f0d7e11"
    try:
        store.hold()
        first = asyncio.ensure_future(m.start_task("ack", "noop", "{}", idempotency_key="a", task_id=tid))
        await held(store)
        with pytest.raises(Exception, match=f"task id {tid} is already in use"):
            await m.start_task("ack", "noop", "{}", idempotency_key="b", task_id=tid)
        store.gate.set()
        assert await first == tid
    finally:
        store.gate.set()
        await m.stop()


async def test_an_unregistered_task_is_gone_only_once_durable(tmp_path: Path) -> None:
    m, store = await started(tmp_path)
    try:
        tid = await m.start_task("ack", "noop", "{}")  # a user task: kept for its ttl once done
        await m.wait(tid, 5)
        store.hold()
        gone = asyncio.ensure_future(m.unregister_tree(tid))
        await held(store)
        assert (await m.wait(tid, 0)).record.id == tid  # still there: a crash now would keep it
        store.gate.set()
        assert await gone == 1
        with pytest.raises(TaskNotFound):
            await m.wait(tid, 0)
    finally:
        store.gate.set()
        await m.stop()
