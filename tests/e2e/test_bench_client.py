"""``bench/client_bench.py`` runs end to end on small numbers: its node runs start the body they count
(they once started a type their node was not given, and every run failed), and both sides report."""

from __future__ import annotations

import subprocess
import sys

from tests.support.procs import REPO, TIMEOUT_MULT


def test_client_bench_runs_both_parts_to_a_figure() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "bench.client_bench", "--seconds", "0.3", "--rounds", "1", "--tasks", "150",
         "--warmup", "20", "--task-rounds", "1", "--no-wait-round", "--callers", "8", "--threads", "2"],
        cwd=REPO, capture_output=True, text=True, timeout=300 * TIMEOUT_MULT)
    assert out.returncode == 0, out.stderr[-3000:]
    rows = {line.split("|")[1].strip(): line for line in out.stdout.splitlines() if line.startswith("| ")}
    assert {"async client status calls/s", "sync client status calls/s",
            "durable no-op tasks/s through the client"} <= rows.keys(), out.stdout
    assert "Traceback" not in out.stderr
