"""A real TaskManager on a real SQLite store in a temp dir, for in-process tests of the node's core."""

from __future__ import annotations

from pathlib import Path
from types import ModuleType

from taskward.config import ManagerConfig
from taskward.manager import TaskManager
from taskward.metrics import NodeMetrics
from taskward.registry import Registry
from taskward.store import Store


def in_process_manager(path: Path, tasks: ModuleType, *, store: Store | None = None, concurrency: int = 16,
                       metrics: NodeMetrics | None = None) -> TaskManager:
    """A node's manager (id ``u1``, short shutdown grace) with the task types and middleware of ``tasks``
    (a test module), on ``store`` or a new SQLite store under ``path``; not started. ``metrics``: what it
    records into (give the store the same one to see its commits there too)."""
    registry = Registry()
    registry.load_module(tasks)
    return TaskManager(ManagerConfig(node_id="u1", shutdown_grace_s=0.1, concurrency=concurrency),
                       store or Store(path / "db.sqlite3", synchronous="NORMAL", metrics=metrics), registry,
                       metrics=metrics)
