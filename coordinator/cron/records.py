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

from google.protobuf.message import DecodeError

from taskward.cron import Concurrency, CronSchedule, CronState, HistoryEntry, Outcome
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
    try:
        p = cpb.CronScheduleRecord.FromString(raw)
        return CronSchedule(id=p.id, module=p.module, task_type=p.task_type, schedule=p.schedule,
                            args_json=p.args_json or "{}", enabled=p.enabled, timezone=p.timezone or "UTC",
                            cluster=p.cluster, concurrency=Concurrency(p.concurrency or "forbid"),
                            misfire_grace_s=p.misfire_grace_s, since=p.since)
    except (DecodeError, ValueError):
        logger.error("skipping corrupt cron schedule record")
        return None


def encode_state(st: CronState) -> bytes:
    return cpb.CronStateRecord(
        last_slot=st.last_slot, last_task_id=st.last_task_id, last_node=st.last_node, last_cluster=st.last_cluster,
        start_pending=st.start_pending, pending_args_json=st.pending_args_json,
        history=[cpb.CronHistoryRecord(slot=h.slot, outcome=h.outcome.value, reason=h.reason, task_id=h.task_id,
                                       node=h.node, at=h.at, count=h.count) for h in st.history],
    ).SerializeToString()


def decode_state(raw: bytes) -> CronState | None:
    try:
        p = cpb.CronStateRecord.FromString(raw)
        return CronState(
            last_slot=p.last_slot, last_task_id=p.last_task_id, last_node=p.last_node, last_cluster=p.last_cluster,
            start_pending=p.start_pending, pending_args_json=p.pending_args_json,
            history=tuple(HistoryEntry(slot=h.slot, outcome=Outcome(h.outcome), reason=h.reason, task_id=h.task_id,
                                       node=h.node, at=h.at, count=h.count or 1) for h in p.history),
        )
    except (DecodeError, ValueError):
        logger.error("skipping corrupt cron state record")
        return None
