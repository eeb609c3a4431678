"""Readers see a transition only once it is durable: while the store holds a commit back, status,
wait and list still show the task as it was (a crash then would leave it so), in-process on the real
TaskManager and SQLite store."""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
import threading
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from taskward import TaskContext, task_type
from taskward.errors import WaitTimeout
from taskward.manager import TaskManager
from taskward.model import TaskState
from taskward.store import Store, Tx
from tests.support.managers import in_process_manager

GATES: dict[str, tuple[asyncio.Event, asyncio.Event]] = {}  # key -> (running, release)


@task_type("vis", "gated")
async def gated(ctx: TaskContext, *, key: str) -> None:
    running, release = GATES[key]
    running.set()
    await release.wait()


class HeldStore(Store):
    """The real store, whose writer thread can be held before it writes (as a slow disk would)."""

    def __init__(self, path: Path) -> None:
        super().__init__(path, synchronous="NORMAL")
        self.open_gate = threading.Event()
        self.open_gate.set()
        self.waiting = threading.Event()

    def _write_batch(self, txs: list[Tx]) -> list[Exception | None]:
        if not self.open_gate.is_set():
            self.waiting.set()
            self.open_gate.wait(10)
        return super()._write_batch(txs)


@contextlib.asynccontextmanager
async def finishing(tmp_path: Path, key: str) -> AsyncIterator[tuple[TaskManager, HeldStore, str]]:
    """A task whose body has ended and whose completion the store holds back from the disk."""
    store = HeldStore(tmp_path / "db.sqlite3")
    m = in_process_manager(tmp_path, sys.modules[__name__], store=store)
    await m.start()
    try:
        running, release = GATES[key] = (asyncio.Event(), asyncio.Event())
        tid = await m.start_task("vis", "gated", json.dumps({"key": key}))
        async with asyncio.timeout(5):
            await running.wait()
        store.open_gate.clear()
        release.set()  # the body ends; its completion waits for the disk
        assert await asyncio.to_thread(store.waiting.wait, 5)
        yield m, store, tid
    finally:
        store.open_gate.set()
        await m.stop()


async def test_a_completion_is_seen_only_once_committed(tmp_path: Path) -> None:
    async with finishing(tmp_path, "c") as (m, store, tid):
        assert (await m.status(tid)).record.state is TaskState.RUNNING
        with pytest.raises(WaitTimeout):
            await m.wait(tid, 0.05)
        assert [r.state for r in m.list_tasks("vis")[0]] == [TaskState.RUNNING]
        waiter = asyncio.ensure_future(m.wait(tid, 5))
        store.open_gate.set()
        assert (await waiter).record.state is TaskState.DONE


async def test_an_abort_during_a_completion_does_not_undo_it(tmp_path: Path) -> None:
    """The abort finds the task running in memory while its completion waits for the disk; what ends up
    on disk must still be the completion (an older record written after it would revive the task)."""
    async with finishing(tmp_path, "a") as (m, store, tid):
        abort = asyncio.ensure_future(m.abort(tid))
        await asyncio.sleep(0)
        store.open_gate.set()
        await abort
        assert (await m.wait(tid, 5)).record.state is TaskState.DONE
    reopened = Store(tmp_path / "db.sqlite3")
    loaded = await reopened.open()
    await reopened.close()
    assert {r.id: r.state for r in loaded.tasks}[tid] is TaskState.DONE


class RefusingStore(Store):
    """The real store, which can be told to refuse its next writes as a locked or full disk would."""

    def __init__(self, path: Path) -> None:
        super().__init__(path, synchronous="NORMAL")
        self.refuse = 0

    def _write_batch(self, txs: list[Tx]) -> list[Exception | None]:
        if self.refuse:
            self.refuse -= 1
            import sqlite3

            raise sqlite3.OperationalError("disk I/O error")
        return super()._write_batch(txs)


async def test_a_completion_the_store_refuses_is_recorded_once_it_can_be(tmp_path: Path) -> None:
    """How a run ended is written again until the store takes it: the task does not stay running, and the
    executor's slot goes on to the next task (concurrency 1)."""
    store = RefusingStore(tmp_path / "db.sqlite3")
    m = in_process_manager(tmp_path, sys.modules[__name__], store=store, concurrency=1)
    await m.start()
    try:
        running, release = GATES["refused"] = (asyncio.Event(), asyncio.Event())
        first = await m.start_task("vis", "gated", json.dumps({"key": "refused"}))
        await running.wait()
        store.refuse = 2  # the completion's first two writes fail
        release.set()
        assert (await m.wait(first, 5)).record.state is TaskState.DONE
        assert store.refuse == 0
        _, release2 = GATES["next"] = (asyncio.Event(), asyncio.Event())
        release2.set()
        second = await m.start_task("vis", "gated", json.dumps({"key": "next"}))
        assert (await m.wait(second, 5)).record.state is TaskState.DONE  # the slot is free again
    finally:
        await m.stop()
    again = Store(tmp_path / "db.sqlite3")
    loaded = await again.open()
    await again.close()
    assert {r.id: r.state for r in loaded.tasks} == {first: TaskState.DONE, second: TaskState.DONE}
