"""Built-in task types (module ``builtin``), for operators and tests."""

from __future__ import annotations

import asyncio
from typing import Any

from taskward.context import TaskContext
from taskward.errors import InvalidArgument
from taskward.registry import task_type

MAX_SLEEP_S = 7 * 24 * 3600
MAX_STEPS = 1_000_000


def _check_sleep(args: dict[str, Any]) -> None:
    if not 0 <= args["duration"] <= MAX_SLEEP_S:
        raise InvalidArgument(f"duration must be between 0 and {MAX_SLEEP_S} seconds")
    if not 0 <= args.get("steps", 10) <= MAX_STEPS:
        raise InvalidArgument(f"steps must be between 0 and {MAX_STEPS}")


@task_type("builtin", "sleep", abortable=True, retryable=True, progress_units="steps", check=_check_sleep)
async def sleep(ctx: TaskContext, *, duration: float, steps: int = 10) -> None:
    """Sleep ``duration`` seconds in ``steps`` equal batches, one progress unit per batch."""
    ctx.report_progress(0, steps)
    for step in range(1, steps + 1):
        ctx.check_aborted()
        await asyncio.sleep(duration / steps)
        ctx.report_progress(step, steps, f"step {step}/{steps}")


@task_type("builtin", "fail", abortable=False, retryable=False)
async def fail(ctx: TaskContext, *, error: str = "failed") -> None:
    """Fail at once with exactly ``error`` as the task's error message."""
    raise RuntimeError(error)
