"""A worker process of a node's pool: runs the bodies of ``executor="process"`` task types, one at a time.

The node starts it as a fresh interpreter (``python -P -c WORKER_BOOT FD``, see ``pool``) with one end of a
socket pair as file descriptor FD, and speaks ``protocol`` over it. The main thread runs bodies; a
reader thread takes every frame from the node as it arrives, so an abort or an abandoned run is known
at once (``check_aborted()`` reads a flag, it makes no call) and replies reach the thread that waits for
them. When the connection ends (the node stopped, or died however it died) the worker exits at once: a
body never outlives its node, and the node's restart treats the task as interrupted, like any other.

A body gets a ``WorkerContext``: the ``TaskContext`` interface, served by the node. Its log records,
and everything else the worker logs, are sent to the node and logged there as the node's own lines.
"""

from __future__ import annotations

import asyncio
import inspect
import itertools
import json
import logging
import os
import queue
import signal
import socket
import sys
import threading
import traceback
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

from taskward.context import TaskContext, checked_progress
from taskward.errors import InvalidArgument, TaskAborted
from taskward.limits import MAX_ARGS_BYTES
from taskward.model import MAX_LABEL_LEN
from taskward.procpool.protocol import (
    HEADER,
    MAX_LOG_CHARS,
    Finished,
    Init,
    Log,
    Outcome,
    Progress,
    Reply,
    Run,
    Signal,
    SignalKind,
    SpawnChild,
    ToNode,
    WaitChild,
    WireError,
    decode_to_worker,
    encode,
    frame_length,
)
from taskward.registry import TaskBody, encode_result, import_task_module, marked_type

WORKER_BOOT = "from taskward.procpool.worker import main; main()"
"""What ``python -c`` runs in a new worker; its one argument is the connection's file descriptor."""
ABANDONED = "the node stopped waiting for this run (time limit or shutdown)"
EXIT_BROKEN = 70
"""Exit code of a worker that received a frame it cannot read (EX_SOFTWARE): a bug, shown in the node's log."""
logger = logging.getLogger(__name__)


@dataclass(slots=True)
class CallState:
    """The call in progress, as the reader thread updates it (plain attribute writes; the body's thread reads)."""

    number: int
    aborted: bool
    abandoned: bool = False
    requests: set[int] = field(default_factory=set)


class NodeLink:
    """The worker's end of the connection: sends frames (from any thread), and reads them on its own thread."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self._send_lock = threading.Lock()
        self._lock = threading.Lock()
        self._runs: queue.SimpleQueue[tuple[Run, CallState]] = queue.SimpleQueue()
        self._pending: dict[int, Future[Reply]] = {}
        self._request_numbers = itertools.count(1)
        self.current: CallState | None = None

    def send(self, msg: ToNode) -> None:
        data = encode(msg)
        try:
            with self._send_lock:
                self._sock.sendall(data)
        except OSError:  # the node is gone: so is this worker
            os._exit(0)

    def receive(self) -> Init | Run | Reply | Signal:
        """The next frame from the node (blocking); the process exits when there is none."""
        header = self._exactly(HEADER.size)
        msg = decode_to_worker(self._exactly(frame_length(header)))
        return msg

    def _exactly(self, n: int) -> bytes:
        chunks, left = [], n
        while left:
            try:
                chunk = self._sock.recv(min(left, 1 << 20))
            except OSError:
                chunk = b""
            if not chunk:  # end of the connection: the node stopped or died
                os._exit(0)
            chunks.append(chunk)
            left -= len(chunk)
        return b"".join(chunks)

    def start_reading(self) -> None:
        threading.Thread(target=self._read_forever, name="node-link-reader", daemon=True).start()

    def _read_forever(self) -> None:
        try:
            while True:
                self._take(self.receive())
        except BaseException:  # a frame this worker cannot read: it cannot serve its node any more
            traceback.print_exc()
            os._exit(EXIT_BROKEN)

    def _take(self, msg: Init | Run | Reply | Signal) -> None:
        if isinstance(msg, Run):  # its state exists before the next frame is read: a signal right behind it applies
            self.current = CallState(number=msg.call, aborted=msg.aborted)
            self._runs.put((msg, self.current))
        elif isinstance(msg, Reply):
            with self._lock:
                waiting = self._pending.pop(msg.request, None)
            if waiting is not None:
                waiting.set_result(msg)
        elif isinstance(msg, Signal):
            self._signal(msg)

    def _signal(self, msg: Signal) -> None:
        state = self.current
        if state is None or state.number != msg.call:
            return  # about a call that has ended
        if msg.kind is SignalKind.ABORT:
            state.aborted = True
            return
        state.abandoned = True
        with self._lock:  # a body waiting for a child learns it at once
            waiting = [self._pending.pop(r) for r in state.requests if r in self._pending]
        for future in waiting:
            future.set_exception(TaskAborted(ABANDONED))

    def next_run(self) -> tuple[Run, CallState]:
        return self._runs.get()

    def request(self, state: CallState, make: Callable[[int], SpawnChild | WaitChild]) -> Any:
        """Send the request ``make(number)`` and wait for its reply; the reply's value, or its error raised."""
        future: Future[Reply] = Future()
        with self._lock:
            number = next(self._request_numbers)
            if state.abandoned:
                raise TaskAborted(ABANDONED)
            self._pending[number] = future
            state.requests.add(number)
        try:
            self.send(make(number))
            reply = future.result()
        finally:
            with self._lock:
                self._pending.pop(number, None)
                state.requests.discard(number)
        if reply.error is not None:
            raise reply.error.exception()
        return json.loads(reply.value_json)


