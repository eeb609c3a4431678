"""``bench/task_path.py`` measures what it says: every task it counts was started, run and finished
(durably) by the real task manager, and the rate and CPU it reports come from that run."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

from bench.task_path import task_path


def test_task_path_runs_every_task_to_done_and_reports_its_rate(tmp_path: Path) -> None:
    rate, cpu_us = asyncio.run(task_path(tmp_path / "node", tasks=120, callers=8, synchronous="NORMAL"))
    assert rate > 0 and cpu_us > 0
    with sqlite3.connect(tmp_path / "node" / "tasks.sqlite3") as db:
        completed = db.execute("SELECT count(*) FROM events WHERE body LIKE '%task.completed%'").fetchone()[0]
    assert completed == 120 + 120  # the warm-up's tasks and the measured ones, each completed once
