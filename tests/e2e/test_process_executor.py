"""``executor="process"`` on a real node with two worker processes (``--process-workers 2``): results,
progress, logs, abort, children (from synchronous and async bodies, and parents waiting for process
children without a deadlock), at most two bodies computing at once, a worker that dies failing only its
own task, time limits that kill an overstaying worker, exceptions keeping their class for ``retry_on``,
and worker processes that end with their node (SIGTERM or SIGKILL) while the restart re-queues the task."""

from __future__ import annotations

import json
import os
import re
import signal
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from taskward.pb.taskward.v1 import tasks_pb2 as pb
from taskward.procpool.pool import ABANDON_GRACE_S
from tests.conftest import NODE_ARGS
from tests.support.procs import TIMEOUT_MULT, NodeProc, free_port, poll

WORKERS = 2


@pytest.fixture
def node(tmp_path: Path) -> Iterator[NodeProc]:
    n = NodeProc(tmp_path / "n1", extra=[*NODE_ARGS, "--process-workers", str(WORKERS),
                                         "--metrics", f"127.0.0.1:{free_port()}"])
    n.start()
    try:
        yield n
    finally:
        assert n.stop() == 0, n.log()


def start(n: NodeProc, type_: str, **args: object) -> str:
    req = pb.StartTaskRequest(module="sample", type=type_, args_json=json.dumps(args))
    return str(n.stub().StartTask(req, timeout=5).task_id)


def queue_depth(n: NodeProc) -> float:
    """``taskward_queue_depth`` as the node's ``--metrics`` listener serves it."""
    address = n.extra[n.extra.index("--metrics") + 1]
    with urllib.request.urlopen(f"http://{address}/metrics", timeout=5) as resp:
        text = resp.read().decode()
    return next(float(line.split()[1]) for line in text.splitlines() if line.startswith("taskward_queue_depth "))


def wait(n: NodeProc, task_id: str, timeout: float = 30.0) -> pb.TaskStatus:
    return n.stub().WaitTask(pb.WaitTaskRequest(task_id=task_id, timeout=timeout * TIMEOUT_MULT),
                             timeout=timeout * TIMEOUT_MULT + 5)


def status(n: NodeProc, task_id: str) -> pb.TaskStatus:
    return n.stub().GetTaskStatus(pb.TaskIdRequest(task_id=task_id, keep=True), timeout=5)


def running_in(n: NodeProc, task_id: str, done: float = 1.0) -> int:
    """The pid of the worker process running ``task_id``, once it has reported ``done`` units (its progress
    message names the pid)."""
    def progressed() -> pb.TaskStatus | None:
        st = status(n, task_id)
        reported = st.progress_message.startswith("pid ") and st.progress_completed >= done
        return st if st.stats.state == "running" and reported else None

    st = poll(progressed, 30, f"task {task_id} running with progress {done}")
    match = re.fullmatch(r"pid (\d+)", st.progress_message)
    assert match, st.progress_message
    return int(match.group(1))


def events_of(n: NodeProc, task_id: str) -> list[str]:
    """The types of the (finished) task's events, replayed from the start of the node's log."""
    seen = []
    for ev in n.stub().WatchEvents(pb.WatchEventsRequest(after_sequence=0), timeout=10 * TIMEOUT_MULT):
        if ev.task_id == task_id:
            seen.append(ev.type)
            if ev.type in ("task.completed", "task.failed", "task.aborted"):
                return seen
    raise AssertionError(f"the event stream ended before task {task_id} did: {seen}")


