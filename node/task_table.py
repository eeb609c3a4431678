"""The in-memory view of every registered task, indexed for status and paged listing.

Reads never touch SQLite: the table is loaded once at start-up and then kept in step with each
committed transition by the task manager.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterator
from dataclasses import dataclass, field

from taskward.model import TaskRecord


@dataclass(slots=True)
class _ModuleIndex:
    """Registration order of a module's tasks; removals are lazy and compacted when they pile up."""

    order: list[int] = field(default_factory=list)
    ids: list[str] = field(default_factory=list)
    dead: int = 0


class TaskTable:
    def __init__(self) -> None:
        self.records: dict[str, TaskRecord] = {}
        self._reg_no: dict[str, int] = {}
        self._modules: dict[str, _ModuleIndex] = {}
        self._next = 0
        self.by_idempotency_key: dict[str, str] = {}

    def __contains__(self, task_id: str) -> bool:
        return task_id in self.records

    def __len__(self) -> int:
        return len(self.records)

    def get(self, task_id: str) -> TaskRecord | None:
        return self.records.get(task_id)

    def put(self, rec: TaskRecord) -> None:
        if rec.id not in self.records:
            self._next += 1
            self._reg_no[rec.id] = self._next
            idx = self._modules.setdefault(rec.module, _ModuleIndex())
            idx.order.append(self._next)
            idx.ids.append(rec.id)
            if rec.idempotency_key:
                self.by_idempotency_key[rec.idempotency_key] = rec.id
        self.records[rec.id] = rec

    def cluster_parent_of(self, rec: TaskRecord) -> str:
        """The cluster task whose child's subtree ``rec`` is in (its local root's ``cluster_parent``), or
        "": events carry it so the cluster leader can follow a child and notice its descendants' changes
        (they move the child's rolled-up progress) without polling."""
        while rec.parent_id is not None:
            parent = self.records.get(rec.parent_id)
            if parent is None:
                return ""
            rec = parent
        return rec.cluster_parent

    def remove(self, task_id: str) -> TaskRecord | None:
        rec = self.records.pop(task_id, None)
        if rec is None:
            return None
        self._reg_no.pop(task_id, None)
        if rec.idempotency_key:
            self.by_idempotency_key.pop(rec.idempotency_key, None)
        idx = self._modules.get(rec.module)
        if idx is not None:
            idx.dead += 1
            if idx.dead > 64 and idx.dead * 2 > len(idx.ids):
                self._compact(rec.module, idx)
        return rec

    def _compact(self, module: str, idx: _ModuleIndex) -> None:
        pairs = [(o, i) for o, i in zip(idx.order, idx.ids, strict=True) if self._reg_no.get(i) == o]
        self._modules[module] = _ModuleIndex([o for o, _ in pairs], [i for _, i in pairs])

    def module_records(self, module: str, after: int = 0) -> Iterator[tuple[int, TaskRecord]]:
        """Records of a module in registration order, starting after registration number ``after``."""
        idx = self._modules.get(module)
        if idx is None:
            return
        start = bisect.bisect_right(idx.order, after)
        for pos in range(start, len(idx.ids)):
            order, tid = idx.order[pos], idx.ids[pos]
            if self._reg_no.get(tid) == order:
                yield order, self.records[tid]
