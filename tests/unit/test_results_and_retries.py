"""Task results, retries with backoff and failing children, in-process on the real TaskManager and SQLite
store: what a body returns is stored with the task and survives a restart; a failed attempt is retried at
its time (after a restart too), counted, announced and abortable; a failed child fails its parent."""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from taskward import ChildFailed, ErrorInput, FinishInput, TaskContext, TaskMiddleware, task_middleware, task_type
from taskward.events import EventType, Subscription
from taskward.manager import TaskManager
from taskward.middleware.retry import RetryMiddleware, backoff_cap
from taskward.model import TaskRecord, TaskState
from taskward.registry import MAX_RESULT_BYTES, Registry
from tests.support.managers import in_process_manager

RUNS: dict[str, list[float]] = {}  # key -> wall-clock start of each attempt


class Flaky(Exception):
    pass


@task_type("rr", "value")
async def value(ctx: TaskContext, *, v: Any = None) -> Any:
    return v


@task_type("rr", "sync-value")
def sync_value(ctx: TaskContext, *, v: Any = None) -> Any:
    return v


@task_type("rr", "unstorable")
async def unstorable(ctx: TaskContext, *, what: str) -> Any:
    return {"set": {1, 2}, "nan": float("nan"), "big": "x" * MAX_RESULT_BYTES}[what]


@task_type("rr", "flaky", retries=3, retry_backoff=(0.02, 0.05), retry_on=(Flaky,))
async def flaky(ctx: TaskContext, *, key: str, fail_times: int, other: bool = False) -> str:
    RUNS.setdefault(key, []).append(time.time())
    if len(RUNS[key]) <= fail_times:
        raise (ValueError if other else Flaky)(f"attempt {len(RUNS[key])} failed")
    return f"ok after {len(RUNS[key])}"


@task_type("rr", "slow-retry", retries=1, retry_backoff=(0.6, 0.6))
async def slow_retry(ctx: TaskContext, *, key: str) -> str:
    RUNS.setdefault(key, []).append(time.time())
    if len(RUNS[key]) == 1:
        raise RuntimeError("first attempt fails")
    return "second attempt"


@task_type("rr", "parent")
async def parent(ctx: TaskContext, *, child_fails: bool, catch: bool = False) -> Any:
    child = await ctx.spawn_child("child", fails=child_fails)
    try:
        return {"child said": await ctx.wait_child(child)}
    except ChildFailed as exc:
        if not catch:
            raise
        return {"caught": exc.error, "child_id": exc.child_id == child}


@task_type("rr", "child")
async def child(ctx: TaskContext, *, fails: bool) -> int:
    if fails:
        raise RuntimeError("disk full")
    return 42


HOOKS: list[tuple[str, str, int]] = []


@task_type("rr", "steered", retries=5, retry_backoff=(50.0, 50.0))
async def steered(ctx: TaskContext, *, key: str, veto: bool) -> int:
    RUNS.setdefault(key, []).append(time.time())
    if len(RUNS[key]) == 1:
        raise RuntimeError("try again")
    return len(RUNS[key])


@task_middleware
class Watch(TaskMiddleware):
    def on_error(self, error: ErrorInput) -> None:
        HOOKS.append(("on_error", error.record.id, error.record.attempt))
        if error.record.type == "steered":  # a later middleware changes the built-in decision
            assert error.decision.delay_s is not None and 0 <= error.decision.delay_s <= 50
            error.no_retry() if json.loads(error.record.args)["veto"] else error.retry_in(0.01)

    def after_run(self, finish: FinishInput) -> None:
        HOOKS.append(("after_run", finish.record.id, finish.record.attempt))


def new_manager(path: Path) -> TaskManager:
    return in_process_manager(path, sys.modules[__name__])


@pytest.fixture
async def manager(tmp_path: Path) -> AsyncIterator[TaskManager]:
    m = new_manager(tmp_path)
    await m.start()
    yield m
    await m.stop()


