"""taskward: durable node tasks and replicated cluster tasks, with the ScyllaDB task-manager semantics.

This folder (``node/`` in the repository) is the ``taskward`` package: what one node does, and this
public facade. What spans nodes is the subpackage ``taskward.coordinator`` (``coordinator/``). Only the
names in ``__all__`` are the public API; everything else may change between releases.
"""

from __future__ import annotations

if __name__ != "taskward":  # e.g. ``import node`` from the repository root would load a second copy
    raise ImportError(f"the repository's node/ folder is the package 'taskward': import taskward, not {__name__} "
                      "(install it with: pip install -e .)")

import os
from typing import TYPE_CHECKING, Any

# gRPC's documented default log level is ERROR, yet its core prints INFO lines (a refused TLS handshake, ...)
# straight to stderr unless told before it is imported: a command's stderr is one ``error:`` line, not those.
os.environ.setdefault("GRPC_VERBOSITY", "ERROR")

from taskward.context import TaskContext
from taskward.errors import (
    ChildFailed,
    InvalidArgument,
    NotAbortable,
    PermissionDenied,
    RunSkipped,
    TaskAborted,
    TaskFailed,
    TaskNotFound,
    TaskwardError,
    Unauthenticated,
    Unavailable,
    WaitTimeout,
)
from taskward.middleware import ErrorInput, FinishInput, ProgressInput, RunInput, TaskMiddleware, task_middleware
from taskward.registry import task_type

if TYPE_CHECKING:
    from taskward.client import AsyncClient, AsyncTaskHandle, Client, TaskHandle, TaskStatus

__version__ = "0.1.0"

__all__ = [
    "AsyncClient",
    "AsyncTaskHandle",
    "ChildFailed",
    "Client",
    "ErrorInput",
    "FinishInput",
    "InvalidArgument",
    "NotAbortable",
    "PermissionDenied",
    "ProgressInput",
    "RunInput",
    "RunSkipped",
    "TaskAborted",
    "TaskContext",
    "TaskFailed",
    "TaskHandle",
    "TaskMiddleware",
    "TaskNotFound",
    "TaskStatus",
    "TaskwardError",
    "Unauthenticated",
    "Unavailable",
    "WaitTimeout",
    "__version__",
    "task_middleware",
    "task_type",
]

_CLIENT_NAMES = frozenset({"AsyncClient", "AsyncTaskHandle", "Client", "TaskHandle", "TaskStatus"})


def __getattr__(name: str) -> Any:
    """The client library is imported on first use: it adds about 0.1 s (grpc.aio, the stubs, the
    converters) to ``import taskward``, which every task module and node process pays, mostly without
    ever making a client (measured: 0.21 s without it, 0.32 s with it, on the 2-core CI machine)."""
    if name in _CLIENT_NAMES:
        from taskward import client

        return getattr(client, name)
    raise AttributeError(f"module 'taskward' has no attribute {name!r}")
