"""convert is the protobuf boundary both ways: what another node answers reads back into domain values
that encode to the very same message."""

from __future__ import annotations

from google.protobuf.timestamp_pb2 import Timestamp

from taskward import convert
from taskward.cluster_view import UnreachableChild
from taskward.events import EventType
from taskward.pb.taskward.v1 import tasks_pb2 as pb


def full_status() -> pb.TaskStatus:
    stats = pb.TaskStats(task_id="0b7c2f4e-6a43-4c3c-9b7a-1d6b0f1e2a3b", type="sleep", kind="node", scope="node",
                         state="running", sequence_number=7, keyspace="ks", table="t", entity="e", shard=2,
                         start_time=Timestamp(seconds=1_700_000_000), end_time=Timestamp(seconds=0))
    msg = pb.TaskStatus(stats=stats, is_abortable=True, error="", aborted=False,
                        parent_id="5d1c3f4e-6a43-4c3c-9b7a-1d6b0f1e2a3b", progress_units="rows", progress_total=10,
                        progress_completed=4, progress_fraction=0.4, module="builtin", progress_message="batch 4",
                        children_ids=[pb.ChildRef(task_id="9e1c3f4e-6a43-4c3c-9b7a-1d6b0f1e2a3b", node="n2",
                                                  address="127.0.0.1:7101")],
                        args_json='{"duration":1.5}', created_at=Timestamp(seconds=1_699_999_999, nanos=123_000_000),
                        result_json='{"rows":4}', attempt=2, max_attempts=3,
                        next_attempt_at=Timestamp(seconds=1_700_000_005, nanos=250_000_000))
    msg.eta_ms = 1500
    return msg


def test_status_round_trip() -> None:
    msg = full_status()
    view = convert.status_from_pb(msg)
    assert (view.record.parent_id, view.progress.eta_ms, view.record.start_time is not None) == (
        msg.parent_id, 1500, True)
    assert convert.status_to_pb(view, {"n2": "127.0.0.1:7101"}) == msg
    root = pb.TaskStatus()
    root.CopyFrom(msg)
    root.parent_id = "none"
    root.ClearField("eta_ms")
    back = convert.status_to_pb(convert.status_from_pb(root), {"n2": "127.0.0.1:7101"})
    assert back == root and convert.status_from_pb(root).record.parent_id is None


def test_unreachable_child() -> None:
    c = UnreachableChild(task_id="9e1c3f4e-6a43-4c3c-9b7a-1d6b0f1e2a3b", parent_id="p", module="builtin",
                         type="sleep", state="unknown", error="node n2 is down", progress_total=3.0)
    msg = convert.unreachable_child_to_pb(c)
    assert (msg.stats.state, msg.stats.kind, msg.error, msg.parent_id, msg.progress_total) == (
        "unknown", "node", "node n2 is down", "p", 3.0)


def test_event_from_pb_skips_unknown_types() -> None:
    ev = convert.event_from_pb(pb.Event(sequence=3, type="task.completed", task_id="x", module="m", task_type="t",
                                        time=Timestamp(seconds=10, nanos=500_000_000), cluster_parent_id="c"))
    assert ev is not None and (ev.type, ev.time, ev.cluster_parent) == (EventType.COMPLETED, 10.5, "c")
    assert convert.event_to_pb(ev).type == "task.completed"
    assert convert.event_from_pb(pb.Event(type="task.from-the-future")) is None


def test_event_json_carries_what_its_type_uses() -> None:
    from taskward.events import Event

    retry = convert.event_to_pb(Event(sequence=9, type=EventType.RETRYING, task_id="t", module="m", task_type="x",
                                      time=1_700_000_000.5, error="boom", attempt=2, next_attempt_at=1_700_000_003.25,
                                      cluster_parent="c"))
    assert convert.event_pb_to_dict(retry) == {
        "sequence": 9, "type": "task.retrying", "task_id": "t", "module": "m", "task_type": "x",
        "time": "2023-11-14T22:13:20Z", "progress_completed": 0.0, "progress_total": 0.0, "message": "",
        "error": "boom", "cluster_parent_id": "c", "attempt": 2, "next_attempt_at": "2023-11-14T22:13:23.250Z"}
    done = convert.event_pb_to_dict(convert.event_to_pb(Event(sequence=1, type=EventType.COMPLETED, task_id="t",
                                                               module="m", task_type="x", time=1.0)))
    assert not {"attempt", "next_attempt_at", "cluster_parent_id", "schedule_id"} & set(done)
