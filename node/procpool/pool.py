"""The node's pool of worker processes, for task types declared with ``executor="process"``.

Why a pool of its own rather than ``concurrent.futures.ProcessPoolExecutor``: when one of that pool's
workers dies, the whole pool is broken: every running future fails with ``BrokenProcessPool`` and the
other workers are terminated, and nothing says which task the dead worker was running. Here each
worker is a process of its own with its own connection (``protocol``), so a worker that dies
(SIGKILL, ``os._exit``, a segfault) fails exactly the task it was running, with its exit code, and the
other workers go on; the next task that needs a worker gets a fresh one.

Workers are fresh interpreters (``sys.executable -P -c WORKER_BOOT``, fork and exec, as multiprocessing's
"spawn"), never forks of the node: a fork would copy a process whose gRPC core threads, event loop and
SQLite writer thread hold locks that no thread of the child would ever release.

Capacity: at most ``size`` calls compute at once (one permit each, taken before the task is marked
running, so a task waiting for a worker stays ``created`` and its time limit has not started). A body
waiting for a child (``wait_child``) gives its permit back meanwhile, so a child can always get a worker
and a tree of process bodies never deadlocks the pool; the pool then holds one more process per waiting
parent (asleep). Idle workers beyond ``size`` are stopped.

Abort stays cooperative, as for every body: the worker is told at once and ``check_aborted()`` raises
there. A run the node gives up on (its time limit, a shutdown) is told too, so its next context call
raises, and its worker is killed if the body has not returned ``ABANDON_GRACE_S`` later: unlike a thread,
a process can be stopped safely, and a CPU-bound body left running would hold a core and a worker.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import os
import socket
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

from taskward.context import ContextHost, TaskContext
from taskward.errors import ChildFailed, InvalidArgument, TaskAborted, TaskwardError
from taskward.limits import MAX_RESULT_BYTES, check_json_depth, loads
from taskward.model import TaskState
from taskward.procpool.protocol import (
    HEADER,
    Finished,
    Init,
    Log,
    Outcome,
    Progress,
    ProtocolError,
    Reply,
    Run,
    Signal,
    SignalKind,
    SpawnChild,
    ToNode,
    ToWorker,
    WaitChild,
    WireError,
    decode_to_node,
    encode,
    frame_length,
)
from taskward.procpool.worker import WORKER_BOOT
from taskward.registry import TaskType

logger = logging.getLogger(__name__)
T = TypeVar("T")

ABANDON_GRACE_S = 1.0
"""How long a run the node gave up on may take to return before its worker is killed."""
STOP_GRACE_S = 2.0
"""At shutdown, how long workers get to exit after their connection closes before they are killed."""


def default_size() -> int:
    """One worker per core this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


class WorkerDied(Exception):
    """The worker process running a task ended before the task did."""

    def __init__(self, exit_code: int | None) -> None:
        super().__init__(f"worker process died (exit code {exit_code}) while running this task")
        self.exit_code = exit_code


class WorkerBroken(Exception):
    """A worker that broke the protocol (it was killed) or could not be started."""


class BodyRaised(Exception):
    """The body raised in its worker: ``exception`` is the same exception rebuilt here (so ``retry_on``
    sees its class), ``error`` what ``str()`` of it said there."""

    def __init__(self, exception: BaseException, error: str) -> None:
        super().__init__(error)
        self.exception = exception
        self.error = error


class Slot:
    """The right to compute in one worker (a permit of the pool), held from before the task starts until it
    ended; given back while the body waits for children. A slot holds at most one permit, however its
    takes and give-backs interleave."""

    def __init__(self, pool: ProcessPool) -> None:
        self._pool = pool
        self._held = False
        self._taking = asyncio.Lock()
        self._waits = 0

    async def take(self) -> None:
        async with self._taking:
            if not self._held:
                await self._pool._permits.acquire()
                self._held = True

    def give_back(self) -> None:
        if self._held:
            self._held = False
            self._pool._permits.release()

    async def parked(self, wait: Awaitable[T]) -> T:
        """Await ``wait`` (a child's end) without the permit: the first of a body's waits gives it back, the
        last one to end takes it again before the body is answered (a cancelled wait does not)."""
        self._waits += 1
        if self._waits == 1:
            self.give_back()
        try:
            value = await wait
        finally:
            self._waits -= 1
        if self._waits == 0:
            await self.take()
        return value

    async def run(self, spec: TaskType, task_id: str, args_json: str, ctx: TaskContext) -> str:
        """Run the body in a worker: its result (checked JSON text). Raises ``TaskAborted`` (it was aborted),
        ``BodyRaised``, ``WorkerDied`` or ``WorkerBroken``; a cancellation abandons the run."""
        return await self._pool._run(self, spec, task_id, args_json, ctx)


