"""What a task body sees: its arguments, progress reporting, cooperative abort and children."""

from __future__ import annotations

import asyncio
import json
import logging
import threading
from collections.abc import Callable, Coroutine
from typing import Any, Protocol, TypeVar

from taskward.errors import ChildFailed, InvalidArgument, TaskAborted
from taskward.limits import check_progress
from taskward.model import TaskState, TaskView

T = TypeVar("T")


def checked_progress(done: float, total: float) -> tuple[float, float]:
    """Progress as a body reports it, as floats: finite numbers from 0 to ``limits.MAX_PROGRESS``, else
    ``InvalidArgument`` (raised in the body, wherever it runs)."""
    try:
        done_f, total_f = float(done), float(total)  # a body may pass anything: typing is not checked at run time
    except (TypeError, ValueError):
        raise InvalidArgument(f"progress must be numbers, got {done!r} of {total!r}") from None
    check_progress(done_f, total_f)
    return done_f, total_f


class ContextHost(Protocol):
    """The part of the task manager a running body may call (implemented by ``TaskManager``)."""

    def report_progress(self, task_id: str, done: float, total: float, message: str) -> None: ...

    def abort_requested(self, task_id: str) -> bool: ...

    async def spawn_child(self, parent_id: str, module: str, type_name: str, args: dict[str, Any]) -> str: ...

    async def wait_child(self, task_id: str) -> TaskView: ...


class TaskContext:
    """Handed to every task body as its first argument.

    ``report_progress`` and ``check_aborted`` may be called from the event loop or from the worker
    thread of a synchronous body; ``spawn_child`` and ``wait_child`` are coroutines for async bodies, and
    ``spawn_child_sync`` and ``wait_child_sync`` their blocking forms for synchronous ones. A body with
    ``executor="process"`` gets the same interface, served over its worker's connection to the node
    (``taskward.procpool.worker.WorkerContext``).
    """

    def __init__(
        self,
        *,
        task_id: str,
        module: str,
        type_name: str,
        host: ContextHost,
        loop: asyncio.AbstractEventLoop,
        logger: logging.LoggerAdapter[logging.Logger],
    ) -> None:
        self.task_id = task_id
        self.module = module
        self.type_name = type_name
        self.log = logger
        self._host = host
        self._loop = loop
        self._loop_thread = threading.get_ident()
        self.abandoned = False  # set when a time limit gave up on a synchronous body

    def _call(self, fn: Callable[[], None]) -> None:
        if threading.get_ident() == self._loop_thread:
            fn()
        else:
            self._loop.call_soon_threadsafe(fn)

    def report_progress(self, done: float, total: float, message: str = "") -> None:
        """Record that ``done`` of ``total`` units are complete; each call closes one batch for ETA.

        Both are finite numbers from 0 to ``limits.MAX_PROGRESS`` (else ``InvalidArgument``, raised here in
        the body: a NaN summed into a tree or shown as JSON is no progress a client could read)."""
        if self.abandoned:
            raise TaskAborted("time limit exceeded")
        done_f, total_f = checked_progress(done, total)
        self._call(lambda: self._host.report_progress(self.task_id, done_f, total_f, str(message)))

    def check_aborted(self) -> None:
        """Raise ``TaskAborted`` if an abort was requested; call it between batches."""
        if self.abandoned or self._host.abort_requested(self.task_id):
            raise TaskAborted("aborted")

    async def spawn_child(self, type_name: str, module: str | None = None, **args: Any) -> str:
        """Start a child task (internal, same sequence number) and return its id."""
        return await self._host.spawn_child(self.task_id, module or self.module, type_name, args)

    async def wait_child(self, task_id: str) -> Any:
        """Wait for a child to finish and return its result (what its body returned, None for nothing).

        Raises ``ChildFailed`` (``child_id``, ``error``) when the child failed or was aborted: left
        unhandled, it fails this task too, with a message naming the child, so a failure is never
        swallowed by a parent that forgot to look."""
        view = await self._host.wait_child(task_id)
        rec = view.record
        if rec.state is TaskState.FAILED:
            raise ChildFailed(task_id, rec.error, qualified_type=f"{rec.module}:{rec.type}")
        return json.loads(rec.result) if rec.result else None

    def spawn_child_sync(self, type_name: str, module: str | None = None, **args: Any) -> str:
        """``spawn_child`` for a synchronous body: blocks until the child is recorded, returns its id."""
        return self._blocking(self.spawn_child(type_name, module, **args))

    def wait_child_sync(self, task_id: str) -> Any:
        """``wait_child`` for a synchronous body: blocks until the child finishes; its result, or ``ChildFailed``."""
        return self._blocking(self.wait_child(task_id))

    def _blocking(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run ``coro`` on the node's loop and wait for it from the body's thread. On the loop itself that would
        wait forever: an async body awaits the coroutine forms instead."""
        if threading.get_ident() == self._loop_thread:
            coro.close()
            raise RuntimeError("spawn_child_sync and wait_child_sync are for synchronous bodies: an async body "
                               "awaits ctx.spawn_child / ctx.wait_child")
        if self.abandoned:
            coro.close()
            raise TaskAborted("time limit exceeded")
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result()
