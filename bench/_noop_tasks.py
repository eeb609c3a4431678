"""The no-op task type of ``bench/task_throughput.py`` and ``bench/celery_compare.py`` (loaded with
``--tasks bench._noop_tasks``): a body that does nothing, as Celery's side runs ``return None``.

What a durable task costs taskward is then all there is to measure: its start, its run and its end, each
committed (``task.started`` and ``task.completed``). ``builtin:sleep`` with zero steps, which these benches
ran before, also reports its progress once (0 of 0): one more record, one more ``task.progress`` event.
"""

from __future__ import annotations

from taskward import TaskContext, task_type

MODULE, TYPE = "bench", "noop"
TASKS_ARG = "bench._noop_tasks"


@task_type(MODULE, TYPE)
async def noop(ctx: TaskContext) -> None:
    """Nothing: a coroutine, as the cheapest body a node runs (no thread is involved)."""
    return None
