"""Cluster tasks on real node processes over real gRPC, on a real 3-member etcd (and, where it makes
sense, on the embedded single-node store): identical answers everywhere, leader and node failures,
etcd failures, and bad input."""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from taskward import Client, RunSkipped
from taskward.pb.taskward.v1 import tasks_pb2 as pb
from tests.support.cluster import (
    LEASE_TTL,
    Cluster,
    children_running,
    cluster_task_keys,
    etcd_keys,
    in_parallel,
    pause,
    recursive,
    resume,
    start_cluster_task,
    started_events,
    status,
    unique_cluster_name,
    wait_finished,
    wait_task,
)
from tests.support.etcd import EtcdCluster
from tests.support.procs import TIMEOUT_MULT, NodeProc, poll, run_cli

SLEEP = "sleep"


@pytest.fixture(params=["embedded", pytest.param("etcd", marks=pytest.mark.needs_etcd)])
def any_cluster(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Cluster]:
    """The same suite on one node with the embedded store, and on three nodes with etcd."""
    if request.param == "etcd":
        etcd = request.getfixturevalue("etcd")
        c = Cluster(tmp_path, etcd.endpoints, name=unique_cluster_name(request.node.name))
    else:
        c = Cluster(tmp_path, None, size=1)
    try:
        c.start()
        yield c
    finally:
        c.stop()


def node_ids(c: Cluster) -> list[str]:
    return [n.node_id for n in c.nodes]


def code_of(fn: object, *args: object, **kwargs: object) -> grpc.StatusCode:
    with pytest.raises(grpc.RpcError) as info:
        fn(*args, **kwargs)  # type: ignore[operator]
    return info.value.code()  # type: ignore[no-any-return, attr-defined]


def child_map(st: pb.TaskStatus) -> dict[str, str]:
    return {c.node: c.task_id for c in st.children_ids}


def elapsed(fn: object, *args: object, **kwargs: object) -> tuple[object, float]:
    t0 = time.monotonic()
    out = fn(*args, **kwargs)  # type: ignore[operator]
    return out, time.monotonic() - t0


# ---------------------------------------------------------------------- both backends


def test_identical_answers_everywhere(any_cluster: Cluster) -> None:
    c = any_cluster
    ids = node_ids(c)
    before = int(time.time())
    entry = c.nodes[-1]  # a follower on etcd (the leader is whichever won)
    tid = start_cluster_task(entry, duration=1.5, steps=3)

    # While it runs: the same id, type, kind, scope, start time and children on every node.
    children = children_running(entry, tid, len(ids))
    assert [ch.node for ch in children] == ids
    assert [ch.address for ch in children] == [n.address for n in c.nodes]
    running = [poll(lambda n=n: _with_children(status(n, tid), children), 5, f"{n.node_id} to see the children")
               for n in c.nodes]
    for st in running:
        assert (st.stats.task_id, st.stats.type, st.stats.kind, st.stats.scope, st.stats.state) == (
            tid, SLEEP, "cluster", "cluster", "running")
        assert st.stats.start_time == running[0].stats.start_time
        assert list(st.children_ids) == children
        assert (st.parent_id, st.stats.sequence_number, st.stale, st.module) == ("none", 0, False, "builtin")
    assert running[0].stats.start_time.seconds >= before
    with pytest.raises(grpc.RpcError) as info:
        c.nodes[0].stub().WaitTask(pb.WaitTaskRequest(task_id=tid, timeout=0.1), timeout=5)
    assert info.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED

    # Wait from every node at once; all see the same final record.
    finals = in_parallel([lambda n=n: wait_task(n, tid) for n in c.nodes])
    assert all(f == finals[0] for f in finals)
    final = finals[0]
    assert isinstance(final, pb.TaskStatus)
    assert (final.stats.state, final.error, final.aborted, final.is_abortable) == ("done", "", False, True)
    assert (final.progress_units, final.progress_total, final.progress_completed) == ("steps", 3.0 * len(ids),
                                                                                       3.0 * len(ids))
    assert final.stats.start_time == running[0].stats.start_time
    assert final.stats.end_time.seconds >= final.stats.start_time.seconds
    assert list(final.children_ids) == children

    statuses = [status(n, tid) for n in c.nodes]
    trees = [recursive(n, tid) for n in c.nodes]
    listed = [list(n.stub().ListTasks(pb.ListTasksRequest(module="builtin")).tasks) for n in c.nodes]
    for st, tree, lst in zip(statuses, trees, listed, strict=True):
        assert st == final
        assert tree == trees[0]
        assert lst == listed[0]
    assert [t.task_id for t in listed[0]] == [tid]  # children are internal on their nodes
    assert listed[0][0] == final.stats
    shared = [n.stub().GetTaskStatuses(pb.GetTaskStatusesRequest(reads=[pb.TaskIdRequest(task_id=tid)]))
              for n in c.nodes]
    assert [r.results[0].status for r in shared] == [final] * len(c.nodes)  # read by read as GetTaskStatus
    root, *kids = trees[0]
    assert root == final
    assert [k.stats.task_id for k in kids] == [ch.task_id for ch in children]
    for kid in kids:
        assert (kid.stats.type, kid.stats.kind, kid.stats.scope, kid.stats.state, kid.parent_id) == (
            SLEEP, "node", "node", "done", tid)
        assert (kid.progress_total, kid.progress_completed, kid.error, kid.stats.sequence_number) == (3, 3, "", 1)
    for n, ch in zip(c.nodes, children, strict=True):  # each child lives on its own node
        internal = n.stub().ListTasks(pb.ListTasksRequest(module="builtin", internal=True)).tasks
        assert [t.task_id for t in internal] == [tid, ch.task_id]
        assert started_events(n)[ch.task_id] == 1


