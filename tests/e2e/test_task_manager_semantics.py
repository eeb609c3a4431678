"""ScyllaDB task-manager semantics (architecture: Task model) over gRPC against a real node, in the spirit of ScyllaDB's
test/rest_api/test_task_manager.py (test tasks driven by hand), plus real task types (builtin, sample)."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor, wait
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import grpc
import pytest

from taskward.pb.taskward.v1 import tasks_pb2 as pb
from taskward.pb.taskward.v1 import tasks_pb2_grpc as pb_grpc
from tests.conftest import NODE_ARGS
from tests.support.procs import TIMEOUT_MULT, NodeProc, new_test_module, poll

LONG_TTL = 1_000_000
Code = grpc.StatusCode


# ---------------------------------------------------------------- helpers


@contextmanager
def new_test_task(t: pb_grpc.TestApiStub, **kw: Any) -> Iterator[str]:
    """A running test task for the duration of the block (unregistered after, if still there)."""
    tid = t.CreateTestTask(pb.CreateTestTaskRequest(**kw)).task_id
    try:
        yield tid
    finally:
        try:
            t.UnregisterTestTask(pb.TaskIdRequest(task_id=tid))
        except grpc.RpcError as exc:
            if exc.code() != Code.NOT_FOUND:
                raise


@contextmanager
def tmp_ttl(stub: pb_grpc.TaskManagerStub, ttl: int, *, user: bool = False) -> Iterator[None]:
    kind = pb.TTL_KIND_USER if user else pb.TTL_KIND_TASK
    old = stub.SetTtl(pb.SetTtlRequest(kind=kind, ttl=ttl)).previous
    try:
        yield
    finally:
        stub.SetTtl(pb.SetTtlRequest(kind=kind, ttl=old))


def rpc_code(fn: Callable[..., Any], *args: Any, **kw: Any) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.RpcError) as ei:
        fn(*args, **kw)
    return ei.value.code(), ei.value.details()


def ids(stub: pb_grpc.TaskManagerStub, module: str = "test", **kw: Any) -> list[str]:
    return [t.task_id for t in stub.ListTasks(pb.ListTasksRequest(module=module, **kw)).tasks]


def status(stub: pb_grpc.TaskManagerStub, tid: str) -> pb.TaskStatus:
    return stub.GetTaskStatus(pb.TaskIdRequest(task_id=tid))


def finish(t: pb_grpc.TestApiStub, tid: str, error: str = "") -> None:
    t.FinishTestTask(pb.FinishTestTaskRequest(task_id=tid, error=error))


def start(stub: pb_grpc.TaskManagerStub, module: str, type_: str, **args: Any) -> str:
    return stub.StartTask(pb.StartTaskRequest(module=module, type=type_, args_json=json.dumps(args))).task_id


def wait_task(stub: pb_grpc.TaskManagerStub, tid: str, timeout: float = 10.0) -> pb.TaskStatus:
    return stub.WaitTask(pb.WaitTaskRequest(task_id=tid, timeout=timeout * TIMEOUT_MULT))


def running_status(stub: pb_grpc.TaskManagerStub, tid: str, ok: Callable[[pb.TaskStatus], bool]) -> pb.TaskStatus:
    def check() -> pb.TaskStatus | None:
        s = status(stub, tid)
        assert s.stats.state in ("created", "running"), f"{tid} finished early: {s}"
        return s if s.stats.state == "running" and ok(s) else None

    return poll(check, 10, f"task {tid} running")


# ---------------------------------------------------------------- test module: listing and status


def test_list_modules(node: NodeProc) -> None:
    stub = node.stub()
    before = set(stub.ListModules(pb.ListModulesRequest()).modules)
    assert {"builtin", "sample"} <= before and "test" not in before
    with new_test_module(node):
        assert set(stub.ListModules(pb.ListModulesRequest()).modules) == before | {"test"}
    assert set(stub.ListModules(pb.ListModulesRequest()).modules) == before
    assert rpc_code(stub.ListTasks, pb.ListTasksRequest(module="test"))[0] == Code.INVALID_ARGUMENT
    assert rpc_code(stub.Drain, pb.DrainRequest(module="nope"))[0] == Code.INVALID_ARGUMENT


def test_list_tasks_filters(node: NodeProc) -> None:
    stub = node.stub()
    with new_test_module(node) as t, \
            new_test_task(t, keyspace="ks0", table="t0") as r0, \
            new_test_task(t, shard=1, keyspace="ks0", table="t1") as r1, \
            new_test_task(t, keyspace="ks1", table="t0") as r2, \
            new_test_task(t, parent_id=r0, keyspace="ks0", table="t0") as c0:
        assert ids(stub) == [r0, r1, r2]
        assert ids(stub, internal=True) == [r0, r1, r2, c0]
        assert ids(stub, keyspace="ks0") == [r0, r1]
        assert ids(stub, keyspace="ks0", internal=True) == [r0, r1, c0]
        assert ids(stub, table="t0") == [r0, r2]
        assert ids(stub, keyspace="ks0", table="t0", internal=True) == [r0, c0]
        assert ids(stub, keyspace="nope") == []
        st = {s.task_id: s for s in stub.ListTasks(pb.ListTasksRequest(module="test", internal=True)).tasks}
        assert (st[r1].shard, st[r1].state, st[r1].type, st[r1].kind, st[r1].scope) == (1, "running", "test",
                                                                                         "node", "node")


def test_status_running(node: NodeProc) -> None:
    stub = node.stub()
    with new_test_module(node) as t, new_test_task(t, keyspace="keyspace0", table="table0", entity="e") as tid:
        s = status(stub, tid)
        assert (s.stats.task_id, s.stats.state, s.stats.sequence_number) == (tid, "running", 1)
        assert (s.stats.keyspace, s.stats.table, s.stats.entity, s.module) == ("keyspace0", "table0", "e", "test")
        assert s.parent_id == "none" and not s.is_abortable and not s.error and not s.children_ids
        assert s.stats.start_time.seconds > 0 and s.stats.end_time.seconds == 0
        assert ids(stub) == [tid], "task_status unregistered a task that did not finish"


def test_status_finished_unregisters(node: NodeProc) -> None:
    stub = node.stub()
    with new_test_module(node) as t, tmp_ttl(stub, LONG_TTL):
        for error in ("", "Test task failed"):
            tid = t.CreateTestTask(pb.CreateTestTaskRequest(keyspace="keyspace0", table="table0")).task_id
            finish(t, tid, error)
            assert rpc_code(finish, t, tid)[0] == Code.INVALID_ARGUMENT  # already finished
            for _ in range(2):  # wait_task never unregisters
                w = wait_task(stub, tid)
                assert (w.stats.state, w.error) == ("failed" if error else "done", error)
            assert ids(stub) == [tid]
            s = status(stub, tid)
            assert (s.stats.state, s.error, s.aborted, s.stats.keyspace) == (w.stats.state, error, False, "keyspace0")
            assert s.stats.end_time.seconds >= s.stats.start_time.seconds > 0
            assert rpc_code(status, stub, tid) == (Code.NOT_FOUND, f"task with id {tid} not found")
            assert ids(stub) == []


def test_keep_finished_on_read_leaves_finished_roots_to_their_ttl(tmp_path: Path) -> None:
    n = NodeProc(tmp_path / "n1", extra=[*NODE_ARGS, "--keep-finished-on-read"]).start()
    try:
        stub = n.stub()
        with new_test_module(n) as t, tmp_ttl(stub, LONG_TTL):
            tid = t.CreateTestTask(pb.CreateTestTaskRequest()).task_id
            finish(t, tid, "")
            for _ in range(3):  # status, recursive status: read as often as you like
                assert status(stub, tid).stats.state == "done"
                assert [s.stats.task_id for s in stub.GetTaskStatusRecursive(pb.TaskIdRequest(task_id=tid)).statuses
                        ] == [tid]
            assert ids(stub) == [tid]
        with tmp_ttl(stub, 0, user=True):  # the TTL still applies (a started task is a user task)
            done = stub.StartTask(pb.StartTaskRequest(module="builtin", type="sleep", args_json='{"duration": 0}'))
            try:
                wait_task(stub, done.task_id)
            except grpc.RpcError as exc:  # it ended, and its TTL of 0 removed it, before the wait arrived
                assert exc.code() == Code.NOT_FOUND, exc
            assert rpc_code(status, stub, done.task_id)[0] == Code.NOT_FOUND
    finally:
        n.stop()


def test_errors_for_ids(shared_node: NodeProc) -> None:
    stub = shared_node.stub()
    unknown, bad = "deadbeef-0000-4000-8000-00000000abcd", "not-a-uuid"
    for call in (stub.GetTaskStatus, stub.GetTaskStatusRecursive, stub.AbortTask):
        assert rpc_code(call, pb.TaskIdRequest(task_id=unknown)) == (Code.NOT_FOUND,
                                                                     f"task with id {unknown} not found")
        assert rpc_code(call, pb.TaskIdRequest(task_id=bad))[0] == Code.INVALID_ARGUMENT
        assert rpc_code(call, pb.TaskIdRequest(task_id=unknown.upper()))[0] == Code.INVALID_ARGUMENT
    assert rpc_code(stub.WaitTask, pb.WaitTaskRequest(task_id=unknown))[0] == Code.NOT_FOUND
    assert rpc_code(stub.WaitTask, pb.WaitTaskRequest(task_id=bad))[0] == Code.INVALID_ARGUMENT


def test_abort_test_task_not_abortable(node: NodeProc) -> None:
    stub = node.stub()
    with new_test_module(node) as t, new_test_task(t) as tid:
        code, details = rpc_code(stub.AbortTask, pb.TaskIdRequest(task_id=tid))
        assert (code, details) == (Code.FAILED_PRECONDITION, f"Task with id {tid} is not abortable")
        s = status(stub, tid)
        assert (s.stats.state, s.error, s.aborted) == ("running", "", False)


def test_wait(node: NodeProc) -> None:
    stub = node.stub()
    with new_test_module(node) as t, new_test_task(t, keyspace="keyspace0", table="table0") as tid, \
            tmp_ttl(stub, LONG_TTL), ThreadPoolExecutor(1) as pool:
        code, _ = rpc_code(stub.WaitTask, pb.WaitTaskRequest(task_id=tid, timeout=0.3))
        assert code == Code.DEADLINE_EXCEEDED
        fut = pool.submit(stub.WaitTask, pb.WaitTaskRequest(task_id=tid))  # no timeout
        wait([fut], timeout=0.5)
        assert not fut.done(), f"wait_task returned before the task finished: {fut.result()}"
        finish(t, tid)
        s = fut.result(timeout=10 * TIMEOUT_MULT)
        assert (s.stats.task_id, s.stats.state, s.stats.sequence_number) == (tid, "done", 1)
        assert (s.stats.keyspace, s.stats.table) == ("keyspace0", "table0")


# ---------------------------------------------------------------- ttl


def test_ttl_get_set(node: NodeProc) -> None:
    stub = node.stub()
    for kind, default in ((pb.TTL_KIND_TASK, 0), (pb.TTL_KIND_USER, 3600)):
        assert stub.GetTtl(pb.GetTtlRequest(kind=kind)).ttl == default
        r = stub.SetTtl(pb.SetTtlRequest(kind=kind, ttl=7))
        assert (r.ttl, r.previous) == (7, default)
        assert stub.SetTtl(pb.SetTtlRequest(kind=kind, ttl=default)).previous == 7
        assert stub.GetTtl(pb.GetTtlRequest(kind=kind)).ttl == default
        assert rpc_code(stub.SetTtl, pb.SetTtlRequest(kind=kind, ttl=-1))[0] == Code.INVALID_ARGUMENT
        for big in (1_000_000_000, 2**32 - 1):  # ScyllaDB's own REST tests set 1000000000; its range is uint32
            assert stub.SetTtl(pb.SetTtlRequest(kind=kind, ttl=big)).ttl == big
        assert rpc_code(stub.SetTtl, pb.SetTtlRequest(kind=kind, ttl=2**32)) == (Code.INVALID_ARGUMENT, (
            "ttl must be at most 4294967295 (ScyllaDB's task_ttl_in_seconds range), got 4294967296"))
        assert stub.SetTtl(pb.SetTtlRequest(kind=kind, ttl=default)).previous == 2**32 - 1


def test_ttl_zero_unregisters_at_once(node: NodeProc) -> None:
    stub = node.stub()
    with new_test_module(node) as t, new_test_task(t) as tid:
        finish(t, tid)
        assert ids(stub) == []
        assert rpc_code(status, stub, tid)[0] == Code.NOT_FOUND


def test_ttl_expiry(node: NodeProc) -> None:
    stub = node.stub()
    ttl = 2
    with new_test_module(node) as t, tmp_ttl(stub, ttl), tmp_ttl(stub, LONG_TTL, user=True):
        t0, t1, u0 = (t.CreateTestTask(pb.CreateTestTaskRequest(shard=i % 2, user_task=i == 2)).task_id
                      for i in range(3))
        for tid in (t0, t1, u0):
            finish(t, tid)
        with tmp_ttl(stub, 1, user=True):
            u1 = t.CreateTestTask(pb.CreateTestTaskRequest(user_task=True)).task_id
            finish(t, u1)
        stub.SetTtl(pb.SetTtlRequest(kind=pb.TTL_KIND_TASK, ttl=LONG_TTL))  # the ttl at completion applies
        assert ids(stub) == [t0, t1, u0, u1]
        time.sleep(ttl + 1)
        assert ids(stub) == [u0], "user tasks follow user_task_ttl, others task_ttl, as in force at completion"
        for tid in (t0, t1, u1):
            assert rpc_code(status, stub, tid)[0] == Code.NOT_FOUND
        assert status(stub, u0).stats.state == "done"


# ---------------------------------------------------------------- trees


def test_sequence_numbers(node: NodeProc) -> None:
    stub = node.stub()
    with new_test_module(node) as t, new_test_task(t, shard=0) as r0, new_test_task(t, shard=0) as r1, \
            new_test_task(t, shard=0, parent_id=r0) as c0, new_test_task(t, shard=1, parent_id=r1) as c1, \
            new_test_task(t, shard=1) as r2:
        got = [status(stub, x).stats.sequence_number for x in (r0, r1, c0, c1, r2)]
        assert got == [1, 2, 1, 2, 1]
    with new_test_module(node) as t, new_test_task(t) as r:  # numbering restarts with the module
        assert status(stub, r).stats.sequence_number == 1


def test_recursive_status_bfs(node: NodeProc) -> None:
    stub = node.stub()
    with new_test_module(node) as t, new_test_task(t, keyspace="keyspace0") as root, \
            new_test_task(t, keyspace="keyspace0", parent_id=root) as child1, \
            new_test_task(t, keyspace="keyspace0", parent_id=child1) as grandchild:
        with new_test_task(t, keyspace="keyspace0", parent_id=root) as child2:
            pass  # unregistered again: still part of the parent's tree
        assert rpc_code(status, stub, child2)[0] == Code.NOT_FOUND
        statuses = stub.GetTaskStatusRecursive(pb.TaskIdRequest(task_id=root)).statuses
        assert [s.stats.task_id for s in statuses] == [root, child1, child2, grandchild]
        assert [s.parent_id for s in statuses] == ["none", root, root, child1]
        assert [c.task_id for c in statuses[0].children_ids] == [child1, child2]
        assert {(c.node, c.address) for c in statuses[0].children_ids} == {(node.node_id, node.address)}
        assert all(s.stats.state == "running" and s.stats.sequence_number == 1 for s in statuses)
        assert ids(stub) == [root]  # a running root is not unregistered


def test_folding(node: NodeProc) -> None:
    """15 tasks: 0 root, 1-2 children, 3-6 grandchildren, 7-14 great-grandchildren; 7 fails."""
    stub = node.stub()
    with new_test_module(node) as t, tmp_ttl(stub, LONG_TTL):
        tree = [t.CreateTestTask(pb.CreateTestTaskRequest()).task_id]
        for i in range(1, 15):
            tree.append(t.CreateTestTask(pb.CreateTestTaskRequest(parent_id=tree[(i - 1) // 2])).task_id)
        running = stub.GetTaskStatusRecursive(pb.TaskIdRequest(task_id=tree[0])).statuses
        assert [s.stats.task_id for s in running] == tree
        assert {s.stats.state for s in running} == {"running"}
        for i in range(14, 0, -1):  # leaves first, then bottom-up; the root stays running for now
            finish(t, tree[i], "x" if i == 7 else "")
        assert rpc_code(status, stub, tree[8])[0] == Code.NOT_FOUND  # folded into its parent
        finish(t, tree[0])
        statuses = stub.GetTaskStatusRecursive(pb.TaskIdRequest(task_id=tree[0])).statuses
        got = [(tree.index(s.stats.task_id), s.stats.state) for s in statuses]
        assert got == [(0, "done"), (1, "done"), (2, "done"), (3, "done"), (7, "failed")]
        assert statuses[-1].error == "x"
        kept = {s.stats.task_id for s in statuses}
        assert all(c.task_id in kept for s in statuses for c in s.children_ids), "dangling child reference"
        assert [c.task_id for c in statuses[0].children_ids] == [tree[1], tree[2]]
        assert rpc_code(stub.GetTaskStatusRecursive, pb.TaskIdRequest(task_id=tree[0]))[0] == Code.NOT_FOUND


def test_drain(node: NodeProc) -> None:
    stub = node.stub()
    with new_test_module(node) as t, tmp_ttl(stub, LONG_TTL), new_test_task(t) as done_root, \
            new_test_task(t) as running_root, new_test_task(t, parent_id=running_root) as child:
        finish(t, done_root)
        with new_test_task(t, parent_id=running_root) as finished_child:
            finish(t, finished_child)
        assert ids(stub) == [done_root, running_root]
        assert stub.Drain(pb.DrainRequest(module="test")).unregistered == 1
        assert ids(stub, internal=True) == [running_root, child]
        assert rpc_code(status, stub, done_root)[0] == Code.NOT_FOUND
        assert status(stub, running_root).stats.state == "running"
        assert stub.Drain(pb.DrainRequest(module="test")).unregistered == 0


# ---------------------------------------------------------------- real task types


def test_builtin_sleep_progress(shared_node: NodeProc) -> None:
    stub = shared_node.stub()
    tid = start(stub, "builtin", "sleep", duration=1.5, steps=10)
    s = running_status(stub, tid, lambda s: s.progress_completed >= 2 and s.HasField("eta_ms"))
    assert (s.progress_total, s.progress_units, s.is_abortable) == (10, "steps", True)
    assert s.progress_fraction == pytest.approx(s.progress_completed / 10)
    remaining = (10 - s.progress_completed) * 150  # ms per step
    assert 0 < s.eta_ms <= remaining * 5 * TIMEOUT_MULT + 500, (s.eta_ms, remaining)
    assert s.stats.scope == "node" and s.stats.sequence_number >= 1 and s.parent_id == "none"
    w = wait_task(stub, tid)
    assert (w.stats.state, w.progress_completed, w.progress_total, w.progress_fraction) == ("done", 10, 10, 1.0)
    assert not w.HasField("eta_ms") or w.eta_ms == 0
    assert status(stub, tid).stats.state == "done"  # user ttl 3600 kept it
    assert rpc_code(status, stub, tid)[0] == Code.NOT_FOUND


def test_abort_builtin_sleep(shared_node: NodeProc) -> None:
    stub = shared_node.stub()
    tid = start(stub, "builtin", "sleep", duration=30, steps=300)
    running_status(stub, tid, lambda s: s.progress_completed >= 1)
    stub.AbortTask(pb.TaskIdRequest(task_id=tid))
    w = wait_task(stub, tid)
    assert (w.stats.state, w.error, w.aborted) == ("failed", "aborted", True)
    assert w.progress_completed < 300
    stub.AbortTask(pb.TaskIdRequest(task_id=tid))  # aborting a finished task is a no-op


def test_abort_propagates_to_descendants(node: NodeProc) -> None:
    stub = node.stub()
    root = start(stub, "sample", "tree", fanout=2, depth=2, duration=1.0)

    def whole_tree_running() -> bool:
        tasks = stub.ListTasks(pb.ListTasksRequest(module="sample", internal=True)).tasks
        return len(tasks) == 7 and all(x.state == "running" for x in tasks)

    poll(whole_tree_running, 10, "7 running tasks of sample:tree")
    stub.AbortTask(pb.TaskIdRequest(task_id=root))
    w = wait_task(stub, root)
    assert (w.stats.state, w.error, w.aborted) == ("failed", "aborted", True)
    statuses = stub.GetTaskStatusRecursive(pb.TaskIdRequest(task_id=root)).statuses
    assert len(statuses) == 7  # failed descendants are all kept by folding
    assert [(s.stats.state, s.error, s.aborted) for s in statuses] == [("failed", "aborted", True)] * 7


def test_blocking_time_limit(node: NodeProc) -> None:
    stub = node.stub()
    blocking = start(stub, "sample", "blocking")  # blocks its thread for an hour
    other = start(stub, "builtin", "sleep", duration=0.2, steps=2)
    assert wait_task(stub, other).stats.state == "done"
    assert [x.state for x in stub.ListTasks(pb.ListTasksRequest(module="sample")).tasks] == ["running"]
    w = wait_task(stub, blocking)
    assert (w.stats.state, w.aborted) == ("failed", False) and "time limit" in w.error, w.error
    assert wait_task(stub, start(stub, "builtin", "sleep", duration=0, steps=1)).stats.state == "done"


def test_failures(shared_node: NodeProc) -> None:
    stub = shared_node.stub()
    w = wait_task(stub, start(stub, "sample", "raises"))
    assert (w.stats.state, w.error, w.aborted, w.is_abortable) == ("failed", "boom", False, False)
    w = wait_task(stub, start(stub, "builtin", "fail", error="exactly this"))
    assert (w.stats.state, w.error) == ("failed", "exactly this")


def test_abort_sync_body(shared_node: NodeProc) -> None:
    stub = shared_node.stub()
    tid = start(stub, "sample", "cpu", batches=400, batch_s=0.05)
    running_status(stub, tid, lambda s: s.progress_completed >= 2)
    stub.AbortTask(pb.TaskIdRequest(task_id=tid))
    w = wait_task(stub, tid, timeout=5)
    assert (w.stats.state, w.error, w.aborted) == ("failed", "aborted", True)
    assert 2 <= w.progress_completed < 400 and w.progress_total == 400


def test_cluster_start_standalone(shared_node: NodeProc) -> None:
    """Without --etcd the embedded single-node coordinator runs cluster tasks on the node itself."""
    stub = shared_node.stub()
    req = pb.StartTaskRequest(module="builtin", type="sleep", args_json='{"duration": 0.1, "steps": 2}', cluster=True)
    tid = stub.StartTask(req).task_id
    w = wait_task(stub, tid)
    assert (w.stats.kind, w.stats.scope, w.stats.state, w.stats.sequence_number, w.parent_id) == (
        "cluster", "cluster", "done", 0, "none")
    assert [(c.node, c.address) for c in w.children_ids] == [(shared_node.node_id, shared_node.address)]
    statuses = stub.GetTaskStatusRecursive(pb.TaskIdRequest(task_id=tid)).statuses
    assert [(s.stats.kind, s.stats.state, s.parent_id) for s in statuses] == [
        ("cluster", "done", "none"), ("node", "done", tid)]
    assert tid in ids(stub, "builtin")  # cluster tasks are never unregistered by API calls
    req = pb.StartTaskRequest(module="builtin", type="sleep", args_json='{"duration": 0}', nodes=["nope"])
    assert rpc_code(stub.StartTask, req)[0] in (Code.NOT_FOUND, Code.INVALID_ARGUMENT)