async def finish(m: TaskManager, type_name: str, **args: Any) -> TaskRecord:
    tid = await m.start_task("rr", type_name, json.dumps(args))
    return (await m.wait(tid, 10)).record


@pytest.mark.parametrize("body", ["value", "sync-value"])
@pytest.mark.parametrize("v", [{"rows": 3, "tables": ["a", "ü"]}, [1, 2.5], "text", 7, True, None])
async def test_a_return_value_is_the_result(manager: TaskManager, body: str, v: Any) -> None:
    rec = await finish(manager, body, v=v)
    assert (rec.state, json.loads(rec.result)) == (TaskState.DONE, v)


async def test_the_result_survives_a_restart(tmp_path: Path) -> None:
    m = new_manager(tmp_path)
    await m.start()
    tid = (await finish(m, "value", v={"kept": True})).id
    await m.stop()
    again = new_manager(tmp_path)
    await again.start()
    try:
        assert json.loads((await again.status(tid)).record.result) == {"kept": True}
    finally:
        await again.stop()


@pytest.mark.parametrize(("what", "error"), [
    ("set", "the task's return value is not JSON-serialisable: Object of type set is not JSON serializable"),
    ("nan", "the task's return value is not JSON-serialisable: Out of range float values are not JSON compliant"),
    ("big", f"the task's return value is too large: {MAX_RESULT_BYTES + 2} bytes of JSON > {MAX_RESULT_BYTES}"),
])
async def test_a_result_that_cannot_be_stored_fails_the_task_saying_why(manager: TaskManager, what: str,
                                                                         error: str) -> None:
    rec = await finish(manager, "unstorable", what=what)
    assert (rec.state, rec.error, rec.result) == (TaskState.FAILED, error, "")


async def test_a_failed_attempt_is_retried_counted_and_announced(manager: TaskManager) -> None:
    HOOKS.clear()
    seen: list[Any] = []
    sub = asyncio.create_task(collect(manager.events.subscribe(live_only=True), seen, until=EventType.COMPLETED))
    rec = await finish(manager, "flaky", key="twice", fail_times=2)
    async with asyncio.timeout(5):
        await sub
    assert (rec.state, json.loads(rec.result), rec.attempt, rec.max_attempts) == (
        TaskState.DONE, "ok after 3", 3, 4)
    retrying = [e for e in seen if e.type is EventType.RETRYING]
    assert [(e.attempt, e.error) for e in retrying] == [(2, "attempt 1 failed"), (3, "attempt 2 failed")]
    starts = RUNS["twice"]
    for e, started in zip(retrying, starts[1:], strict=True):  # each retry ran at its time, not earlier
        assert e.next_attempt_at <= started + 0.002
        assert e.next_attempt_at - e.time <= backoff_cap(e.attempt - 1, 0.02, 0.05) + 0.002
    assert [h for h in HOOKS if h[1] == rec.id] == [
        ("on_error", rec.id, 1), ("after_run", rec.id, 2), ("on_error", rec.id, 2), ("after_run", rec.id, 3),
        ("after_run", rec.id, 3)]  # after_run once per attempt


async def collect(sub: Subscription, into: list[Any], *, until: EventType) -> None:
    async for ev in sub.events():
        into.append(ev)
        if ev.type is until:
            return


async def test_retries_run_out_and_only_matching_errors_retry(manager: TaskManager) -> None:
    exhausted = await finish(manager, "flaky", key="always", fail_times=99)
    assert (exhausted.state, exhausted.error, exhausted.attempt, len(RUNS["always"])) == (
        TaskState.FAILED, "attempt 4 failed", 4, 4)
    other = await finish(manager, "flaky", key="other", fail_times=1, other=True)
    assert (other.state, other.error, other.attempt, len(RUNS["other"])) == (
        TaskState.FAILED, "attempt 1 failed", 1, 1)
    plain = await finish(manager, "value", v=1)
    assert (plain.attempt, plain.max_attempts) == (1, 1)


