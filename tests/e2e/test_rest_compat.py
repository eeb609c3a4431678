"""ScyllaDB task-manager REST compatibility, in the style of ScyllaDB's test/rest_api/test_task_manager.py,
written from the documented semantics (README: REST API) and run against a real ``taskward gateway`` in
front of two real nodes; plus routing to the node that owns a task, and failover when a node dies."""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from taskward.pb.taskward.v1 import tasks_pb2 as pb
from tests.conftest import NODE_ARGS
from tests.support.procs import NodeProc, poll
from tests.support.rest import GatewayProc, client, expect_error

LONG_TTL = 1_000_000
ISO = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z$")
EPOCH = "1970-01-01T00:00:00Z"
UNKNOWN = "deadbeef-0000-4000-8000-00000000abcd"


# ---------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[NodeProc, NodeProc, GatewayProc]]:
    base = tmp_path_factory.mktemp("rest-compat")
    n1 = NodeProc(base / "n1", node_id="n1", extra=NODE_ARGS)
    n2 = NodeProc(base / "n2", node_id="n2", extra=NODE_ARGS)
    gw: GatewayProc | None = None
    try:
        n1.start()
        n2.start()
        gw = GatewayProc(base, [n1, n2]).start()
        yield n1, n2, gw
    finally:
        codes = [p.stop() for p in (gw, n1, n2) if p is not None]
    assert codes == [0, 0, 0], f"unclean stop {codes}:\n{gw.log() if gw else ''}"


@pytest.fixture(scope="module")
def rest(cluster: tuple[NodeProc, NodeProc, GatewayProc]) -> Iterator[httpx.Client]:
    with client(cluster[2].url) as c:
        yield c


# ---------------------------------------------------------------- helpers (named as in ScyllaDB's test)


def ok(resp: httpx.Response) -> Any:
    assert resp.status_code == 200, (resp.status_code, resp.text)
    return resp.json()


@contextmanager
def new_test_module(rest: httpx.Client) -> Iterator[None]:
    ok(rest.post("/task_manager_test/test_module"))
    try:
        yield
    finally:
        ok(rest.delete("/task_manager_test/test_module"))


@contextmanager
def new_test_task(rest: httpx.Client, **params: Any) -> Iterator[str]:
    tid = ok(rest.post("/task_manager_test/test_task", params=params))
    assert isinstance(tid, str)
    try:
        yield tid
    finally:
        resp = rest.delete("/task_manager_test/test_task", params={"task_id": tid})
        assert resp.status_code in (200, 400), resp.text


@contextmanager
def set_tmp_task_ttl(rest: httpx.Client, ttl: int, *, user: bool = False) -> Iterator[None]:
    path, name = ("/task_manager/user_ttl", "user_ttl") if user else ("/task_manager/ttl", "ttl")
    old = ok(rest.post(path, params={name: ttl}))
    try:
        yield
    finally:
        ok(rest.post(path, params={name: old}))


def list_ids(rest: httpx.Client, module: str = "test", **params: Any) -> list[str]:
    return [t["task_id"] for t in ok(rest.get(f"/task_manager/list_module_tasks/{module}", params=params))]


def status(rest: httpx.Client, tid: str) -> dict[str, Any]:
    s = ok(rest.get(f"/task_manager/task_status/{tid}"))
    assert s["id"] == s["task_id"] == tid
    return dict(s)


def finish(rest: httpx.Client, tid: str, error: str | None = None) -> None:
    ok(rest.post(f"/task_manager_test/finish_test_task/{tid}", params={"error": error} if error else {}))


def assert_task_does_not_exist(rest: httpx.Client, tid: str) -> None:
    expect_error(rest.get(f"/task_manager/task_status/{tid}"), 400, f"task with id {tid} not found")


# ---------------------------------------------------------------- ScyllaDB-style tests


def test_task_manager_list_modules(rest: httpx.Client) -> None:
    before = ok(rest.get("/task_manager/list_modules"))
    assert {"builtin", "sample"} <= set(before) and "test" not in before
    with new_test_module(rest):
        assert set(ok(rest.get("/task_manager/list_modules"))) == {*before, "test"}
    assert ok(rest.get("/task_manager/list_modules")) == before