class WorkerContext(TaskContext):
    """``TaskContext`` for a body in a worker process: the same methods, each one served by the node.

    ``report_progress`` sends and returns at once; ``check_aborted`` reads a flag the node sets;
    ``spawn_child``/``wait_child`` (and their ``_sync`` forms for synchronous bodies) wait for the node's
    answer. After the node gave up on the run (its time limit, a shutdown), every call raises ``TaskAborted``."""

    def __init__(self, run: Run, link: NodeLink, state: CallState) -> None:  # no node loop here: not super()'s
        self.task_id = run.task_id
        self.module = run.module
        self.type_name = run.type_name
        self.log = logging.LoggerAdapter(logging.getLogger("taskward.task"), {})
        self.abandoned = False
        self._link = link
        self._state = state

    def report_progress(self, done: float, total: float, message: str = "") -> None:
        if self._state.abandoned:
            raise TaskAborted(ABANDONED)
        done_f, total_f = checked_progress(done, total)
        self._link.send(Progress(call=self._state.number, done=done_f, total=total_f,
                                 message=str(message)[:MAX_LABEL_LEN]))

    def check_aborted(self) -> None:
        if self._state.abandoned or self._state.aborted:
            raise TaskAborted("aborted")

    async def spawn_child(self, type_name: str, module: str | None = None, **args: Any) -> str:
        return await asyncio.to_thread(self.spawn_child_sync, type_name, module, **args)

    async def wait_child(self, task_id: str) -> Any:
        return await asyncio.to_thread(self.wait_child_sync, task_id)

    def spawn_child_sync(self, type_name: str, module: str | None = None, **args: Any) -> str:
        module = module or self.module
        try:
            args_json = json.dumps(args, allow_nan=False)
        except (TypeError, ValueError, RecursionError) as exc:
            raise InvalidArgument(f"args of a {module}:{type_name} child are not JSON: {exc}") from None
        if (size := len(args_json.encode())) > MAX_ARGS_BYTES:
            raise InvalidArgument(f"args too large: {size} bytes > {MAX_ARGS_BYTES}")
        number = self._state.number
        child_id = self._link.request(self._state, lambda r: SpawnChild(
            call=number, request=r, module=module, type_name=type_name, args_json=args_json))
        return str(child_id)

    def wait_child_sync(self, task_id: str) -> Any:
        number = self._state.number
        return self._link.request(self._state, lambda r: WaitChild(call=number, request=r, child_id=str(task_id)))


