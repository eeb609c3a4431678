"""The ordered middleware of one node, and how each hook is called."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from typing import TypeVar

from taskward.middleware.base import ErrorInput, FinishInput, ProgressInput, RunInput, TaskMiddleware
from taskward.model import TaskState

logger = logging.getLogger(__name__)

I = TypeVar("I")  # noqa: E741 - a hook's input


class MiddlewareChain:
    """Calls each hook on every middleware; one that raises is logged at CRITICAL and skipped, so a
    broken middleware never changes a task's outcome (Dramatiq's rule)."""

    def __init__(self, middleware: Sequence[TaskMiddleware]) -> None:
        self._forward = tuple(middleware)
        self._reverse = tuple(reversed(self._forward))

    @property
    def middleware(self) -> tuple[TaskMiddleware, ...]:
        return self._forward

    def before_run(self, run: RunInput) -> None:
        self._emit(self._forward, "before_run", lambda m: m.before_run, run)

    def on_progress(self, progress: ProgressInput) -> None:
        self._emit(self._forward, "on_progress", lambda m: m.on_progress, progress)

    def on_error(self, error: ErrorInput) -> None:
        self._emit(self._forward, "on_error", lambda m: m.on_error, error)

    def after_run(self, finish: FinishInput) -> None:
        """An attempt is over but the task is not (a retry is pending)."""
        self._emit(self._reverse, "after_run", lambda m: m.after_run, finish)

    def on_finish(self, finish: FinishInput) -> None:
        """``on_completion`` or ``on_failure`` in order, then, for a task that ran, ``after_run`` in reverse."""
        if finish.record.state is TaskState.DONE:
            self._emit(self._forward, "on_completion", lambda m: m.on_completion, finish)
        else:
            self._emit(self._forward, "on_failure", lambda m: m.on_failure, finish)
        if finish.ran:
            self._emit(self._reverse, "after_run", lambda m: m.after_run, finish)

    @staticmethod
    def _emit(order: Iterable[TaskMiddleware], name: str, hook: Callable[[TaskMiddleware], Callable[[I], None]],
              arg: I) -> None:
        for m in order:
            try:
                hook(m)(arg)
            except Exception:
                logger.critical("middleware %s failed in %s; skipped", type(m).__name__, name, exc_info=True)
