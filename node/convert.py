"""The only place where domain values and protobuf messages meet."""

from __future__ import annotations

from datetime import UTC, datetime

from google.protobuf.timestamp_pb2 import Timestamp

from node.events import Event
from node.model import EPOCH, NodeInfo, TaskRecord, TaskView, TypeStats
from node.pb.taskward.v1 import tasks_pb2 as pb


def _ts(value: datetime | None) -> Timestamp:
    return Timestamp(seconds=int((value or EPOCH).timestamp()))


def iso(value: datetime | None) -> str:
    """DESIGN's fixed time form: ISO-8601 UTC, seconds, ``Z``; unset is the epoch."""
    return (value or EPOCH).astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def stats_to_pb(rec: TaskRecord) -> pb.TaskStats:
    return pb.TaskStats(
        task_id=rec.id, type=rec.type, kind=rec.kind.value, scope=rec.scope, state=rec.state.value,
        sequence_number=rec.sequence_number, keyspace=rec.keyspace, table=rec.table, entity=rec.entity,
        shard=rec.shard, start_time=_ts(rec.start_time), end_time=_ts(rec.end_time),
    )


def status_to_pb(view: TaskView, addresses: dict[str, str]) -> pb.TaskStatus:
    rec, progress = view.record, view.progress
    msg = pb.TaskStatus(
        stats=stats_to_pb(rec), is_abortable=rec.is_abortable, error=rec.error, aborted=rec.aborted,
        parent_id=rec.parent_id or rec.cluster_parent or "none", progress_units=rec.progress_units,
        progress_total=progress.total, progress_completed=progress.completed,
        progress_fraction=progress.fraction, module=rec.module, progress_message=rec.progress_message,
        children_ids=[
            pb.ChildRef(task_id=c.task_id, node=c.node, address=addresses.get(c.node, "")) for c in rec.children
        ],
    )
    if progress.eta_ms is not None:
        msg.eta_ms = progress.eta_ms
    return msg


def event_to_pb(ev: Event) -> pb.Event:
    return pb.Event(
        sequence=ev.sequence, type=ev.type.value, task_id=ev.task_id, module=ev.module,
        task_type=ev.task_type, time=Timestamp(seconds=int(ev.time), nanos=int(ev.time % 1 * 1e9)),
        progress_completed=ev.progress_completed, progress_total=ev.progress_total,
        message=ev.message, error=ev.error, cluster_parent_id=ev.cluster_parent,
    )


def type_stats_to_pb(st: TypeStats) -> pb.TaskTypeInfo:
    return pb.TaskTypeInfo(
        name=st.name, running=st.running, completed=st.completed, started_at=st.started_at,
        last_run=st.last_run,
    )


def ts_to_iso(ts: Timestamp) -> str:
    return iso(datetime.fromtimestamp(ts.seconds, UTC))


def status_pb_to_dict(msg: pb.TaskStatus) -> dict[str, object]:
    """REST/CLI field names (ScyllaDB's), from a status message."""
    s = msg.stats
    out: dict[str, object] = {
        "id": s.task_id, "task_id": s.task_id, "type": s.type, "kind": s.kind, "scope": s.scope,
        "state": s.state, "is_abortable": msg.is_abortable, "start_time": ts_to_iso(s.start_time),
        "end_time": ts_to_iso(s.end_time), "error": msg.error, "parent_id": msg.parent_id,
        "sequence_number": s.sequence_number, "shard": s.shard, "keyspace": s.keyspace,
        "table": s.table, "entity": s.entity, "progress_units": msg.progress_units,
        "progress_total": msg.progress_total, "progress_completed": msg.progress_completed,
        "children_ids": [{"task_id": c.task_id, "node": c.node, "address": c.address} for c in msg.children_ids],
        "aborted": msg.aborted, "progress_fraction": msg.progress_fraction, "module": msg.module,
    }
    if msg.HasField("eta_ms"):
        out["eta_ms"] = msg.eta_ms
    return out


def stats_pb_to_dict(s: pb.TaskStats) -> dict[str, object]:
    return {
        "task_id": s.task_id, "type": s.type, "kind": s.kind, "scope": s.scope, "state": s.state,
        "sequence_number": s.sequence_number, "keyspace": s.keyspace, "table": s.table,
        "entity": s.entity, "shard": s.shard, "start_time": ts_to_iso(s.start_time),
        "end_time": ts_to_iso(s.end_time),
    }


def node_to_pb(n: NodeInfo) -> pb.NodeInfo:
    return pb.NodeInfo(
        id=n.id, address=n.address, alive=n.alive, leader=n.leader, version=n.version,
        started_at=_ts(n.started_at),
    )


def node_pb_to_dict(n: pb.NodeInfo) -> dict[str, object]:
    return {
        "id": n.id, "address": n.address, "alive": n.alive, "leader": n.leader, "version": n.version,
        "started_at": ts_to_iso(n.started_at),
    }
