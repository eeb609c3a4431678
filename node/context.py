"""What a task body sees: its arguments, progress reporting, cooperative abort and children."""

from __future__ import annotations

import asyncio
import json
import logging
import threading
from collections.abc import Callable
from typing import Any, Protocol

from taskward.errors import ChildFailed, TaskAborted
from taskward.model import TaskState, TaskView


class ContextHost(Protocol):
    """The part of the task manager a running body may call (implemented by ``TaskManager``)."""

    def report_progress(self, task_id: str, done: float, total: float, message: str) -> None: ...

    def abort_requested(self, task_id: str) -> bool: ...

    async def spawn_child(self, parent_id: str, module: str, type_name: str, args: dict[str, Any]) -> str: ...

    async def wait_child(self, task_id: str) -> TaskView: ...


class TaskContext:
    """Handed to every task body as its first argument.

    ``report_progress`` and ``check_aborted`` may be called from the event loop or from the worker
    thread of a synchronous body; ``spawn_child`` and ``wait_child`` are coroutines for async bodies.
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
        """Record that ``done`` of ``total`` units are complete; each call closes one batch for ETA."""
        if self.abandoned:
            raise TaskAborted("time limit exceeded")
        self._call(lambda: self._host.report_progress(self.task_id, float(done), float(total), message))

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
