"""Runs task bodies: a bounded pool for root operations, children inside their root's budget.

Async bodies run on the event loop; synchronous ones in a worker thread, so a body that blocks never
stalls the node. A time limit set by the middleware (a type's ``time_limit_s``) fails a run that
overstays; the body's coroutine is cancelled, or its thread abandoned (its next ``ctx`` call raises),
and the slot is freed either way.
Shutdown cancels running bodies without recording an outcome: start-up recovery then treats them as
interrupted (re-queued if retryable, else failed with ``node restarted``), exactly as after a crash.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from enum import Enum
from typing import Any, Protocol

from taskward.context import TaskContext
from taskward.errors import TaskAborted
from taskward.middleware import RunInput
from taskward.registry import TaskType

logger = logging.getLogger(__name__)


class RunState(Enum):
    INITIAL = "initial"
    RUNNING = "running"
    STOPPING = "stopping"
    STOPPED = "stopped"


class ExecutorHost(Protocol):
    """Lifecycle callbacks implemented by ``TaskManager``."""

    async def begin(self, task_id: str, spec: TaskType) -> RunInput | None:
        """Mark the task running (durably, with the middleware's ``before_run``); None when it must not
        run (finished or aborted)."""
        ...

    async def complete(self, task_id: str, *, error: str = "", aborted: bool = False) -> None: ...

    def make_context(self, task_id: str, spec: TaskType) -> TaskContext: ...


@dataclass(frozen=True, slots=True)
class Run:
    task_id: str
    spec: TaskType
    args: dict[str, Any]


class Executor:
    def __init__(self, host: ExecutorHost, *, concurrency: int, sync_threads: int) -> None:
        self._host = host
        self._concurrency = concurrency
        self._queue: asyncio.Queue[Run] = asyncio.Queue()
        self._threads = ThreadPoolExecutor(max_workers=sync_threads, thread_name_prefix="task-body")
        self._workers: list[asyncio.Task[None]] = []
        self._running: dict[str, asyncio.Task[None]] = {}
        self._state = RunState.INITIAL

    @property
    def running_ids(self) -> set[str]:
        return set(self._running)

    def start(self) -> None:
        self._state = RunState.RUNNING
        self._workers = [
            asyncio.get_running_loop().create_task(self._worker(), name=f"executor-worker-{i}")
            for i in range(self._concurrency)
        ]

    def enqueue(self, run: Run) -> None:
        """Queue a root operation; it runs when one of ``concurrency`` slots is free."""
        self._queue.put_nowait(run)

    def start_child(self, run: Run) -> None:
        """Run a child at once: it works inside its root's slot, so it must not wait for one."""
        task = asyncio.get_running_loop().create_task(self._run_child(run), name=f"task[{run.task_id}]")
        self._running[run.task_id] = task

    async def _run_child(self, run: Run) -> None:
        try:
            await self._run_one(run)
        finally:
            self._running.pop(run.task_id, None)

    async def _worker(self) -> None:
        while True:
            run = await self._queue.get()
            task = asyncio.current_task()
            assert task is not None
            self._running[run.task_id] = task
            try:
                await self._run_one(run)
            finally:
                self._running.pop(run.task_id, None)

    async def _run_one(self, run: Run) -> None:
        started = await self._host.begin(run.task_id, run.spec)
        if started is None:
            return
        limits = started.limits  # set by the middleware's before_run (a type's time limit, ...)
        ctx = self._host.make_context(run.task_id, run.spec)
        deadline = asyncio.timeout(limits.time_limit_s)
        try:
            async with deadline:
                await self._invoke(run, ctx)
        except TimeoutError as exc:
            if not deadline.expired():  # the body's own TimeoutError: an ordinary failure
                ctx.log.info("failed: %s", exc)
                await self._host.complete(run.task_id, error=str(exc) or type(exc).__name__)
                return
            ctx.abandoned = True
            ctx.log.warning("%s", limits.time_limit_error)
            await self._host.complete(run.task_id, error=limits.time_limit_error)
        except TaskAborted:
            ctx.log.info("aborted")
            await self._host.complete(run.task_id, aborted=True)
        except Exception as exc:  # a failing body is an expected outcome, not a node error
            ctx.log.info("failed: %s", exc)
            await self._host.complete(run.task_id, error=str(exc) or type(exc).__name__)
        else:
            await self._host.complete(run.task_id)

    async def _invoke(self, run: Run, ctx: TaskContext) -> None:
        if run.spec.is_async:
            await run.spec.body(ctx, **run.args)
            return
        body: Callable[..., Any] = run.spec.body
        await asyncio.get_running_loop().run_in_executor(self._threads, lambda: body(ctx, **run.args))

    async def stop(self, grace_s: float) -> None:
        """Take no new work, give running bodies ``grace_s``, then cancel them. Idempotent."""
        if self._state in (RunState.STOPPING, RunState.STOPPED):
            return
        self._state = RunState.STOPPING
        busy = set(self._running.values())
        for w in self._workers:
            if w not in busy:
                w.cancel()
        pending = set(self._running.values())
        if pending:
            _, still = await asyncio.wait(pending, timeout=grace_s)
            for t in still:
                t.cancel()
            if still:
                await asyncio.wait(still, timeout=1.0)
        for w in self._workers:
            w.cancel()
        await asyncio.gather(*self._workers, return_exceptions=True)
        self._threads.shutdown(wait=False, cancel_futures=True)
        self._state = RunState.STOPPED
