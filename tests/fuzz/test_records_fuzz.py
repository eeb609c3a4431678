"""Fuzzing replicated-record decoding: what another process wrote under the cluster prefix is input too.

Records are valid ones with fields replaced by generated values, valid encodings with bytes changed,
lost or added, and plain noise, under keys of every prefix (including keys that were not UTF-8, which
arrive with lone surrogates). Each decoder answers a record or its clean "bad record" outcome and
nothing else; a record it accepts can be used by every reader (rendered on every surface, re-encoded,
driven by the leader, scheduled by cron); and the node's replica applies any sequence of puts and
deletes without dying, holding each key either as a usable record or as skipped.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest
from google.protobuf.message import Message
from hypothesis import example, given, settings
from hypothesis import strategies as st

from taskward import convert
from taskward.coordinator.cache import ClusterCache
from taskward.coordinator.cron.records import (
    decode_doc,
    decode_schedule,
    decode_state,
    encode_schedule,
    encode_state,
)
from taskward.coordinator.leader import expired, roll_up
from taskward.coordinator.record_checks import BadRecord
from taskward.coordinator.records import (
    ClusterTask,
    decode_leader,
    encode_task,
    parse_member,
    parse_task,
)
from taskward.coordinator.store.embedded import EmbeddedStore
from taskward.cron import CronSchedule, CronState
from taskward.model import Progress, TaskView, linear_eta_ms
from taskward.pb.taskward.v1 import cluster_pb2 as cpb
from tests.fuzz.cases import CaseCount
from tests.fuzz.messages import FieldPath, edited, leaf_paths
from tests.fuzz.values import FLOATS, ODD_TEXT, field_value, json_text, task_ids

pytestmark = pytest.mark.timeout(600)

NOW = 1.8e9
TASK_ID, CHILD_ID = str(uuid.UUID(int=1)), str(uuid.UUID(int=2))
MEMBER = cpb.MemberRecord(id="n1", address="127.0.0.1:7100", version="0.1.0", started_at=NOW, instance="i1")
TASK = cpb.ClusterTaskRecord(
    id=TASK_ID, module="builtin", type="sleep", args_json='{"duration": 1}', state="running", created_at=NOW,
    start_time=NOW, target_nodes=["n1", "n2"], children=[
        cpb.ClusterChild(node="n1", task_id=CHILD_ID, state="done", progress_completed=2, progress_total=2,
                         attempt=1, start_time=NOW, end_time=NOW + 1, result_json='{"ok": true}'),
        cpb.ClusterChild(node="n2", state="created")],
    idempotency_key="k", keyspace="ks", table="t", entity="e", is_abortable=True, progress_units="steps")
SCHEDULE = cpb.CronScheduleRecord(id="s1", module="builtin", task_type="sleep", schedule="0 0 29 2 *",
                                  args_json='{"duration": 0}', enabled=True, timezone="Europe/Paris",
                                  concurrency="allow", misfire_grace_s=60, since=NOW)
STATE = cpb.CronStateRecord(last_slot=int(NOW), last_task_id=TASK_ID, last_node="n1", history=[
    cpb.CronHistoryRecord(slot=int(NOW), outcome="fired", task_id=TASK_ID, node="n1", at=NOW, count=1)])

HINTS: dict[str, st.SearchStrategy[Any]] = {
    "id": st.one_of(task_ids([TASK_ID]), st.sampled_from(["n1", "s1"])),
    "task_id": task_ids([CHILD_ID]), "last_task_id": task_ids([TASK_ID]),
    "state": st.sampled_from(["created", "running", "done", "failed", "", "Done", "aborted"]),
    "outcome": st.sampled_from(["fired", "skipped", "missed", "failed", ""]),
    "node": st.sampled_from(["n1", "n2", "", "-x", "x" * 64]),
    "target_nodes": st.lists(st.sampled_from(["n1", "n2", "", "n1 "]), max_size=3),
    "address": st.sampled_from(["127.0.0.1:7100", "[::1]:1", "host:0", "host:65536", "h:\u0661", ":1", "a b:1", "x"]),
    "args_json": json_text([{"duration": 1}]), "result_json": json_text([{"ok": True}]),
    "pending_args_json": json_text([{"duration": 0}]),
    "schedule": st.sampled_from(["0 0 29 2 *", "* * * * *", "@hourly", "61 * * * *", "0 0 30 2 *", ""]),
    "timezone": st.sampled_from(["UTC", "Europe", "Mars/Olympus", "", "é" * 513]),
    "concurrency": st.sampled_from(["forbid", "allow", "replace", "", "queue"]),
    "generation": ODD_TEXT,
}
TIMES = st.one_of(st.sampled_from([0.0, NOW, 253402300799.0, 253402300800.0, 1e300, -1.0]), FLOATS)


def field_strategy(path: FieldPath) -> st.SearchStrategy[Any]:
    leaf = path[-1]
    named = HINTS.get(leaf.name)
    if named is not None and leaf.is_repeated:
        return named
    one = field_value(leaf)
    if leaf.type == leaf.TYPE_DOUBLE:
        one = st.one_of(TIMES, one)
    if named is not None:
        one = st.one_of(named, one)
    return st.lists(one, max_size=3) if leaf.is_repeated else one


def mutate(data: bytes, at: int, edit: int, extra: bytes) -> bytes:
    at %= len(data) + 1
    if edit == 0:
        return data[:at] + extra[:1] + data[at + 1:]
    if edit == 1:
        return data[:at] + data[at + 1:]
    return data[:at] + extra + data[at:]


def values(template: Message) -> st.SearchStrategy[bytes]:
    """Encodings of ``template`` with up to three fields replaced, some with bytes changed; and noise."""
    edits = st.lists(st.one_of([st.tuples(st.just(p), field_strategy(p)) for p in leaf_paths(template.DESCRIPTOR)]),
                     max_size=3)
    good = edits.map(lambda e: edited(template, e).SerializeToString())
    broken = st.tuples(good, st.integers(0, 10_000), st.integers(0, 2), st.binary(min_size=1, max_size=6)).map(
        lambda t: mutate(*t))
    return st.one_of(good, good, broken, st.binary(max_size=64))


# ---------------------------------------------------------------------------------- decoders


def usable_task(t: ClusterTask) -> None:
    """What every reader does with a cluster task record; none of it may raise."""
    rec = t.as_task_record()
    now = datetime.fromtimestamp(NOW, UTC)
    view = TaskView(rec, Progress(rec.progress_completed, rec.progress_total, linear_eta_ms(rec, now)))
    status = convert.status_to_pb(view, {"n1": "127.0.0.1:7100"})
    orjson.dumps(convert.status_pb_to_dict(status))
    orjson.dumps(convert.stats_pb_to_dict(convert.stats_to_pb(rec)))
    assert parse_task(encode_task(t), task_id=t.id) == t  # what is accepted re-encodes to itself
    roll_up(t, NOW)
    expired([t], NOW)


def usable_schedule(s: CronSchedule) -> None:
    for after in (0.0, NOW, 253402300799.0):
        s.next_slot(after)
    assert decode_schedule(encode_schedule(s)) == s


def usable_state(st_: CronState) -> None:
    assert decode_state(encode_state(st_)) == st_


def test_record_decoders() -> None:
    count = CaseCount("records")

    @settings(max_examples=2_600)
    @given(tasks=st.lists(values(TASK), max_size=3), members=st.lists(values(MEMBER), max_size=2),
           schedules=st.lists(values(SCHEDULE), max_size=2), states=st.lists(values(STATE), max_size=2),
           key_id=st.sampled_from([TASK_ID, CHILD_ID, "n1", "", "\udcff"]))
    @example(tasks=[edited(TASK, [((cpb.ClusterTaskRecord.DESCRIPTOR.fields_by_name["created_at"],), 1e300)])
                    .SerializeToString()], members=[], schedules=[
        edited(SCHEDULE, [((cpb.CronScheduleRecord.DESCRIPTOR.fields_by_name["timezone"],), "Europe")])
        .SerializeToString()], states=[], key_id=TASK_ID)
    # A schedule that may not fire before year 9999 (a valid time) made every reader's next_slot overflow.
    @example(tasks=[], members=[], states=[], key_id="s1", schedules=[
        edited(SCHEDULE, [((cpb.CronScheduleRecord.DESCRIPTOR.fields_by_name["since"],), 253402300799.0)])
        .SerializeToString()])
    def decode_any(tasks: list[bytes], members: list[bytes], schedules: list[bytes], states: list[bytes],
                   key_id: str) -> None:
        count.add(len(tasks) + len(members) + len(schedules) + len(states))
        for raw in tasks:
            try:
                t = parse_task(raw, task_id=key_id)
            except BadRecord as exc:
                assert str(exc), raw
            else:
                usable_task(t)
        for raw in members:
            try:
                m = parse_member(raw, node_id=key_id, lease=7)
            except BadRecord as exc:
                assert str(exc), raw
            else:
                assert m.id == key_id
        for raw in schedules:
            s = decode_schedule(raw)
            if s is not None:
                usable_schedule(s)
        for raw in states:
            state = decode_state(raw)
            if state is not None:
                usable_state(state)
        for raw in (*tasks, *members):
            decode_doc(raw)
            decode_leader(raw)

    decode_any()
    count.check()


# ---------------------------------------------------------------------------------- the replica

KEYS = st.tuples(
    st.sampled_from(["tasks/", "members/", "leader", "cron/doc", "cron/s/g1/", "cron/state/", "cron/fired/s1/",
                     "other/", ""]),
    st.one_of(st.sampled_from([TASK_ID, CHILD_ID, "n1", "s1", "", "\udcff\udcfe", "a/b"]), ODD_TEXT),
).map(lambda t: t[0] if t[0] in ("leader", "cron/doc") else t[0] + t[1])
PUT = st.one_of(values(TASK), values(MEMBER), values(SCHEDULE), values(STATE),
                st.sampled_from([cpb.CronDocRecord(generation="g1").SerializeToString(),
                                 cpb.LeaderRecord(node_id="n1").SerializeToString()]))
OPS = st.lists(st.tuples(KEYS, st.one_of(PUT, st.none()), st.sampled_from([0, 7])), min_size=1, max_size=8)


def held(cache: ClusterCache, key: str) -> bool:
    """Whether the replica holds ``key``'s record (for the prefixes it reads)."""
    snap = cache.snapshot
    if key.startswith("tasks/"):
        return key[6:] in snap.tasks
    if key.startswith("members/"):
        return key[8:] in snap.members
    if key == "leader":
        return snap.leader is not None
    if key.startswith("cron/state/"):
        return key[11:] in snap.cron_states
    return True  # the document pointer, other generations' schedules and unknown prefixes: not shown as such


def test_replica_applies_any_key_and_value(tmp_path: Path) -> None:
    count = CaseCount("replica")
    cache = ClusterCache(EmbeddedStore(tmp_path / "cluster.sqlite3"))  # never started: records are applied here

    @settings(max_examples=2_500)
    @given(ops=OPS)
    @example(ops=[("tasks/\udcff", encode_task(ClusterTask(id=TASK_ID, module="m", type="t")), 0)])
    def apply_any(ops: list[tuple[str, bytes | None, int]]) -> None:
        for key, value, lease in ops:
            count.add()
            cache._apply(key, value, lease)  # what the watch loop does with each event; it must not raise
            cache._publish()
            snap = cache.snapshot
            if value is None:
                assert key not in snap.skipped and not (key.startswith(("tasks/", "members/", "cron/state/"))
                                                        and held(cache, key))
            elif key not in snap.skipped:
                assert held(cache, key), (key, value)
            for t in snap.tasks.values():
                usable_task(t)
            for s in snap.schedules.values():
                usable_schedule(s)

    apply_any()
    count.check()
