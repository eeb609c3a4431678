"""What the node's surfaces need from the coordinator (implemented by ``coordinator.cluster``).

Declared here so that ``node`` never imports ``coordinator``; ``node/app.py`` plugs one in.
"""

from __future__ import annotations

from typing import Protocol

from node.model import NodeInfo, TaskRecord
from node.pb.taskward.v1 import tasks_pb2 as pb


class ClusterView(Protocol):
    node_id: str

    @property
    def stale(self) -> bool:
        """True while this node has lost the cluster store: reads may be out of date."""
        ...

    def get(self, task_id: str) -> TaskRecord | None:
        """A cluster task from the local replica, as a root ``cluster`` record."""
        ...

    def list_module(self, module: str) -> list[TaskRecord]: ...

    def nodes(self) -> list[NodeInfo]: ...

    def addresses(self) -> dict[str, str]: ...

    async def wait(self, task_id: str, timeout_s: float | None) -> TaskRecord: ...

    async def child_statuses(self, task_id: str) -> list[pb.TaskStatus]: ...

    async def start_task(self, module: str, type_name: str, args_json: str, *, nodes: list[str],
                         idempotency_key: str = "", keyspace: str = "", table: str = "", entity: str = "",
                         task_id: str = "") -> str: ...

    async def abort(self, task_id: str) -> None: ...
