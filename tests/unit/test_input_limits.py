"""Input limits (``taskward.limits``): JSON nesting and non-finite numbers are refused with a message that
names the limit, progress must be finite, trees stop at ``MAX_TREE_DEPTH`` levels, and every walk over a
tree is iterative, so no depth anywhere costs a ``RecursionError``."""

from __future__ import annotations

import asyncio
import json
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from taskward import TaskContext, limits, task_type
from taskward.errors import InvalidArgument
from taskward.model import (
    ChildRef,
    TaskRecord,
    TaskState,
    descendants,
    fold_drops,
    rolled_up_progress,
    subtree_failed,
)
from taskward.registry import Registry, ResultError, encode_result
from taskward.store import Store
from tests.support.managers import in_process_manager

DEEP = 10_000
LIMIT_TEXT = f"the limit is {limits.MAX_JSON_DEPTH} levels of arrays and objects"
GATES: dict[str, tuple[asyncio.Event, asyncio.Event]] = {}  # gate -> (the deepest level runs, release it)


@task_type("lim", "takes")
async def takes(ctx: TaskContext, *, value: Any = None) -> None:
    return None


@task_type("lim", "chain")
async def chain(ctx: TaskContext, *, depth: int, gate: str) -> str:
    """A chain of ``depth`` descendants; the deepest one that exists says so and waits for ``gate``, then the
    refusal (or ``leaf``) comes back up as every level's result."""
    outcome = "leaf"
    if depth > 0:
        try:
            child = await ctx.spawn_child("chain", depth=depth - 1, gate=gate)
        except InvalidArgument as exc:
            outcome = exc.message
        else:
            return str(await ctx.wait_child(child))
    reached, release = GATES[gate]
    reached.set()
    await release.wait()
    return outcome


BAD_PROGRESS: dict[str, tuple[Any, Any]] = {"nan": (float("nan"), 1), "inf": (1, float("inf")), "negative": (-1, 2),
                                             "huge": (1, 2.0**60), "text": ("x", 2)}


@task_type("lim", "reports")
async def reports(ctx: TaskContext, *, case: str) -> str:
    try:
        ctx.report_progress(*BAD_PROGRESS[case])
    except InvalidArgument as exc:
        return exc.message
    return "accepted"


def nested(depth: int) -> str:
    return "[" * depth + "]" * depth


def test_depth_is_counted_without_parsing_and_ignores_strings() -> None:
    assert limits.json_depth('{"a": [1, {"b": "[[[{{{"}], "c": "\\"[["}') == 3
    assert limits.json_depth("17") == 0
    assert limits.json_depth(nested(DEEP)) == DEEP


@pytest.mark.parametrize(("text", "message"), [
    (nested(DEEP), f"args nested {DEEP} levels deep: {LIMIT_TEXT}"),
    ('{"x": NaN}', "args are not valid JSON: NaN is not a JSON number (only finite numbers are accepted)"),
    ('{"x": [Infinity]}', "args are not valid JSON: Infinity is not a JSON number (only finite numbers are accepted)"),
    ('{"x": -Infinity}', "args are not valid JSON: -Infinity is not a JSON number (only finite numbers are accepted)"),
    ('{"x": 1e400}', "args are not valid JSON: number 1e400 is out of range (only finite numbers are accepted)"),
])
def test_json_from_outside_is_refused_naming_why(text: str, message: str) -> None:
    with pytest.raises(InvalidArgument) as err:
        limits.loads(text, "args")
    assert err.value.message == message


def test_json_at_the_limit_is_accepted() -> None:
    at_limit = nested(limits.MAX_JSON_DEPTH)
    assert limits.loads(at_limit, "args") == json.loads(at_limit)
    assert limits.loads('{"x": 1e308, "y": -0.5}', "args") == {"x": 1e308, "y": -0.5}


def test_task_arguments_are_held_to_the_limits() -> None:
    registry = Registry()
    registry.load_module(sys.modules[__name__])
    spec = registry.get("lim", "takes")
    with pytest.raises(InvalidArgument) as err:
        spec.parse_args('{"value": ' + nested(DEEP) + "}")
    assert err.value.message == f"args nested {DEEP + 1} levels deep: {LIMIT_TEXT}"
    with pytest.raises(InvalidArgument, match="NaN is not a JSON number"):
        spec.parse_args('{"value": NaN}')
    assert spec.parse_args('{"value": ' + nested(limits.MAX_JSON_DEPTH - 1) + "}")["value"] is not None


def test_results_are_held_to_the_depth_limit() -> None:
    deep: list[Any] = []
    for _ in range(DEEP):  # deeper than json.dumps can recurse
        deep = [deep]
    with pytest.raises(ResultError, match=LIMIT_TEXT):
        encode_result(deep)
    with pytest.raises(ResultError) as err:
        encode_result(json.loads(nested(100)))  # json.dumps copes; clients could not read it back
    assert err.value.args[0] == f"the task's return value nested 100 levels deep: {LIMIT_TEXT}"


