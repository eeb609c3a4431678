"""Task types used by the tests (loaded with ``--tasks tests.support.sample_tasks``)."""

from __future__ import annotations

import asyncio
import ctypes
import os
import signal
import threading
import time

from taskward import ChildFailed, ErrorInput, InvalidArgument, TaskContext, TaskMiddleware, task_middleware, task_type

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


@task_type("sample", "chain", abortable=True)
async def chain(ctx: TaskContext, *, depth: int) -> None:
    """A chain of ``depth`` descendants, one per level. The deepest level that exists (the node refuses a
    tree deeper than its limit) says why in its progress message and runs until the chain is aborted."""
    import asyncio

    if depth > 0:
        try:
            child = await ctx.spawn_child("chain", depth=depth - 1)
        except InvalidArgument as exc:
            ctx.report_progress(0, 1, exc.message)
        else:
            await ctx.wait_child(child)
            return
    while True:  # cooperative: the abort is noticed between batches
        ctx.check_aborted()
        await asyncio.sleep(0.05)


# ---------------------------------------------------------------------- executor="process"


def burn(seconds: float) -> int:
    """A pure-Python loop for ``seconds`` of this process's CPU time (so a busy machine stretches the wall
    time, not the work); how many rounds it made."""
    rounds, end = 0, time.process_time() + seconds
    while time.process_time() < end:
        rounds += 1
    return rounds


@task_type("sample", "spin", executor="process", progress_units="batches")
def spin(ctx: TaskContext, *, seconds: float = 0.1, batches: int = 1) -> dict[str, int]:
    """CPU-bound, in a worker process: ``batches`` batches of ``seconds / batches`` CPU seconds each; returns the
    worker's pid and its parent's (the node)."""
    rounds = 0
    for i in range(batches):
        rounds += burn(seconds / batches)
        ctx.report_progress(i + 1, batches, f"pid {os.getpid()}")
    return {"pid": os.getpid(), "ppid": os.getppid(), "rounds": rounds}


@task_type("sample", "crunch", executor="process", retryable=True, progress_units="batches")
def crunch(ctx: TaskContext, *, batches: int = 1000, batch_s: float = 0.02) -> int:
    """Batches of CPU work with progress (its message names the worker's pid) and cooperative abort between
    them; retryable, so a node killed meanwhile runs it again after its restart."""
    ctx.log.info("crunching in worker process %d", os.getpid())
    ctx.report_progress(0, batches, f"pid {os.getpid()}")
    for i in range(batches):
        ctx.check_aborted()
        burn(batch_s)
        ctx.report_progress(i + 1, batches, f"pid {os.getpid()}")
    return batches


@task_type("sample", "proc-parent", executor="process")
def proc_parent(ctx: TaskContext, *, children: int = 2, child_type: str = "spin",
                child_args: dict[str, object] | None = None) -> list[object]:
    """A synchronous process body that starts ``children`` children and returns their results."""
    ids = [ctx.spawn_child_sync(child_type, **(child_args or {})) for _ in range(children)]
    return [ctx.wait_child_sync(i) for i in ids]


@task_type("sample", "proc-async-parent", executor="process")
async def proc_async_parent(ctx: TaskContext, *, children: int = 2) -> list[object]:
    """An async process body (its own event loop in the worker): children started and awaited together."""
    ids = [await ctx.spawn_child("spin", seconds=0.05) for _ in range(children)]
    return list(await asyncio.gather(*(ctx.wait_child(i) for i in ids)))


@task_type("sample", "proc-crash", executor="process")
def proc_crash(ctx: TaskContext, *, how: str = "sigkill") -> None:
    """Ends its own worker process: ``sigkill``, ``exit`` (``os._exit(3)``) or ``segfault``."""
    ctx.report_progress(0, 1, f"pid {os.getpid()}")
    time.sleep(0.2)  # the progress reaches the node first
    if how == "sigkill":
        os.kill(os.getpid(), signal.SIGKILL)
    elif how == "exit":
        os._exit(3)
    elif how == "segfault":
        ctypes.string_at(0)
    raise ValueError(f"unknown way to crash: {how!r}")


@task_type("sample", "overstay", executor="process", time_limit_s=1.0)
def overstay(ctx: TaskContext, *, seconds: float = 60.0, cooperative: bool = False) -> None:
    """Runs past its 1 s time limit: burning CPU without a context call, or checking ``ctx`` between batches."""
    ctx.report_progress(0, 1, f"pid {os.getpid()}")
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        burn(0.01)
        if cooperative:
            ctx.check_aborted()


class FlakyError(ConnectionError):
    """Defined here, raised in a worker process: the node rebuilds it, so ``retry_on`` matches its class."""


@task_type("sample", "proc-flaky", executor="process", retries=2, retry_backoff=(0.0, 0.0), retry_on=(FlakyError,))
def proc_flaky(ctx: TaskContext, *, log: str, then: str = "done") -> str:
    """Attempt 1 raises ``FlakyError`` (retried); attempt 2 returns ``then``, or raises ``ValueError`` (not
    retried) when ``then`` is ``"value-error"``."""
    with open(log, "a") as f:
        f.write(f"{os.getpid()}\n")
    with open(log) as f:
        attempt = len(f.read().split())
    if attempt == 1:
        raise FlakyError("connection reset (attempt 1)")
    if then == "value-error":
        raise ValueError(f"attempt {attempt} fails for good")
    return then


@task_type("sample", "proc-result", executor="process")
def proc_result(ctx: TaskContext, *, kind: str = "set") -> object:
    """Returns what cannot be stored: a ``set`` (not JSON) or 70 KiB of text (too large)."""
    return {1, 2} if kind == "set" else "x" * (70 * 1024)


@task_type("sample", "proc-garble", executor="process")
def proc_garble(ctx: TaskContext, *, what: str = "garbage") -> None:
    """Writes on its worker's connection to the node behind the context's back (the descriptor is the worker's
    argument): ``garbage`` (a frame that is no JSON) or ``huge`` (a header announcing 2 GiB)."""
    import sys

    frame = b"\x00\x00\x00\x05hello" if what == "garbage" else b"\x80\x00\x00\x00"
    os.write(int(sys.argv[1]), frame)
    time.sleep(60)
