"""taskward: durable node tasks and replicated cluster tasks, with the ScyllaDB task-manager semantics.

This folder (``node/`` in the repository) is the ``taskward`` package: what one node does, and this
public facade. What spans nodes is the subpackage ``taskward.coordinator`` (``coordinator/``). Only the
names in ``__all__`` are the public API; everything else may change between releases.
"""

from __future__ import annotations

if __name__ != "taskward":  # e.g. ``import node`` from the repository root would load a second copy
    raise ImportError(f"the repository's node/ folder is the package 'taskward': import taskward, not {__name__} "
                      "(install it with: pip install -e .)")

from taskward.context import TaskContext
from taskward.errors import (
    ChildFailed,
    InvalidArgument,
    NotAbortable,
    PermissionDenied,
    TaskAborted,
    TaskFailed,
    TaskNotFound,
    TaskwardError,
    Unauthenticated,
    Unavailable,
)
from taskward.middleware import ErrorInput, FinishInput, ProgressInput, RunInput, TaskMiddleware, task_middleware
from taskward.registry import task_type

__version__ = "0.1.0"

__all__ = [
    "ChildFailed",
    "ErrorInput",
    "FinishInput",
    "InvalidArgument",
    "NotAbortable",
    "PermissionDenied",
    "ProgressInput",
    "RunInput",
    "TaskAborted",
    "TaskContext",
    "TaskFailed",
    "TaskMiddleware",
    "TaskNotFound",
    "TaskwardError",
    "Unauthenticated",
    "Unavailable",
    "__version__",
    "task_middleware",
    "task_type",
]
