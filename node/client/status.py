"""``TaskStatus``: what the client library answers about a task, as a frozen value with typed attributes.

The attributes are the REST ``task_status`` fields (ScyllaDB's names), so what an application reads
from ``taskward.Client`` and what an operator reads from ``curl`` or ``taskward tasks status`` have the same
names and values; only the spellings that exist for JSON become Python values: times are aware UTC
``datetime`` (``None`` where REST says the epoch), a root's ``parent_id`` is ``None`` (REST: ``"none"``),
``args`` and ``result`` are parsed JSON, and ``children_ids`` are ``TaskChild`` values. ``to_dict()``
gives the REST form back, byte for byte what ``taskward.convert.status_pb_to_dict`` renders (the CLI
prints it).

Protobuf meets these values here and nowhere else in the client (architecture: Layering: the client
is an adapter, like REST and the CLI).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from google.protobuf.timestamp_pb2 import Timestamp

from taskward.convert import iso, iso_ms, ms_time, second_time
from taskward.pb.taskward.v1 import tasks_pb2 as pb

FINISHED_STATES = frozenset({"done", "failed"})


def _set_ms_time(ts: Timestamp) -> datetime | None:
    return ms_time(ts) if ts.seconds or ts.nanos else None


@dataclass(frozen=True, slots=True, kw_only=True)
class TaskChild:
    """One entry of ``children_ids``: the child's id, the id of the node that runs it and that node's
    gRPC address (empty when the node is not a live member)."""

    task_id: str
    node: str
    address: str

    def to_dict(self) -> dict[str, str]:
        return {"task_id": self.task_id, "node": self.node, "address": self.address}


@dataclass(frozen=True, slots=True, kw_only=True)
class TaskStatus:
    """A task's status as a node answered it (see the module docstring for the spellings).

    ``state`` is ``created``, ``running``, ``done`` or ``failed`` (an abort is ``failed`` with error
    ``aborted`` and ``aborted`` true; a cluster task's child whose node could not answer shows the
    recorded state or ``unknown`` in ``tree()``). ``result`` is what the body returned (``None`` until it
    is done, or when it returned nothing); ``attempt``/``max_attempts`` count runs of a type with retries
    and ``next_attempt_at`` says when a pending retry runs.

    ``partial`` is true for the entries of ``client.tasks(...)``: a listing carries only ScyllaDB's
    ``task_stats`` fields (id, type, kind, scope, state, sequence_number, keyspace, table, entity, shard,
    start_time, end_time, module), and every other attribute then holds its empty value; read the full
    status with ``client.task(entry.id).status()``.
    """

    id: str
    type: str
    kind: str
    scope: str
    state: str
    module: str
    sequence_number: int = 0
    keyspace: str = ""
    table: str = ""
    entity: str = ""
    shard: int = 0
    start_time: datetime | None = None
    end_time: datetime | None = None
    is_abortable: bool = False
    error: str = ""
    aborted: bool = False
    parent_id: str | None = None
    progress_units: str = ""
    progress_total: float = 0.0
    progress_completed: float = 0.0
    progress_fraction: float = 0.0
    progress_message: str = ""
    eta_ms: int | None = None
    children_ids: tuple[TaskChild, ...] = ()
    args: dict[str, Any] | None = None
    created_at: datetime | None = None
    result: Any = None
    attempt: int = 1
    max_attempts: int = 1
    next_attempt_at: datetime | None = None
    stale: bool = False
    partial: bool = False

    @property
    def task_id(self) -> str:
        """The same as ``id`` (REST's task_status carries both)."""
        return self.id

    @property
    def finished(self) -> bool:
        """Done or failed (aborted included): nothing about the task changes any more."""
        return self.state in FINISHED_STATES

    @property
    def failed(self) -> bool:
        """Ended failed, aborted included (``error`` says why)."""
        return self.state == "failed"

    @classmethod
    def from_pb(cls, msg: pb.TaskStatus) -> TaskStatus:
        """From a node's answer. On every status read, so the common cases (no children, no arguments, no
        result) skip their work."""
        s = msg.stats
        args_json, result_json, children = msg.args_json, msg.result_json, msg.children_ids
        return cls(
            id=s.task_id, type=s.type, kind=s.kind, scope=s.scope, state=s.state, module=msg.module,
            sequence_number=s.sequence_number, keyspace=s.keyspace, table=s.table, entity=s.entity, shard=s.shard,
            start_time=second_time(s.start_time), end_time=second_time(s.end_time), is_abortable=msg.is_abortable,
            error=msg.error, aborted=msg.aborted,
            parent_id=None if msg.parent_id in ("none", "") else msg.parent_id,
            progress_units=msg.progress_units, progress_total=msg.progress_total,
            progress_completed=msg.progress_completed, progress_fraction=msg.progress_fraction,
            progress_message=msg.progress_message, eta_ms=msg.eta_ms if msg.HasField("eta_ms") else None,
            children_ids=tuple(TaskChild(task_id=c.task_id, node=c.node, address=c.address)
                               for c in children) if children else (),
            args=json.loads(args_json) if args_json and args_json != "{}" else {},
            created_at=_set_ms_time(msg.created_at),
            result=json.loads(result_json) if result_json and result_json != "null" else None,
            attempt=msg.attempt or 1, max_attempts=msg.max_attempts or 1,
            next_attempt_at=ms_time(msg.next_attempt_at) if msg.HasField("next_attempt_at") else None,
            stale=msg.stale,
        )

    @classmethod
    def from_stats_pb(cls, s: pb.TaskStats, module: str) -> TaskStatus:
        """A listing entry (``partial``): only what ``ListTasks`` carries."""
        return cls(
            id=s.task_id, type=s.type, kind=s.kind, scope=s.scope, state=s.state, module=module,
            sequence_number=s.sequence_number, keyspace=s.keyspace, table=s.table, entity=s.entity, shard=s.shard,
            start_time=second_time(s.start_time), end_time=second_time(s.end_time), partial=True,
        )

    def to_dict(self) -> dict[str, Any]:
        """The REST ``task_status`` object (the same keys, order and spellings as REST and ``tasks status``)."""
        out: dict[str, Any] = {
            "id": self.id, "task_id": self.id, "type": self.type, "kind": self.kind, "scope": self.scope,
            "state": self.state, "is_abortable": self.is_abortable, "start_time": iso(self.start_time),
            "end_time": iso(self.end_time), "error": self.error, "parent_id": self.parent_id or "none",
            "sequence_number": self.sequence_number, "shard": self.shard, "keyspace": self.keyspace,
            "table": self.table, "entity": self.entity, "progress_units": self.progress_units,
            "progress_total": self.progress_total, "progress_completed": self.progress_completed,
            "children_ids": [c.to_dict() for c in self.children_ids], "aborted": self.aborted,
            "progress_fraction": self.progress_fraction, "module": self.module,
        }
        if self.eta_ms is not None:
            out["eta_ms"] = self.eta_ms
        out["result"] = self.result
        out["attempt"] = self.attempt
        out["max_attempts"] = self.max_attempts
        if self.next_attempt_at is not None:
            out["next_attempt_at"] = iso_ms(self.next_attempt_at)
        return out

    def stats_dict(self) -> dict[str, Any]:
        """The REST ``task_stats`` object (an entry of ``list_module_tasks`` and of ``tasks list``)."""
        return {
            "task_id": self.id, "type": self.type, "kind": self.kind, "scope": self.scope, "state": self.state,
            "sequence_number": self.sequence_number, "keyspace": self.keyspace, "table": self.table,
            "entity": self.entity, "shard": self.shard, "start_time": iso(self.start_time),
            "end_time": iso(self.end_time),
        }
