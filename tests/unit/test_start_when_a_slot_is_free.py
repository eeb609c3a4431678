"""A start that finds an executor slot free is made running by its own transaction: one transition
before the body instead of two. One that finds every slot taken waits ``created`` and is begun by a
second transaction when its turn comes. Either way nothing is seen or run before it is durable, and a
transaction the store refuses gives its slot back. In-process, on the real TaskManager and SQLite store,
with the writer recording what each transaction wrote."""

from __future__ import annotations

import asyncio
import contextlib
import json
import sqlite3
import sys
import threading
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from taskward import TaskContext, task_type
from taskward.errors import StoreUnavailable
from taskward.manager import TaskManager
from taskward.model import TaskRecord, TaskState
from taskward.store import PUT_TASK, Store, Tx
from tests.support.managers import in_process_manager

GATES: dict[str, tuple[asyncio.Event, asyncio.Event]] = {}  # key -> (running, release)


@task_type("slots", "gated")
async def gated(ctx: TaskContext, *, key: str) -> None:
    running, release = GATES[key]
    running.set()
    await release.wait()


class RecordingStore(Store):
    """The real store; remembers, per transaction written, the states of the task rows and the event
    types it held, and can refuse the next writes (as a full disk would)."""

    def __init__(self, path: Path) -> None:
        super().__init__(path, synchronous="NORMAL")
        self.written: list[tuple[dict[str, TaskState], list[str]]] = []
        self.refuse = 0
        self.refuse_begin: set[str] = set()  # tasks whose next `running` row is refused once
        self.open_gate = threading.Event()  # cleared: the writer holds the next write (a slow disk)
        self.open_gate.set()
        self.held = threading.Event()

    def _write_batch(self, txs: list[Tx]) -> list[Exception | None]:
        if not self.open_gate.is_set():
            self.held.set()
            self.open_gate.wait(10)
        begins = {p[0].id for tx in txs for sql, p in tx.statements
                  if sql is PUT_TASK and p[0].state is TaskState.RUNNING} & self.refuse_begin
        if self.refuse or begins:
            self.refuse = max(0, self.refuse - 1)
            self.refuse_begin -= begins
            raise sqlite3.OperationalError("disk I/O error")
        for tx in txs:
            rows: dict[str, TaskState] = {}
            events: list[str] = []
            for sql, params in tx.statements:
                if sql is PUT_TASK:
                    rec: TaskRecord = params[0]
                    rows[rec.id] = rec.state
                elif sql.startswith("INSERT INTO events"):
                    events.append(json.loads(params[2])["type"])
            self.written.append((rows, events))
        return super()._write_batch(txs)

    def history(self, task_id: str) -> list[tuple[TaskState, list[str]]]:
        """Each transaction that wrote ``task_id``'s row: the state it wrote and the events with it."""
        return [(rows[task_id], events) for rows, events in self.written if task_id in rows]


@contextlib.asynccontextmanager
async def one_slot(tmp_path: Path) -> AsyncIterator[tuple[TaskManager, RecordingStore]]:
    """A started manager with one executor slot on a recording store; stopped (the disk let go) after."""
    store = RecordingStore(tmp_path / "db.sqlite3")
    m = in_process_manager(tmp_path, sys.modules[__name__], store=store, concurrency=1)
    await m.start()
    try:
        yield m, store
    finally:
        store.open_gate.set()
        await m.stop()


def gate(key: str) -> tuple[asyncio.Event, asyncio.Event]:
    GATES[key] = (asyncio.Event(), asyncio.Event())
    return GATES[key]


async def test_a_start_on_a_free_slot_is_running_when_it_commits(tmp_path: Path) -> None:
    async with one_slot(tmp_path) as (m, store):
        running, release = gate("free")
        tid = await m.start_task("slots", "gated", json.dumps({"key": "free"}))
        assert (await m.status(tid)).record.state is TaskState.RUNNING  # running as soon as answered
        async with asyncio.timeout(5):
            await running.wait()
        assert store.history(tid) == [(TaskState.RUNNING, ["task.started"])]  # never written as `created`
        release.set()
        assert (await m.wait(tid, 5)).record.state is TaskState.DONE
        assert [state for state, _ in store.history(tid)] == [TaskState.RUNNING, TaskState.DONE]


