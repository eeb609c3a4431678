"""A task type's ``retries``: an attempt that raises one of ``retry_on`` runs again after a backoff.

The backoff is capped exponential with full jitter (a uniform draw between 0 and
``min(max, initial * 2 ** (attempt - 1))``), so many tasks failing together against the same broken
dependency do not come back in lockstep. Only the decision lives here; the task manager makes the
pending retry durable (it survives a restart and runs at its time) and the executor runs it.
"""

from __future__ import annotations

import random
from collections.abc import Callable

from taskward.middleware.base import ErrorInput, TaskMiddleware


def backoff_cap(attempt: int, initial_s: float, max_s: float) -> float:
    """The upper bound of the delay after failed attempt ``attempt`` (1-based)."""
    return min(max_s, initial_s * float(2 ** min(attempt - 1, 62)))


class RetryMiddleware(TaskMiddleware):
    def __init__(self, uniform: Callable[[float, float], float] = random.uniform) -> None:
        self._uniform = uniform

    def on_error(self, error: ErrorInput) -> None:
        rec, spec = error.record, error.spec
        if rec.attempt >= rec.max_attempts or not isinstance(error.exception, spec.retry_on):
            return
        error.retry_in(self._uniform(0.0, backoff_cap(rec.attempt, *spec.retry_backoff)))