@dataclass(eq=False, slots=True)
class _Call:
    number: int
    task_id: str
    ctx: TaskContext
    slot: Slot
    outcome: asyncio.Future[str]
    aborted: bool
    abandoned: bool = False
    worker: _Worker | None = None
    requests: set[asyncio.Task[None]] = field(default_factory=set)


class ProcessPool:
    """Worker processes for ``executor="process"`` bodies; the executor's only way to them (``slot()``)."""

    def __init__(self, host: ContextHost, *, size: int, preload: Sequence[str] = ()) -> None:
        """``preload``: the modules of the node's process types, which each worker imports as it starts (in
        parallel with the node sending its first call). Workers start when a run needs one, so a node whose
        process types never run starts none."""
        self._host = host
        self.size = size
        self._preload = list(preload)
        self._permits = asyncio.Semaphore(size)
        self._workers: set[_Worker] = set()
        self._idle: list[_Worker] = []
        self._calls: dict[str, _Call] = {}
        self._numbers = itertools.count(1)
        self._stopping = False
        self.waiting = 0
        """Runs waiting for a worker before they start (their tasks still ``created``): part of the queue depth."""

    @contextlib.asynccontextmanager
    async def slot(self) -> AsyncIterator[Slot]:
        slot = Slot(self)
        self.waiting += 1
        try:
            await slot.take()
        finally:
            self.waiting -= 1
        try:
            yield slot
        finally:
            slot.give_back()

    def abort_requested(self, task_id: str) -> None:
        """An abort of ``task_id`` was requested: its worker, if it runs there, is told at once."""
        call = self._calls.get(task_id)
        if call is not None and not call.aborted:
            call.aborted = True
            if call.worker is not None and not call.abandoned:
                call.worker.send(Signal(call=call.number, kind=SignalKind.ABORT))

    async def _run(self, slot: Slot, spec: TaskType, task_id: str, args_json: str, ctx: TaskContext) -> str:
        if self._stopping:
            raise WorkerBroken("the node is shutting down")
        loop = asyncio.get_running_loop()
        call = _Call(number=next(self._numbers), task_id=task_id, ctx=ctx, slot=slot, outcome=loop.create_future(),
                     aborted=self._host.abort_requested(task_id))
        self._calls[task_id] = call  # from here on an abort reaches it
        try:
            worker = await self._idle_worker()
            call.worker = worker
            worker.begin(call, Run(call=call.number, task_id=task_id, module=spec.module, type_name=spec.name,
                                   source=spec.import_source, args_json=args_json, aborted=call.aborted))
            return await call.outcome
        except asyncio.CancelledError:
            self._abandon(call)
            raise
        finally:
            if self._calls.get(task_id) is call:
                del self._calls[task_id]
            for request in call.requests:
                request.cancel()
            if call.requests:
                await asyncio.wait(call.requests)

    def _abandon(self, call: _Call) -> None:
        call.abandoned = True
        worker = call.worker
        if worker is not None and worker.call is call:
            worker.send(Signal(call=call.number, kind=SignalKind.ABANDON))
            worker.kill_later(ABANDON_GRACE_S, f"its run of task {call.task_id} was abandoned and did not return "
                                               f"within {ABANDON_GRACE_S:g}s")

    async def _idle_worker(self) -> _Worker:
        while self._idle:
            worker = self._idle.pop()
            if worker.alive:
                return worker
        return await self._spawn()

    async def _spawn(self) -> _Worker:
        parent, child = socket.socketpair()
        try:
            proc = await asyncio.create_subprocess_exec(
                # -P: the current folder is not put first on the path while taskward itself is imported
                sys.executable, "-P", "-c", WORKER_BOOT, str(child.fileno()), pass_fds=(child.fileno(),),
                stdin=subprocess.DEVNULL)
            reader, writer = await asyncio.open_connection(sock=parent)
        except OSError as exc:
            parent.close()
            raise WorkerBroken(f"cannot start a worker process: {exc}") from None
        finally:
            child.close()
        worker = _Worker(self, proc, reader, writer)
        self._workers.add(worker)
        worker.send(Init(sys_path=list(sys.path), log_level=logging.getLogger().getEffectiveLevel(),
                         preload=self._preload))
        logger.debug("started worker process %d", proc.pid)
        return worker

    def _released(self, worker: _Worker) -> None:
        """``worker`` finished its call: idle, or stopped if the pool has enough idle workers."""
        if self._stopping or len(self._idle) >= self.size:
            worker.close()
        else:
            self._idle.append(worker)

    def _gone(self, worker: _Worker, exit_code: int | None, broken: str) -> None:
        self._workers.discard(worker)
        if worker in self._idle:
            self._idle.remove(worker)
        call = worker.call
        if call is not None and not call.outcome.done():
            if broken:
                call.outcome.set_exception(WorkerBroken(f"worker process broke the protocol ({broken}); it was "
                                                        "stopped"))
            else:
                call.outcome.set_exception(WorkerDied(exit_code))
        if worker.closing or self._stopping:
            logger.debug("worker process %d stopped (exit code %s)", worker.pid, exit_code)
        elif call is None:
            logger.warning("worker process %d exited (exit code %s) while idle", worker.pid, exit_code)
        elif not call.abandoned:
            logger.warning("worker process %d died (exit code %s) while running the task", worker.pid, exit_code,
                           extra=call.ctx.log.extra)
        else:
            logger.info("worker process %d ended (exit code %s) after its run was abandoned", worker.pid, exit_code,
                        extra=call.ctx.log.extra)

    async def serve(self, worker: _Worker, call: _Call, msg: SpawnChild | WaitChild) -> None:
        """Answer a body's request, on the node's loop. Errors of the tree go back to the body, to be raised there."""
        reply: Reply
        try:
            if isinstance(msg, SpawnChild):
                args = loads(msg.args_json, "args")
                if not isinstance(args, dict):
                    raise InvalidArgument("args must be a JSON object")
                child_id = await self._host.spawn_child(call.task_id, msg.module, msg.type_name, args)
                value = json.dumps(child_id)
            else:
                # asleep until the child ends: the child may need the very place in the pool this frees
                view = await call.slot.parked(self._host.wait_child(msg.child_id))
                rec = view.record
                if rec.state is TaskState.FAILED:
                    raise ChildFailed(msg.child_id, rec.error, qualified_type=f"{rec.module}:{rec.type}")
                value = rec.result or "null"
            reply = Reply(call=call.number, request=msg.request, value_json=value)
        except TaskwardError as exc:
            reply = Reply(call=call.number, request=msg.request, error=WireError.of(exc))
        except Exception as exc:
            logger.exception("cannot serve %s for task %s", msg.op, call.task_id)
            reply = Reply(call=call.number, request=msg.request,
                          error=WireError.of(RuntimeError(f"the node could not serve {msg.op}: {exc}")))
        if worker.call is call and not call.abandoned:
            worker.send(reply)

    async def stop(self) -> None:
        """Close every worker's connection (each exits at once), kill those still there after
        ``STOP_GRACE_S``. Idempotent; the executor has ended or abandoned every run before."""
        self._stopping = True
        workers = list(self._workers)
        for worker in workers:
            worker.close()
        readers = [w.reading for w in workers]
        if readers:
            _, late = await asyncio.wait(readers, timeout=STOP_GRACE_S)
            for worker in workers:
                if worker.reading in late:
                    worker.kill()
            if late:
                await asyncio.wait(late, timeout=STOP_GRACE_S)
        self._idle.clear()


