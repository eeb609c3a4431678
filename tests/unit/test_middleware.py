"""Executor middleware, in-process on the real TaskManager and SQLite store: every hook once per run,
in order, with the record and the transaction in flight; what a hook adds to it commits with the
transition; a raising middleware changes nothing."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from taskward import FinishInput, ProgressInput, RunInput, TaskContext, TaskMiddleware, task_middleware, task_type
from taskward.manager import TaskManager
from taskward.model import TaskState
from taskward.store import Store
from tests.support.managers import in_process_manager

Seen = list[tuple[str, str, str, int]]  # hook, task id, state seen, statements in the transaction


@task_type("mw", "steps")
async def steps(ctx: TaskContext, *, n: int = 2) -> None:
    for i in range(n):
        ctx.report_progress(i + 1, n)
        await asyncio.sleep(0)


@task_type("mw", "boom")
async def boom(ctx: TaskContext) -> None:
    raise RuntimeError("boom")


@task_type("mw", "slow", time_limit_s=0.05)
async def slow(ctx: TaskContext) -> None:
    await asyncio.sleep(30)


GATES: dict[str, tuple[asyncio.Event, asyncio.Event]] = {}  # key -> (three batches reported, release)


@task_type("mw", "gated")
async def gated(ctx: TaskContext, *, key: str) -> None:
    reported, release = GATES[key]
    for i in range(3):
        ctx.report_progress(i + 1, 10)
        await asyncio.sleep(0.01)
    reported.set()
    await release.wait()


@task_type("mw", "own-timeout")
async def own_timeout(ctx: TaskContext) -> None:
    raise TimeoutError("the body's own timeout")


class Recorder(TaskMiddleware):
    def __init__(self, name: str, seen: Seen) -> None:
        self.name, self.seen = name, seen

    def _note(self, hook: str, rec_id: str, state: TaskState, tx_len: int) -> None:
        self.seen.append((f"{self.name}.{hook}", rec_id, state.value, tx_len))

    def before_run(self, run: RunInput) -> None:
        self._note("before_run", run.record.id, run.record.state, len(run.tx.statements))
        run.tx.setting(f"probe:{run.record.id}", self.name)  # commits with the start, or not at all

    def on_progress(self, progress: ProgressInput) -> None:
        self._note("on_progress", progress.record.id, progress.record.state, len(progress.tx.statements))

    def on_completion(self, finish: FinishInput) -> None:
        self._note("on_completion", finish.record.id, finish.record.state, len(finish.tx.statements))

    def on_failure(self, finish: FinishInput) -> None:
        self._note("on_failure", finish.record.id, finish.record.state, len(finish.tx.statements))

    def after_run(self, finish: FinishInput) -> None:
        self._note("after_run", finish.record.id, finish.record.state, len(finish.tx.statements))


class Broken(TaskMiddleware):
    def before_run(self, run: RunInput) -> None:
        raise ValueError("a broken middleware")

    def after_run(self, finish: FinishInput) -> None:
        raise ValueError("a broken middleware")


SEEN: Seen = []


@task_middleware
class First(Recorder):
    def __init__(self) -> None:
        super().__init__("first", SEEN)


@task_middleware
class Second(Recorder):
    def __init__(self) -> None:
        super().__init__("second", SEEN)


@task_middleware
class AlsoBroken(Broken):
    pass


def new_manager(path: Path, concurrency: int = 16) -> TaskManager:
    SEEN.clear()
    return in_process_manager(path, sys.modules[__name__], concurrency=concurrency)


@pytest.fixture
async def manager(tmp_path: Path) -> AsyncIterator[TaskManager]:
    m = new_manager(tmp_path)
    await m.start()
    yield m
    await m.stop()


async def run_to_end(m: TaskManager, type_name: str, args: str = "") -> str:
    tid = await m.start_task("mw", type_name, args)
    await m.wait(tid, 10)
    return tid


def hooks(tid: str) -> list[str]:
    return [h for h, t, _, _ in SEEN if t == tid]


async def test_every_hook_once_per_run_in_order_with_record_and_tx(manager: TaskManager) -> None:
    assert manager.registry.middleware == [First, Second, AlsoBroken]  # marked classes, once each
    tid = await run_to_end(manager, "steps", '{"n": 2}')
    assert hooks(tid) == [
        "first.before_run", "second.before_run",
        "first.on_progress", "second.on_progress", "first.on_progress", "second.on_progress",
        "first.on_completion", "second.on_completion",
        "second.after_run", "first.after_run",  # after_* in reverse
    ]
    states = {h: s for h, t, s, _ in SEEN if t == tid}
    assert (states["first.before_run"], states["first.on_progress"], states["first.after_run"]) == (
        "running", "running", "done")
    assert all(n >= 1 for _, t, _, n in SEEN if t == tid)  # the transition's own statements are in the tx


async def test_failure_and_time_limit_hooks(manager: TaskManager) -> None:
    failed = await run_to_end(manager, "boom")
    assert hooks(failed) == ["first.before_run", "second.before_run", "first.on_failure", "second.on_failure",
                             "second.after_run", "first.after_run"]
    assert manager.table.records[failed].error == "boom"
    slow_id = await run_to_end(manager, "slow")
    assert manager.table.records[slow_id].error == "time limit of 0.05s exceeded"
    own = await run_to_end(manager, "own-timeout")
    assert manager.table.records[own].error == "the body's own timeout"  # not mistaken for the time limit


async def test_a_task_aborted_in_the_queue_never_ran(tmp_path: Path) -> None:
    m = new_manager(tmp_path, concurrency=1)
    await m.start()
    try:
        busy = await m.start_task("mw", "slow")
        queued = await m.start_task("mw", "steps")
        await m.abort(queued)
        await m.wait(queued, 5)
        assert hooks(queued) == ["first.on_failure", "second.on_failure"]  # no run: no before/after_run
        await m.wait(busy, 5)
    finally:
        await m.stop()


async def test_what_a_hook_adds_to_the_transaction_is_committed(tmp_path: Path) -> None:
    m = new_manager(tmp_path)
    await m.start()
    try:
        tid = await run_to_end(m, "steps")
    finally:
        await m.stop()
    store = Store(tmp_path / "db.sqlite3")
    loaded = await store.open()
    await store.close()
    assert loaded.settings[f"probe:{tid}"] == "second"  # both wrote it in the start transaction; the last won
    assert loaded.settings["type:mw:steps"]  # the built-in type stats middleware persisted its history


async def test_eta_comes_from_the_middleware_clocks(manager: TaskManager) -> None:
    reported, release = GATES["eta"] = (asyncio.Event(), asyncio.Event())
    tid = await manager.start_task("mw", "gated", '{"key": "eta"}')
    await reported.wait()
    eta = manager.view(tid).progress.eta_ms
    assert eta is not None and 0 < eta < 10_000  # 7 batches of ~10 ms to go
    release.set()
    await manager.wait(tid, 5)
    assert manager.view(tid).progress.eta_ms == 0


def test_a_hook_is_called_where_a_class_in_the_middleware_s_line_defines_it() -> None:
    """The chain looks up once which middleware overrides which hook: one inherited from a user's base
    class counts, one left as TaskMiddleware's no-op is not called, and a raising one is skipped."""
    from taskward.middleware import MiddlewareChain

    seen: list[str] = []

    class Base(TaskMiddleware):
        def on_progress(self, progress: ProgressInput) -> None:
            seen.append(f"{type(self).__name__}.on_progress")

    class Derived(Base):
        pass

    class Broken(TaskMiddleware):
        def on_progress(self, progress: ProgressInput) -> None:
            raise RuntimeError("broken")

    chain = MiddlewareChain([Derived(), Broken(), Base()])
    chain.on_progress(object())  # type: ignore[arg-type]  # the hooks above do not read it
    chain.before_run(object())  # type: ignore[arg-type]  # no middleware defines it: nothing runs
    assert seen == ["Derived.on_progress", "Base.on_progress"]
