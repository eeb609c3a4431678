"""What the node's surfaces need from the coordinator (implemented by ``taskward.coordinator.cluster``).

Declared here so that ``node`` never imports ``coordinator``; ``node/app.py`` plugs one in.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from taskward.cron import ScheduleInput, ScheduleView
from taskward.model import NodeInfo, TaskRecord, TaskView


@dataclass(frozen=True, slots=True, kw_only=True)
class UnreachableChild:
    """A cluster task's child whose node could not be asked: what the replicated record last knew, with
    ``state`` its final state or ``unknown``, and an error naming the node."""

    task_id: str
    parent_id: str
    module: str
    type: str
    state: str
    error: str
    keyspace: str = ""
    table: str = ""
    entity: str = ""
    start_time: datetime | None = None
    end_time: datetime | None = None
    progress_completed: float = 0.0
    progress_total: float = 0.0
    is_abortable: bool = False


ChildStatus = TaskView | UnreachableChild


class CronView(Protocol):
    """Cluster-wide cron: reads from this node's replica, validated writes from any node, firing on the
    leader. Bad input raises ``InvalidArgument`` naming the entry; an unknown id ``ScheduleNotFound``."""

    async def all(self) -> list[ScheduleView]:
        """Every schedule, by id."""
        ...

    async def get(self, schedule_id: str) -> ScheduleView: ...

    async def put_document(self, inputs: Sequence[ScheduleInput]) -> list[ScheduleView]:
        """Replace every schedule, atomically: one bad entry changes nothing."""
        ...

    async def put(self, s: ScheduleInput) -> ScheduleView: ...

    async def delete(self, schedule_id: str) -> None: ...

    async def set_enabled(self, schedule_id: str, enabled: bool) -> ScheduleView: ...

    async def run_now(self, schedule_id: str) -> tuple[str, str]:
        """Fire now (the policy applies): (task id, node id, empty for a cluster task)."""
        ...


class ClusterView(Protocol):
    node_id: str

    @property
    def cron(self) -> CronView: ...

    @property
    def stale(self) -> bool:
        """True while this node has lost the cluster store, or skips a bad replicated record: reads may be
        out of date or miss something."""
        ...

    def get(self, task_id: str) -> TaskRecord | None:
        """A cluster task from the local replica, as a root ``cluster`` record."""
        ...

    def list_module(self, module: str) -> list[TaskRecord]: ...

    def nodes(self) -> list[NodeInfo]: ...

    async def wait_change(self, timeout_s: float) -> None:
        """Return after the replica's next change (members, leader, tasks, staleness) or after
        ``timeout_s``, whichever comes first; never raises on timeout."""
        ...

    def addresses(self) -> dict[str, str]: ...

    async def wait(self, task_id: str, timeout_s: float | None) -> TaskRecord: ...

    async def child_statuses(self, task_id: str) -> list[ChildStatus]:
        """Each child's subtree, BFS, as its own node reports it; a node that cannot answer yields one
        ``UnreachableChild`` instead of failing the call."""
        ...

    async def start_task(self, module: str, type_name: str, args_json: str, *, nodes: list[str],
                         idempotency_key: str = "", keyspace: str = "", table: str = "", entity: str = "",
                         task_id: str = "") -> str: ...

    async def abort(self, task_id: str) -> None: ...
