"""The ordered middleware of one node, and how each hook is called."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from typing import Any, TypeVar

from taskward.middleware.base import ErrorInput, FinishInput, ProgressInput, RunInput, TaskMiddleware
from taskward.model import TaskState

logger = logging.getLogger(__name__)

I = TypeVar("I")  # noqa: E741 - a hook's input


Hooks = tuple[tuple[TaskMiddleware, Callable[[I], None]], ...]


class MiddlewareChain:
    """Calls each hook on every middleware; one that raises is logged at CRITICAL and skipped, so a
    broken middleware never changes a task's outcome (Dramatiq's rule).

    Which middleware overrides which hook is looked up once, here: a hook is called only on the
    middleware whose class defines it (the others' would do nothing), since every task goes through
    the hooks several times."""

    def __init__(self, middleware: Sequence[TaskMiddleware]) -> None:
        self._forward = tuple(middleware)
        reverse = tuple(reversed(self._forward))
        self._before_run: Hooks[RunInput] = _overriding(self._forward, "before_run")
        self._on_progress: Hooks[ProgressInput] = _overriding(self._forward, "on_progress")
        self._on_error: Hooks[ErrorInput] = _overriding(self._forward, "on_error")
        self._on_completion: Hooks[FinishInput] = _overriding(self._forward, "on_completion")
        self._on_failure: Hooks[FinishInput] = _overriding(self._forward, "on_failure")
        self._after_run: Hooks[FinishInput] = _overriding(reverse, "after_run")

    @property
    def middleware(self) -> tuple[TaskMiddleware, ...]:
        return self._forward

    def before_run(self, run: RunInput) -> None:
        _emit(self._before_run, "before_run", run)

    def on_progress(self, progress: ProgressInput) -> None:
        _emit(self._on_progress, "on_progress", progress)

    def on_error(self, error: ErrorInput) -> None:
        _emit(self._on_error, "on_error", error)

    def after_run(self, finish: FinishInput) -> None:
        """An attempt is over but the task is not (a retry is pending)."""
        _emit(self._after_run, "after_run", finish)

    def on_finish(self, finish: FinishInput) -> None:
        """``on_completion`` or ``on_failure`` in order, then, for a task that ran, ``after_run`` in reverse."""
        if finish.record.state is TaskState.DONE:
            _emit(self._on_completion, "on_completion", finish)
        else:
            _emit(self._on_failure, "on_failure", finish)
        if finish.ran:
            _emit(self._after_run, "after_run", finish)


def _overriding(order: Iterable[TaskMiddleware], name: str) -> Hooks[Any]:
    """(middleware, its bound hook) in ``order``, for those whose class overrides ``name``."""
    default = getattr(TaskMiddleware, name)
    return tuple((m, getattr(m, name)) for m in order if getattr(type(m), name) is not default)


def _emit(hooks: Hooks[I], name: str, arg: I) -> None:
    for m, hook in hooks:
        try:
            hook(arg)
        except Exception:
            logger.critical("middleware %s failed in %s; skipped", type(m).__name__, name, exc_info=True)
