"""Task results and retries on a real node process: the result through gRPC, REST and the CLI and across a
SIGKILL; a scheduled retry that survives a SIGKILL and runs at its time, once; abort of a pending retry;
``task.retrying`` on the event stream; the README's task-type example run as written."""

from __future__ import annotations

import json
import re
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from taskward.pb.taskward.v1 import tasks_pb2 as pb
from tests.support.procs import REPO, TIMEOUT_MULT, NodeProc, free_port, poll, run_cli
from tests.support.sample_tasks import PINNED_RETRY_S


@pytest.fixture
def node(tmp_path: Path) -> Iterator[NodeProc]:
    n = NodeProc(tmp_path / "n1", extra=["--tasks", "tests.support.sample_tasks", "--rest", f"127.0.0.1:{free_port()}"])
    n.start()
    yield n
    n.stop()


def rest_port(n: NodeProc) -> str:
    return n.extra[n.extra.index("--rest") + 1]


def start(n: NodeProc, module: str, type_: str, **args: object) -> str:
    req = pb.StartTaskRequest(module=module, type=type_, args_json=json.dumps(args))
    return str(n.stub().StartTask(req, timeout=5).task_id)


def wait(n: NodeProc, task_id: str, timeout: float = 15.0) -> pb.TaskStatus:
    return n.stub().WaitTask(pb.WaitTaskRequest(task_id=task_id, timeout=timeout * TIMEOUT_MULT),
                             timeout=timeout * TIMEOUT_MULT + 5)


def keep_status(n: NodeProc, task_id: str) -> pb.TaskStatus:
    return n.stub().GetTaskStatus(pb.TaskIdRequest(task_id=task_id, keep=True), timeout=5)


def test_the_result_on_every_surface_and_after_a_sigkill(node: NodeProc) -> None:
    tid = start(node, "sample", "whoami", extra={"rows": 3, "name": "ü"})
    expected = {"task_id": tid, "extra": {"rows": 3, "name": "ü"}}
    assert json.loads(wait(node, tid).result_json) == expected
    node.kill()
    node.start()
    st = keep_status(node, tid)
    assert (st.stats.state, json.loads(st.result_json)) == ("done", expected)
    with urllib.request.urlopen(f"http://{rest_port(node)}/task_manager/wait_task/{tid}", timeout=5) as resp:
        body = json.load(resp)
    assert (body["result"], body["attempt"], body["max_attempts"]) == (expected, 1, 1)
    out = run_cli(node, "status", tid)
    assert out.returncode == 0, out.stderr
    assert f"result: {json.dumps(expected, separators=(',', ':'), ensure_ascii=False)}" in out.stdout.splitlines()


def test_a_task_without_a_result_says_null(node: NodeProc) -> None:
    tid = start(node, "builtin", "sleep", duration=0, steps=0)
    assert wait(node, tid).result_json == "null"
    with urllib.request.urlopen(f"http://{rest_port(node)}/task_manager/task_status/{tid}", timeout=5) as resp:
        assert json.load(resp)["result"] is None


def attempts(log: Path) -> list[float]:
    return [float(t) for t in log.read_text().split()] if log.exists() else []


def retrying_event(n: NodeProc, task_id: str) -> pb.Event:
    for ev in n.stub().WatchEvents(pb.WatchEventsRequest(after_sequence=0), timeout=10 * TIMEOUT_MULT):
        if ev.type == "task.retrying" and ev.task_id == task_id:
            return ev
    raise AssertionError("no task.retrying event")


def test_a_scheduled_retry_survives_sigkill_and_runs_at_its_time_once(node: NodeProc, tmp_path: Path) -> None:
    log = tmp_path / "attempts.log"
    tid = start(node, "sample", "fail-once", log=str(log))
    ev = retrying_event(node, tid)
    due = ev.next_attempt_at.seconds + ev.next_attempt_at.nanos / 1e9
    assert (ev.error, ev.attempt) == ("first attempt fails", 2)
    # the delay the test middleware pinned
    assert PINNED_RETRY_S <= due - attempts(log)[0] <= PINNED_RETRY_S + 0.5 * TIMEOUT_MULT
    pending = keep_status(node, tid)
    assert (pending.stats.state, pending.attempt, pending.max_attempts) == ("running", 2, 2)
    assert pending.next_attempt_at.ToMilliseconds() == round(due * 1000)  # statuses carry milliseconds
    node.kill()
    node.start()
    final = wait(node, tid)
    runs = attempts(log)
    assert (final.stats.state, json.loads(final.result_json), final.attempt, final.HasField("next_attempt_at")) == (
        "done", 2, 2, False)
    assert len(runs) == 2 and runs[1] >= due  # at its time, not earlier, and not twice


