"""Task types used by the tests (loaded with ``--tasks tests.support.sample_tasks``)."""

from __future__ import annotations

import threading
import time

from taskward import ChildFailed, ErrorInput, TaskContext, TaskMiddleware, task_middleware, task_type

_forever = threading.Event()


@task_type("sample", "tree", abortable=True)
async def tree(ctx: TaskContext, *, fanout: int = 2, depth: int = 2, duration: float = 0.0,
               fail_path: str = "") -> None:
    """A tree of ``fanout``^depth leaves; a leaf whose path equals ``fail_path`` fails."""
    await _subtree(ctx, fanout, depth, duration, fail_path, "")


async def _subtree(ctx: TaskContext, fanout: int, depth: int, duration: float, fail_path: str, path: str) -> None:
    if depth == 0:
        return
    ids = [await ctx.spawn_child("node", fanout=fanout, depth=depth - 1, duration=duration,
                                 fail_path=fail_path, path=f"{path}{i}") for i in range(fanout)]
    failed = 0
    for i in ids:  # wait for every child, even after one failed, so the whole subtree has ended
        try:
            await ctx.wait_child(i)
        except ChildFailed:
            failed += 1
    if failed:
        raise RuntimeError(f"{failed} child(ren) failed")


@task_type("sample", "node", abortable=True)
async def subtree_node(ctx: TaskContext, *, fanout: int, depth: int, duration: float, fail_path: str,
                       path: str) -> None:
    if path == fail_path:
        raise RuntimeError(f"leaf {path} failed")
    ctx.report_progress(0, 1)
    if duration:
        import asyncio

        await asyncio.sleep(duration)
        ctx.check_aborted()
    await _subtree(ctx, fanout, depth, duration, fail_path, path)
    ctx.report_progress(1, 1)


@task_type("sample", "blocking", abortable=True, time_limit_s=1.0)
def blocking(ctx: TaskContext, *, seconds: float = 3600.0) -> None:
    """A synchronous body that blocks its thread; its time limit fails it."""
    _forever.wait(seconds)


@task_type("sample", "cpu", abortable=True, retryable=False)
def cpu(ctx: TaskContext, *, batches: int = 5, batch_s: float = 0.05) -> None:
    """A synchronous body with progress and cooperative abort."""
    for i in range(batches):
        ctx.check_aborted()
        time.sleep(batch_s)
        ctx.report_progress(i + 1, batches)


@task_type("sample", "raises", abortable=False)
async def raises(ctx: TaskContext) -> None:
    raise ValueError("boom")


@task_type("sample", "whoami")
async def whoami(ctx: TaskContext, *, extra: object = None) -> dict[str, object]:
    """Returns its own task id (and ``extra``): a cluster task's result then shows which child said what."""
    return {"task_id": ctx.task_id, "extra": extra}


@task_middleware
class PinnedRetryDelay(TaskMiddleware):
    """``sample:fail-once`` retries after exactly ``PINNED_RETRY_S`` instead of a jittered delay, so a test
    knows when the retry is due (a later middleware may change the built-in backoff)."""

    def on_error(self, error: ErrorInput) -> None:
        if error.record.type == "fail-once" and error.decision.delay_s is not None:
            error.retry_in(PINNED_RETRY_S)


PINNED_RETRY_S = 2.0


@task_type("sample", "fail-once", abortable=True, retries=1, retry_backoff=(2.0, 2.0))
def fail_once(ctx: TaskContext, *, log: str) -> int:
    """Appends the time of each attempt to the file ``log``; the first attempt fails. Returns the attempts run."""
    with open(log, "a") as f:
        f.write(f"{time.time()}\n")
    with open(log) as f:
        attempts = len(f.read().split())
    if attempts == 1:
        raise RuntimeError("first attempt fails")
    return attempts
