"""The only place where domain values and protobuf messages meet.

Both directions: the servicers answer with ``*_to_pb``; the coordinator, which calls other nodes over
gRPC, reads their answers back into domain values with ``*_from_pb`` before deciding anything.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from functools import lru_cache

from google.protobuf.timestamp_pb2 import Timestamp

from taskward.cluster_view import UnreachableChild
from taskward.cron import ScheduleInput, ScheduleView
from taskward.errors import InvalidArgument
from taskward.events import Event, EventType
from taskward.model import (
    EPOCH,
    ChildRef,
    NodeInfo,
    Progress,
    TaskKind,
    TaskRecord,
    TaskState,
    TaskView,
    TypeStats,
)
from taskward.pb.taskward.v1 import cron_pb2 as cron_pb
from taskward.pb.taskward.v1 import tasks_pb2 as pb
from taskward.type_signature import TypeSignature


def _ts(value: datetime | None) -> Timestamp:
    return Timestamp(seconds=int((value or EPOCH).timestamp()))


def _ts_ms(value: datetime) -> Timestamp:
    ms = round(value.timestamp() * 1000)
    return Timestamp(seconds=ms // 1000, nanos=ms % 1000 * 1_000_000)


def iso(value: datetime | None) -> str:
    """The fixed time form of every surface: ISO-8601 UTC, seconds, ``Z``; unset is the epoch."""
    return (value or EPOCH).astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def stats_to_pb(rec: TaskRecord) -> pb.TaskStats:
    s = pb.TaskStats()
    _set_stats(s, rec)
    return s


def _set_stats(s: pb.TaskStats, rec: TaskRecord) -> None:
    """A record's stats written into ``s`` field by field (times included): no message is built only to
    be copied, which makes a status a third cheaper to build, and a list of a thousand with them."""
    s.task_id = rec.id
    s.type = rec.type
    s.kind = rec.kind.value
    s.scope = rec.scope
    s.state = rec.state.value
    s.sequence_number = rec.sequence_number
    s.keyspace = rec.keyspace
    s.table = rec.table
    s.entity = rec.entity
    s.shard = rec.shard
    s.start_time.seconds = int((rec.start_time or EPOCH).timestamp())
    s.end_time.seconds = int((rec.end_time or EPOCH).timestamp())


def status_to_pb(view: TaskView, addresses: dict[str, str]) -> pb.TaskStatus:
    rec, progress = view.record, view.progress
    msg = pb.TaskStatus(
        is_abortable=rec.is_abortable, error=rec.error, aborted=rec.aborted,
        parent_id=rec.parent_id or rec.cluster_parent or "none", progress_units=rec.progress_units,
        progress_total=progress.total, progress_completed=progress.completed,
        progress_fraction=progress.fraction, module=rec.module, progress_message=rec.progress_message,
        args_json=rec.args, result_json=rec.result, attempt=rec.attempt, max_attempts=rec.max_attempts,
    )
    _set_stats(msg.stats, rec)
    created_ms = round(rec.created_at.timestamp() * 1000)
    msg.created_at.seconds = created_ms // 1000  # as _ts_ms
    msg.created_at.nanos = created_ms % 1000 * 1_000_000
    if rec.children:
        msg.children_ids.extend(
            pb.ChildRef(task_id=c.task_id, node=c.node, address=addresses.get(c.node, "")) for c in rec.children
        )
    if progress.eta_ms is not None:
        msg.eta_ms = progress.eta_ms
    if rec.next_attempt_at is not None:
        msg.next_attempt_at.CopyFrom(_ts_ms(rec.next_attempt_at))
    return msg


def second_time(ts: Timestamp) -> datetime | None:
    """A whole-second time as statuses carry it; the epoch (unset) is None."""
    return datetime.fromtimestamp(ts.seconds, UTC) if ts.seconds else None


def ms_time(ts: Timestamp) -> datetime:
    """A timestamp kept to the millisecond or finer (``created_at``, a retry's time) as an aware datetime."""
    return datetime.fromtimestamp(ts.seconds + ts.nanos / 1e9, UTC)


def status_from_pb(msg: pb.TaskStatus) -> TaskView:
    """A status another node answered, as a view that ``status_to_pb`` turns back into the same message
    (the fields a status carries; ``created_at`` and the like are not on the wire)."""
    s = msg.stats
    rec = TaskRecord(
        id=s.task_id, module=msg.module, type=s.type, kind=TaskKind(s.kind), scope=s.scope, state=TaskState(s.state),
        sequence_number=s.sequence_number, keyspace=s.keyspace, table=s.table, entity=s.entity, shard=s.shard,
        created_at=datetime.fromtimestamp(msg.created_at.seconds + msg.created_at.nanos / 1e9, UTC),
        args=msg.args_json or "{}", start_time=second_time(s.start_time), end_time=second_time(s.end_time),
        is_abortable=msg.is_abortable,
        error=msg.error, aborted=msg.aborted, parent_id=None if msg.parent_id == "none" else msg.parent_id,
        children=tuple(ChildRef(c.task_id, c.node) for c in msg.children_ids), progress_units=msg.progress_units,
        progress_total=msg.progress_total, progress_completed=msg.progress_completed,
        progress_message=msg.progress_message, own_progress=True, result=msg.result_json,
        attempt=msg.attempt or 1, max_attempts=msg.max_attempts or 1,
        next_attempt_at=ms_time(msg.next_attempt_at) if msg.HasField("next_attempt_at") else None,
    )
    return TaskView(rec, Progress(msg.progress_completed, msg.progress_total,
                                  msg.eta_ms if msg.HasField("eta_ms") else None))


def unreachable_child_to_pb(c: UnreachableChild) -> pb.TaskStatus:
    """A child its node could not describe: the cluster record's last word, and why."""
    stats = pb.TaskStats(task_id=c.task_id, type=c.type, kind=TaskKind.NODE.value, scope="node", state=c.state,
                         keyspace=c.keyspace, table=c.table, entity=c.entity, start_time=_ts(c.start_time),
                         end_time=_ts(c.end_time))
    return pb.TaskStatus(stats=stats, error=c.error, parent_id=c.parent_id, module=c.module,
                         progress_completed=c.progress_completed, progress_total=c.progress_total,
                         is_abortable=c.is_abortable)


def event_from_pb(msg: pb.Event) -> Event | None:
    """An event another node streamed; None for a type this version does not know."""
    try:
        etype = EventType(msg.type)
    except ValueError:
        return None
    return Event(sequence=msg.sequence, type=etype, task_id=msg.task_id, module=msg.module, task_type=msg.task_type,
                 time=msg.time.seconds + msg.time.nanos / 1e9, progress_completed=msg.progress_completed,
                 progress_total=msg.progress_total, message=msg.message, error=msg.error,
                 cluster_parent=msg.cluster_parent_id, schedule_id=msg.schedule_id, slot=msg.slot,
                 attempt=msg.attempt,
                 next_attempt_at=msg.next_attempt_at.seconds + msg.next_attempt_at.nanos / 1e9)


def event_to_pb(ev: Event) -> pb.Event:
    return pb.Event(
        sequence=ev.sequence, type=ev.type.value, task_id=ev.task_id, module=ev.module,
        task_type=ev.task_type, time=Timestamp(seconds=int(ev.time), nanos=int(ev.time % 1 * 1e9)),
        progress_completed=ev.progress_completed, progress_total=ev.progress_total,
        message=ev.message, error=ev.error, cluster_parent_id=ev.cluster_parent, schedule_id=ev.schedule_id,
        slot=ev.slot, attempt=ev.attempt,
        next_attempt_at=_ts_float(ev.next_attempt_at) if ev.next_attempt_at else None,
    )


def type_stats_to_pb(st: TypeStats) -> pb.TaskTypeInfo:
    return pb.TaskTypeInfo(
        name=st.name, running=st.running, completed=st.completed, started_at=st.started_at,
        last_run=st.last_run,
    )


def task_type_to_pb(st: TypeStats, *, module: str, type_name: str, abortable: bool,
                    signature: TypeSignature) -> pb.TaskTypeInfo:
    """A registered type: its run history (``type_stats_to_pb``) and what its arguments look like."""
    msg = type_stats_to_pb(st)
    msg.module, msg.type, msg.abortable, msg.extra_args = module, type_name, abortable, signature.extra_args
    msg.params.extend(pb.TaskParam(name=p.name, type=p.json_type, required=p.required, default_json=p.default_json)
                      for p in signature.params)
    return msg


def task_type_pb_to_dict(t: pb.TaskTypeInfo) -> dict[str, object]:
    """REST's form of a task type (``GET /task_types``): a default is the parsed JSON value, and a
    parameter without one (required, or a default with no JSON form) has no ``default`` key."""
    params: list[dict[str, object]] = []
    for p in t.params:
        entry: dict[str, object] = {"name": p.name, "type": p.type or None, "required": p.required}
        if p.default_json:
            entry["default"] = json.loads(p.default_json)
        params.append(entry)
    return {"module": t.module, "type": t.type, "name": t.name, "abortable": t.abortable, "params": params,
            "extra_args": t.extra_args, "running": t.running, "completed": t.completed,
            "started_at": t.started_at, "last_run": t.last_run}


def ts_to_iso(ts: Timestamp) -> str:
    return _iso_seconds(ts.seconds)


@lru_cache(maxsize=4096)
def _iso_seconds(seconds: int) -> str:
    """``iso`` of a whole second: remembered, because a list of a thousand statuses carries a few distinct
    seconds (tasks started together, the epoch for every unfinished one) and formatting is most of the cost
    of turning a status into JSON."""
    return iso(datetime.fromtimestamp(seconds, UTC))


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
    out["result"] = json.loads(msg.result_json) if msg.result_json else None
    out["attempt"] = msg.attempt or 1
    out["max_attempts"] = msg.max_attempts or 1
    if msg.HasField("next_attempt_at"):
        out["next_attempt_at"] = iso_ms(ms_time(msg.next_attempt_at))
    return out


def status_pb_to_brief_dict(msg: pb.TaskStatus) -> dict[str, object]:
    """What a list of tasks shows of a status (``GET /tasks/{module}?brief=true``): the fields of
    ``status_pb_to_dict`` a row is made of, without the result, the duplicate ``id`` and the bookkeeping
    (scope, sequence number, shard, entity, progress units, max attempts). A third of the bytes, and a third
    of the time to build, for a list of a thousand."""
    s = msg.stats
    out: dict[str, object] = {
        "task_id": s.task_id, "type": s.type, "kind": s.kind, "state": s.state, "module": msg.module,
        "is_abortable": msg.is_abortable, "aborted": msg.aborted, "error": msg.error, "parent_id": msg.parent_id,
        "start_time": ts_to_iso(s.start_time), "end_time": ts_to_iso(s.end_time), "keyspace": s.keyspace,
        "table": s.table, "progress_total": msg.progress_total, "progress_completed": msg.progress_completed,
        "progress_fraction": msg.progress_fraction, "attempt": msg.attempt or 1,
        "children_ids": [{"task_id": c.task_id, "node": c.node, "address": c.address} for c in msg.children_ids]
        if msg.children_ids else [],
    }
    if msg.HasField("eta_ms"):
        out["eta_ms"] = msg.eta_ms
    if msg.HasField("next_attempt_at"):
        out["next_attempt_at"] = iso_ms(ms_time(msg.next_attempt_at))
    return out


def event_pb_to_dict(ev: pb.Event) -> dict[str, object]:
    """An event as JSON (SSE ``data``, the client library's event dicts): fields a type does not use are
    left out (``cluster_parent_id`` outside cluster tasks, ``schedule_id``/``slot`` outside ``cron.fired``,
    ``attempt``/``next_attempt_at`` outside ``task.retrying``)."""
    out: dict[str, object] = {
        "sequence": ev.sequence, "type": ev.type, "task_id": ev.task_id, "module": ev.module,
        "task_type": ev.task_type, "time": ts_to_iso(ev.time), "progress_completed": ev.progress_completed,
        "progress_total": ev.progress_total, "message": ev.message, "error": ev.error,
    }
    if ev.cluster_parent_id:
        out["cluster_parent_id"] = ev.cluster_parent_id
    if ev.schedule_id:  # cron.fired
        out |= {"schedule_id": ev.schedule_id, "slot": ev.slot}
    if ev.HasField("next_attempt_at"):  # task.retrying
        out |= {"attempt": ev.attempt, "next_attempt_at": iso_ms(ms_time(ev.next_attempt_at))}
    return out


def iso_ms(value: datetime) -> str:
    """ISO-8601 UTC with milliseconds, for instants finer than a second (a retry's due time)."""
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{value.microsecond // 1000:03d}Z"


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
        started_at=_ts_ms(n.started_at),  # a restart within the same second is still later
    )


def node_pb_to_dict(n: pb.NodeInfo) -> dict[str, object]:
    return {
        "id": n.id, "address": n.address, "alive": n.alive, "leader": n.leader, "version": n.version,
        "started_at": ts_to_iso(n.started_at),
    }


def schedule_input_from_pb(msg: cron_pb.CronSchedule) -> ScheduleInput:
    return ScheduleInput(
        id=msg.id, module=msg.module, task_type=msg.task_type, schedule=msg.schedule, args_json=msg.args_json,
        enabled=msg.enabled if msg.HasField("enabled") else None, timezone=msg.timezone, cluster=msg.cluster,
        concurrency=msg.concurrency, misfire_grace_s=msg.misfire_grace_s if msg.HasField("misfire_grace_s") else None,
    )


def _ts_float(value: float) -> Timestamp:
    return Timestamp(seconds=int(value), nanos=int(value % 1 * 1e9))


def schedule_to_pb(v: ScheduleView) -> cron_pb.ScheduleStatus:
    s, st = v.schedule, v.state
    msg = cron_pb.ScheduleStatus(
        schedule=cron_pb.CronSchedule(
            id=s.id, module=s.module, task_type=s.task_type, schedule=s.schedule, args_json=s.args_json,
            enabled=s.enabled, timezone=s.timezone, cluster=s.cluster, concurrency=s.concurrency.value,
            misfire_grace_s=s.misfire_grace_s,
        ),
        last_slot=st.last_slot, last_task_id=st.last_task_id, last_task_state=v.last_task_state,
        last_node=st.last_node,
        history=[cron_pb.CronHistoryEntry(slot=h.slot, outcome=h.outcome.value, reason=h.reason, task_id=h.task_id,
                                          node=h.node, at=_ts_float(h.at), count=h.count) for h in st.history],
    )
    if v.next_fire_time is not None:
        msg.next_fire_time.CopyFrom(_ts_float(v.next_fire_time))
    return msg


_STRINGS = ("id", "module", "task_type", "schedule", "timezone", "concurrency")
_READ_ONLY = frozenset({"next_fire_time", "last_slot", "last_task_id", "last_task_state", "last_node", "history"})
_KNOWN = frozenset({*_STRINGS, "args", "enabled", "cluster", "misfire_grace_s"}) | _READ_ONLY


def schedule_json_to_pb(index: int, entry: object, *, path_id: str = "") -> cron_pb.CronSchedule:
    """One document entry as the gRPC message; 400 naming the entry and the field for a wrong shape (the
    node checks the values)."""
    if not isinstance(entry, dict):
        raise InvalidArgument(f"schedule #{index + 1}: must be a JSON object")
    sid = entry.get("id", path_id)
    name = f"schedule {sid!r}" if isinstance(sid, str) and sid else f"schedule #{index + 1}"

    def wrong(message: str) -> InvalidArgument:
        return InvalidArgument(f"{name}: {message}")

    unknown = sorted(set(entry) - _KNOWN)
    if unknown:
        raise wrong(f"unknown field(s) {', '.join(unknown)}")
    for field in _STRINGS:
        if field in entry and not isinstance(entry[field], str):
            raise wrong(f"field {field!r} must be a string")
    for field in ("enabled", "cluster"):
        if field in entry and not isinstance(entry[field], bool):
            raise wrong(f"field {field!r} must be true or false")
    args = entry.get("args", {})
    if not isinstance(args, dict):
        raise wrong("field 'args' must be a JSON object")
    grace = entry.get("misfire_grace_s")
    if grace is not None and (isinstance(grace, bool) or not isinstance(grace, int | float)):
        raise wrong("field 'misfire_grace_s' must be a number of seconds")
    if path_id and sid != path_id:
        raise wrong(f"the body's id differs from the path's ({path_id!r})")
    msg = cron_pb.CronSchedule(id=sid or "", module=entry.get("module", ""), task_type=entry.get("task_type", ""),
                          schedule=entry.get("schedule", ""), args_json=json.dumps(args, separators=(",", ":")),
                          timezone=entry.get("timezone", ""), cluster=entry.get("cluster", False),
                          concurrency=entry.get("concurrency", ""))
    if "enabled" in entry:
        msg.enabled = entry["enabled"]
    if grace is not None:
        msg.misfire_grace_s = float(grace)
    return msg



def schedule_pb_to_dict(msg: cron_pb.ScheduleStatus) -> dict[str, object]:
    """A schedule as REST and the CLI show it: AeorDB's cron.json fields, then taskward's, then its state."""
    s = msg.schedule
    out: dict[str, object] = {
        "id": s.id, "task_type": s.task_type, "schedule": s.schedule, "args": json.loads(s.args_json or "{}"),
        "enabled": s.enabled, "module": s.module, "timezone": s.timezone, "cluster": s.cluster,
        "concurrency": s.concurrency, "misfire_grace_s": s.misfire_grace_s,
        "next_fire_time": ts_to_iso(msg.next_fire_time) if msg.HasField("next_fire_time") else None,
        "last_slot": ts_to_iso(Timestamp(seconds=msg.last_slot)) if msg.last_slot else None,
        "last_task_id": msg.last_task_id or None, "last_task_state": msg.last_task_state or None,
        "last_node": msg.last_node or None,
        "history": [{"slot": ts_to_iso(Timestamp(seconds=h.slot)), "outcome": h.outcome, "reason": h.reason,
                     "task_id": h.task_id or None, "node": h.node or None, "at": ts_to_iso(h.at),
                     "count": h.count} for h in msg.history],
    }
    return out