def test_abort_cancels_a_pending_retry(node: NodeProc, tmp_path: Path) -> None:
    log = tmp_path / "attempts.log"
    tid = start(node, "sample", "fail-once", log=str(log))
    ev = retrying_event(node, tid)
    node.stub().AbortTask(pb.TaskIdRequest(task_id=tid), timeout=5)
    final = wait(node, tid, timeout=1.0)  # at once: not when the retry was due
    assert (final.stats.state, final.error, final.aborted) == ("failed", "aborted", True)
    due = ev.next_attempt_at.seconds + ev.next_attempt_at.nanos / 1e9
    done = threading.Event()
    done.wait(max(0.0, due - time.time()) + 0.5)  # past its time: it never ran again
    assert len(attempts(log)) == 1


README_TASKS_MODULE = "readme_tasks"


def readme_block(heading: str) -> str:
    text = (REPO / "README.md").read_text()
    section = text[text.index(heading):]
    match = re.search(r"```python\n(.*?)```", section, re.S)
    assert match is not None
    return match.group(1)


def test_the_readme_task_type_example_is_correct_as_written(tmp_path: Path) -> None:
    """The "Writing task types" module, loaded by a real node: a failed child fails its parent (exit 123)."""
    (tmp_path / f"{README_TASKS_MODULE}.py").write_text(readme_block("## Writing task types"))
    n = NodeProc(tmp_path / "n1", extra=["--tasks", README_TASKS_MODULE],
                 env={"PYTHONPATH": str(tmp_path)})
    n.start()
    try:
        ok = start(n, "maintenance", "compact", table="users", batches=3)
        st = wait(n, ok)
        assert (st.stats.state, json.loads(st.result_json)) == ("done", {"table": "users", "batches": 3,
                                                                           "index_pages": 3})
        bad = start(n, "maintenance", "compact", table="broken", batches=2)
        st = wait(n, bad)
        child = poll(lambda: [t for t in n.stub().GetTaskStatusRecursive(pb.TaskIdRequest(task_id=bad, keep=True))
                             .statuses if t.stats.type == "compact-index"], 5, "the child in the tree")[0]
        assert (st.stats.state, st.error) == (
            "failed", f"child {child.stats.task_id} (maintenance:compact-index) failed: index of broken is corrupt")
        out = run_cli(n, "wait", bad)
        assert out.returncode == 123, out
    finally:
        n.stop()


def test_bad_retry_options_are_refused_when_the_module_loads() -> None:
    from taskward import task_type

    for kwargs, message in [
        ({"retries": -1}, "retries must be a non-negative integer, got -1"),
        ({"retries": 1.5}, "retries must be a non-negative integer, got 1.5"),
        ({"retry_backoff": (5.0, 1.0)},
         "retry_backoff must be (initial, max) with 0 <= initial <= max, got (5.0, 1.0)"),
        ({"retry_on": ()}, "retry_on must be a non-empty tuple of exception classes"),
        ({"retry_on": (int,)}, "retry_on must be a non-empty tuple of exception classes"),
    ]:
        with pytest.raises(ValueError) as info:
            task_type("m", "t", **kwargs)  # type: ignore[arg-type]
        assert str(info.value) == message


def test_sse_events_carry_the_retry_fields(node: NodeProc, tmp_path: Path) -> None:
    import httpx

    from tests.support.procs import TIMEOUT_MULT as MULT

    tid = start(node, "sample", "fail-once", log=str(tmp_path / "attempts.log"))
    ev = retrying_event(node, tid)
    with httpx.Client(base_url=f"http://{rest_port(node)}") as rest, \
            rest.stream("GET", "/events", params={"after": "0"}, timeout=20 * MULT) as resp:
        data: dict[str, object] = {}
        fields: dict[str, str] = {}
        for line in resp.iter_lines():
            if line:
                key, _, value = line.partition(": ")
                fields[key] = value
                continue
            if fields.get("event") == "task.retrying":
                data = json.loads(fields["data"])
                break
            fields = {}
    assert (data["task_id"], data["error"], data["attempt"]) == (tid, "first attempt fails", 2)
    due_ms = ev.next_attempt_at.ToMilliseconds()
    expected = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(due_ms // 1000)) + f".{due_ms % 1000:03d}Z"
    assert data["next_attempt_at"] == expected
