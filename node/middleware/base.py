"""Executor middleware (Dramatiq's idea, with hooks shaped like Temporal's interceptors).

A middleware sees every run of every task on its node: before it runs, each progress report, how it
ended, and after. Hooks that happen inside a state transition get the transaction in flight (``tx``):
whatever a hook adds to it commits atomically with the transition, or not at all. A hook takes one
input dataclass, so an input can gain fields without breaking anyone's signature.

Order: ``before_run``, ``on_progress``, ``on_error``, ``on_completion``/``on_failure`` are called in
registration order, ``after_run`` in reverse, so the first middleware wraps all the others. A hook that raises is
logged and skipped; it never changes what happens to the task.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TypeVar

from taskward.model import TaskRecord
from taskward.registry import MIDDLEWARE_MARK, TaskType
from taskward.store import Tx


@dataclass(slots=True)
class RunLimits:
    """What a ``before_run`` hook may impose on the run about to start; the executor enforces it."""

    time_limit_s: float | None = None
    time_limit_error: str = ""

    def limit_time(self, seconds: float, error: str) -> None:
        """Fail the run with ``error`` if its body takes longer than ``seconds`` (the tightest limit wins)."""
        if self.time_limit_s is None or seconds < self.time_limit_s:
            self.time_limit_s = seconds
            self.time_limit_error = error


@dataclass(frozen=True, slots=True, kw_only=True)
class RunInput:
    """A run about to start: ``record`` is the task as the start transaction ``tx`` makes it (running)."""

    record: TaskRecord
    spec: TaskType
    tx: Tx
    limits: RunLimits = field(default_factory=RunLimits)


@dataclass(frozen=True, slots=True, kw_only=True)
class ProgressInput:
    """A progress report: ``record`` carries the new progress; ``tx`` persists it. ``monotonic`` is when
    it was reported (for rates and ETAs)."""

    record: TaskRecord
    spec: TaskType | None
    tx: Tx
    done: float
    total: float
    monotonic: float


@dataclass(slots=True)
class RetryDecision:
    """What ``on_error`` hooks decided about a failed attempt: run again in ``delay_s`` seconds, or not (None)."""

    delay_s: float | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class ErrorInput:
    """An attempt whose body raised ``exception`` (a time limit raises ``TimeoutError``), before the task
    fails: ``record`` is the task as it ran (``attempt`` of ``max_attempts``). A hook may call
    ``retry_in(seconds)`` to have it run again instead; the task then stays running, with its next
    attempt durably scheduled. ``decision.delay_s`` is what earlier hooks asked for (the built-in retry
    middleware runs first), so a later one can change the delay (honour a server's Retry-After, say) or
    take it back with ``no_retry()``. An aborted task, or one at its last attempt, is never retried."""

    record: TaskRecord
    spec: TaskType
    exception: BaseException
    error: str
    decision: RetryDecision = field(default_factory=RetryDecision)

    def retry_in(self, seconds: float) -> None:
        """Run the task again ``seconds`` from now (the last hook that decides wins)."""
        self.decision.delay_s = max(0.0, float(seconds))

    def no_retry(self) -> None:
        """Let the task fail now, whatever an earlier hook decided."""
        self.decision.delay_s = None


@dataclass(frozen=True, slots=True, kw_only=True)
class FinishInput:
    """A task ending: ``record`` is its final record (``state``, ``error``, ``aborted``), ``tx`` the
    transaction that finishes it. ``ran``: it had started running (a task aborted while queued had not);
    ``spec`` is None for a task whose type is not registered (ScyllaDB's test tasks)."""

    record: TaskRecord
    spec: TaskType | None
    tx: Tx
    ran: bool


class TaskMiddleware:
    """Subclass and override the hooks you need; each does nothing by default.

    Hooks run on the node's event loop and must not block; those with a ``tx`` run while the transition
    is built, before it commits. Mark a subclass with ``@task_middleware`` in a ``--tasks`` module (or an
    entry-point module) and every node that loads the module runs one instance of it after the built-in
    middleware.
    """

    def before_run(self, run: RunInput) -> None:
        """The task is about to run; ``run.tx`` makes it running."""

    def on_progress(self, progress: ProgressInput) -> None:
        """The body reported progress."""

    def on_error(self, error: ErrorInput) -> None:
        """The body raised; the task is about to fail unless a hook calls ``error.retry_in(seconds)``."""

    def on_completion(self, finish: FinishInput) -> None:
        """The task finished successfully (state ``done``)."""

    def on_failure(self, finish: FinishInput) -> None:
        """The task failed or was aborted (``finish.record.error`` says which)."""

    def after_run(self, finish: FinishInput) -> None:
        """The run is over, whatever its outcome (only for tasks that ran; once per attempt when a task is
        retried, with ``finish.record`` showing the retry pending); called in reverse order."""


M = TypeVar("M", bound=type[TaskMiddleware])


def task_middleware(cls: M) -> M:
    """Mark a ``TaskMiddleware`` subclass so that a node loading its module runs one instance of it.

    Marking registers nothing by itself (as with ``task_type``): the node's registry finds marked
    classes in the modules it loads, each class once however many modules import it."""
    marked: object = cls  # checked at run time too: a task module need not be type-checked
    if not (isinstance(marked, type) and issubclass(marked, TaskMiddleware)):
        raise TypeError("@task_middleware marks a subclass of taskward.TaskMiddleware")
    setattr(cls, MIDDLEWARE_MARK, True)
    return cls
