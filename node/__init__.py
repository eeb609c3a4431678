"""taskward node: durable node tasks behind gRPC, with the ScyllaDB task-manager semantics."""

from __future__ import annotations

from node.context import TaskContext
from node.errors import TaskAborted
from node.registry import task_type

__version__ = "0.1.0"

__all__ = ["TaskAborted", "TaskContext", "__version__", "task_type"]
