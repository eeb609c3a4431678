"""ETA clocks: the last ten batch durations of each running task (AeorDB's rolling average).

Held in memory only: after a restart a re-queued task starts a new clock, as its batches start over."""

from __future__ import annotations

from taskward.middleware.base import FinishInput, ProgressInput, RunInput, TaskMiddleware
from taskward.model import BatchClock


class EtaMiddleware(TaskMiddleware):
    def __init__(self) -> None:
        self._clocks: dict[str, BatchClock] = {}

    def eta_ms(self, task_id: str, done: float, total: float) -> int | None:
        """Milliseconds to go for a running task, or None while unknown."""
        clock = self._clocks.get(task_id)
        return None if clock is None else clock.eta_ms(done, total)

    def before_run(self, run: RunInput) -> None:
        self._clocks[run.record.id] = BatchClock()

    def on_progress(self, progress: ProgressInput) -> None:
        self._clocks.setdefault(progress.record.id, BatchClock()).record(progress.monotonic, progress.done)

    def after_run(self, finish: FinishInput) -> None:
        self._clocks.pop(finish.record.id, None)

    def on_failure(self, finish: FinishInput) -> None:
        self._clocks.pop(finish.record.id, None)