def test_backoff_is_capped_exponential_with_full_jitter() -> None:
    assert [backoff_cap(a, 1.0, 60.0) for a in (1, 2, 3, 6, 7, 100)] == [1, 2, 4, 32, 60, 60]
    draws: list[tuple[float, float]] = []
    middleware = RetryMiddleware(uniform=lambda lo, hi: draws.append((lo, hi)) or hi)
    spec = Registry()
    spec.load_module(sys.modules[__name__])
    flaky_spec = spec.get("rr", "flaky")
    rec = TaskRecord(id="0" * 8 + "-0000-4000-8000-" + "0" * 12, module="rr", type="flaky",
                     created_at=__import__("datetime").datetime.now(), attempt=2, max_attempts=4)
    error = ErrorInput(record=rec, spec=flaky_spec, exception=Flaky("x"), error="x")
    middleware.on_error(error)
    assert (draws, error.decision.delay_s) == ([(0.0, 0.04)], 0.04)  # uniform in [0, min(max, initial * 2**1)]


async def first_retry(m: TaskManager, key: str) -> tuple[str, float]:
    """Start a ``slow-retry`` task and return once its retry is scheduled: (id, when it is due)."""
    sub = m.events.subscribe(live_only=True)
    tid = await m.start_task("rr", "slow-retry", json.dumps({"key": key}))
    async with asyncio.timeout(5):
        async for ev in sub.events():
            if ev.type is EventType.RETRYING and ev.task_id == tid:
                return tid, ev.next_attempt_at
    raise AssertionError("unreachable")


async def test_abort_cancels_a_pending_retry(manager: TaskManager) -> None:
    tid, _ = await first_retry(manager, "abort")
    await manager.abort(tid)
    rec = (await manager.wait(tid, 0.3)).record  # ends now, not when its retry was due (0.6 s)
    assert (rec.state, rec.error, rec.aborted, rec.next_attempt_at) == (TaskState.FAILED, "aborted", True, None)
    await asyncio.sleep(0.8)  # past its retry time: it must not run again
    assert len(RUNS["abort"]) == 1


async def test_a_pending_retry_survives_a_restart_and_runs_at_its_time(tmp_path: Path) -> None:
    m = new_manager(tmp_path)
    await m.start()
    tid, due = await first_retry(m, "restart")
    await m.stop()
    again = new_manager(tmp_path)
    await again.start()
    try:
        rec = (await again.wait(tid, 5)).record
    finally:
        await again.stop()
    assert (rec.state, json.loads(rec.result), rec.attempt) == (TaskState.DONE, "second attempt", 2)
    assert len(RUNS["restart"]) == 2 and RUNS["restart"][1] >= due


async def test_wait_child_returns_the_result_or_raises_child_failed(manager: TaskManager) -> None:
    ok = await finish(manager, "parent", child_fails=False)
    assert json.loads(ok.result) == {"child said": 42}
    failed = await finish(manager, "parent", child_fails=True)
    child_id = manager.table.records[failed.id].children[0].task_id
    assert (failed.state, failed.error) == (TaskState.FAILED, f"child {child_id} (rr:child) failed: disk full")
    caught = await finish(manager, "parent", child_fails=True, catch=True)
    assert (caught.state, json.loads(caught.result)) == (TaskState.DONE, {"caught": "disk full", "child_id": True})


async def test_a_later_middleware_changes_or_vetoes_the_retry(manager: TaskManager) -> None:
    quick = await finish(manager, "steered", key="quick", veto=False)
    assert (quick.state, json.loads(quick.result), quick.attempt) == (TaskState.DONE, 2, 2)
    assert RUNS["quick"][1] - RUNS["quick"][0] < 1.0  # 0.01 s, not up to 50 s
    vetoed = await finish(manager, "steered", key="vetoed", veto=True)
    assert (vetoed.state, vetoed.error, vetoed.attempt, len(RUNS["vetoed"])) == (TaskState.FAILED, "try again", 1, 1)