def test_task_manager_list_module_tasks(rest: httpx.Client) -> None:
    with new_test_module(rest), new_test_task(rest, keyspace="ks0", table="t0") as r0, \
            new_test_task(rest, shard=1, keyspace="ks0", table="t1") as r1, \
            new_test_task(rest, keyspace="ks1", table="t0") as r2, \
            new_test_task(rest, parent_id=r0, keyspace="ks0", table="t0") as c0:
        assert list_ids(rest) == [r0, r1, r2]
        for internal in ("true", "1", "TRUE"):
            assert list_ids(rest, internal=internal) == [r0, r1, r2, c0]
        assert list_ids(rest, internal="0") == [r0, r1, r2]
        assert list_ids(rest, keyspace="ks0") == [r0, r1]
        assert list_ids(rest, table="t0") == [r0, r2]
        assert list_ids(rest, keyspace="ks0", table="t0", internal="true") == [r0, c0]
        assert list_ids(rest, keyspace="nope") == []
        stats = {t["task_id"]: t for t in ok(rest.get("/task_manager/list_module_tasks/test"))}
        assert set(stats[r1]) == {"task_id", "type", "kind", "scope", "state", "sequence_number", "keyspace",
                                  "table", "entity", "shard", "start_time", "end_time"}
        assert (stats[r1]["shard"], stats[r1]["state"], stats[r1]["kind"], stats[r1]["scope"]) == (
            1, "running", "node", "node")


def test_task_manager_status_running(rest: httpx.Client) -> None:
    with new_test_module(rest), new_test_task(rest, keyspace="keyspace0", table="table0", entity="e") as tid:
        s = status(rest, tid)
        assert (s["state"], s["sequence_number"], s["type"], s["module"]) == ("running", 1, "test", "test")
        assert (s["keyspace"], s["table"], s["entity"], s["shard"]) == ("keyspace0", "table0", "e", 0)
        assert (s["parent_id"], s["is_abortable"], s["error"], s["children_ids"]) == ("none", False, "", [])
        assert ISO.match(s["start_time"]) and s["start_time"] != EPOCH and s["end_time"] == EPOCH
        assert list_ids(rest) == [tid], "task_status unregistered a running task"


@pytest.mark.parametrize("error", [None, "Test task failed"])
def test_task_manager_status_finished(rest: httpx.Client, error: str | None) -> None:
    with new_test_module(rest), set_tmp_task_ttl(rest, LONG_TTL), \
            new_test_task(rest, keyspace="keyspace0", table="table0") as tid:
        finish(rest, tid, error)
        for _ in range(2):  # wait_task never unregisters
            w = ok(rest.get(f"/task_manager/wait_task/{tid}"))
            assert (w["state"], w["error"]) == ("failed" if error else "done", error or "")
        s = status(rest, tid)
        assert (s["state"], s["error"], s["keyspace"]) == (w["state"], error or "", "keyspace0")
        assert ISO.match(s["end_time"]) and s["end_time"] >= s["start_time"] != EPOCH
        assert_task_does_not_exist(rest, tid)  # a finished root is unregistered by being read
        assert list_ids(rest) == []


def test_task_manager_not_abortable(rest: httpx.Client) -> None:
    with new_test_module(rest), new_test_task(rest) as tid:
        expect_error(rest.post(f"/task_manager/abort_task/{tid}"), 403, f"Task with id {tid} is not abortable")
        assert status(rest, tid)["state"] == "running"


def test_task_manager_wait(rest: httpx.Client) -> None:
    with new_test_module(rest), set_tmp_task_ttl(rest, LONG_TTL), new_test_task(rest) as tid:
        expect_error(rest.get(f"/task_manager/wait_task/{tid}", params={"timeout": "0.3"}), 408)
        finisher = threading.Timer(2.0, lambda: finish(rest, tid))
        t0 = time.monotonic()
        finisher.start()
        try:
            w = ok(rest.get(f"/task_manager/wait_task/{tid}"))
        finally:
            finisher.join()
        assert time.monotonic() - t0 >= 2.0, "wait_task returned before the task finished"
        assert (w["task_id"], w["state"]) == (tid, "done")


