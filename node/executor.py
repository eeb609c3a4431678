"""Runs task bodies: a bounded number of root operations at once, children inside their root's budget.

A root run takes one of ``concurrency`` slots from its start until its body ends (how it ended is
then written while the next run begins); runs beyond that wait in order and take the next slot that
frees. A start that finds a slot free claims it before its transaction commits (``claim_slot``):
that transaction then makes the task running too, and the body starts as soon as it is durable,
without a second transition (``run_claimed``).

Async bodies run on the event loop; synchronous ones in a worker thread, so a body that blocks never
stalls the node; bodies of ``executor="process"`` types in the pool of worker processes
(``taskward.procpool``), which they wait for while still ``created``. A time limit set by the middleware
(a type's ``time_limit_s``) fails a run that overstays; the body's coroutine is cancelled, or its thread
abandoned (its next ``ctx`` call raises), or its process run abandoned (the same, and the worker is
killed if the body does not return soon), and the slot is freed either way. What a body returns is
encoded (JSON, 64 KiB; in its worker for a process body, and checked here) and handed to the host with
the completion; a body that raises is handed to the host, which may answer with the delay of a retry
(the middleware's decision, already durable): the run is then queued again at its time.
Shutdown cancels running bodies without recording an outcome: start-up recovery then treats them as
interrupted (re-queued if retryable, else failed with ``node restarted``), exactly as after a crash.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from enum import Enum
from typing import Any, Protocol, TypeVar

from taskward.context import ContextHost, TaskContext
from taskward.errors import StoreUnavailable, TaskAborted
from taskward.logs import task_extra
from taskward.middleware import RunInput
from taskward.procpool import BodyRaised, ProcessPool, Slot, default_size
from taskward.registry import BodyExecutor, TaskType, encode_result

logger = logging.getLogger(__name__)
RECORD_RETRY_MIN_S = 0.1
RECORD_RETRY_MAX_S = 5.0
T = TypeVar("T")


class RunState(Enum):
    INITIAL = "initial"
    RUNNING = "running"
    STOPPING = "stopping"
    STOPPED = "stopped"


class ExecutorHost(ContextHost, Protocol):
    """Lifecycle callbacks implemented by ``TaskManager`` (and what a body in a worker process asks of it)."""

    async def begin(self, task_id: str, spec: TaskType) -> RunInput | None:
        """Mark the task running (durably, with the middleware's ``before_run``); None when it must not
        run (finished or aborted)."""
        ...

    async def complete(self, task_id: str, *, error: str = "", aborted: bool = False, result: str = "") -> None: ...

    async def attempt_failed(self, task_id: str, exc: BaseException, error: str) -> float | None:
        """The body raised: fail the task, or (the middleware decided so, and it is durable) schedule another
        attempt and return its delay in seconds."""
        ...

    def make_context(self, task_id: str, spec: TaskType) -> TaskContext: ...


@dataclass(frozen=True, slots=True)
class Run:
    task_id: str
    spec: TaskType
    args: dict[str, Any]


class Executor:
    def __init__(self, host: ExecutorHost, *, concurrency: int, sync_threads: int, process_workers: int = 0,
                 process_sources: Sequence[str] = ()) -> None:
        """``process_workers``: size of the worker-process pool (0: one per core); ``process_sources``: the
        modules of the node's process types, which its workers import as they start."""
        self._host = host
        self._free = concurrency  # root slots neither running nor claimed
        self._waiting: deque[Run] = deque()
        self._threads = ThreadPoolExecutor(max_workers=sync_threads, thread_name_prefix="task-body")
        self.processes = ProcessPool(host, size=process_workers or default_size(), preload=process_sources)
        self._running: dict[str, asyncio.Task[None]] = {}
        self._retries: dict[str, asyncio.TimerHandle] = {}
        self._state = RunState.INITIAL

    @property
    def running_ids(self) -> set[str]:
        return set(self._running)

    def queue_depth(self) -> int:
        """Tasks waiting to start (read by the node's metrics when scraped): root operations waiting for a
        slot, and bodies of ``executor="process"`` types waiting for a worker."""
        return len(self._waiting) + self.processes.waiting

    def start(self) -> None:
        self._state = RunState.RUNNING
        self._fill()

    def enqueue(self, run: Run) -> None:
        """Queue a root operation; it runs when one of ``concurrency`` slots is free (at once if one is)."""
        self._waiting.append(run)
        self._fill()

    def claim_slot(self) -> bool:
        """Take a free slot for a start whose own transaction makes the task running; False when none is
        free or runs are waiting (they go first). The claim ends with ``run_claimed`` once that transaction
        is durable, or ``release_slot`` if it failed."""
        if self._state is RunState.RUNNING and self._free > 0 and not self._waiting:
            self._free -= 1
            return True
        return False

    def release_slot(self) -> None:
        self._free += 1
        self._fill()

    def run_claimed(self, run: Run, begun: RunInput) -> None:
        """Run the body of a task already durably running (``begun`` is its start) in a claimed slot."""
        self._spawn_root(run, begun)

    def _fill(self) -> None:
        while self._state is RunState.RUNNING and self._free > 0 and self._waiting:
            self._free -= 1
            self._spawn_root(self._waiting.popleft(), None)

    def _spawn_root(self, run: Run, begun: RunInput | None) -> None:
        task = asyncio.get_running_loop().create_task(self._run_root(run, begun), name=f"task[{run.task_id}]")
        self._running[run.task_id] = task

    async def _run_root(self, run: Run, begun: RunInput | None) -> None:
        released = False

        def release() -> None:  # once: when the body ends, or when the run ends without one
            nonlocal released
            if not released:
                released = True
                self.release_slot()

        try:
            await self._run_one(run, child=False, begun=begun, body_done=release)
        finally:
            self._running.pop(run.task_id, None)
            release()

    def start_child(self, run: Run) -> None:
        """Run a child at once: it works inside its root's slot, so it must not wait for one."""
        task = asyncio.get_running_loop().create_task(self._run_child(run), name=f"task[{run.task_id}]")
        self._running[run.task_id] = task

    async def _run_child(self, run: Run) -> None:
        try:
            await self._run_one(run, child=True)
        finally:
            self._running.pop(run.task_id, None)

    def retry_later(self, run: Run, delay_s: float, *, child: bool) -> None:
        """Run ``run`` again in ``delay_s`` seconds: queued for a slot (a root) or at once (a child)."""
        self.cancel_retry(run.task_id)

        def due() -> None:
            self._retries.pop(run.task_id, None)
            if self._state is RunState.RUNNING:
                self.start_child(run) if child else self.enqueue(run)

        self._retries[run.task_id] = asyncio.get_running_loop().call_later(delay_s, due)

    def cancel_retry(self, task_id: str) -> None:
        handle = self._retries.pop(task_id, None)
        if handle is not None:
            handle.cancel()

    def abort_requested(self, task_id: str) -> None:
        """An abort of running task ``task_id`` was recorded: a body in a worker process is told at once (one
        in the node reads the flag itself)."""
        self.processes.abort_requested(task_id)

    async def _run_one(self, run: Run, *, child: bool, begun: RunInput | None = None,
                       body_done: Callable[[], None] = lambda: None) -> None:
        if run.spec.executor is BodyExecutor.PROCESS:
            async with self.processes.slot() as slot:  # waits for a worker while the task is still `created`
                await self._run_started(run, child=child, slot=slot, begun=begun, body_done=body_done)
        else:
            await self._run_started(run, child=child, slot=None, begun=begun, body_done=body_done)

    async def _run_started(self, run: Run, *, child: bool, slot: Slot | None, begun: RunInput | None,
                           body_done: Callable[[], None]) -> None:
        started = begun or await self._recorded(lambda: self._host.begin(run.task_id, run.spec), run)
        if started is None:
            return
        limits = started.limits  # set by the middleware's before_run (a type's time limit, ...)
        ctx = self._host.make_context(run.task_id, run.spec)
        deadline = asyncio.timeout(limits.time_limit_s)
        try:
            try:
                async with deadline:
                    result = await self._invoke(run, ctx, slot)
            finally:
                body_done()  # a root's slot bounds bodies at work, not the writing of how they ended
        except TimeoutError as exc:
            if deadline.expired():
                ctx.abandoned = True
                ctx.log.warning("%s", limits.time_limit_error)
                await self._failed(run, ctx, TimeoutError(limits.time_limit_error), child=child)
            else:  # the body's own TimeoutError: an ordinary failure
                await self._failed(run, ctx, exc, child=child)
        except TaskAborted:
            ctx.log.info("aborted")
            await self._recorded(lambda: self._host.complete(run.task_id, aborted=True), run)
        except BodyRaised as exc:  # in a worker process: the exception rebuilt here, the message said there
            await self._failed(run, ctx, exc.exception, child=child, error=exc.error)
        except Exception as exc:  # a failing body (or a result that cannot be stored) is an outcome, not a node error
            await self._failed(run, ctx, exc, child=child)
        else:
            await self._recorded(lambda: self._host.complete(run.task_id, result=result), run)

    async def _failed(self, run: Run, ctx: TaskContext, exc: BaseException, *, child: bool, error: str = "") -> None:
        error = error or str(exc) or type(exc).__name__
        ctx.log.info("failed: %s", error)
        delay = await self._recorded(lambda: self._host.attempt_failed(run.task_id, exc, error), run)
        if delay is not None:
            self.retry_later(run, delay, child=child)

    async def _recorded(self, record: Callable[[], Awaitable[T]], run: Run) -> T:
        """Record that a run began or how it ended, however long the store refuses it (locked, disk full):
        the outcome is only known in memory until then, and a task must never stay ``created`` or
        ``running`` because one write failed. A stop gives up (start-up recovery then treats the task as
        interrupted, as after a crash)."""
        backoff = RECORD_RETRY_MIN_S
        while True:
            try:
                return await record()
            except StoreUnavailable as exc:
                if self._state is not RunState.RUNNING:
                    raise
                logger.error("cannot record the state of task %s (%s); trying again in %.1fs", run.task_id, exc.message,
                             backoff, extra=task_extra(run.task_id, run.spec.module, run.spec.name))
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, RECORD_RETRY_MAX_S)

    async def _invoke(self, run: Run, ctx: TaskContext, slot: Slot | None) -> str:
        """Run the body; its result as JSON text (``encode_result``)."""
        if slot is not None:  # arguments cross as JSON, the result comes back encoded and checked
            return await slot.run(run.spec, run.task_id, json.dumps(run.args), ctx)
        if run.spec.is_async:
            return encode_result(await run.spec.body(ctx, **run.args))
        body: Callable[..., Any] = run.spec.body
        value = await asyncio.get_running_loop().run_in_executor(self._threads, lambda: body(ctx, **run.args))
        return encode_result(value)

    async def stop(self, grace_s: float) -> None:
        """Take no new work, give running bodies ``grace_s``, then cancel them. Idempotent."""
        if self._state in (RunState.STOPPING, RunState.STOPPED):
            return
        self._state = RunState.STOPPING
        self._waiting.clear()  # still `created`, durably: the next start runs them
        pending = set(self._running.values())
        if pending:
            _, still = await asyncio.wait(pending, timeout=grace_s)
            for t in still:
                t.cancel()
            if still:
                await asyncio.wait(still, timeout=1.0)
        for task_id in list(self._retries):  # a pending retry is durable: the next start schedules it again
            self.cancel_retry(task_id)
        self._threads.shutdown(wait=False, cancel_futures=True)
        await self.processes.stop()  # every process run has ended or was abandoned above
        self._state = RunState.STOPPED