def chain_records(depth: int) -> dict[str, TaskRecord]:
    """A root and ``depth`` descendants, one per level; the deepest has progress 3 of 4 and failed."""
    now = datetime.now(UTC)
    ids = [f"t{i}" for i in range(depth + 1)]
    recs = {}
    for i, tid in enumerate(ids):
        last = i == depth
        recs[tid] = TaskRecord(
            id=tid, module="m", type="t", created_at=now, parent_id=ids[i - 1] if i else None,
            children=() if last else (ChildRef(ids[i + 1], "n1"),), state=TaskState.FAILED if last else
            TaskState.DONE, own_progress=last, progress_completed=3.0 if last else 0.0,
            progress_total=4.0 if last else 0.0,
        )
    return recs


def test_tree_walks_are_iterative() -> None:
    """Far deeper than any tree the node lets grow (a store from elsewhere may hold one)."""
    recs = chain_records(5 * sys.getrecursionlimit())
    progress = rolled_up_progress("t0", recs, lambda tid: None)
    assert (progress.completed, progress.total) == (3.0, 4.0)
    assert len(descendants("t0", recs, include_self=True)) == len(recs)
    assert subtree_failed("t0", recs)
    assert fold_drops("t0", recs) == set()  # the failed leaf keeps the whole chain above it


async def test_a_tree_stops_at_its_depth_limit_and_stays_readable(tmp_path: Path) -> None:
    """A body asks for 1,100 levels: the child beyond ``MAX_TREE_DEPTH`` is refused with a message naming
    the limit, every level up to it exists and reads (recursive status, no RecursionError), and the root's
    outcome is durable."""
    m = in_process_manager(tmp_path, sys.modules[__name__])
    await m.start()
    reached, release = GATES["deep"] = (asyncio.Event(), asyncio.Event())
    try:
        root = await m.start_task("lim", "chain", json.dumps({"depth": 1100, "gate": "deep"}))
        async with asyncio.timeout(60):
            await reached.wait()
        tree = await m.status_recursive(root, keep=True)
        assert len(tree) == limits.MAX_TREE_DEPTH + 1
        assert [v.record.parent_id for v in tree[1:]] == [v.record.id for v in tree[:-1]]
        release.set()
        final = await m.wait(root, 60)
    finally:
        release.set()
        await m.stop()
    refusal = (f"task tree too deep: a child of task {tree[-1].record.id} would be {limits.MAX_TREE_DEPTH + 1} "
               f"levels below its root, the limit is {limits.MAX_TREE_DEPTH}")
    assert final.record.state is TaskState.DONE
    assert json.loads(final.record.result) == refusal
    reopened = Store(tmp_path / "db.sqlite3")
    loaded = await reopened.open()
    await reopened.close()
    on_disk = {r.id: r for r in loaded.tasks}[root]
    assert (on_disk.state, json.loads(on_disk.result)) == (TaskState.DONE, refusal)


@pytest.mark.parametrize(("case", "message"), [
    ("nan", "progress done must be a finite number from 0 to 9007199254740992, got nan"),
    ("inf", "progress total must be a finite number from 0 to 9007199254740992, got inf"),
    ("negative", "progress done must be a finite number from 0 to 9007199254740992, got -1.0"),
    ("huge", "progress total must be a finite number from 0 to 9007199254740992, got 1.152921504606847e+18"),
    ("text", "progress must be numbers, got 'x' of 2"),
])
async def test_a_body_reporting_bad_progress_is_told(tmp_path: Path, case: str, message: str) -> None:
    m = in_process_manager(tmp_path, sys.modules[__name__])
    await m.start()
    try:
        tid = await m.start_task("lim", "reports", json.dumps({"case": case}))
        final = (await m.wait(tid, 10)).record
    finally:
        await m.stop()
    assert json.loads(final.result) == message
    assert (final.progress_completed, final.progress_total, final.own_progress) == (0.0, 0.0, False)


async def test_the_manager_records_no_bad_progress(tmp_path: Path) -> None:
    """The last line behind the context's check: a non-finite value reaching the manager is not recorded."""
    m = in_process_manager(tmp_path, sys.modules[__name__])
    await m.start()
    reached, release = GATES["p"] = (asyncio.Event(), asyncio.Event())
    try:
        tid = await m.start_task("lim", "chain", '{"depth": 0, "gate": "p"}')
        async with asyncio.timeout(10):
            await reached.wait()  # its body runs: it is running
        m.report_progress(tid, float("nan"), 1.0, "")
        m.report_progress(tid, 1.0, float("inf"), "")
        assert m.view(tid).record.own_progress is False
        m.report_progress(tid, 1.0, 2.0, "")
        assert (m.view(tid).progress.completed, m.view(tid).progress.total) == (1.0, 2.0)
    finally:
        release.set()
        await m.stop()