def test_task_manager_ttl(rest: httpx.Client) -> None:
    for path, name, default in (("/task_manager/ttl", "ttl", 0), ("/task_manager/user_ttl", "user_ttl", 3600)):
        assert ok(rest.get(path)) == default
        assert ok(rest.post(path, params={name: 7})) == default  # POST answers the previous value
        assert ok(rest.get(path)) == 7
        assert ok(rest.post(path, params={name: default})) == 7
        assert ok(rest.get(path)) == default


@pytest.mark.parametrize("user", [False, True])
def test_task_manager_ttl_expiry(rest: httpx.Client, user: bool) -> None:
    with new_test_module(rest), set_tmp_task_ttl(rest, 1, user=user), \
            set_tmp_task_ttl(rest, LONG_TTL, user=not user):
        tid = ok(rest.post("/task_manager_test/test_task", params={"user_task": "true" if user else "false"}))
        finish(rest, tid)
        assert list_ids(rest) == [tid]
        poll(lambda: list_ids(rest) == [], 10, "ttl expiry")
        assert_task_does_not_exist(rest, tid)


def test_task_manager_sequence_number(rest: httpx.Client) -> None:
    with new_test_module(rest), new_test_task(rest, shard=0) as r0, new_test_task(rest, shard=0) as r1, \
            new_test_task(rest, parent_id=r0) as c0, new_test_task(rest, shard=1, parent_id=r1) as c1, \
            new_test_task(rest, shard=1) as r2:
        assert [status(rest, x)["sequence_number"] for x in (r0, r1, c0, c1, r2)] == [1, 2, 1, 2, 1]


def test_task_manager_recursive_status(rest: httpx.Client) -> None:
    with new_test_module(rest), new_test_task(rest, keyspace="keyspace0") as root, \
            new_test_task(rest, parent_id=root) as child1, new_test_task(rest, parent_id=child1) as grandchild:
        with new_test_task(rest, parent_id=root) as child2:
            pass  # unregistered: it stays part of its parent's tree
        assert_task_does_not_exist(rest, child2)
        tree = ok(rest.get(f"/task_manager/task_status_recursive/{root}"))
        assert [s["id"] for s in tree] == [root, child1, child2, grandchild]  # BFS, root first
        assert [s["parent_id"] for s in tree] == ["none", root, root, child1]
        assert [c["task_id"] for c in tree[0]["children_ids"]] == [child1, child2]
        assert {c["node"] for c in tree[0]["children_ids"]} == {"n1"}
        assert list_ids(rest) == [root]


def test_task_manager_unknown_module(rest: httpx.Client) -> None:
    expect_error(rest.get("/task_manager/list_module_tasks/nope"), 400, "module nope not found")
    expect_error(rest.post("/task_manager/drain/nope"), 400, "module nope not found")
    expect_error(rest.get("/task_manager/list_module_tasks/test"), 400, "module test not found")