def gone(pid: int) -> bool:
    """The process has ended (a zombie nobody reaped yet counts as ended)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return True
    return stat.rsplit(")", 1)[1].split()[0] == "Z"


def children_of(n: NodeProc) -> set[int]:
    assert n.pid is not None
    found = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (FileNotFoundError, ProcessLookupError):
            continue
        if int(fields[1]) == n.pid and fields[0] != "Z":
            found.add(int(stat.parent.name))
    return found


def test_bodies_run_in_worker_processes_with_results_progress_and_logs(node: NodeProc) -> None:
    ids = [start(node, "spin", seconds=0.2, batches=4) for _ in range(2)]
    results = [json.loads(wait(node, tid).result_json) for tid in ids]
    assert all(r["ppid"] == node.pid and r["pid"] != node.pid and r["rounds"] > 0 for r in results), results
    assert results[0]["pid"] != results[1]["pid"]  # two workers, side by side
    final = status(node, ids[0])
    assert (final.stats.state, final.progress_completed, final.progress_total, final.progress_units) == (
        "done", 4.0, 4.0, "batches")
    # the transitions and their middleware stay in the node: events, and the type stats of TASK.ADMIN LIST
    assert events_of(node, ids[0]) == ["task.started", *["task.progress"] * 4, "task.completed"]
    types = node.stub().ListTaskTypes(pb.ListTaskTypesRequest(), timeout=5).types
    spin_stats = {t.name: t for t in types}["sample:spin"]
    assert spin_stats.completed and spin_stats.last_run > 0 and not spin_stats.running
    tid = start(node, "crunch", batches=2, batch_s=0.01)
    assert (wait(node, tid).stats.state, json.loads(status(node, tid).result_json)) == ("done", 2)
    # what the body logged in its worker is the node's own line, naming the task
    assert re.search(rf"INFO taskward\.task \[task {tid} sample:crunch\]: crunching in worker process \d+",
                     node.log()), node.log()


def test_abort_reaches_a_body_in_its_worker_at_once(node: NodeProc) -> None:
    tid = start(node, "crunch", batches=100_000, batch_s=0.01)
    running_in(node, tid, done=2)
    node.stub().AbortTask(pb.TaskIdRequest(task_id=tid), timeout=5)
    final = wait(node, tid, timeout=5)
    assert (final.stats.state, final.error, final.aborted) == ("failed", "aborted", True)
    assert final.progress_completed < 100_000


def test_at_most_process_workers_bodies_compute_and_a_waiting_task_stays_created(node: NodeProc) -> None:
    ids = [start(node, "crunch", batches=100_000, batch_s=0.01) for _ in range(WORKERS + 1)]
    running = poll(lambda: [t for t in ids if status(node, t).stats.state == "running"] if sum(
        status(node, t).progress_completed >= 3 for t in ids) >= WORKERS else None, 30, "two tasks computing")
    assert len(running) == WORKERS
    (waiting,) = set(ids) - set(running)
    before = {t: status(node, t).progress_completed for t in running}
    poll(lambda: all(status(node, t).progress_completed >= before[t] + 5 for t in running), 30, "both progress")
    assert (status(node, waiting).stats.state, status(node, waiting).progress_completed) == ("created", 0.0)
    assert queue_depth(node) == 1  # the task waiting for a worker
    node.stub().AbortTask(pb.TaskIdRequest(task_id=running[0]), timeout=5)
    assert wait(node, running[0], timeout=5).aborted
    running_in(node, waiting)  # it got the freed worker
    assert queue_depth(node) == 0
    for tid in (running[1], waiting):
        node.stub().AbortTask(pb.TaskIdRequest(task_id=tid), timeout=5)
        assert wait(node, tid, timeout=5).aborted


def test_process_bodies_spawn_and_wait_for_children(node: NodeProc) -> None:
    tid = start(node, "proc-parent", children=2)
    result = json.loads(wait(node, tid).result_json)
    assert len(result) == 2 and all(r["ppid"] == node.pid for r in result), result
    tid = start(node, "proc-async-parent", children=3)
    assert len(json.loads(wait(node, tid).result_json)) == 3
    tree = node.stub().GetTaskStatusRecursive(pb.TaskIdRequest(task_id=tid, keep=True), timeout=5).statuses
    assert [t.stats.type for t in tree] == ["proc-async-parent", "spin", "spin", "spin"]
    assert {t.parent_id for t in tree[1:]} == {tid}


def test_a_failed_child_fails_its_process_parent_with_its_name(node: NodeProc) -> None:
    tid = start(node, "proc-parent", children=1, child_type="raises")
    final = wait(node, tid)
    child_id = final.children_ids[0].task_id if final.children_ids else ""
    assert (final.stats.state, final.error) == ("failed", f"child {child_id} (sample:raises) failed: boom")


def test_parents_waiting_for_process_children_never_deadlock_the_pool(node: NodeProc) -> None:
    """As many process parents as workers, each waiting for process children: a waiting parent gives its
    worker's place back, so the children run (else all four would wait forever)."""
    ids = [start(node, "proc-parent", children=2, child_args={"seconds": 0.05}) for _ in range(WORKERS)]
    for tid in ids:
        final = wait(node, tid)
        assert final.stats.state == "done", final.error
        assert len(json.loads(final.result_json)) == 2


