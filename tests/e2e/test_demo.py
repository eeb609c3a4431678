"""``taskward demo``: the README's first command, run as a user would (it needs etcd on PATH)."""

from __future__ import annotations

import signal
import subprocess

import pytest

from tests.support.etcd import etcd_available
from tests.support.procs import REPO, TIMEOUT_MULT, taskward_cmd

pytestmark = pytest.mark.skipif(not etcd_available(), reason="etcd is not installed (scripts/setup.sh installs it)")


def test_demo_runs_a_cluster_operation_and_exits() -> None:
    out = subprocess.run([*taskward_cmd(), "demo", "--once"], cwd=REPO, capture_output=True, text=True,
                         timeout=90 * TIMEOUT_MULT, check=False)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "finished: done" in out.stdout
    assert "100.0%" in out.stdout
    assert "3 node(s)" in out.stdout
    assert "curl http://127.0.0.1:10000/task_manager/list_modules" in out.stdout
    assert "redis-cli -3 -p 3320 TASK.ADMIN LIST" in out.stdout
    assert out.stdout.rstrip().endswith("demo stopped")


def test_demo_stops_cleanly_on_ctrl_c() -> None:
    """Even when started with SIGINT ignored (as a shell without job control starts a background job)."""
    proc = subprocess.Popen([*taskward_cmd(), "demo"], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN))
    try:
        assert proc.stdout is not None
        seen = []
        for line in proc.stdout:
            seen.append(line)
            if "Press Ctrl-C" in line:
                break
        proc.send_signal(signal.SIGINT)
        rest, _ = proc.communicate(timeout=60 * TIMEOUT_MULT)
        assert proc.returncode == 0, "".join(seen) + rest
        assert "demo stopped" in rest
    finally:
        if proc.poll() is None:  # never leave a demo holding the fixed ports for the next test
            proc.terminate()
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
    # every child process is gone: the ports are free again for the next demo
    again = subprocess.run([*taskward_cmd(), "demo", "--once"], cwd=REPO, capture_output=True, text=True,
                           timeout=90 * TIMEOUT_MULT, check=False)
    assert again.returncode == 0, again.stdout + again.stderr
