"""Input limits on a real node: deeply nested or non-finite JSON arguments are refused on every surface
with a message naming the limit and change nothing; a tree that asks for 1,100 levels stops at the
limit, reads recursively, and what was written survives a crash."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

import grpc
import pytest

from taskward.limits import MAX_JSON_DEPTH, MAX_TREE_DEPTH
from taskward.pb.taskward.v1 import tasks_pb2 as pb
from taskward.pb.taskward.v1 import tasks_pb2_grpc as pb_grpc
from tests.conftest import NODE_ARGS
from tests.support.procs import NodeProc, free_port, poll, run_cli
from tests.support.rest import client, expect_error, rest_url, wait_http

DEEP = 10_000
LIMIT = f"the limit is {MAX_JSON_DEPTH} levels of arrays and objects"


def deep_list(depth: int) -> str:
    return "[" * depth + "]" * depth


@pytest.fixture(scope="module")
def limited(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NodeProc]:
    """A node with its REST surface; one idle task of module ``sample`` so a listing shows any change."""
    n = NodeProc(tmp_path_factory.mktemp("limits") / "n1", extra=[*NODE_ARGS, "--rest", f"127.0.0.1:{free_port()}"])
    n.start()
    try:
        wait_http(rest_url(n), n.proc, 15, n.log)
        seed = n.stub().StartTask(pb.StartTaskRequest(module="sample", type="whoami", args_json="{}"))
        n.stub().WaitTask(pb.WaitTaskRequest(task_id=seed.task_id, timeout=10))
        yield n
    finally:
        assert n.stop() == 0, n.log()


def state_of(stub: pb_grpc.TaskManagerStub) -> tuple[Any, ...]:
    """What a client can see of module ``sample`` (and of cluster tasks, listed first)."""
    listed = stub.ListTasks(pb.ListTasksRequest(module="sample", internal=True)).tasks
    return tuple((t.task_id, t.state, t.sequence_number, t.kind) for t in listed)


def grpc_error(call: Callable[[], Any]) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.RpcError) as err:
        call()
    return err.value.code(), err.value.details()


@pytest.mark.parametrize(("args_json", "message"), [
    ('{"extra": ' + deep_list(DEEP) + "}", f"args nested {DEEP + 1} levels deep: {LIMIT}"),
    ('{"extra": ' + deep_list(300) + "}", f"args nested 301 levels deep: {LIMIT}"),
    ('{"extra": NaN}', "args are not valid JSON: NaN is not a JSON number (only finite numbers are accepted)"),
    ('{"extra": -Infinity}',
     "args are not valid JSON: -Infinity is not a JSON number (only finite numbers are accepted)"),
    ('{"extra": 1e999}', "args are not valid JSON: number 1e999 is out of range (only finite numbers are accepted)"),
])
@pytest.mark.parametrize("cluster", [False, True], ids=["node", "cluster"])
def test_grpc_refuses_deep_and_non_finite_args(limited: NodeProc, args_json: str, message: str,
                                               cluster: bool) -> None:
    stub = limited.stub()
    before = state_of(stub)
    req = pb.StartTaskRequest(module="sample", type="whoami", args_json=args_json, cluster=cluster,
                              idempotency_key=f"deep-{cluster}")
    assert grpc_error(lambda: stub.StartTask(req, timeout=10)) == (grpc.StatusCode.INVALID_ARGUMENT, message)
    assert state_of(stub) == before


@pytest.mark.parametrize(("path", "body", "message"), [
    ("/tasks/sample/whoami", '{"extra": ' + deep_list(DEEP) + "}", f"task arguments nested {DEEP + 1} levels deep: "
                                                                      f"{LIMIT}"),
    ("/tasks/sample/whoami", '{"extra": ' + deep_list(300) + "}", f"task arguments nested 301 levels deep: {LIMIT}"),
    ("/tasks/sample/whoami?cluster=true", '{"extra": ' + deep_list(DEEP) + "}",
     f"task arguments nested {DEEP + 1} levels deep: {LIMIT}"),
    ("/admin/tasks/whoami", '{"extra": ' + deep_list(DEEP) + "}", f"task arguments nested {DEEP + 1} levels deep: "
                                                                     f"{LIMIT}"),
    ("/tasks/sample/whoami", '{"extra": ' + deep_list(MAX_JSON_DEPTH) + "}",
     f"task arguments nested {MAX_JSON_DEPTH + 1} levels deep: {LIMIT}"),
])
def test_rest_refuses_deep_args(limited: NodeProc, path: str, body: str, message: str) -> None:
    stub = limited.stub()
    before = state_of(stub)
    with client(rest_url(limited)) as c:
        expect_error(c.post(path, content=body, headers={"content-type": "application/json"}), 400, message)
    assert state_of(stub) == before


def test_rest_refuses_non_finite_literals(limited: NodeProc) -> None:
    stub = limited.stub()
    before = state_of(stub)
    with client(rest_url(limited)) as c:
        resp = c.post("/tasks/sample/whoami", content='{"extra": NaN}', headers={"content-type": "application/json"})
        assert expect_error(resp, 400).startswith("malformed JSON body")
    assert state_of(stub) == before


def test_args_at_the_limit_are_accepted(limited: NodeProc) -> None:
    value = json.loads(deep_list(MAX_JSON_DEPTH - 1))
    with client(rest_url(limited)) as c:
        resp = c.post("/tasks/sample/whoami", json={"extra": value})
        assert resp.status_code == 200, resp.text
        done = c.get(f"/task_manager/wait_task/{resp.json()}", params={"timeout": 10})
        assert done.status_code == 200, done.text
        assert c.get(f"/task_manager/task_status/{resp.json()}").json()["result"]["extra"] == value


def test_the_cli_refuses_a_deep_arg(limited: NodeProc) -> None:
    before = state_of(limited.stub())
    out = run_cli(limited, "start", "sample", "whoami", "--arg", "extra=" + deep_list(DEEP))
    assert (out.returncode, out.stdout) == (1, "")
    assert out.stderr == f"error: --arg extra nested {DEEP} levels deep: {LIMIT}\n"
    nan = run_cli(limited, "start", "sample", "whoami", "--arg", "extra=NaN", "--wait")  # not JSON: a string
    assert nan.returncode == 0, nan.stderr
    task_id = nan.stdout.split()[0]
    assert json.loads(limited.stub().GetTaskStatus(pb.TaskIdRequest(task_id=task_id, keep=True)).result_json)[
        "extra"] == "NaN"
    assert len(state_of(limited.stub())) == len(before) + 1


def test_a_deep_tree_stops_at_the_limit_reads_recursively_and_survives_a_crash(node: NodeProc) -> None:
    stub = node.stub()
    root = stub.StartTask(pb.StartTaskRequest(module="sample", type="chain", args_json='{"depth": 1100}')).task_id

    def whole_chain() -> list[pb.TaskStatus] | None:
        statuses = stub.GetTaskStatusRecursive(pb.TaskIdRequest(task_id=root, keep=True), timeout=10).statuses
        return list(statuses) if len(statuses) == MAX_TREE_DEPTH + 1 and statuses[-1].progress_message else None

    tree = poll(whole_chain, 60, f"a chain of {MAX_TREE_DEPTH} levels under {root}")
    assert [s.parent_id for s in tree] == ["none", *(s.stats.task_id for s in tree[:-1])]
    deepest = tree[-1].stats.task_id
    assert tree[-1].progress_message == (f"task tree too deep: a child of task {deepest} would be "
                                         f"{MAX_TREE_DEPTH + 1} levels below its root, the limit is {MAX_TREE_DEPTH}")

    stub.AbortTask(pb.TaskIdRequest(task_id=root))
    final = stub.WaitTask(pb.WaitTaskRequest(task_id=root, timeout=60), timeout=70)
    assert (final.stats.state, final.aborted) == ("failed", True)

    node.kill()  # what was answered must be on disk
    node.start()
    stub = node.stub()
    again = stub.GetTaskStatus(pb.TaskIdRequest(task_id=root, keep=True))
    assert (again.stats.state, again.aborted, again.error) == ("failed", True, "aborted")
    assert stub.GetTaskStatusRecursive(pb.TaskIdRequest(task_id=root, keep=True)).statuses[0].stats.task_id == root
