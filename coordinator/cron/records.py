"""Cron's keys in the cluster store and their protobuf values.

- ``cron/doc``: the generation of the schedule document in force;
- ``cron/s/<generation>/<id>``: the schedules of a generation (a whole-document PUT writes a new
  generation, then switches ``cron/doc`` in one transaction: readers see all of it or none);
- ``cron/state/<id>``: what the leader decided for the schedule (fenced leader writes only);
- ``cron/fired/<id>/<slot>``: created only if absent in the transaction that decides the slot, the
  exactly-once marker; the leader deletes the previous one in the same transaction.

Decoding is tolerant: a value that does not parse is logged and skipped.
"""

from __future__ import annotations

import logging
from functools import lru_cache

from google.protobuf.message import DecodeError

from taskward.coordinator.record_checks import check_count, check_json, check_task_id, check_text, check_time
from taskward.cron import (
    MAX_ARGS_BYTES,
    MAX_GRACE_S,
    SCHEDULE_ID_RE,
    Concurrency,
    CronSchedule,
    CronState,
    HistoryEntry,
    Outcome,
    check_expression,
    zone,
)
from taskward.errors import InvalidArgument
from taskward.pb.taskward.v1 import cluster_pb2 as cpb

logger = logging.getLogger(__name__)

CRON = "cron/"
DOC = "cron/doc"
SCHEDULES = "cron/s/"
STATES = "cron/state/"
FIRED = "cron/fired/"


def schedule_key(generation: str, schedule_id: str) -> str:
    return f"{SCHEDULES}{generation}/{schedule_id}"


def fired_key(schedule_id: str, slot: int) -> str:
    return f"{FIRED}{schedule_id}/{slot}"


def encode_doc(generation: str) -> bytes:
    return cpb.CronDocRecord(generation=generation).SerializeToString()


def decode_doc(raw: bytes) -> str:
    try:
        return cpb.CronDocRecord.FromString(raw).generation
    except DecodeError:
        logger.error("skipping corrupt cron document pointer")
        return ""


def encode_schedule(s: CronSchedule) -> bytes:
    return cpb.CronScheduleRecord(
        id=s.id, module=s.module, task_type=s.task_type, schedule=s.schedule, args_json=s.args_json,
        enabled=s.enabled, timezone=s.timezone, cluster=s.cluster, concurrency=s.concurrency.value,
        misfire_grace_s=s.misfire_grace_s, since=s.since,
    ).SerializeToString()


def decode_schedule(raw: bytes) -> CronSchedule | None:
    """A schedule as written by ``CronService`` (which validated it); None, logged, for one that does not
    parse or whose fields are out of the ranges a user's schedule is held to (``check_fields``)."""
    try:
        p = cpb.CronScheduleRecord.FromString(raw)
        s = CronSchedule(id=p.id, module=p.module, task_type=p.task_type, schedule=p.schedule,
                         args_json=p.args_json or "{}", enabled=p.enabled, timezone=p.timezone or "UTC",
                         cluster=p.cluster, concurrency=Concurrency(p.concurrency or "forbid"),
                         misfire_grace_s=p.misfire_grace_s, since=p.since)
        if not SCHEDULE_ID_RE.fullmatch(s.id):
            raise ValueError(f"id {s.id[:80]!r} is not a schedule id")
        if not _expression_ok(s.schedule):
            raise ValueError(f"schedule {s.schedule[:80]!r} is not a cron expression")
        zone(s.timezone)
        if not 0 <= s.misfire_grace_s <= MAX_GRACE_S:  # False for NaN too
            raise ValueError(f"misfire_grace_s {s.misfire_grace_s!r} is out of range")
        check_time("since", s.since)
        check_text("module", s.module)
        check_text("task_type", s.task_type, required=True)
        check_json("args", s.args_json, MAX_ARGS_BYTES, object_only=True)
        return s
    except (DecodeError, ValueError, InvalidArgument) as exc:
        logger.error("skipping corrupt cron schedule record: %s", getattr(exc, "message", exc))
        return None


@lru_cache(maxsize=4096)
def _expression_ok(expr: str) -> bool:
    """``expr`` is an expression as ``check_expression`` stores it (cached: parsing one costs ~0.5 ms, and
    a re-listing reads every schedule)."""
    try:
        return check_expression(expr) == expr
    except InvalidArgument:
        return False


def encode_state(st: CronState) -> bytes:
    return cpb.CronStateRecord(
        last_slot=st.last_slot, last_task_id=st.last_task_id, last_node=st.last_node, last_cluster=st.last_cluster,
        start_pending=st.start_pending, pending_args_json=st.pending_args_json,
        history=[cpb.CronHistoryRecord(slot=h.slot, outcome=h.outcome.value, reason=h.reason, task_id=h.task_id,
                                       node=h.node, at=h.at, count=h.count) for h in st.history],
    ).SerializeToString()


def decode_state(raw: bytes) -> CronState | None:
    """The leader's record of a schedule; None, logged, for one that does not parse or holds a time,
    count or argument document out of range."""
    try:
        p = cpb.CronStateRecord.FromString(raw)
        st = CronState(
            last_slot=p.last_slot, last_task_id=p.last_task_id, last_node=p.last_node, last_cluster=p.last_cluster,
            start_pending=p.start_pending, pending_args_json=p.pending_args_json,
            history=tuple(HistoryEntry(slot=h.slot, outcome=Outcome(h.outcome), reason=h.reason, task_id=h.task_id,
                                       node=h.node, at=h.at, count=h.count or 1) for h in p.history),
        )
        check_time("last_slot", st.last_slot)
        check_task_id("last_task_id", st.last_task_id, optional=True)
        if st.pending_args_json:
            check_json("pending args", st.pending_args_json, MAX_ARGS_BYTES, object_only=True)
        for h in st.history:
            check_time("history slot", h.slot)
            check_time("history time", h.at)
            check_count("history count", h.count, low=1)
            check_task_id("history task id", h.task_id, optional=True)
        return st
    except (DecodeError, ValueError) as exc:
        logger.error("skipping corrupt cron state record: %s", exc)
        return None
