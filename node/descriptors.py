"""File descriptors of a server process: raise the open-file limit at start, fit the surfaces' connection
caps below it, and log a listener that cannot accept at a bounded rate.

A process starts with the soft ``RLIMIT_NOFILE`` its shell gave it, often 1024, while the hard limit is
much higher; every client connection is a descriptor, so the soft limit is raised to the hard one at
start. The caps of the surfaces (``taskward.resource_limits``) then have to fit below it with room to
spare for SQLite, logs and channels: when they do not, they are scaled down, with a warning, so a flood
on one surface runs into its own cap and never into ``EMFILE`` for everything else.

If a listener does run out (``EMFILE``), asyncio retries its accept loop and reports every failure, a
traceback each, thousands of lines a second; ``AcceptErrorLog`` folds them into one line per interval.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import resource
import time
from collections.abc import Callable
from typing import Any, TypeVar

from taskward.log_throttle import LogThrottle
from taskward.resource_limits import ACCEPT_ERROR_LOG_INTERVAL_S, DESCRIPTOR_RESERVE

logger = logging.getLogger(__name__)

MIN_CONNECTIONS = 16
"""A surface fitted into a tiny descriptor budget still keeps this many connections."""
_ACCEPT_MESSAGE = "socket.accept() out of system resource"

L = TypeVar("L")


def raise_open_files_limit() -> int:
    """Raise the soft ``RLIMIT_NOFILE`` to the hard limit; return the soft limit now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
    if soft == resource.RLIM_INFINITY or soft >= target:
        logger.debug("open-file limit %s (hard %s) left as it is", soft, hard)
        return soft if soft != resource.RLIM_INFINITY else target
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    except (ValueError, OSError) as exc:  # e.g. a hard limit above the kernel's nr_open
        logger.debug("open-file limit stays %d: cannot raise it to %d: %s", soft, target, exc)
        return soft
    logger.debug("open-file limit raised from %d to %d (the hard limit)", soft, target)
    return target


def fit_connection_caps(open_files: int, caps: dict[str, L]) -> dict[str, L]:
    """The surfaces' limit sections (name → a section with ``max_connections`` or ``max_clients``), scaled
    down together when their connection caps do not fit in ``open_files`` minus ``DESCRIPTOR_RESERVE``.

    Called by the node and the gateway at start, after ``raise_open_files_limit``. Pure but for the
    warning it logs when it has to shrink anything."""
    fields = {name: _cap_field(section) for name, section in caps.items()}
    wanted = {name: int(getattr(section, fields[name])) for name, section in caps.items()}
    budget = open_files - DESCRIPTOR_RESERVE
    total = sum(wanted.values())
    if total <= budget:
        return dict(caps)
    scale = max(budget, 0) / total
    fitted: dict[str, L] = {}
    for name, section in caps.items():
        value = max(MIN_CONNECTIONS, int(wanted[name] * scale))
        fitted[name] = dataclasses.replace(section, **{fields[name]: value})  # type: ignore[type-var]
    logger.warning(
        "open-file limit %d leaves room for %d connections, but the surfaces' caps add up to %d: lowered to %s "
        "(raise the hard limit, e.g. LimitNOFILE= or ulimit -Hn, or lower the caps)", open_files, max(budget, 0),
        total, ", ".join(f"{name} {getattr(fitted[name], fields[name])}" for name in fitted))
    return fitted


def _cap_field(section: object) -> str:
    for name in ("max_connections", "max_clients"):
        if hasattr(section, name):
            return name
    raise TypeError(f"{type(section).__name__} has no connection cap")


class AcceptErrorLog:
    """The event loop's exception handler, folding a listener's accept failures into one line per
    ``interval_s`` (with their count); everything else goes to the handler that was there before.

    asyncio reports each failed ``accept()`` (``EMFILE``, ``ENFILE``, ``ENOBUFS``, ``ENOMEM``), once per
    pending connection, and each retry of the accept loop that fails in turn; under a descriptor flood
    that is thousands of tracebacks a second, which costs more than the flood and fills the disk."""

    def __init__(self, loop: asyncio.AbstractEventLoop, *, interval_s: float = ACCEPT_ERROR_LOG_INTERVAL_S,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._loop = loop
        self._previous = loop.get_exception_handler()
        self.throttle = LogThrottle(logger, logging.ERROR, interval_s=interval_s, clock=clock)

    def install(self) -> AcceptErrorLog:
        """Become the loop's exception handler (called once by the node and the gateway at start)."""
        self._loop.set_exception_handler(self)
        return self

    def __call__(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        if not is_accept_failure(context):
            if self._previous is not None:
                self._previous(loop, context)
            else:
                loop.default_exception_handler(context)
            return
        exc = context.get("exception")
        reason = getattr(exc, "strerror", None) or str(exc or "unknown error")
        self.throttle.log("cannot accept connections: %s", reason)


def is_accept_failure(context: dict[str, Any]) -> bool:
    """Whether an event-loop error report is a failed accept or a retry of a listener's accept loop."""
    if context.get("message") == _ACCEPT_MESSAGE:
        return True
    handle = context.get("handle")
    callback = getattr(handle, "_callback", None)
    return getattr(callback, "__name__", "") == "_start_serving"


def guard_descriptors(loop: asyncio.AbstractEventLoop, caps: dict[str, L]) -> dict[str, L]:
    """What a server process does about descriptors at start (the node and the gateway, before they
    listen): raise the open-file limit, fold accept failures in the log, and fit the connection caps of the
    surfaces it serves (name → limit section) below the limit. Returns the sections to use."""
    open_files = raise_open_files_limit()
    AcceptErrorLog(loop).install()
    return fit_connection_caps(open_files, caps)