def test_task_manager_folding(rest: httpx.Client) -> None:
    """15 tasks: 0 root, 1-2 children, 3-6 grandchildren, 7-14 great-grandchildren; 7 fails."""
    with new_test_module(rest), set_tmp_task_ttl(rest, LONG_TTL):
        tree = [ok(rest.post("/task_manager_test/test_task"))]
        for i in range(1, 15):
            tree.append(ok(rest.post("/task_manager_test/test_task", params={"parent_id": tree[(i - 1) // 2]})))
        running = ok(rest.get(f"/task_manager/task_status_recursive/{tree[0]}"))
        assert [s["id"] for s in running] == tree and {s["state"] for s in running} == {"running"}
        for i in range(14, 0, -1):
            finish(rest, tree[i], "x" if i == 7 else None)
        assert_task_does_not_exist(rest, tree[8])  # folded into its parent
        finish(rest, tree[0])
        final = ok(rest.get(f"/task_manager/task_status_recursive/{tree[0]}"))
        assert [(tree.index(s["id"]), s["state"]) for s in final] == [
            (0, "done"), (1, "done"), (2, "done"), (3, "done"), (7, "failed")]
        assert final[-1]["error"] == "x"
        assert_task_does_not_exist(rest, tree[0])


def test_task_manager_drain(rest: httpx.Client) -> None:
    with new_test_module(rest), set_tmp_task_ttl(rest, LONG_TTL), new_test_task(rest) as done_root, \
            new_test_task(rest) as running_root:
        finish(rest, done_root)
        assert list_ids(rest) == [done_root, running_root]
        assert ok(rest.post("/task_manager/drain/test")) is None
        assert list_ids(rest) == [running_root]


# ---------------------------------------------------------------- routing through the gateway


def test_task_on_second_node_is_routed(cluster: tuple[NodeProc, NodeProc, GatewayProc], rest: httpx.Client) -> None:
    _, n2, _ = cluster
    stub = n2.stub()
    tid = stub.StartTask(pb.StartTaskRequest(module="builtin", type="sleep",
                                             args_json='{"duration": 30, "steps": 300}')).task_id
    assert tid not in list_ids(rest, "builtin"), "listing is the first node's own"
    s = poll(lambda: (x := status(rest, tid))["state"] == "running" and x, 10, "task running on n2")
    assert s["module"] == "builtin" and s["is_abortable"]
    expect_error(rest.get(f"/task_manager/wait_task/{tid}", params={"timeout": "0.2"}), 408)
    assert ok(rest.post(f"/task_manager/abort_task/{tid}")) is None
    w = ok(rest.get(f"/task_manager/wait_task/{tid}", params={"timeout": "10"}))
    assert (w["state"], w["error"], w["aborted"]) == ("failed", "aborted", True)
    # a test-API child is created on its parent's node
    t2 = n2.test_stub()
    t2.RegisterTestModule(pb.Empty())
    try:
        parent = t2.CreateTestTask(pb.CreateTestTaskRequest()).task_id
        child = ok(rest.post("/task_manager_test/test_task", params={"parent_id": parent}))
        assert [c.task_id for c in stub.GetTaskStatus(pb.TaskIdRequest(task_id=parent)).children_ids] == [child]
        finish(rest, child)
        assert [x["state"] for x in ok(rest.get(f"/task_manager/task_status_recursive/{parent}"))] == [
            "running", "done"]
    finally:
        t2.UnregisterTestModule(pb.Empty())


def test_gateway_failover(tmp_path: Path) -> None:
    n1 = NodeProc(tmp_path / "n1", node_id="n1", extra=NODE_ARGS).start()
    n2 = NodeProc(tmp_path / "n2", node_id="n2", extra=NODE_ARGS).start()
    gw = GatewayProc(tmp_path, [n1, n2]).start()
    try:
        with client(gw.url) as rest:
            on_n2 = n2.stub().StartTask(pb.StartTaskRequest(module="builtin", type="sleep",
                                                            args_json='{"duration": 30, "steps": 300}')).task_id
            assert status(rest, on_n2)["state"] in ("created", "running")  # located and cached
            ok(rest.post("/task_manager/ttl", params={"ttl": 5}))  # lands on n1, the first reachable
            n1.kill()
            assert ok(rest.get("/task_manager/ttl")) == 0, "n2's own ttl: the call failed over"
            assert "builtin" in ok(rest.get("/task_manager/list_modules"))
            assert status(rest, on_n2)["state"] == "running"
            started = ok(rest.post("/tasks/builtin/sleep", json={"duration": 0, "steps": 1}))
            assert ok(rest.get(f"/task_manager/wait_task/{started}", params={"timeout": 10}))["state"] == "done"
            health = ok(rest.get("/health"))
            assert health["nodes"] == {n1.address: False, n2.address: True}
            ok(rest.post(f"/task_manager/abort_task/{on_n2}"))
    finally:
        assert gw.stop() == 0, gw.log()
        n2.stop()
