"""Crash safety: SIGKILL a real node, restart it from its data dir, check nothing was lost."""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path

import grpc
import pytest

from taskward.pb.taskward.v1 import tasks_pb2 as pb
from taskward.pb.taskward.v1 import tasks_pb2_grpc as pb_grpc
from tests.support.procs import TIMEOUT_MULT, NodeProc


def start(stub: object, module: str, type_: str, **args: object) -> str:
    req = pb.StartTaskRequest(module=module, type=type_, args_json=json.dumps(args))
    return stub.StartTask(req).task_id  # type: ignore[attr-defined]


def wait_state(stub: object, task_id: str, state: str, timeout: float = 10.0) -> pb.TaskStatus:
    """Poll with WaitTask (never unregisters) until the task reaches ``state``."""
    deadline = time.monotonic() + timeout * TIMEOUT_MULT
    while time.monotonic() < deadline:
        try:
            st = stub.WaitTask(pb.WaitTaskRequest(task_id=task_id, timeout=0.2))  # type: ignore[attr-defined]
            if st.stats.state == state:
                return st
        except grpc.RpcError as exc:
            if exc.code() != grpc.StatusCode.DEADLINE_EXCEEDED:
                raise
        lst = stub.ListTasks(pb.ListTasksRequest(module="builtin"))  # type: ignore[attr-defined]
        if any(t.task_id == task_id and t.state == state for t in lst.tasks):
            return stub.WaitTask(pb.WaitTaskRequest(task_id=task_id, timeout=0))  # type: ignore[attr-defined]
    raise TimeoutError(f"task {task_id} never reached {state}")


