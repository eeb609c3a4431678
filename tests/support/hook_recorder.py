"""A middleware as a user writes one, loaded into a real node with ``--tasks tests.support.hook_recorder``:
it appends every hook it sees to the file named by ``HOOK_LOG`` in the node's environment."""

from __future__ import annotations

import os
from pathlib import Path

from taskward import FinishInput, ProgressInput, RunInput, TaskMiddleware, task_middleware
from taskward.model import TaskRecord

HOOK_LOG = "TASKWARD_TEST_HOOK_LOG"


@task_middleware
class HookRecorder(TaskMiddleware):
    def __init__(self) -> None:
        self._path = Path(os.environ[HOOK_LOG])

    def _note(self, hook: str, rec: TaskRecord, tx_statements: int) -> None:
        with self._path.open("a") as f:
            f.write(f"{hook} {rec.id} {rec.state.value} {'tx' if tx_statements else 'no-tx'}\n")

    def before_run(self, run: RunInput) -> None:
        self._note("before_run", run.record, len(run.tx.statements))

    def on_progress(self, progress: ProgressInput) -> None:
        self._note("on_progress", progress.record, len(progress.tx.statements))

    def on_completion(self, finish: FinishInput) -> None:
        self._note("on_completion", finish.record, len(finish.tx.statements))

    def on_failure(self, finish: FinishInput) -> None:
        self._note("on_failure", finish.record, len(finish.tx.statements))

    def after_run(self, finish: FinishInput) -> None:
        self._note("after_run", finish.record, len(finish.tx.statements))
