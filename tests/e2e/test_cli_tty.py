"""``taskward tasks wait`` draws a progress bar when attached to a terminal (and only then)."""

from __future__ import annotations

import os
import pty
import subprocess

from taskward.pb.taskward.v1 import tasks_pb2 as pb
from tests.support.procs import REPO, TIMEOUT_MULT, NodeProc, run_cli, taskward_cmd


def test_wait_shows_progress_bar_on_a_tty(node: NodeProc) -> None:
    tid = node.stub().StartTask(pb.StartTaskRequest(module="builtin", type="sleep",
                                                    args_json='{"duration": 1.5, "steps": 10}')).task_id
    master, slave = pty.openpty()
    proc = subprocess.Popen([*taskward_cmd(), "tasks", "-p", str(node.port), "wait", tid], cwd=REPO,
                            stdout=subprocess.PIPE, stderr=slave, text=True)
    os.close(slave)
    out, _ = proc.communicate(timeout=30 * TIMEOUT_MULT)
    screen = b""
    while True:
        try:
            chunk = os.read(master, 65536)
        except OSError:
            break
        if not chunk:
            break
        screen += chunk
    os.close(master)
    assert proc.returncode == 0
    assert "state: done" in out
    assert b"[###" in screen and b"%" in screen


def test_wait_without_tty_prints_no_bar(node: NodeProc) -> None:
    tid = node.stub().StartTask(pb.StartTaskRequest(module="builtin", type="sleep",
                                                    args_json='{"duration": 0.3, "steps": 3}')).task_id
    out = run_cli(node, "wait", tid)
    assert out.returncode == 0
    assert "[" not in out.stderr