def test_a_cluster_task_result_maps_every_node_to_its_child_result(any_cluster: Cluster) -> None:
    c = any_cluster
    tid = start_cluster_task(c.nodes[-1], module="sample", type_="whoami", args={"extra": [1, "ü"]})
    final = wait_task(c.nodes[0], tid)
    children = {ch.node: ch.task_id for ch in final.children_ids}
    assert json.loads(final.result_json) == {
        node: {"task_id": children[node], "extra": [1, "ü"]} for node in node_ids(c)}
    assert {status(n, tid).result_json for n in c.nodes} == {final.result_json}  # any node, the same answer
    kids = recursive(c.nodes[0], tid)[1:]
    assert {k.stats.task_id: json.loads(k.result_json)["task_id"] for k in kids} == {
        t: t for t in children.values()}


def _with_children(st: pb.TaskStatus, children: list[pb.ChildRef]) -> pb.TaskStatus | None:
    return st if list(st.children_ids) == children else None


def test_abort_from_a_non_leader_aborts_every_child(any_cluster: Cluster) -> None:
    c = any_cluster
    leader = c.leader()
    entry = next((n for n in c.nodes if n is not leader), leader)
    tid = start_cluster_task(entry, duration=30, steps=60)
    children = children_running(entry, tid, len(c.nodes))
    entry.stub().AbortTask(pb.TaskIdRequest(task_id=tid), timeout=10)
    final = wait_task(c.nodes[0], tid, timeout=15)
    assert (final.stats.state, final.error, final.aborted) == ("failed", "aborted", True)
    assert final.stats.end_time.seconds - final.stats.start_time.seconds < 10
    for n in c.nodes:
        tree = recursive(n, tid)
        assert tree[0] == status(n, tid)
        assert [(s.stats.task_id, s.stats.state, s.error, s.aborted) for s in tree[1:]] == [
            (ch.task_id, "failed", "aborted", True) for ch in children]
    for n, ch in zip(c.nodes, children, strict=True):
        own = n.stub().GetTaskStatus(pb.TaskIdRequest(task_id=ch.task_id, keep=True))
        assert (own.stats.state, own.error, own.aborted) == ("failed", "aborted", True)
    entry.stub().AbortTask(pb.TaskIdRequest(task_id=tid), timeout=10)  # aborting a finished task is a no-op
    assert status(entry, tid) == final


