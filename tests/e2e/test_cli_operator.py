"""``taskward tasks`` as an operator meets it: one progress bar for every kind of wait on a real terminal
(a pty of a chosen width), help where help is asked for, quiet pipes, ``--json`` wherever data is printed,
and a walk over every subcommand with bad values: never a traceback, always one ``error:`` line and the
documented exit code."""

from __future__ import annotations

import fcntl
import json
import os
import pty
import re
import struct
import subprocess
import termios
from collections.abc import Iterator
from pathlib import Path

import pytest

from taskward.pb.taskward.v1 import tasks_pb2 as pb
from tests.conftest import NODE_ARGS
from tests.support.procs import REPO, TIMEOUT_MULT, NodeProc, free_port, run_cli, taskward_cmd


@pytest.fixture(scope="module")
def solo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NodeProc]:
    """A node alone on its embedded cluster store: cluster tasks too, with one child."""
    n = NodeProc(tmp_path_factory.mktemp("solo") / "n1", extra=NODE_ARGS).start()
    yield n
    n.stop()


def on_tty(args: list[str], columns: int) -> tuple[int, str, str]:
    """Run ``taskward ARGS`` with stderr on a pty ``columns`` wide: (exit code, stdout, what the pty showed)."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, columns, 0, 0))
    proc = subprocess.Popen([*taskward_cmd(), *args], cwd=REPO, stdout=subprocess.PIPE, stderr=slave, text=True,
                            env={**os.environ, "COLUMNS": str(columns)})
    os.close(slave)
    chunks: list[bytes] = []
    while True:
        try:
            chunk = os.read(master, 65536)
        except OSError:  # the child closed its end
            break
        if not chunk:
            break
        chunks.append(chunk)
    out, _ = proc.communicate(timeout=60 * TIMEOUT_MULT)
    os.close(master)
    return proc.returncode, out, b"".join(chunks).decode(errors="replace")


def frames(screen: str) -> list[str]:
    return [f for f in re.split(r"[\r\n]", screen) if f.strip()]


def start(n: NodeProc, type_: str, args: dict[str, object], *, module: str = "builtin", cluster: bool = False) -> str:
    return str(n.stub().StartTask(pb.StartTaskRequest(module=module, type=type_, args_json=json.dumps(args),
                                                      cluster=cluster)).task_id)


@pytest.mark.parametrize("kind", ["node task", "cluster task", "tree"])
def test_every_wait_draws_one_bar_that_fits_the_terminal(solo: NodeProc, kind: str) -> None:
    tid = {
        "node task": lambda: start(solo, "sleep", {"duration": 2.0, "steps": 8}),
        "cluster task": lambda: start(solo, "sleep", {"duration": 2.5, "steps": 8}, cluster=True),
        "tree": lambda: start(solo, "tree", {"fanout": 2, "depth": 2, "duration": 0.6}, module="sample"),
    }[kind]()
    code, out, screen = on_tty(["tasks", "-p", str(solo.port), "wait", tid], columns=70)
    assert code == 0, screen
    assert "state: done" in out
    drawn = frames(screen)
    assert drawn, "no progress bar on a terminal"
    assert all(len(f) <= 69 for f in drawn), max(drawn, key=len)  # never wraps
    assert all("elapsed" in f for f in drawn)
    last = drawn[-1]
    assert "100.0%" in last and last.rstrip().endswith("done") and "[####" in last
    if kind != "tree":  # steps report progress units; a bar in between shows the ETA the node computed
        assert any(re.search(r"\d+/8\b", f) or re.search(r"\d+/\d+ steps", f) for f in drawn), drawn
        assert any(" eta " in f for f in drawn), drawn


def test_a_narrow_terminal_still_gets_a_line_that_fits(solo: NodeProc) -> None:
    tid = start(solo, "sleep", {"duration": 0.6, "steps": 3})
    code, _, screen = on_tty(["tasks", "-p", str(solo.port), "wait", tid], columns=30)
    assert code == 0
    assert all(len(f) <= 29 for f in frames(screen)), frames(screen)


def test_help_where_help_is_asked_for(solo: NodeProc) -> None:
    for argv in (["tasks", "-h"], ["tasks", "--help"], ["tasks", "-h", "status"], ["cron", "-h"]):
        out = subprocess.run([*taskward_cmd(), *argv], capture_output=True, text=True, cwd=REPO, check=False)
        assert (out.returncode, out.stderr) == (0, ""), argv
        assert out.stdout.startswith("usage: taskward"), argv
    wait_help = subprocess.run([*taskward_cmd(), "tasks", "wait", "--help"], capture_output=True, text=True,
                               cwd=REPO, check=False).stdout
    assert "123 failed" in wait_help and "124 timed out" in wait_help
    status_help = subprocess.run([*taskward_cmd(), "tasks", "--help"], capture_output=True, text=True, cwd=REPO,
                                 check=False).stdout
    assert "--keep-finished-on-read" in status_help  # reads that delete say so
    out = run_cli(solo, "modules")  # -h HOST with a value is still the host
    assert out.returncode == 0 and "builtin" in out.stdout.split()


def test_json_wherever_data_is_printed(solo: NodeProc) -> None:
    assert "builtin" in json.loads(run_cli(solo, "modules", "--json").stdout)
    nodes = json.loads(run_cli(solo, "nodes", "--json").stdout)
    assert [n["id"] for n in nodes] == ["n1"] and nodes[0]["leader"] is True
    assert json.loads(run_cli(solo, "ttl", "--json").stdout) == {"ttl": 0}
    assert json.loads(run_cli(solo, "user-ttl", "--json").stdout) == {"user_ttl": 3600}


def test_a_closed_pipe_ends_quietly(solo: NodeProc) -> None:
    tid = start(solo, "sleep", {"duration": 0, "steps": 0})
    solo.stub().WaitTask(pb.WaitTaskRequest(task_id=tid, timeout=10))
    cmd = " ".join([*taskward_cmd(), "tasks", "-p", str(solo.port), "status", tid, "--json"])
    out = subprocess.run(f"{cmd} | head -c 5; {' '.join(taskward_cmd())} tasks -p {solo.port} tree | head -1",
                         shell=True, capture_output=True, text=True, cwd=REPO, check=False)
    assert out.stderr == "" and out.returncode == 0, out.stderr


ID = "deadbeef-0000-4000-8000-00000000abcd"
BAD_CASES: list[tuple[list[str], int, str]] = [
    # (arguments, exit code, what the error line says)
    (["-p", "99999", "modules"], 2, "expected a port number from 1 to 65535, got 99999"),
    (["-p", "x", "modules"], 2, "expected a port number, got 'x'"),
    (["--token-file", "/nonexistent/token", "modules"], 1, "cannot read --token-file: No such file or directory"),
    (["list"], 2, "the following arguments are required: module"),
    (["list", "nope"], 1, "module nope not found"),
    (["list", "builtin", "--interval", "-1"], 2, "expected a positive number of seconds, got '-1'"),
    (["list", "builtin", "--interval", "nan"], 2, "expected a positive number of seconds, got 'nan'"),
    (["list", "builtin", "--interval", "1", "--iterations", "0"], 2, "expected a positive integer, got '0'"),
    (["status", "not-an-id"], 1, "malformed task id 'not-an-id': expected a canonical lowercase UUID"),
    (["status", ID], 1, f"task with id {ID} not found"),
    (["tree", "x"], 1, "malformed task id 'x': expected a canonical lowercase UUID"),
    (["abort", ID], 1, f"task with id {ID} not found"),
    (["wait", "x"], 125, "malformed task id 'x': expected a canonical lowercase UUID"),
    (["wait", ID, "--timeout", "-1"], 2, "expected a positive number of seconds, got '-1'"),
    (["wait", ID, "--timeout", "inf"], 2, "expected a positive number of seconds, got 'inf'"),
    (["ttl", "--set", "x"], 2, "invalid int value: 'x'"),
    (["ttl", "--set", "-1"], 1, "ttl must be a non-negative integer, got -1"),
    (["user-ttl", "--set", "4294967296"], 1,
     "ttl must be at most 4294967295 (ScyllaDB's task_ttl_in_seconds range), got 4294967296"),
    (["drain", "--module", "nope"], 1, "module nope not found"),
    (["start", "builtin"], 2, "the following arguments are required: type"),
    (["start", "builtin", "sleep", "--arg", "oops"], 1, "--arg expects K=V, got 'oops'"),
    (["start", "builtin", "sleep"], 1, "missing required argument 'duration' for builtin:sleep"),
    (["start", "nope", "x"], 1, "module nope not found"),
    (["start", "builtin", "sleep", "--arg", "duration=x"], 1, "argument 'duration' of builtin:sleep must be float"),
    (["bogus"], 2, "invalid choice: 'bogus'"),
]


@pytest.mark.parametrize(("args", "code", "message"), BAD_CASES, ids=[" ".join(c[0]) for c in BAD_CASES])
def test_every_bad_value_is_one_error_line(solo: NodeProc, args: list[str], code: int, message: str) -> None:
    before = {m: [t.task_id for t in solo.stub().ListTasks(pb.ListTasksRequest(module=m, internal=True)).tasks]
              for m in ("builtin", "sample")}
    out = run_cli(solo, *args)
    assert "Traceback" not in out.stderr and out.stdout == ""
    lines = out.stderr.strip().splitlines()
    assert out.returncode == code, out.stderr
    assert "error: " in lines[-1] and message in lines[-1], out.stderr
    after = {m: [t.task_id for t in solo.stub().ListTasks(pb.ListTasksRequest(module=m, internal=True)).tasks]
             for m in ("builtin", "sample")}
    assert after == before  # nothing was changed by a refused command


CRON_BAD_CASES: list[tuple[list[str], int, str]] = [
    (["get", "nope"], 1, "schedule nope not found"),
    (["get"], 2, "the following arguments are required: id"),
    (["set", "s1"], 1, "cron set needs ID --type TYPE --schedule EXPR (or --file cron.json)"),
    (["set", "s1", "--type", "sleep", "--schedule", "61 * * * *"], 1, "schedule '61 * * * *' is not a valid cron"),
    (["set", "s1", "--type", "sleep", "--schedule", "@hourly", "--timezone", "Mars/Base"], 1,
     "unknown time zone 'Mars/Base'"),
    (["set", "s1", "--type", "sleep", "--schedule", "@hourly", "--concurrency", "sometimes"], 2, "invalid choice"),
    (["set", "s1", "--type", "sleep", "--schedule", "@hourly", "--misfire-grace", "x"], 2, "invalid float value"),
    (["set", "--file", "/nonexistent.json"], 1, "cannot read /nonexistent.json: No such file or directory"),
    (["enable", "nope"], 1, "schedule nope not found"),
    (["disable", "nope"], 1, "schedule nope not found"),
    (["delete", "nope"], 1, "schedule nope not found"),
    (["run-now", "nope"], 1, "schedule nope not found"),
    (["bogus"], 2, "invalid choice: 'bogus'"),
]


@pytest.mark.parametrize(("args", "code", "message"), CRON_BAD_CASES, ids=[" ".join(c[0]) for c in CRON_BAD_CASES])
def test_every_bad_cron_value_is_one_error_line(solo: NodeProc, args: list[str], code: int, message: str) -> None:
    def document() -> str:
        return subprocess.run([*taskward_cmd(), "cron", "-p", str(solo.port), "list", "--json"], capture_output=True,
                              text=True, cwd=REPO, check=True, timeout=60).stdout

    before = document()
    out = subprocess.run([*taskward_cmd(), "cron", "-p", str(solo.port), *args], capture_output=True, text=True,
                         cwd=REPO, check=False, timeout=60 * TIMEOUT_MULT)
    assert "Traceback" not in out.stderr and out.stdout == ""
    assert out.returncode == code, out.stderr
    last = out.stderr.strip().splitlines()[-1]
    assert "error: " in last and message in last, out.stderr
    assert document() == before  # refused: the schedules are as they were


def test_no_node_there_is_one_error_line(tmp_path: Path) -> None:
    port = free_port()
    out = subprocess.run([*taskward_cmd(), "tasks", "-p", str(port), "modules"], capture_output=True, text=True,
                         cwd=REPO, check=False, timeout=60)
    assert out.returncode == 1 and "Traceback" not in out.stderr
    assert out.stderr.startswith(f"error: cannot reach node at 127.0.0.1:{port}"), out.stderr
    assert len(out.stderr.strip().splitlines()) == 1
