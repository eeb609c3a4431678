"""Pure rules of the task model: folding, BFS order, progress roll-up, ETA, TTL."""

from __future__ import annotations

from dataclasses import fields, replace
from datetime import UTC, datetime, timedelta

import pytest

from taskward.errors import MalformedTaskId
from taskward.model import (
    BatchClock,
    ChildRef,
    TaskKind,
    TaskRecord,
    TaskState,
    TtlSettings,
    check_task_id,
    descendants,
    expiry,
    fold_drops,
    matches,
    new_task_id,
    rolled_up_progress,
)

NOW = datetime(2026, 1, 1, tzinfo=UTC)


def build_tree(shape: dict[str, list[str]], failed: set[str] = frozenset(), running: set[str] = frozenset()):  # type: ignore[no-untyped-def]
    """Records named by path ('r', 'r0', 'r01', ...) with the given child lists."""
    recs: dict[str, TaskRecord] = {}
    parents = {c: p for p, cs in shape.items() for c in cs}
    for name in {*shape, *parents}:
        state = TaskState.FAILED if name in failed else TaskState.RUNNING if name in running else TaskState.DONE
        recs[name] = TaskRecord(
            id=name, module="m", type="t", created_at=NOW, state=state, parent_id=parents.get(name),
            children=tuple(ChildRef(c, "n1") for c in shape.get(name, [])),
        )
    return recs


def full_tree(fanout: int, depth: int) -> dict[str, list[str]]:
    shape: dict[str, list[str]] = {}
    level = ["r"]
    for _ in range(depth):
        nxt = []
        for p in level:
            shape[p] = [f"{p}{i}" for i in range(fanout)]
            nxt.extend(shape[p])
        level = nxt
    return shape


def test_fold_keeps_direct_children_and_only_failed_chains() -> None:
    recs = build_tree(full_tree(2, 3), failed={"r010"})  # 15 tasks, one failed great-grandchild
    drops = fold_drops("r", recs)
    kept = set(recs) - drops
    assert kept == {"r", "r0", "r1", "r01", "r010"}


def test_fold_of_successful_tree_keeps_root_and_children() -> None:
    recs = build_tree(full_tree(2, 3))
    assert set(recs) - fold_drops("r", recs) == {"r", "r0", "r1"}


def test_fold_keeps_unfinished_descendants() -> None:
    recs = build_tree(full_tree(2, 2), running={"r00"})
    assert "r00" not in fold_drops("r", recs)
    assert {"r01", "r10", "r11"} <= fold_drops("r", recs)


def test_descendants_is_bfs() -> None:
    recs = build_tree({"r": ["a", "b"], "a": ["a1"], "b": ["b1"]})
    assert descendants("r", recs, include_self=True) == ["r", "a", "b", "a1", "b1"]


def test_progress_rolls_up_from_children_when_task_has_none() -> None:
    recs = build_tree({"r": ["a", "b"]})
    recs["a"] = recs["a"].with_progress(2, 4, "")
    recs["b"] = recs["b"].with_progress(1, 6, "")
    p = rolled_up_progress("r", recs, lambda _: None)
    assert (p.completed, p.total) == (3, 10)
    assert p.fraction == pytest.approx(0.3)
    recs["r"] = recs["r"].with_progress(5, 5, "")
    assert rolled_up_progress("r", recs, lambda _: None).fraction == 1.0


def test_eta_is_rolling_average_of_last_ten_batches() -> None:
    clock = BatchClock()
    t = 0.0
    clock.record(t, 0)
    for i in range(1, 21):
        t += 10.0 if i <= 10 else 1.0  # the slow first batches fall out of the window
        clock.record(t, i)
    assert clock.eta_ms(20, 30) == 10 * 1000
    assert BatchClock().eta_ms(0, 10) is None


def test_expiry_uses_ttl_in_force_and_user_ttl_for_user_tasks() -> None:
    rec = TaskRecord(id="x", module="m", type="t", created_at=NOW).started(NOW).finished(NOW)
    ttl = TtlSettings(task_ttl=5, user_task_ttl=50)
    assert expiry(rec, ttl) == NOW + timedelta(seconds=5)
    assert expiry(replace(rec, user_task=True), ttl) == NOW + timedelta(seconds=50)
    assert expiry(replace(rec, internal=True), ttl) is None
    assert expiry(replace(rec, parent_id="p"), ttl) is None