def test_abort_racing_the_start_leaves_no_child_running(any_cluster: Cluster) -> None:
    """An abort committed while the leader is starting the children must still reach every child the
    nodes got, even those whose ids the leader never managed to record."""
    c = any_cluster
    entry, aborter = c.nodes[0], c.nodes[-1]
    tids = []
    for i in range(6):
        tids.append(start_cluster_task(entry, duration=2, steps=4))
        time.sleep(i * 0.03)
        aborter.stub().AbortTask(pb.TaskIdRequest(task_id=tids[-1]), timeout=10)
    finals = {tid: wait_task(entry, tid) for tid in tids}
    for final in finals.values():
        assert (final.stats.state, final.error, final.aborted) == ("failed", "aborted", True)
    time.sleep(2.5)  # longer than the task: a child that escaped the abort would have finished by now
    for n in c.nodes:
        kids = [t for t in n.stub().ListTasks(pb.ListTasksRequest(module="builtin", internal=True)).tasks
                if t.kind == "node"]
        recorded = {child_map(f).get(n.node_id) for f in finals.values()}
        assert {t.task_id for t in kids} <= recorded
        for t in kids:
            st = n.stub().GetTaskStatus(pb.TaskIdRequest(task_id=t.task_id, keep=True))
            assert (st.stats.state, st.error, st.aborted) == ("failed", "aborted", True)


def test_failing_children_fail_the_task_naming_the_nodes(any_cluster: Cluster) -> None:
    c = any_cluster
    tid = start_cluster_task(c.nodes[0], type_="fail", args={"error": "disk full"})
    final = wait_task(c.nodes[-1], tid)
    ids = node_ids(c)
    detail = "; ".join(f"{n}: disk full" for n in ids)
    assert (final.stats.state, final.aborted) == ("failed", False)
    assert final.error == f"failed on node(s) {', '.join(ids)} ({detail})"
    tree = recursive(c.nodes[0], tid)
    assert [(s.stats.state, s.error) for s in tree[1:]] == [("failed", "disk full")] * len(ids)
    # A cluster task of a type that is not abortable answers FAILED_PRECONDITION on abort.
    tid2 = start_cluster_task(c.nodes[0], module="sample", type_="raises", args={})
    assert code_of(c.nodes[-1].stub().AbortTask, pb.TaskIdRequest(task_id=tid2)) == \
        grpc.StatusCode.FAILED_PRECONDITION
    assert wait_task(c.nodes[0], tid2).error == f"failed on node(s) {', '.join(ids)} (" + "; ".join(
        f"{n}: boom" for n in ids) + ")"


def test_whole_cluster_restart_keeps_history(any_cluster: Cluster) -> None:
    c = any_cluster
    tids = [start_cluster_task(c.nodes[0], duration=0.2, steps=2),
            start_cluster_task(c.nodes[-1], type_="fail", args={"error": "e"})]
    for tid in tids:
        wait_task(c.nodes[0], tid)
    before = {(n.node_id, tid): (status(n, tid), recursive(n, tid)) for n in c.nodes for tid in tids}
    listed = [list(n.stub().ListTasks(pb.ListTasksRequest(module="builtin")).tasks) for n in c.nodes]
    assert sorted(t.task_id for t in listed[0]) == sorted(tids)
    assert set(c.stop().values()) == {0}
    c.start()
    for n in c.nodes:
        for tid in tids:
            assert (status(n, tid), recursive(n, tid)) == before[(n.node_id, tid)]
    assert [list(n.stub().ListTasks(pb.ListTasksRequest(module="builtin")).tasks) for n in c.nodes] == listed
    tid = start_cluster_task(c.nodes[0], duration=0.1, steps=1)  # and it still works
    assert wait_task(c.nodes[-1], tid).stats.state == "done"


