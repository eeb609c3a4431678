"""``taskward node`` and ``taskward gateway`` as an operator meets them: a taken port, a ``--tasks`` module
by name or by path, ``--version``, and the logs (text and JSON lines, task ids on lines about a task).
Real processes; stdout, stderr and exit codes checked; no traceback ever."""

from __future__ import annotations

import json
import os
import socket
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from taskward import __version__
from taskward.pb.taskward.v1 import tasks_pb2 as pb
from tests.support.procs import REPO, TIMEOUT_MULT, NodeProc, free_port, taskward_cmd

TASKS_PY = '''
from taskward import TaskContext, task_type

@task_type("mine", "hello")
async def hello(ctx: TaskContext, *, name: str) -> str:
    ctx.log.info("saying hello to %s", name)
    return f"hello {name}"
'''


def run(args: list[str], *, cwd: Path = REPO, timeout: float = 30.0,
        env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*taskward_cmd(), *args], capture_output=True, text=True, cwd=cwd, check=False,
                          timeout=timeout * TIMEOUT_MULT, env={**os.environ, **(env or {})})


def no_traceback(out: subprocess.CompletedProcess[str]) -> None:
    assert "Traceback" not in out.stderr and "Traceback" not in out.stdout, out.stderr


@pytest.fixture
def taken() -> Iterator[str]:
    """A loopback address something else listens on."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        yield f"127.0.0.1:{s.getsockname()[1]}"


@pytest.mark.parametrize("flag", ["--listen", "--rest", "--admin"])
def test_a_taken_port_is_one_error_line_exit_2_and_nothing_created(taken: str, flag: str, tmp_path: Path) -> None:
    data = tmp_path / "x1"
    args = ["node", "--id", "x1", "--data-dir", str(data), "--listen", f"127.0.0.1:{free_port()}", flag, taken]
    out = run(args, cwd=tmp_path)
    no_traceback(out)
    assert (out.returncode, out.stderr) == (2, f"error: cannot listen on {taken}: address already in use\n")
    assert not data.exists() and list(tmp_path.iterdir()) == []


def test_the_gateway_on_a_taken_port(taken: str, tmp_path: Path) -> None:
    out = run(["gateway", "--listen", taken, "--node", "127.0.0.1:7100"], cwd=tmp_path)
    no_traceback(out)
    assert (out.returncode, out.stderr) == (2, f"error: cannot listen on {taken}: address already in use\n")


@pytest.mark.parametrize("how", ["name", "file", "dotted-file"])
def test_tasks_by_module_name_from_the_current_folder_or_by_file(tmp_path: Path, how: str) -> None:
    work = tmp_path / "work"
    work.mkdir()
    (work / "mytasks.py").write_text(TASKS_PY)
    spec = {"name": "mytasks", "file": str(work / "mytasks.py"), "dotted-file": "./mytasks.py"}[how]
    n = NodeProc(work / "data", extra=["--tasks", spec])
    n.launch(cwd=work).wait_ready(15 * TIMEOUT_MULT)
    try:
        tid = n.stub().StartTask(pb.StartTaskRequest(module="mine", type="hello", args_json='{"name": "ops"}')).task_id
        st = n.stub().WaitTask(pb.WaitTaskRequest(task_id=tid, timeout=10))
        assert (st.stats.state, json.loads(st.result_json)) == ("done", "hello ops")
    finally:
        n.stop()


@pytest.mark.parametrize(("spec", "error"), [
    ("nosuchmodule", "error: --tasks nosuchmodule: no module named 'nosuchmodule' (give a module importable from the "
                     "current folder or the Python path, or the path of a .py file)"),
    ("./missing.py", "error: --tasks ./missing.py: no such file"),
    ("broken", "error: --tasks broken: cannot import it: ZeroDivisionError: division by zero"),
    ("needsdep", "error: --tasks needsdep: cannot import it: No module named 'somethingnotinstalled'"),
])
def test_a_tasks_module_that_does_not_load_is_one_error_line(tmp_path: Path, spec: str, error: str) -> None:
    (tmp_path / "broken.py").write_text("1 / 0\n")
    (tmp_path / "needsdep.py").write_text("import somethingnotinstalled\n")
    out = run(["node", "--id", "x1", "--listen", f"127.0.0.1:{free_port()}", "--tasks", spec], cwd=tmp_path)
    no_traceback(out)
    assert (out.returncode, out.stderr.strip().splitlines()[-1]) == (2, error)
    assert not (tmp_path / "taskward-data").exists()


def test_version() -> None:
    out = run(["--version"])
    assert (out.returncode, out.stdout, out.stderr) == (0, f"taskward {__version__}\n", "")


def one_hello(tmp_path: Path, *, node_id: str = "n1", flags: tuple[str, ...] = ()) -> tuple[NodeProc, str]:
    """A node (stopped again) that ran ``mine:hello`` once from ``./mytasks.py``: the node, and the task's id."""
    (tmp_path / "mytasks.py").write_text(TASKS_PY)
    n = NodeProc(tmp_path / "data", node_id=node_id, extra=["--tasks", "mytasks", *flags])
    n.launch(cwd=tmp_path).wait_ready(15 * TIMEOUT_MULT)
    try:
        tid = n.stub().StartTask(pb.StartTaskRequest(module="mine", type="hello", args_json='{"name": "ops"}')).task_id
        n.stub().WaitTask(pb.WaitTaskRequest(task_id=tid, timeout=10))
    finally:
        n.stop()
    return n, tid


