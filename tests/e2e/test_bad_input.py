"""Every bad input gets a clear error of the right code and leaves the node's state unchanged."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from taskward.pb.taskward.v1 import tasks_pb2 as pb
from taskward.pb.taskward.v1 import tasks_pb2_grpc as pb_grpc
from tests.support.procs import TIMEOUT_MULT, NodeProc

UNKNOWN = str(uuid.uuid4())
LONG = json.dumps({"duration": 60, "steps": 600})  # aborts within 0.1 s
MALFORMED = ["", "abc", UNKNOWN.upper(), UNKNOWN + "0", "../../etc/passwd", "0" * 36, UNKNOWN.replace("-", "")]


def code_of(call: Callable[[], Any]) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.RpcError) as err:
        call()
    return err.value.code(), err.value.details()


def snapshot(stub: pb_grpc.TaskManagerStub) -> tuple[Any, ...]:
    """Everything a client can observe about the node's tasks and settings."""
    tasks = tuple(
        (t.task_id, t.state, t.sequence_number)
        for m in stub.ListModules(pb.ListModulesRequest()).modules
        for t in stub.ListTasks(pb.ListTasksRequest(module=m, internal=True)).tasks
    )
    ttls = tuple(stub.GetTtl(pb.GetTtlRequest(kind=k)).ttl for k in (pb.TTL_KIND_TASK, pb.TTL_KIND_USER))
    return tasks, ttls


@pytest.fixture
def seeded(shared_node: NodeProc) -> pb_grpc.TaskManagerStub:
    """A node with exactly one running builtin task (sequence number 1)."""
    stub = shared_node.stub()
    stub.Drain(pb.DrainRequest(module="builtin"))
    for t in stub.ListTasks(pb.ListTasksRequest(module="builtin")).tasks:
        stub.AbortTask(pb.TaskIdRequest(task_id=t.task_id))
        stub.WaitTask(pb.WaitTaskRequest(task_id=t.task_id, timeout=5))
    stub.Drain(pb.DrainRequest(module="builtin"))
    tid = stub.StartTask(pb.StartTaskRequest(module="builtin", type="sleep", args_json=LONG)).task_id
    deadline = time.monotonic() + 10 * TIMEOUT_MULT
    while {t.task_id: t.state for t in stub.ListTasks(pb.ListTasksRequest(module="builtin")).tasks}[tid] != "running":
        assert time.monotonic() < deadline, "seeded task never started"
        time.sleep(0.01)  # snapshots must not race the created → running step
    return stub


@pytest.mark.parametrize("method", ["GetTaskStatus", "GetTaskStatusRecursive", "AbortTask"])
def test_unknown_id_is_not_found(seeded: pb_grpc.TaskManagerStub, method: str) -> None:
    before = snapshot(seeded)
    code, details = code_of(lambda: getattr(seeded, method)(pb.TaskIdRequest(task_id=UNKNOWN)))
    assert (code, details) == (grpc.StatusCode.NOT_FOUND, f"task with id {UNKNOWN} not found")
    code, _ = code_of(lambda: seeded.WaitTask(pb.WaitTaskRequest(task_id=UNKNOWN, timeout=1)))
    assert code == grpc.StatusCode.NOT_FOUND
    assert snapshot(seeded) == before


@pytest.mark.parametrize("bad_id", MALFORMED)
def test_malformed_id_is_invalid_argument(seeded: pb_grpc.TaskManagerStub, bad_id: str) -> None:
    before = snapshot(seeded)
    for method in ("GetTaskStatus", "GetTaskStatusRecursive", "AbortTask"):
        code, details = code_of(lambda m=method: getattr(seeded, m)(pb.TaskIdRequest(task_id=bad_id)))
        assert code == grpc.StatusCode.INVALID_ARGUMENT
        assert "malformed task id" in details
    code, _ = code_of(lambda: seeded.WaitTask(pb.WaitTaskRequest(task_id=bad_id)))
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert snapshot(seeded) == before


@pytest.mark.parametrize(
    ("module", "type_", "args", "needle"),
    [
        ("nope", "sleep", {"duration": 1}, "module nope not found"),
        ("builtin", "nope", {}, "task type builtin:nope not found"),
        ("builtin", "sleep", {}, "missing required argument 'duration'"),
        ("builtin", "sleep", {"duration": "x"}, "argument 'duration' of builtin:sleep must be float, got str"),
        ("builtin", "sleep", {"duration": 1, "steps": 1.5}, "must be int, got float"),
        ("builtin", "sleep", {"duration": 1, "steps": True}, "must be int, got bool"),
        ("builtin", "sleep", {"duration": -1}, "duration must be between"),
        ("builtin", "sleep", {"duration": 1, "bogus": 1}, "unknown argument(s) for builtin:sleep: bogus"),
        ("builtin", "fail", {"error": 3}, "must be str, got int"),
    ],
)
def test_bad_start_is_rejected_and_nothing_is_created(
    seeded: pb_grpc.TaskManagerStub, module: str, type_: str, args: dict[str, Any], needle: str
) -> None:
    before = snapshot(seeded)
    req = pb.StartTaskRequest(module=module, type=type_, args_json=json.dumps(args))
    code, details = code_of(lambda: seeded.StartTask(req))
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert needle in details
    assert snapshot(seeded) == before
    # nothing half-created: the next root gets the next sequence number
    last = max(t.sequence_number for t in seeded.ListTasks(pb.ListTasksRequest(module="builtin")).tasks)
    tid = seeded.StartTask(pb.StartTaskRequest(module="builtin", type="sleep", args_json=LONG)).task_id
    st = {t.task_id: t for t in seeded.ListTasks(pb.ListTasksRequest(module="builtin")).tasks}[tid]
    assert st.sequence_number == last + 1