def wait_running(stub: object, module: str, task_id: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout * TIMEOUT_MULT
    while time.monotonic() < deadline:
        tasks = stub.ListTasks(pb.ListTasksRequest(module=module)).tasks  # type: ignore[attr-defined]
        if any(t.task_id == task_id and t.state == "running" for t in tasks):
            return
        time.sleep(0.02)
    raise TimeoutError(f"task {task_id} never started")


@pytest.fixture
def crashy(tmp_path: Path):  # type: ignore[no-untyped-def]
    n = NodeProc(tmp_path / "n1", extra=["--tasks", "tests.support.sample_tasks", "--concurrency", "2"])
    n.start()
    yield n
    n.stop()


def test_running_retryable_task_is_requeued_after_sigkill(crashy: NodeProc) -> None:
    stub = crashy.stub()
    tid = start(stub, "builtin", "sleep", duration=30, steps=30)
    wait_running(stub, "builtin", tid)
    crashy.kill()
    crashy.start()
    stub = crashy.stub()
    tasks = {t.task_id: t for t in stub.ListTasks(pb.ListTasksRequest(module="builtin")).tasks}
    assert tid in tasks and tasks[tid].state in ("created", "running")
    stub.AbortTask(pb.TaskIdRequest(task_id=tid))
    st = stub.WaitTask(pb.WaitTaskRequest(task_id=tid, timeout=10))
    assert (st.stats.state, st.error, st.aborted) == ("failed", "aborted", True)


def test_running_non_retryable_task_fails_with_node_restarted(crashy: NodeProc) -> None:
    stub = crashy.stub()
    tid = start(stub, "sample", "cpu", batches=2000, batch_s=0.01)
    wait_running(stub, "sample", tid)
    crashy.kill()
    crashy.start()
    st = crashy.stub().WaitTask(pb.WaitTaskRequest(task_id=tid, timeout=5))
    assert (st.stats.state, st.error) == ("failed", "node restarted")


def test_queued_work_and_history_survive_sigkill(crashy: NodeProc) -> None:
    stub = crashy.stub()
    done_id = start(stub, "builtin", "sleep", duration=0, steps=1)
    wait_state(stub, done_id, "done")
    # two slots busy, the rest queued behind them
    busy = [start(stub, "builtin", "sleep", duration=60, steps=60) for _ in range(2)]
    for b in busy:
        wait_running(stub, "builtin", b)
    queued = [start(stub, "builtin", "sleep", duration=0.05, steps=1) for _ in range(5)]
    crashy.kill()
    crashy.start()
    stub = crashy.stub()
    for b in busy:
        stub.AbortTask(pb.TaskIdRequest(task_id=b))
    for q in queued:
        assert stub.WaitTask(pb.WaitTaskRequest(task_id=q, timeout=15)).stats.state == "done"
    history = stub.WaitTask(pb.WaitTaskRequest(task_id=done_id, timeout=0))
    assert history.stats.state == "done" and history.progress_completed == 1


def test_ttl_clock_and_settings_survive_sigkill(crashy: NodeProc) -> None:
    stub = crashy.stub()
    stub.SetTtl(pb.SetTtlRequest(kind=pb.TTL_KIND_USER, ttl=3))
    stub.SetTtl(pb.SetTtlRequest(kind=pb.TTL_KIND_TASK, ttl=7))
    tid = start(stub, "builtin", "sleep", duration=0, steps=1)
    st = wait_state(stub, tid, "done")
    finished_at = st.stats.end_time.seconds
    crashy.kill()
    crashy.start()
    stub = crashy.stub()
    assert stub.GetTtl(pb.GetTtlRequest(kind=pb.TTL_KIND_USER)).ttl == 3
    assert stub.GetTtl(pb.GetTtlRequest(kind=pb.TTL_KIND_TASK)).ttl == 7
    assert stub.WaitTask(pb.WaitTaskRequest(task_id=tid, timeout=0)).stats.state == "done"
    # the 3 s TTL counts from completion, not from the restart
    deadline = time.monotonic() + 10 * TIMEOUT_MULT
    while time.monotonic() < deadline:
        try:
            stub.WaitTask(pb.WaitTaskRequest(task_id=tid, timeout=0))
        except grpc.RpcError as exc:
            assert exc.code() == grpc.StatusCode.NOT_FOUND
            break
        time.sleep(0.1)
    else:
        pytest.fail("task outlived its ttl after restart")
    assert time.time() >= finished_at + 3


def test_idempotency_key_survives_sigkill(crashy: NodeProc) -> None:
    stub = crashy.stub()
    req = pb.StartTaskRequest(module="builtin", type="sleep", args_json='{"duration": 60}', idempotency_key="k1")
    first = stub.StartTask(req).task_id
    crashy.kill()
    crashy.start()
    stub = crashy.stub()
    assert stub.StartTask(req).task_id == first
    other = pb.StartTaskRequest(module="builtin", type="sleep", args_json='{"duration": 61}', idempotency_key="k1")
    with pytest.raises(grpc.RpcError) as err:
        stub.StartTask(other)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert len(stub.ListTasks(pb.ListTasksRequest(module="builtin")).tasks) == 1
    stub.AbortTask(pb.TaskIdRequest(task_id=first))


def test_event_stream_resumes_after_restart_without_gaps(crashy: NodeProc) -> None:
    stub = crashy.stub()
    tid = start(stub, "builtin", "sleep", duration=0, steps=3)
    wait_state(stub, tid, "done")
    events: list[pb.Event] = []
    stream = stub.WatchEvents(pb.WatchEventsRequest())
    for ev in stream:
        events.append(ev)
        if ev.type == "task.completed":
            break
    stream.cancel()
    assert [e.type for e in events] == ["task.started"] + ["task.progress"] * 4 + ["task.completed"]
    assert [e.sequence for e in events] == list(range(events[0].sequence, events[0].sequence + 6))
    last = events[2].sequence
    crashy.kill()
    crashy.start()
    stub = crashy.stub()
    tid2 = start(stub, "builtin", "sleep", duration=0, steps=1)
    resumed = []
    stream = stub.WatchEvents(pb.WatchEventsRequest(after_sequence=last))
    for ev in stream:
        resumed.append(ev)
        if ev.task_id == tid2 and ev.type == "task.completed":
            break
    stream.cancel()
    seqs = [e.sequence for e in resumed]
    assert seqs == list(range(last + 1, last + 1 + len(seqs)))
    assert [e.task_id for e in resumed[:3]] == [tid] * 3


def test_a_live_stream_is_confirmed_at_once_and_ended_by_shutdown(node: NodeProc) -> None:
    """The initial metadata says the subscription is registered, so an event published after it reaches
    the stream; a node shutting down ends open streams with UNAVAILABLE rather than holding its stop."""
    with grpc.insecure_channel(node.address) as ch:
        stream = pb_grpc.TaskManagerStub(ch).WatchEvents(pb.WatchEventsRequest(live_only=True))
        assert ("taskward-events", "subscribed") in stream.initial_metadata()
        tid = start(node.stub(), "builtin", "sleep", duration=0, steps=1)
        seen = []
        for ev in stream:  # a live stream gets every event of a task started after it was confirmed
            assert ev.task_id == tid
            seen.append(ev.type)
            if ev.type == "task.completed":
                break
        assert seen == ["task.started", "task.progress", "task.progress", "task.completed"]
        assert node.proc is not None
        t0 = time.monotonic()
        node.proc.send_signal(signal.SIGTERM)
        with pytest.raises(grpc.RpcError) as info:
            next(stream)
        assert info.value.code() == grpc.StatusCode.UNAVAILABLE  # type: ignore[attr-defined]
        assert "node shutting down; resume after sequence" in info.value.details()  # type: ignore[attr-defined]
        assert time.monotonic() - t0 < 2.0 * TIMEOUT_MULT  # not held for the server's 2 s grace
        assert node.proc.wait(15 * TIMEOUT_MULT) == 0
