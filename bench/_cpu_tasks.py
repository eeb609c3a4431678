"""Task types of ``bench/process_pool_bench.py`` (loaded with ``--tasks bench._cpu_tasks``): one CPU-bound
body, declared twice, in the node's threads and in its worker processes."""

from __future__ import annotations

from taskward import TaskContext, task_type

BATCHES = 10


def crunch(ctx: TaskContext, rounds: int) -> int:
    """A pure-Python loop of ``rounds`` rounds in ``BATCHES`` batches, with progress and an abort check
    between them (what a real CPU-bound body does; each costs a message to the node from a worker)."""
    total = 0
    per_batch = max(1, rounds // BATCHES)
    for batch in range(BATCHES):
        ctx.check_aborted()
        for i in range(per_batch):
            total += i % 7
        ctx.report_progress(batch + 1, BATCHES)
    return total


@task_type("bench", "cpu-thread")
def cpu_thread(ctx: TaskContext, *, rounds: int) -> int:
    return crunch(ctx, rounds)


@task_type("bench", "cpu-process", executor="process")
def cpu_process(ctx: TaskContext, *, rounds: int) -> int:
    return crunch(ctx, rounds)