def test_bad_input_creates_nothing(any_cluster: Cluster) -> None:
    c = any_cluster
    leader = c.leader()
    for n in c.nodes:  # followers forward to the leader, which answers with its own codes
        stub = n.stub()
        for module, type_, args in (("nope", SLEEP, "{}"), ("builtin", "nope", "{}"), ("builtin", SLEEP, "{}"),
                                    ("builtin", SLEEP, '{"duration": "x"}'), ("builtin", SLEEP, "[1]"),
                                    ("builtin", SLEEP, "not json")):
            req = pb.StartTaskRequest(module=module, type=type_, args_json=args, cluster=True)
            assert code_of(stub.StartTask, req, timeout=10) == grpc.StatusCode.INVALID_ARGUMENT, (module, type_, args)
        for bad_id in ("nope", "6F9619FF-8B86-D011-B42D-00C04FC964FF"):
            req = pb.StartTaskRequest(module="builtin", type=SLEEP, args_json='{"duration": 0.1}', cluster=True,
                                      cluster_task_id=bad_id)
            assert code_of(stub.StartTask, req, timeout=10) == grpc.StatusCode.INVALID_ARGUMENT, bad_id
        req = pb.StartTaskRequest(module="builtin", type=SLEEP, args_json='{"duration": 0.1}', nodes=["n9"])
        assert code_of(stub.StartTask, req, timeout=10) in (grpc.StatusCode.NOT_FOUND,
                                                            grpc.StatusCode.INVALID_ARGUMENT)
        req = pb.StartTaskRequest(module="builtin", type=SLEEP, args_json='{"duration": 0.1}',
                                  nodes=[leader.node_id, "n9"])
        assert code_of(stub.StartTask, req, timeout=10) in (grpc.StatusCode.NOT_FOUND,
                                                            grpc.StatusCode.INVALID_ARGUMENT)
        for bad in ("nope", "", "6F9619FF-8B86-D011-B42D-00C04FC964FF", "6f9619ff8b86d011b42d00c04fc964ff"):
            assert code_of(stub.GetTaskStatus, pb.TaskIdRequest(task_id=bad)) == grpc.StatusCode.INVALID_ARGUMENT
            assert code_of(stub.GetTaskStatusRecursive, pb.TaskIdRequest(task_id=bad)) == \
                grpc.StatusCode.INVALID_ARGUMENT
            assert code_of(stub.AbortTask, pb.TaskIdRequest(task_id=bad)) == grpc.StatusCode.INVALID_ARGUMENT
            assert code_of(stub.WaitTask, pb.WaitTaskRequest(task_id=bad, timeout=0)) == \
                grpc.StatusCode.INVALID_ARGUMENT
        unknown = "6f9619ff-8b86-d011-b42d-00c04fc964ff"
        assert code_of(stub.GetTaskStatus, pb.TaskIdRequest(task_id=unknown)) == grpc.StatusCode.NOT_FOUND
        assert code_of(stub.AbortTask, pb.TaskIdRequest(task_id=unknown)) == grpc.StatusCode.NOT_FOUND
        assert code_of(stub.WaitTask, pb.WaitTaskRequest(task_id=unknown, timeout=0)) == grpc.StatusCode.NOT_FOUND
        assert list(stub.ListTasks(pb.ListTasksRequest(module="builtin", internal=True)).tasks) == []
    if c.etcd_endpoints is not None:
        assert cluster_task_keys(c) == []
        assert [k for k in etcd_keys(c.etcd_endpoints, f"/taskward/{c.name}/") if k.startswith("idempotency/")] == []


def test_a_chosen_id_already_in_use_is_refused_and_changes_nothing(any_cluster: Cluster) -> None:
    c = any_cluster
    tid = start_cluster_task(c.nodes[0], duration=0.1, steps=1)
    before = wait_task(c.nodes[0], tid)
    assert before.stats.state == "done"
    for n in c.nodes:  # the leader refuses; a follower must not take its own replica's record for a yes
        req = pb.StartTaskRequest(module="builtin", type=SLEEP, args_json='{"duration": 30}', cluster=True,
                                  cluster_task_id=tid)
        assert code_of(n.stub().StartTask, req, timeout=10) == grpc.StatusCode.INVALID_ARGUMENT
    for n in c.nodes:
        assert status(n, tid) == before
    if c.etcd_endpoints is not None:
        assert cluster_task_keys(c) == [f"tasks/{tid}"]


def test_the_node_that_answers_a_start_can_be_asked_at_once(any_cluster: Cluster) -> None:
    """Read-your-writes on the answering node, leader or follower: no NOT_FOUND right after the start."""
    for n in any_cluster.nodes:
        stub = n.stub()
        for _ in range(10):
            tid = start_cluster_task(n, duration=0, steps=1)
            assert stub.GetTaskStatus(pb.TaskIdRequest(task_id=tid, keep=True), timeout=5).stats.task_id == tid