async def test_a_start_while_every_slot_is_busy_waits_created_and_is_begun_in_turn(tmp_path: Path) -> None:
    async with one_slot(tmp_path) as (m, store):
        first_running, first_release = gate("busy-1")
        second_running, second_release = gate("busy-2")
        await m.start_task("slots", "gated", json.dumps({"key": "busy-1"}))
        second = await m.start_task("slots", "gated", json.dumps({"key": "busy-2"}))
        await first_running.wait()
        assert (await m.status(second)).record.state is TaskState.CREATED
        assert m.executor.queue_depth() == 1
        assert store.history(second) == [(TaskState.CREATED, [])]
        first_release.set()
        async with asyncio.timeout(5):
            await second_running.wait()
        assert store.history(second) == [(TaskState.CREATED, []), (TaskState.RUNNING, ["task.started"])]
        assert m.executor.queue_depth() == 0
        second_release.set()
        assert (await m.wait(second, 5)).record.state is TaskState.DONE


async def test_a_start_the_store_refuses_gives_its_slot_back(tmp_path: Path) -> None:
    """The refused task never existed: not listed, not run, its slot free for the next start (concurrency 1)."""
    async with one_slot(tmp_path) as (m, store):
        gate("refused")
        store.refuse = 1
        with pytest.raises(StoreUnavailable):
            await m.start_task("slots", "gated", json.dumps({"key": "refused"}))
        assert m.list_tasks("slots")[0] == []
        assert not m.executor.running_ids
        running, release = gate("after")
        tid = await m.start_task("slots", "gated", json.dumps({"key": "after"}))
        async with asyncio.timeout(5):
            await running.wait()  # the one slot was given back: this start claimed it
        assert store.history(tid) == [(TaskState.RUNNING, ["task.started"])]
        assert not GATES["refused"][0].is_set()
        release.set()
        assert (await m.wait(tid, 5)).record.state is TaskState.DONE


async def test_a_queued_start_the_store_refuses_to_begin_is_begun_once_it_can_be(tmp_path: Path) -> None:
    """A queued task whose `running` transition fails is begun again until the store takes it; it neither
    stays `created` for good nor costs the executor its slot."""
    async with one_slot(tmp_path) as (m, store):
        first_running, first_release = gate("q-1")
        _, second_release = gate("q-2")
        first = await m.start_task("slots", "gated", json.dumps({"key": "q-1"}))
        second = await m.start_task("slots", "gated", json.dumps({"key": "q-2"}))
        await first_running.wait()
        second_release.set()
        store.refuse_begin = {second}  # the second's `running` is refused once...
        first_release.set()
        assert (await m.wait(first, 5)).record.state is TaskState.DONE
        assert (await m.wait(second, 5)).record.state is TaskState.DONE  # ...and taken when written again
        assert store.refuse_begin == set()
        assert [state for state, _ in store.history(second)] == [TaskState.CREATED, TaskState.RUNNING, TaskState.DONE]


async def test_a_slot_is_free_once_its_body_ends_while_how_it_ended_is_written(tmp_path: Path) -> None:
    """The slot bounds bodies at work: the next queued task is begun while the previous one's completion
    is still being written (concurrency 1, the disk holding that write)."""
    async with one_slot(tmp_path) as (m, store):
        first_running, first_release = gate("w-1")
        second_running, second_release = gate("w-2")
        first = await m.start_task("slots", "gated", json.dumps({"key": "w-1"}))
        second = await m.start_task("slots", "gated", json.dumps({"key": "w-2"}))
        await first_running.wait()
        assert m.executor.queue_depth() == 1
        store.open_gate.clear()
        first_release.set()  # the first body ends; its completion waits for the disk
        assert await asyncio.to_thread(store.held.wait, 5)
        assert m.executor.queue_depth() == 0  # the second left the queue as the body ended: its begin is on its way
        assert (await m.status(first)).record.state is TaskState.RUNNING  # its end is not durable yet
        assert (await m.status(second)).record.state is TaskState.CREATED
        store.open_gate.set()
        async with asyncio.timeout(5):
            await second_running.wait()
        second_release.set()
        assert (await m.wait(first, 5)).record.state is TaskState.DONE
        assert (await m.wait(second, 5)).record.state is TaskState.DONE
