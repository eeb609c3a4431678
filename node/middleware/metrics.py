"""Task metrics: runs started, tasks finished by outcome, how long they ran, how many run now.

Counted when the transition that carries the news has committed (``tx.on_commit``), so a transition the
store refused is never counted, and counted once: a task retried after a failed attempt is one run from
its first start to its end (its duration includes the waits between attempts). Only tasks of registered
types count (ScyllaDB's test tasks have no run). A task aborted before it ever started is counted
finished (``aborted``) but never started, running, or timed.
"""

from __future__ import annotations

import time
from functools import partial

from taskward.metrics import NodeMetrics, Outcome
from taskward.middleware.base import FinishInput, RunInput, TaskMiddleware


class TaskMetricsMiddleware(TaskMiddleware):
    def __init__(self, metrics: NodeMetrics) -> None:
        self._metrics = metrics
        self._started: dict[str, float] = {}  # task id → monotonic time its run began (committed)

    def before_run(self, run: RunInput) -> None:
        if run.record.id not in self._started:  # a retry's next attempt is the same run
            run.tx.on_commit.append(partial(self._run_began, run.record.id, run.spec.module, run.spec.name,
                                            time.monotonic()))

    def _run_began(self, task_id: str, module: str, type_name: str, at: float) -> None:
        if task_id not in self._started:
            self._started[task_id] = at
            self._metrics.task_started(module, type_name)

    def on_completion(self, finish: FinishInput) -> None:
        self._finishing(finish, Outcome.DONE)

    def on_failure(self, finish: FinishInput) -> None:
        self._finishing(finish, Outcome.ABORTED if finish.record.aborted else Outcome.FAILED)

    def _finishing(self, finish: FinishInput, outcome: Outcome) -> None:
        if finish.spec is not None:
            finish.tx.on_commit.append(partial(self._ended, finish.record.id, finish.spec.module, finish.spec.name,
                                               outcome))

    def _ended(self, task_id: str, module: str, type_name: str, outcome: Outcome) -> None:
        began = self._started.pop(task_id, None)
        self._metrics.task_finished(module, type_name, outcome,
                                    None if began is None else time.monotonic() - began)