def test_idempotency_key_is_per_cluster(any_cluster: Cluster) -> None:
    c = any_cluster
    tid = start_cluster_task(c.nodes[0], duration=0.1, steps=1, idempotency_key="k1")
    again = [start_cluster_task(n, duration=0.1, steps=1, idempotency_key="k1") for n in c.nodes]
    assert again == [tid] * len(c.nodes)
    same_args = '{"duration": 0.1, "steps": 1}'
    for other in (dict(args_json='{"duration": 0.2, "steps": 1}'), dict(args_json=same_args, keyspace="ks"),
                  dict(args_json=same_args, table="t"), dict(args_json=same_args, entity="e")):
        req = pb.StartTaskRequest(module="builtin", type=SLEEP, cluster=True, idempotency_key="k1", **other)
        with pytest.raises(grpc.RpcError) as info:  # as a node task's key: the same type, arguments and labels
            c.nodes[-1].stub().StartTask(req, timeout=10)
        assert (info.value.code(), info.value.details()) == (  # type: ignore[attr-defined]
            grpc.StatusCode.INVALID_ARGUMENT, "idempotency key 'k1' was already used with different arguments"), other
    for n in c.nodes:  # the refused starts wrote nothing, on either store
        listed = n.stub().ListTasks(pb.ListTasksRequest(module="builtin"), timeout=5).tasks
        assert [t.task_id for t in listed if t.kind == "cluster"] == [tid]
    assert wait_task(c.nodes[0], tid).stats.state == "done"
    if c.etcd_endpoints is not None:
        assert cluster_task_keys(c) == [f"tasks/{tid}"]


# ---------------------------------------------------------------------- etcd only


@pytest.mark.needs_etcd
def test_nodes_subset(cluster3: Cluster) -> None:
    n1, n2, n3 = cluster3.nodes
    tid = start_cluster_task(n2, duration=0.3, steps=1, nodes=["n3", "n1"])
    final = wait_task(n2, tid)
    assert final.stats.state == "done"
    assert [(ch.node, ch.address) for ch in final.children_ids] == [("n3", n3.address), ("n1", n1.address)]
    assert [s.stats.task_id for s in recursive(n2, tid)[1:]] == [ch.task_id for ch in final.children_ids]
    internal = {n.node_id: [t.task_id for t in n.stub().ListTasks(pb.ListTasksRequest(module="builtin",
                                                                                     internal=True)).tasks]
                for n in cluster3.nodes}
    assert internal == {"n1": [tid, child_map(final)["n1"]], "n2": [tid], "n3": [tid, child_map(final)["n3"]]}


@pytest.mark.needs_etcd
def test_a_run_now_sent_to_a_follower_answers_the_leaders_skip(cluster3: Cluster) -> None:
    """The leader alone fires; a follower passes on its decision as it is, not as an outage."""
    follower = cluster3.followers()[0]
    entry = {"id": "slow", "task_type": SLEEP, "schedule": "@yearly", "args": {"duration": 600, "steps": 1},
             "enabled": False}
    with Client([follower.address]) as tw:
        tw.put_schedule(entry)
        running = tw.run_schedule_now("slow")["task_id"]
        before = tw.schedule("slow")
        with pytest.raises(RunSkipped) as skipped:
            tw.run_schedule_now("slow")
        reason = f"forbid: task {running} of the same type and arguments is still running"
        assert (skipped.value.code, skipped.value.message) == (
            grpc.StatusCode.FAILED_PRECONDITION, f"schedule slow not fired: {reason}")
        after = tw.schedule("slow")
        assert [(h["outcome"], h["reason"]) for h in after["history"]] == \
            [("skipped", reason), *((h["outcome"], h["reason"]) for h in before["history"])]
        assert after["last_task_id"] == before["last_task_id"] == running
    with Client([n.address for n in cluster3.nodes]) as everywhere:  # it runs on the least loaded node
        everywhere.task(running).abort()