class _Worker:
    """One worker process and the node's end of its connection; ``reading`` follows it until it ends."""

    def __init__(self, pool: ProcessPool, proc: asyncio.subprocess.Process, reader: asyncio.StreamReader,
                 writer: asyncio.StreamWriter) -> None:
        self._pool = pool
        self._proc = proc
        self._reader = reader
        self._writer = writer
        self.pid = proc.pid
        self.call: _Call | None = None
        self.closing = False
        self._kill_timer: asyncio.TimerHandle | None = None
        self.reading = asyncio.get_running_loop().create_task(self._read(), name=f"procpool-worker[{proc.pid}]")

    @property
    def alive(self) -> bool:
        """Not known to have ended (its connection still open), so it may be given a call."""
        return self._proc.returncode is None and not self.closing and not self._writer.is_closing()

    def send(self, msg: ToWorker) -> None:
        if not self._writer.is_closing():
            self._writer.write(encode(msg))  # small frames, read by the worker as they come: no backlog to drain

    def begin(self, call: _Call, run: Run) -> None:
        self.call = call
        self.send(run)

    def close(self) -> None:
        """End the connection: the worker exits when it sees that."""
        self.closing = True
        self._writer.close()

    def kill(self) -> None:
        self.closing = True
        with contextlib.suppress(ProcessLookupError):
            self._proc.kill()

    def kill_later(self, delay_s: float, why: str) -> None:
        def overdue() -> None:
            logger.warning("killing worker process %d: %s", self.pid, why)
            self.kill()

        self._kill_timer = asyncio.get_running_loop().call_later(delay_s, overdue)

    async def _read(self) -> None:
        broken = ""
        try:
            while True:
                header = await self._reader.readexactly(HEADER.size)
                msg = decode_to_node(await self._reader.readexactly(frame_length(header)))
                try:
                    self._dispatch(msg)
                except Exception:  # a bug here must not leave the worker unread (and its task waiting forever)
                    logger.exception("cannot handle %s from worker process %d", msg.op, self.pid)
        except (asyncio.IncompleteReadError, ConnectionError):
            pass  # the process ended (or is ending)
        except ProtocolError as exc:
            broken = str(exc)
            logger.error("worker process %d broke the protocol (%s): killing it", self.pid, broken)
            self._proc.kill()
        self._writer.close()
        exit_code = await self._proc.wait()
        if self._kill_timer is not None:
            self._kill_timer.cancel()
        self._pool._gone(self, exit_code, broken)

    def _dispatch(self, msg: ToNode) -> None:
        if isinstance(msg, Log):
            self._log(msg)
            return
        call = self.call
        if call is None or msg.call != call.number:
            return  # about a call that has ended
        if isinstance(msg, Progress):
            if not call.abandoned:
                self._pool._host.report_progress(call.task_id, msg.done, msg.total, msg.message)
        elif isinstance(msg, SpawnChild | WaitChild):
            request = asyncio.get_running_loop().create_task(self._pool.serve(self, call, msg),
                                                             name=f"procpool-{msg.op}[{call.task_id}]")
            call.requests.add(request)
            request.add_done_callback(call.requests.discard)
        elif isinstance(msg, Finished):
            self._finished(call, msg)

    def _finished(self, call: _Call, msg: Finished) -> None:
        self.call = None
        if self._kill_timer is not None:
            self._kill_timer.cancel()
            self._kill_timer = None
        if call.abandoned:
            logger.info("worker process %d returned from its abandoned run (%s): it takes new work", self.pid,
                        msg.outcome.value, extra=call.ctx.log.extra)
        if not call.outcome.done():
            if msg.outcome is Outcome.DONE:
                refused = _refused_result(msg.result_json)
                if refused is None:
                    call.outcome.set_result(msg.result_json)
                else:
                    call.outcome.set_exception(BodyRaised(refused, refused.message))
            elif msg.outcome is Outcome.ABORTED:
                call.outcome.set_exception(TaskAborted("aborted"))
            else:
                error = msg.error or WireError(exc_type="builtins:RuntimeError", message="the body failed")
                call.outcome.set_exception(BodyRaised(error.exception(), error.message))
        self._pool._released(self)

    def _log(self, msg: Log) -> None:
        call = self.call
        extra = call.ctx.log.extra if call is not None and msg.call == call.number else None
        logging.getLogger(msg.logger).log(msg.level, "%s", msg.message, extra=extra)


def _refused_result(text: str) -> InvalidArgument | None:
    """Why a result a worker sent cannot be stored, or None. The worker encoded it with ``encode_result``
    already; what the node stores is checked where it is stored all the same."""
    size = len(text.encode())
    if size > MAX_RESULT_BYTES:
        return InvalidArgument(f"the task's return value is too large: {size} bytes of JSON > {MAX_RESULT_BYTES}")
    try:
        check_json_depth(text, "the task's return value")
    except InvalidArgument as exc:
        return exc
    return None