@pytest.mark.parametrize(("how", "exit_code"), [("sigkill", -9), ("exit", 3), ("segfault", -11)])
def test_a_worker_that_dies_fails_only_its_own_task(node: NodeProc, how: str, exit_code: int) -> None:
    neighbour = start(node, "crunch", batches=100_000, batch_s=0.01)
    neighbour_pid = running_in(node, neighbour)
    tid = start(node, "proc-crash", how=how)
    final = wait(node, tid)
    assert (final.stats.state, final.error) == (
        "failed", f"worker process died (exit code {exit_code}) while running this task")
    seen = status(node, neighbour).progress_completed
    running_in(node, neighbour, done=seen + 3)  # the other worker went on, undisturbed
    assert not gone(neighbour_pid)
    after = start(node, "spin", seconds=0.05)  # the pool replaced the dead worker
    assert wait(node, after).stats.state == "done"
    node.stub().AbortTask(pb.TaskIdRequest(task_id=neighbour), timeout=5)
    assert wait(node, neighbour, timeout=5).aborted


def test_a_time_limit_kills_a_worker_whose_body_does_not_return(node: NodeProc) -> None:
    tid = start(node, "overstay")
    pid = running_in(node, tid, done=0)
    final = wait(node, tid)
    assert (final.stats.state, final.error) == ("failed", "time limit of 1s exceeded")
    poll(lambda: gone(pid), ABANDON_GRACE_S + 10, f"worker {pid} killed")
    assert f"killing worker process {pid}: its run of task {tid} was abandoned" in node.log()
    assert wait(node, start(node, "spin", seconds=0.05)).stats.state == "done"


def test_a_cooperative_body_past_its_time_limit_returns_and_its_worker_is_reused(node: NodeProc) -> None:
    tid = start(node, "overstay", cooperative=True)
    pid = running_in(node, tid, done=0)
    assert wait(node, tid).error == "time limit of 1s exceeded"
    poll(lambda: f"worker process {pid} returned from its abandoned run (aborted)" in node.log(), 10,
         "the body to stop at its next check")
    after = json.loads(wait(node, start(node, "spin", seconds=0.05)).result_json)
    assert after["pid"] == pid  # the only worker, idle again: the body stopped at its next check
    assert f"killing worker process {pid}" not in node.log()


def test_an_exception_keeps_its_class_across_the_process_boundary(node: NodeProc, tmp_path: Path) -> None:
    """``retry_on=(FlakyError,)`` matches the class raised in the worker: attempt 1 is retried; a ValueError
    on attempt 2 is not."""
    log = tmp_path / "attempts.log"
    final = wait(node, start(node, "proc-flaky", log=str(log)))
    assert (final.stats.state, json.loads(final.result_json), final.attempt) == ("done", "done", 2)
    log.unlink()
    final = wait(node, start(node, "proc-flaky", log=str(log), then="value-error"))
    assert (final.stats.state, final.error, final.attempt, final.max_attempts) == (
        "failed", "attempt 2 fails for good", 2, 3)


