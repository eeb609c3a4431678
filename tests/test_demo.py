"""``taskward demo``: the README's first command, run as a user would."""

from __future__ import annotations

import signal
import subprocess

from tests.procs import REPO, TIMEOUT_MULT, free_port, taskward_cmd


def test_demo_runs_sample_operation_and_exits() -> None:
    port = free_port()
    out = subprocess.run([*taskward_cmd(), "demo", "--once", "--listen", f"127.0.0.1:{port}"], cwd=REPO,
                         capture_output=True, text=True, timeout=60 * TIMEOUT_MULT, check=False)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "finished: done" in out.stdout
    assert "100.0%" in out.stdout
    assert f"taskward tasks -p {port} list demo" in out.stdout
    assert out.stdout.rstrip().endswith("demo stopped")


def test_demo_stops_cleanly_on_ctrl_c() -> None:
    port = free_port()
    proc = subprocess.Popen([*taskward_cmd(), "demo", "--listen", f"127.0.0.1:{port}"], cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert proc.stdout is not None
    seen = []
    for line in proc.stdout:
        seen.append(line)
        if "Press Ctrl-C" in line:
            break
    proc.send_signal(signal.SIGINT)
    rest, _ = proc.communicate(timeout=30 * TIMEOUT_MULT)
    assert proc.returncode == 0, "".join(seen) + rest
    assert "demo stopped" in rest