@pytest.mark.parametrize("raw", ["{", "[1, 2]", '"s"', "null", "{'a': 1}"])
def test_malformed_args_json(seeded: pb_grpc.TaskManagerStub, raw: str) -> None:
    before = snapshot(seeded)
    code, details = code_of(lambda: seeded.StartTask(pb.StartTaskRequest(module="builtin", type="fail", args_json=raw)))
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert "args" in details
    assert snapshot(seeded) == before


def test_oversized_args(seeded: pb_grpc.TaskManagerStub) -> None:
    before = snapshot(seeded)
    big = json.dumps({"error": "x" * (64 * 1024)})
    code, details = code_of(lambda: seeded.StartTask(pb.StartTaskRequest(module="builtin", type="fail", args_json=big)))
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert details.startswith("args too large:")
    huge = "x" * (5 * 1024 * 1024)  # above the 4 MiB message limit
    code, _ = code_of(lambda: seeded.StartTask(pb.StartTaskRequest(module="builtin", type="fail", args_json=huge)))
    assert code == grpc.StatusCode.RESOURCE_EXHAUSTED
    code, _ = code_of(lambda: seeded.StartTask(pb.StartTaskRequest(module="builtin", type="fail", entity="e" * 2000)))
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert snapshot(seeded) == before


@pytest.mark.parametrize("value", [-1, -(2**40), 2**32, 10**12])
def test_bad_ttl_is_rejected_and_unchanged(seeded: pb_grpc.TaskManagerStub, value: int) -> None:
    before = snapshot(seeded)
    for kind in (pb.TTL_KIND_TASK, pb.TTL_KIND_USER):
        code, details = code_of(lambda k=kind: seeded.SetTtl(pb.SetTtlRequest(kind=k, ttl=value)))
        assert code == grpc.StatusCode.INVALID_ARGUMENT
        assert "ttl" in details
    assert snapshot(seeded) == before


def test_bad_module_page_token_and_timeout(seeded: pb_grpc.TaskManagerStub) -> None:
    before = snapshot(seeded)
    code, details = code_of(lambda: seeded.ListTasks(pb.ListTasksRequest(module="nope")))
    assert (code, details) == (grpc.StatusCode.INVALID_ARGUMENT, "module nope not found")
    code, _ = code_of(lambda: seeded.Drain(pb.DrainRequest(module="nope")))
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    code, _ = code_of(lambda: seeded.ListTasks(pb.ListTasksRequest(module="builtin", page_token="x")))
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    tid = before[0][0][0]
    code, _ = code_of(lambda: seeded.WaitTask(pb.WaitTaskRequest(task_id=tid, timeout=-1)))
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    for weird in (float("nan"), float("inf"), -float("inf")):  # NaN once broke the node's timers for good
        assert code_of(lambda w=weird: seeded.WaitTask(pb.WaitTaskRequest(task_id=tid, timeout=w))) == (
            grpc.StatusCode.INVALID_ARGUMENT, f"timeout must be a finite number >= 0, got {weird!r}")
    assert snapshot(seeded) == before
    started = time.monotonic()
    quick = seeded.StartTask(pb.StartTaskRequest(module="builtin", type="sleep", args_json='{"duration": 0.2}'))
    seeded.WaitTask(pb.WaitTaskRequest(task_id=quick.task_id, timeout=10))
    assert time.monotonic() - started < 5  # the node's timers still work


def test_failing_body_does_not_disturb_other_tasks(seeded: pb_grpc.TaskManagerStub) -> None:
    long_id = seeded.ListTasks(pb.ListTasksRequest(module="builtin")).tasks[0].task_id
    bad = seeded.StartTask(pb.StartTaskRequest(module="sample", type="raises")).task_id
    st = seeded.WaitTask(pb.WaitTaskRequest(task_id=bad, timeout=10))
    assert (st.stats.state, st.error) == ("failed", "boom")
    ok = seeded.StartTask(pb.StartTaskRequest(module="builtin", type="sleep", args_json='{"duration": 0}')).task_id
    assert seeded.WaitTask(pb.WaitTaskRequest(task_id=ok, timeout=10)).stats.state == "done"
    states = {t.task_id: t.state for t in seeded.ListTasks(pb.ListTasksRequest(module="builtin")).tasks}
    assert states[long_id] == "running"


def test_test_api_is_absent_without_flag(tmp_path: Path) -> None:
    n = NodeProc(tmp_path / "plain").start()
    try:
        code, _ = code_of(lambda: n.test_stub().RegisterTestModule(pb.Empty()))
        assert code == grpc.StatusCode.UNIMPLEMENTED
        assert "test" not in n.stub().ListModules(pb.ListModulesRequest()).modules
    finally:
        assert n.stop() == 0


def test_bearer_token_is_required_when_configured(tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("s3cret\n")
    n = NodeProc(tmp_path / "auth", extra=["--token-file", str(token_file)]).start()
    try:
        stub = n.stub()
        for metadata in [(), (("authorization", "Bearer wrong"),), (("authorization", "s3cret"),)]:
            code, _ = code_of(lambda md=metadata: stub.ListModules(pb.ListModulesRequest(), metadata=md))
            assert code == grpc.StatusCode.UNAUTHENTICATED
        ok = stub.ListModules(pb.ListModulesRequest(), metadata=(("authorization", "Bearer s3cret"),))
        assert "builtin" in ok.modules
        health = health_pb2_grpc.HealthStub(n.channel()).Check(health_pb2.HealthCheckRequest())
        assert health.status == health_pb2.HealthCheckResponse.SERVING
    finally:
        assert n.stop() == 0