def test_results_that_cannot_be_stored_fail_the_task_saying_why(node: NodeProc) -> None:
    final = wait(node, start(node, "proc-result", kind="set"))
    assert (final.stats.state, final.error) == (
        "failed", "the task's return value is not JSON-serialisable: Object of type set is not JSON serializable")
    final = wait(node, start(node, "proc-result", kind="large"))
    assert final.error == "the task's return value is too large: 71682 bytes of JSON > 65536"


def test_workers_end_with_their_node_and_a_restart_requeues_the_task(node: NodeProc) -> None:
    tid = start(node, "crunch", batches=40, batch_s=0.02)
    pid = running_in(node, tid)
    node.kill()  # SIGKILL: the worker sees its connection end and exits by itself
    poll(lambda: gone(pid), 10, f"worker {pid} of the killed node to exit")
    node.start()
    final = wait(node, tid)
    assert (final.stats.state, json.loads(final.result_json), final.attempt) == ("done", 40, 1)


def test_a_graceful_stop_stops_every_worker(node: NodeProc) -> None:
    """Workers leave signals to their node (systemd's stop and Ctrl-C reach the whole group): the node
    ends them, by closing their connections."""
    tid = start(node, "crunch", batches=100_000, batch_s=0.01)
    pid = running_in(node, tid)
    assert wait(node, start(node, "spin", seconds=0.05)).stats.state == "done"
    workers = children_of(node)
    assert len(workers) == WORKERS and pid in workers, workers
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        os.kill(pid, sig)
    seen = status(node, tid).progress_completed
    running_in(node, tid, done=seen + 3)  # still computing
    assert node.stop() == 0, node.log()
    assert [pid for pid in workers if not gone(pid)] == []
    node.start()
    assert status(node, tid).stats.state in ("created", "running")  # re-queued: it is retryable
    node.stub().AbortTask(pb.TaskIdRequest(task_id=tid), timeout=5)
    assert wait(node, tid, timeout=5).aborted


@pytest.mark.parametrize(("what", "why"), [
    ("garbage", "a frame that is not UTF-8 JSON: Expecting value: line 1 column 1 (char 0)"),
    ("huge", "a frame of 2147483648 bytes is larger than 1048576"),
])
def test_a_worker_that_breaks_the_protocol_is_killed_and_fails_only_its_task(node: NodeProc, what: str,
                                                                             why: str) -> None:
    final = wait(node, start(node, "proc-garble", what=what))
    assert (final.stats.state, final.error) == ("failed", f"worker process broke the protocol ({why}); it was stopped")
    assert wait(node, start(node, "spin", seconds=0.05)).stats.state == "done"


TASKS_FILE = '''
import os

from taskward import TaskContext, task_type

SCALE = int(os.environ.get("SCALE_FOR_TEST", "1"))  # module state, set up again in each worker


@task_type("filetasks", "square", executor="process")
def square(ctx: TaskContext, *, n: int) -> dict[str, int]:
    return {"square": n * n * SCALE, "pid": os.getpid()}
'''


def test_a_body_from_a_tasks_file_is_loaded_in_its_worker_as_the_node_loaded_it(tmp_path: Path) -> None:
    """``--tasks /some/dir/file.py``: the folder is not on the path, so the worker imports the file itself."""
    (tmp_path / "elsewhere").mkdir()
    path = tmp_path / "elsewhere" / "filetasks_for_workers.py"
    path.write_text(TASKS_FILE)
    n = NodeProc(tmp_path / "n1", extra=["--tasks", str(path), "--process-workers", "1"],
                 env={"SCALE_FOR_TEST": "10"})
    n.start()
    try:
        req = pb.StartTaskRequest(module="filetasks", type="square", args_json='{"n": 7}')
        final = wait(n, str(n.stub().StartTask(req, timeout=5).task_id))
        result = json.loads(final.result_json)
        assert (final.stats.state, result["square"]) == ("done", 490)
        assert result["pid"] != n.pid
    finally:
        assert n.stop() == 0, n.log()