@pytest.mark.needs_etcd
def test_leader_kill_resumes_and_reattaches(cluster3: Cluster) -> None:
    c = cluster3
    leader = c.leader()
    survivors = [n for n in c.nodes if n is not leader]
    tid = start_cluster_task(survivors[0], duration=3, steps=6)
    children = children_running(survivors[0], tid, 3)
    starts = {s.stats.task_id: s.stats.start_time for s in recursive(survivors[0], tid)[1:]}
    progress_at_kill = status(survivors[0], tid).progress_completed
    leader.kill()
    t0 = time.monotonic()

    def new_leader() -> str | None:
        lead = c.leader_seen_by(survivors[0])
        return lead if lead in (survivors[0].node_id, survivors[1].node_id) else None

    poll(new_leader, LEASE_TTL + 4, "a new leader")
    took = time.monotonic() - t0
    assert took <= (LEASE_TTL + 2) * TIMEOUT_MULT, f"new leader after {took:.1f}s"
    # Resumed: the new leader advances the record (the survivors' children keep reporting progress).
    poll(lambda: status(survivors[1], tid).progress_completed > progress_at_kill, 5, "the record to advance")
    leader.start()  # from its data dir: its retryable child is re-queued under the same id
    final = wait_finished(c.nodes, tid, timeout=30)
    assert final.stats.state == "done", final
    assert list(final.children_ids) == children  # re-attached, never restarted under a new id
    tree = recursive(survivors[0], tid)
    assert [s.stats.state for s in tree[1:]] == ["done"] * 3
    for n in c.nodes:
        child = child_map(final)[n.node_id]
        assert started_events(n)[child] == (2 if n is leader else 1), n.node_id
        if n is not leader:
            assert next(s for s in tree if s.stats.task_id == child).stats.start_time == starts[child]


@pytest.mark.needs_etcd
def test_non_leader_kill_reports_the_node_and_completes_after_restart(cluster3: Cluster) -> None:
    c = cluster3
    leader = c.leader()
    victim = next(n for n in c.nodes if n is not leader)
    others = [n for n in c.nodes if n is not victim]
    tid = start_cluster_task(leader, duration=4, steps=8)
    children = children_running(leader, tid, 3)
    victim.kill()
    for n in others:
        tree, took = elapsed(recursive, n, tid)
        assert took < 3.0
        assert isinstance(tree, list)
        entry = next(s for s in tree if s.stats.task_id == child_map(status(n, tid))[victim.node_id])
        assert f"node {victim.node_id}" in entry.error, entry
        assert entry.stats.state in ("unknown", "failed")
        assert [s.stats.state for s in tree[1:] if s is not entry] == ["running", "running"]
        assert status(n, tid).stats.state == "running"
    victim.start()
    final = wait_finished(others, tid, timeout=30)
    assert final.stats.state == "done", final
    assert list(final.children_ids) == children
    assert started_events(victim)[child_map(final)[victim.node_id]] == 2  # re-queued once by the restart
    assert [s.stats.state for s in recursive(victim, tid)[1:]] == ["done"] * 3


@pytest.mark.needs_etcd
def test_node_down_past_grace_fails_its_child(etcd: EtcdCluster, tmp_path: Path) -> None:
    c = Cluster(tmp_path, etcd.endpoints, dead_node_grace=1.0, name=unique_cluster_name("grace"))
    try:
        c.start()
        leader = c.leader()
        victim = next(n for n in c.nodes if n is not leader)
        tid = start_cluster_task(leader, duration=3, steps=6)  # done before or after the failure: both fine
        children = children_running(leader, tid, 3)
        victim_child = child_map(status(leader, tid))[victim.node_id]
        victim.kill()
        others = [n for n in c.nodes if n is not victim]
        final = wait_finished(others, tid, timeout=20)
        v = victim.node_id
        assert (final.stats.state, final.aborted) == ("failed", False)
        assert final.error == f"failed on node(s) {v} ({v}: node {v} unavailable)"
        # A node that is not a member has no address to show; the child ids and node ids stay.
        assert [(ch.task_id, ch.node) for ch in final.children_ids] == [(ch.task_id, ch.node) for ch in children]
        for n in others:
            tree = recursive(n, tid)
            assert tree[0] == final
            states = {s.stats.task_id: (s.stats.state, s.error) for s in tree[1:]}
            assert states[victim_child] == ("failed", f"node {v} unavailable")
            assert sorted(st for tid_, (st, _) in states.items() if tid_ != victim_child) == ["done", "done"]
        # Back from its data dir, the node must not go on running the orphan child of a finished task.
        victim.start()
        own = poll(lambda: _finished_child(victim, victim_child), 10, "the orphan child to be stopped")
        assert (own.stats.state, own.error, own.aborted) == ("failed", "aborted", True)
        again = status(victim, tid)
        assert again == status(others[0], tid)
        assert (again.stats, again.error) == (final.stats, final.error)  # the finished record is unchanged
    finally:
        c.stop()