def test_json_logs_name_the_node_and_the_task(tmp_path: Path) -> None:
    n, tid = one_hello(tmp_path, node_id="j1", flags=("--log-format", "json", "--log-level", "debug"))
    lines = [json.loads(line) for line in n.log_path.read_text().splitlines() if line.strip()]
    assert all({"time", "level", "logger", "message", "node"} <= set(line) for line in lines)
    assert {line["node"] for line in lines} == {"j1"}
    assert any(line["level"] == "debug" for line in lines)
    said = [line for line in lines if line["message"] == "saying hello to ops"]
    assert [(s["task_id"], s["module"], s["type"], s["logger"]) for s in said] == [(tid, "mine", "hello",
                                                                                   "taskward.task")]
    started = " ".join(line["message"] for line in lines)
    assert f"serving gRPC on {n.address}" in started and str((tmp_path / "data").resolve()) in started


def test_text_logs_carry_the_task_id(tmp_path: Path) -> None:
    n, tid = one_hello(tmp_path)
    line = next(line for line in n.log_path.read_text().splitlines() if "saying hello" in line)
    assert line.endswith(f"INFO taskward.task [task {tid} mine:hello]: saying hello to ops")


@pytest.mark.parametrize(("flag", "value", "error"), [
    ("--log-level", "loud", "error: invalid --log-level 'loud': expected one of debug, info, warning, error"),
    ("--log-format", "xml", "error: invalid --log-format 'xml': expected one of text, json"),
])
def test_bad_log_settings(tmp_path: Path, flag: str, value: str, error: str) -> None:
    out = run(["node", "--id", "x1", flag, value], cwd=tmp_path)
    no_traceback(out)
    assert (out.returncode, out.stderr) == (2, error + "\n")


def test_a_second_node_on_the_same_data_dir_exits_2_and_the_first_carries_on(tmp_path: Path) -> None:
    first = NodeProc(tmp_path / "d", node_id="d1").start()
    try:
        tid = first.stub().StartTask(pb.StartTaskRequest(module="builtin", type="sleep",
                                                         args_json='{"duration": 1, "steps": 2}')).task_id
        assert first.proc is not None
        out = run(["node", "--id", "d1", "--listen", f"127.0.0.1:{free_port()}", "--data-dir", str(tmp_path / "d")],
                  cwd=tmp_path)
        no_traceback(out)
        lock = tmp_path / "d" / "taskward.lock"
        assert (out.returncode, out.stderr) == (2, (
            f"error: data dir {tmp_path / 'd'} is in use by another taskward node (pid {first.proc.pid}; lock {lock}): "
            "one data dir serves one node\n"))
        st = first.stub().WaitTask(pb.WaitTaskRequest(task_id=tid, timeout=10))
        assert st.stats.state == "done"  # run once, by its own node
        first.kill()  # the kernel drops the lock with the process: a restart takes it again
        first.start()
        assert first.stub().WaitTask(pb.WaitTaskRequest(task_id=tid, timeout=1)).stats.state == "done"
    finally:
        first.stop()


def test_data_is_private_whatever_the_umask_and_a_weak_token_file_is_named(tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text("short\n")
    token.chmod(0o644)
    wrapper = ["sh", "-c", 'umask 000; exec "$0" "$@"', sys.executable, "-m", "taskward"]
    n = NodeProc(tmp_path / "d", extra=["--token-file", str(token)], command=wrapper).start()
    try:
        data = tmp_path / "d"
        assert stat.S_IMODE(data.stat().st_mode) == 0o700
        for name in ("taskward.sqlite3", "taskward.sqlite3-wal", "instance"):
            assert stat.S_IMODE((data / name).stat().st_mode) == 0o600, name
    finally:
        n.stop()
    log = n.log()
    assert f"--token-file {token} can be read by other users: chmod 600 it" in log
    assert "the bearer token is shorter than 16 characters" in log


def test_reflection_lists_the_test_api_only_when_it_is_served(tmp_path: Path) -> None:
    from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

    def services(n: NodeProc) -> set[str]:
        stub = reflection_pb2_grpc.ServerReflectionStub(n.channel())
        answers = stub.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")]))
        return {s.name for a in answers for s in a.list_services_response.service}

    plain = NodeProc(tmp_path / "plain").start()
    with_test = NodeProc(tmp_path / "test", extra=["--enable-test-api"]).start()
    try:
        assert "taskward.v1.TestApi" not in services(plain) and "taskward.v1.TaskManager" in services(plain)
        assert "taskward.v1.TestApi" in services(with_test)
    finally:
        plain.stop()
        with_test.stop()


@pytest.mark.parametrize("label", ["keyspace", "table", "entity", "idempotency_key"])
def test_a_cluster_start_bounds_its_labels_as_a_node_start_does(tmp_path: Path, label: str) -> None:
    import grpc

    n = NodeProc(tmp_path / "c").start()
    try:
        for cluster in (True, False):
            req = pb.StartTaskRequest(module="builtin", type="sleep", args_json='{"duration": 0}', cluster=cluster,
                                      **{label: "x" * 1025})
            with pytest.raises(grpc.RpcError) as info:
                n.stub().StartTask(req, timeout=10)
            assert (info.value.code(), info.value.details()) == (
                grpc.StatusCode.INVALID_ARGUMENT, f"{label} longer than 1024 characters")
        assert list(n.stub().ListTasks(pb.ListTasksRequest(module="builtin", internal=True)).tasks) == []
    finally:
        n.stop()
