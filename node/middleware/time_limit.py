"""A task type's ``time_limit_s``: a run that overstays fails with ``time limit of Ns exceeded``.

The policy lives here; the executor, which owns the body's coroutine or thread, enforces the limit a
``before_run`` hook set (cancelling the coroutine, or abandoning the thread, whose next ``ctx`` call
raises)."""

from __future__ import annotations

from taskward.middleware.base import RunInput, TaskMiddleware


class TimeLimitMiddleware(TaskMiddleware):
    def before_run(self, run: RunInput) -> None:
        limit = run.spec.time_limit_s
        if limit is not None:
            run.limits.limit_time(limit, f"time limit of {limit:g}s exceeded")