def _finished_child(n: NodeProc, child: str) -> pb.TaskStatus | None:
    st = n.stub().GetTaskStatus(pb.TaskIdRequest(task_id=child, keep=True), timeout=2)
    return st if st.stats.state in ("done", "failed") else None


@pytest.mark.needs_etcd
def test_paused_node_does_not_stall_queries(cluster3: Cluster) -> None:
    c = cluster3
    leader = c.leader()
    others = [n for n in c.nodes if n is not leader]
    tid = start_cluster_task(others[0], duration=3, steps=6)
    children = children_running(others[0], tid, 3)
    pause(leader)  # the leader itself: queries are answered by every node's own replica
    try:
        t0 = time.monotonic()

        def forwarded_start() -> grpc.StatusCode:
            # A start forwarded to the unresponsive leader is refused as UNAVAILABLE (retry), never as a
            # DEADLINE_EXCEEDED that clients read as a wait timeout.
            return code_of(start_cluster_task, others[0], duration=0.1, steps=1)

        def queries(n: NodeProc) -> None:
            st, took = elapsed(status, n, tid)
            assert took < 1.0 and isinstance(st, pb.TaskStatus) and st.stats.state == "running"
            lst, took = elapsed(n.stub().ListTasks, pb.ListTasksRequest(module="builtin"), timeout=5)
            assert took < 1.0 and [t.task_id for t in lst.tasks] == [tid]  # type: ignore[attr-defined]
            tree, took = elapsed(recursive, n, tid)
            assert took < 3.0 and isinstance(tree, list)
            entry = next(s for s in tree if s.stats.task_id == child_map(st)[leader.node_id])
            assert f"node {leader.node_id}" in entry.error

        code, *_ = in_parallel([forwarded_start, *[lambda n=n: queries(n) for n in others]])
        assert code == grpc.StatusCode.UNAVAILABLE
        poll(lambda: c.leader_seen_by(others[0]) in (others[0].node_id, others[1].node_id), LEASE_TTL + 4,
             "a new leader while the old one is paused")
        assert time.monotonic() - t0 < (LEASE_TTL + 3) * TIMEOUT_MULT
    finally:
        resume(leader)
    final = wait_finished(c.nodes, tid, timeout=30)
    assert final.stats.state == "done", final
    assert list(final.children_ids) == children
    for n in c.nodes:  # the deposed leader's late writes were fenced off: nothing ran twice
        assert started_events(n)[child_map(final)[n.node_id]] == 1
    c.wait_formed(15)


@pytest.mark.needs_etcd
def test_etcd_member_kill_mid_task(private_etcd: EtcdCluster, tmp_path: Path) -> None:
    c = Cluster(tmp_path, private_etcd.endpoints, name="member-kill")
    try:
        c.start()
        tid = start_cluster_task(c.nodes[0], duration=3, steps=6)
        children_running(c.nodes[0], tid, 3)
        private_etcd.members[0].kill()  # the member the nodes' channels pick first
        final = wait_finished(c.nodes, tid, timeout=30)
        assert final.stats.state == "done", final
        tid2 = poll(lambda: _try_start(c.nodes[1]), 10, "a cluster start with 2 of 3 etcd members")
        assert wait_task(c.nodes[2], tid2).stats.state == "done"
        assert all(status(n, tid) == status(c.nodes[0], tid) for n in c.nodes)
    finally:
        c.stop()


def _try_start(n: NodeProc) -> str | None:
    try:
        return start_cluster_task(n, duration=0.2, steps=1)
    except grpc.RpcError as exc:
        if exc.code() == grpc.StatusCode.UNAVAILABLE:
            return None
        raise


