"""The audit log: one JSON object per line, appended, for every mutating call and every failed
authentication (DESIGN §10).

Each line has ``time`` (UTC, milliseconds, ``Z``), ``token_name`` (null when auth is off or the caller
could not be authenticated), ``peer`` (``host:port``), ``surface`` (``grpc``, ``rest``, ``resp``),
``operation`` (``taskward.security.roles`` names, ``authenticate`` for a failed authentication), ``target``
(the task id, module, schedule id, ``module:type`` of a start, what a failed caller tried), ``outcome``
(``ok``; ``denied``; ``unauthenticated``; ``blocked`` once when an address reaches the failed-auth limit;
or the lowercase gRPC code of the error the call answered, e.g. ``not_found``) and, for a start that
succeeded, ``task_id``.

How it is written, and why:

- The file is opened ``O_APPEND`` (every write lands at the end, whoever else appends), created ``0600``
  (it names callers and tasks), never truncated: restarts append to it.
- Writes happen on one writer thread, never on the event loop, so a slow disk stalls the thread and not
  the node. Records queue in memory and the thread writes everything queued in one ``write(2)``: under
  load many records share a system call (group commit, as the store does), at rest a record is written
  within microseconds.
- A mutating call is answered only after its line was handed to the kernel (``await record(...)``), so
  a crash of the process never loses the line of a call it acknowledged. There is no fsync per line (that
  would add a disk flush to every mutation); the file is fsynced when it is closed.
- A failed write (disk full) is logged as an error, once per run of failures; the call's answer does not
  change, since what it did has happened.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import queue
import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import orjson

logger = logging.getLogger(__name__)

Surface = Literal["grpc", "rest", "resp"]
MAX_BATCH_BYTES = 1 << 20
_STOP = object()


def now_text() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class AuditLog:
    """``start()`` opens the file and the writer thread; ``record``/``note`` add lines; ``close()`` drains
    and closes. Used from one event loop (the process's)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd = -1
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._failing = False
        self.dropped = 0

    def start(self) -> None:
        """Open (create 0600) and start the writer. ``OSError`` if the file cannot be opened."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
        self._loop = asyncio.get_running_loop()
        self._thread = threading.Thread(target=self._run, name="audit-writer", daemon=True)
        self._thread.start()

    @property
    def open(self) -> bool:
        return self._thread is not None

    def note(self, *, token_name: str | None, peer: str, surface: Surface, operation: str, target: str,
             outcome: str, **extra: str) -> None:
        """Queue a line without waiting for it (failed authentications, denials: nothing was done)."""
        if self._thread is not None:
            self._queue.put((_line(token_name, peer, surface, operation, target, outcome, extra), None))

    async def record(self, *, token_name: str | None, peer: str, surface: Surface, operation: str, target: str,
                     outcome: str, **extra: str) -> None:
        """Write a line and return once the kernel has it (a mutation's line, before its answer)."""
        if self._thread is None or self._loop is None:
            return
        done = self._loop.create_future()
        self._queue.put((_line(token_name, peer, surface, operation, target, outcome, extra), done))
        await done

    async def close(self) -> None:
        """Write what is queued, fsync, close. Idempotent."""
        thread, self._thread = self._thread, None
        if thread is None:
            return
        self._queue.put(_STOP)
        await asyncio.to_thread(thread.join)
        try:
            os.fsync(self._fd)
        except OSError as exc:
            logger.error("audit log %s: fsync failed: %s", self.path, exc)
        os.close(self._fd)
        self._fd = -1

    # ---------------------------------------------------------------- the writer thread

    def _run(self) -> None:
        stop = False
        while not stop:
            item = self._queue.get()
            lines: list[bytes] = []
            waiters: list[asyncio.Future[None]] = []
            size = 0
            while True:
                if item is _STOP:
                    stop = True
                else:
                    line, waiter = item
                    lines.append(line)
                    size += len(line)
                    if waiter is not None:
                        waiters.append(waiter)
                if size >= MAX_BATCH_BYTES:
                    break
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
            if lines:
                self._write(b"".join(lines), len(lines))
            if waiters and self._loop is not None:
                with contextlib.suppress(RuntimeError):  # a closed loop: no one waits any more
                    self._loop.call_soon_threadsafe(_release, waiters)

    def _write(self, data: bytes, count: int) -> None:
        view = memoryview(data)
        try:
            while view:
                view = view[os.write(self._fd, view):]
        except OSError as exc:
            self.dropped += count
            if not self._failing:
                logger.error("audit log %s: cannot write (%s); lines are lost until writes succeed again",
                             self.path, exc.strerror or exc)
            self._failing = True
            return
        if self._failing:
            logger.warning("audit log %s: writing again (%d lines lost)", self.path, self.dropped)
            self._failing = False


def _release(waiters: list[asyncio.Future[None]]) -> None:
    for w in waiters:
        if not w.done():
            w.set_result(None)


def _line(token_name: str | None, peer: str, surface: str, operation: str, target: str, outcome: str,
          extra: dict[str, str]) -> bytes:
    return orjson.dumps({"time": now_text(), "token_name": token_name, "peer": peer, "surface": surface,
                         "operation": operation, "target": target, "outcome": outcome, **extra}) + b"\n"
