"""``taskward demo``: the README's first command, run as a user would (it needs etcd on PATH)."""

from __future__ import annotations

import re
import shlex
import shutil
import signal
import subprocess
from pathlib import Path

import pytest

from tests.support.etcd import etcd_available
from tests.support.procs import REPO, TIMEOUT_MULT, taskward_cmd

pytestmark = pytest.mark.skipif(not etcd_available(), reason="etcd is not installed (scripts/setup.sh installs it)")


def test_demo_runs_a_cluster_operation_and_exits() -> None:
    out = subprocess.run([*taskward_cmd(), "demo", "--once"], cwd=REPO, capture_output=True, text=True,
                         timeout=90 * TIMEOUT_MULT, check=False)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "finished: done (3 of 3 nodes re-indexed 180 batches)" in out.stdout  # 3 nodes x 3 tables x 20 batches
    assert "100.0%  180/180 batches  3/3 nodes" in out.stdout
    if shutil.which("curl"):
        assert "curl http://127.0.0.1:10000/task_manager/list_modules" in out.stdout
    assert "redis-cli -3 -p 3320 TASK.ADMIN LIST" in out.stdout  # set-up installs redis-tools
    if not shutil.which("grpcurl"):  # nothing set-up does not install
        assert "grpcurl" not in out.stdout
    kept = kept_folder(out.stdout)
    assert (kept / "n1.log").stat().st_size > 0  # the logs outlive the demo
    shutil.rmtree(kept)


def kept_folder(stdout: str) -> Path:
    match = re.search(r"demo stopped; its logs and data are kept in (\S+)\n?$", stdout)
    assert match is not None, stdout
    return Path(match.group(1))


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
        pasted = [line.split("#")[0].strip() for line in seen if re.match(r"\s+\S*taskward tasks (nodes|status)", line)]
        assert len(pasted) == 2, seen
        for tip in pasted:  # each tip works when pasted into a shell in the same folder (and environment)
            ran = subprocess.run(shlex.split(tip), cwd=REPO, capture_output=True, text=True, check=False,
                                 timeout=30 * TIMEOUT_MULT)
            assert (ran.returncode, ran.stderr) == (0, ""), (tip, ran)
        proc.send_signal(signal.SIGINT)
        rest, _ = proc.communicate(timeout=60 * TIMEOUT_MULT)
        assert proc.returncode == 0, "".join(seen) + rest
        shutil.rmtree(kept_folder(rest))
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
    shutil.rmtree(kept_folder(again.stdout))
