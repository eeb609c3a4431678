"""``ctx.spawn_child_sync`` / ``ctx.wait_child_sync``: children for synchronous bodies (here in the node's
threads; a body in a worker process gets the same two calls, tests/e2e/test_process_executor.py)."""

from __future__ import annotations

import json
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from taskward.context import TaskContext
from taskward.manager import TaskManager
from taskward.model import TaskRecord, TaskState
from taskward.registry import task_type
from tests.support.managers import in_process_manager


@task_type("sc", "leaf")
async def leaf(ctx: TaskContext, *, n: int, fail: bool = False) -> int:
    if fail:
        raise RuntimeError(f"leaf {n} broke")
    return n * n


@task_type("sc", "parent")
def parent(ctx: TaskContext, *, children: int, fail_at: int = -1) -> list[int]:
    """Synchronous, in a worker thread: starts its children, then waits for each."""
    ids = [ctx.spawn_child_sync("leaf", n=i, fail=i == fail_at) for i in range(children)]
    return [ctx.wait_child_sync(i) for i in ids]


@task_type("sc", "misuse")
async def misuse(ctx: TaskContext) -> None:
    """An async body must await ``spawn_child``: the blocking form would wait for the loop it blocks."""
    ctx.spawn_child_sync("leaf", n=1)


@pytest.fixture
async def manager(tmp_path: Path) -> AsyncIterator[TaskManager]:
    m = in_process_manager(tmp_path, sys.modules[__name__])
    await m.start()
    yield m
    await m.stop()


async def run(m: TaskManager, type_name: str, **args: object) -> TaskRecord:
    tid = await m.start_task("sc", type_name, json.dumps(args))
    return (await m.wait(tid, 10)).record


async def test_a_synchronous_body_starts_and_waits_for_children(manager: TaskManager) -> None:
    rec = await run(manager, "parent", children=3)
    assert (rec.state, json.loads(rec.result), len(rec.children)) == (TaskState.DONE, [0, 1, 4], 3)


async def test_a_failed_child_raises_child_failed_in_the_waiting_thread(manager: TaskManager) -> None:
    rec = await run(manager, "parent", children=2, fail_at=1)
    failed = rec.children[1].task_id
    assert (rec.state, rec.error) == (TaskState.FAILED, f"child {failed} (sc:leaf) failed: leaf 1 broke")


async def test_the_blocking_forms_refuse_to_run_on_the_event_loop(manager: TaskManager) -> None:
    rec = await run(manager, "misuse")
    assert (rec.state, rec.error, rec.children) == (
        TaskState.FAILED, "spawn_child_sync and wait_child_sync are for synchronous bodies: an async body awaits "
        "ctx.spawn_child / ctx.wait_child", ())