def test_finished_states_and_abort() -> None:
    rec = TaskRecord(id="x", module="m", type="t", created_at=NOW)
    assert rec.finished(NOW).state is TaskState.DONE
    failed = rec.finished(NOW, error="boom")
    assert (failed.state, failed.error, failed.aborted) == (TaskState.FAILED, "boom", False)
    aborted = rec.finished(NOW, aborted=True)
    assert (aborted.state, aborted.error, aborted.aborted) == (TaskState.FAILED, "aborted", True)


def test_list_filter() -> None:
    rec = TaskRecord(id="x", module="m", type="t", created_at=NOW, keyspace="ks", table="t1")
    assert matches(rec, internal=False, keyspace="ks", table="t1")
    assert not matches(rec, internal=False, keyspace="other", table="")
    assert not matches(replace(rec, internal=True), internal=False, keyspace="", table="")
    assert matches(replace(rec, internal=True), internal=True, keyspace="", table="")
    assert not matches(replace(rec, folded=True), internal=True, keyspace="", table="")


@pytest.mark.parametrize("bad", ["", "x", new_task_id().upper(), "{" + new_task_id() + "}", new_task_id() + "\n"])
def test_task_ids_must_be_canonical(bad: str) -> None:
    with pytest.raises(MalformedTaskId):
        check_task_id(bad)
    tid = new_task_id()
    assert check_task_id(tid) == tid


def test_a_cluster_task_eta_is_its_mean_rate_applied_to_what_remains() -> None:
    from datetime import UTC, datetime, timedelta

    from taskward.model import TaskRecord, TaskState, linear_eta_ms

    start = datetime(2026, 1, 1, tzinfo=UTC)
    rec = TaskRecord(id="c", module="m", type="t", created_at=start, start_time=start, state=TaskState.RUNNING,
                     progress_completed=10, progress_total=40)
    assert linear_eta_ms(rec, start + timedelta(seconds=5)) == 15_000  # 2 units/s, 30 to go
    assert linear_eta_ms(replace(rec, progress_completed=0), start + timedelta(seconds=5)) is None
    assert linear_eta_ms(replace(rec, state=TaskState.DONE), start) == 0
    assert linear_eta_ms(replace(rec, state=TaskState.FAILED), start) is None


def test_a_record_copy_is_dataclasses_replace_field_by_field() -> None:
    """``TaskRecord.evolve`` (the unrolled copier) against ``dataclasses.replace`` on a record with every
    field set away from its default: the same record, the original untouched, a bad name refused."""
    now = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    values = dict(
        id=new_task_id(), module="m", type="t", kind=TaskKind.NODE, scope="node", state=TaskState.RUNNING,
        sequence_number=7, keyspace="ks", table="tb", entity="en", shard=3, created_at=now,
        start_time=now + timedelta(seconds=1), end_time=now + timedelta(seconds=2), is_abortable=True,
        error="e", aborted=True, abort_requested=True, parent_id=new_task_id(), cluster_parent=new_task_id(),
        children=(ChildRef(new_task_id(), "n1"),), progress_units="steps", progress_total=9.0,
        progress_completed=4.0, progress_message="msg", own_progress=True, internal=True, user_task=False,
        folded=True, args='{"a":1}', idempotency_key="k", expires_at=now + timedelta(days=1), result="[1]",
        attempt=2, max_attempts=3, next_attempt_at=now + timedelta(minutes=5),
    )
    rec = TaskRecord(**values)  # type: ignore[arg-type]
    assert {f.name for f in fields(TaskRecord)} == set(values)  # every field is exercised
    changes = dict(state=TaskState.DONE, progress_completed=9.0, children=())
    copy = rec.evolve(**changes)
    assert copy == replace(rec, **changes)  # type: ignore[arg-type]
    assert copy is not rec and rec == TaskRecord(**values)  # type: ignore[arg-type]
    assert rec.evolve() == rec
    with pytest.raises(AttributeError):
        rec.evolve(no_such_field=1)