@pytest.mark.needs_etcd
def test_cut_off_from_etcd_serves_stale_reads_and_recovers(private_etcd: EtcdCluster, tmp_path: Path) -> None:
    c = Cluster(tmp_path, private_etcd.endpoints, name="cut-off")
    try:
        c.start()
        tid = start_cluster_task(c.nodes[0], duration=0.2, steps=1)
        done = wait_task(c.nodes[0], tid)
        spanning = start_cluster_task(c.nodes[1], duration=6, steps=12)  # runs through the outage
        children = children_running(c.nodes[1], spanning, 3)
        for m in private_etcd.members:
            m.pause()
        t0 = time.monotonic()
        try:
            for n in c.nodes:
                st = poll(lambda n=n: status(n, tid) if status(n, tid).stale else None, LEASE_TTL, "a stale read")
                expected = pb.TaskStatus()
                expected.CopyFrom(done)
                expected.stale = True
                assert st == expected
            for n in c.nodes:
                t1 = time.monotonic()
                assert code_of(start_cluster_task, n, duration=0.1, steps=1) == grpc.StatusCode.UNAVAILABLE
                assert time.monotonic() - t1 < LEASE_TTL
                listed = [t.task_id for t in n.stub().ListTasks(pb.ListTasksRequest(module="builtin")).tasks]
                assert listed == [tid, spanning]
            assert time.monotonic() - t0 < 2 * LEASE_TTL * TIMEOUT_MULT
            members = c.nodes[0].stub().ListNodes(pb.ListNodesRequest())
            assert (members.stale, sorted(m.id for m in members.nodes)) == (True, ["n1", "n2", "n3"])
            cli = run_cli(c.nodes[0], "nodes")
            assert (cli.returncode, cli.stderr) == (0, f"warning: {c.nodes[0].address} has lost the cluster store; "
                                                       "this is its last known view\n")
            assert cli.stdout.splitlines()[0].split() == ["id", "address", "alive", "leader", "version", "started_at"]
            # Stay cut off past every lease and the channels' keep-alive timeout (5 s + 2 s).
            time.sleep(max(0.0, t0 + 8.0 - time.monotonic()))
        finally:
            for m in private_etcd.members:
                m.resume()
        for n in c.nodes:
            poll(lambda n=n: not status(n, tid).stale, 15, "the replica to be live again")
        c.wait_formed(20)
        tid2 = poll(lambda: _try_start(c.nodes[1]), 10, "a cluster start after the outage")
        assert wait_task(c.nodes[2], tid2).stats.state == "done"
        final = wait_task(c.nodes[0], spanning)
        assert (final.stats.state, list(final.children_ids)) == ("done", children)
        for n in c.nodes:
            assert status(n, tid) == done
            assert status(n, spanning) == final
            assert started_events(n)[child_map(final)[n.node_id]] == 1
    finally:
        c.stop()


@pytest.mark.needs_etcd
def test_no_quorum_refuses_cluster_starts(private_etcd: EtcdCluster, tmp_path: Path) -> None:
    c = Cluster(tmp_path, private_etcd.endpoints, name="no-quorum")
    try:
        c.start()
        tid = start_cluster_task(c.nodes[0], duration=0.1, steps=1)
        done = wait_task(c.nodes[0], tid)
        private_etcd.members[1].kill()
        private_etcd.members[2].kill()
        for n in c.nodes:
            assert code_of(start_cluster_task, n, duration=0.1, steps=1) == grpc.StatusCode.UNAVAILABLE
            assert status(n, tid).stats.state == done.stats.state  # reads still answered
    finally:
        c.stop()


@pytest.mark.needs_etcd
def test_duplicate_node_id_is_refused_and_own_restart_reclaims(cluster3: Cluster, tmp_path: Path) -> None:
    c = cluster3
    n2 = c.node("n2")
    dup = NodeProc(tmp_path / "other-n2", node_id="n2", extra=n2.extra)
    try:
        with contextlib.suppress(RuntimeError):  # it may exit before it ever reports healthy
            dup.start()
        assert dup.proc is not None
        code = dup.proc.wait(15 * TIMEOUT_MULT)
        assert code != 0
        assert "already live" in dup.log()
    finally:
        dup.stop()
    assert c.wait_formed(5) in node_ids(c)
    before = next(m for m in c.members_seen_by(c.nodes[0]).nodes if m.id == "n2")
    n2.kill()
    n2.start()
    t0 = time.monotonic()
    c.wait_formed(LEASE_TTL)  # at once, not after the old lease expires
    assert time.monotonic() - t0 < LEASE_TTL
    after = next(m for m in c.members_seen_by(c.nodes[0]).nodes if m.id == "n2")
    assert (after.address, after.alive) == (before.address, True)
    assert after.started_at.ToNanoseconds() > before.started_at.ToNanoseconds()