class ForwardToNode(logging.Handler):
    """Sends each record to the node, which logs it as its own (with the task's id while a call runs)."""

    def __init__(self, link: NodeLink) -> None:
        super().__init__()
        self._link = link
        self._formatter = logging.Formatter()

    def emit(self, record: logging.LogRecord) -> None:
        try:
            message = record.getMessage()
            if record.exc_info:
                message += "\n" + self._formatter.formatException(record.exc_info)
            state = self._link.current
            self._link.send(Log(call=state.number if state else 0, logger=record.name, level=record.levelno,
                                message=message[:MAX_LOG_CHARS]))
        except Exception:
            self.handleError(record)


class Bodies:
    """The bodies this worker has loaded, by type; each source module is imported once, as the node did."""

    def __init__(self) -> None:
        self._modules: dict[str, ModuleType] = {}

    def load(self, source: str) -> ModuleType:
        module = self._modules.get(source)
        if module is None:
            module = self._modules[source] = import_task_module(source)
        return module

    def body(self, run: Run) -> TaskBody:
        try:
            spec = marked_type(self.load(run.source), run.module, run.type_name)
        except Exception as exc:
            detail = getattr(exc, "message", None) or f"{type(exc).__name__}: {exc}"
            raise RuntimeError(f"task type {run.module}:{run.type_name} cannot be loaded in a worker process: "
                               f"{detail}") from None
        if spec is None:
            raise RuntimeError(f"task type {run.module}:{run.type_name} is not marked in {run.source} in a worker "
                               "process")
        return spec.body


def run_call(link: NodeLink, bodies: Bodies, run: Run, state: CallState) -> Finished:
    """Run one call to its end and say how it ended (nothing a body does escapes this function). The node
    sends the next call only once this one's ``Finished`` has reached it."""
    try:
        body = bodies.body(run)
        ctx = WorkerContext(run, link, state)
        args = json.loads(run.args_json)
        value = asyncio.run(body(ctx, **args)) if inspect.iscoroutinefunction(body) else body(ctx, **args)
        result = encode_result(value)
    except TaskAborted:
        return Finished(call=run.call, outcome=Outcome.ABORTED)
    except SystemExit as exc:  # the worker is the node's to end, not the body's
        error = WireError.of(RuntimeError(f"the body raised SystemExit({exc.code!r})"))
        return Finished(call=run.call, outcome=Outcome.FAILED, error=error)
    except (Exception, KeyboardInterrupt) as exc:
        return Finished(call=run.call, outcome=Outcome.FAILED, error=WireError.of(exc))
    else:
        return Finished(call=run.call, outcome=Outcome.DONE, result_json=result)
    finally:
        link.current = None


def main() -> None:
    """The worker's life: set up from the node's ``Init``, then run calls until the connection ends."""
    # A worker's life is its node's: signals sent to the whole group (Ctrl-C, a terminal's hangup, systemd's stop
    # of the service's processes) are for the node, which ends its workers by closing their connections (and
    # kills one with SIGKILL when it must). Died of a SIGTERM, a worker would fail its task during a graceful stop.
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, signal.SIG_IGN)
    link = NodeLink(socket.socket(fileno=int(sys.argv[1])))
    init = link.receive()
    if not isinstance(init, Init):
        raise SystemExit(f"worker: expected init from the node, got {init.op}")
    sys.path[:] = init.sys_path  # the node's, --tasks' current folder included: imports resolve alike
    root = logging.getLogger()
    root.handlers[:] = [ForwardToNode(link)]
    root.setLevel(init.log_level)
    bodies = Bodies()
    for source in init.preload:
        try:
            bodies.load(source)
        except Exception as exc:  # said again, with the task, by the first call that needs it
            logger.warning("cannot import %s in worker process %d: %s", source, os.getpid(),
                           getattr(exc, "message", None) or exc)
    link.start_reading()
    while True:
        run, state = link.next_run()
        link.send(run_call(link, bodies, run, state))
