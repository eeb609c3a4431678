"""``WatchEvents`` with ``cluster_children_only``: what a cluster leader keeps open to every node. It
carries the events of cluster children's subtrees and nothing else, live and replayed, in order."""

from __future__ import annotations

import uuid

import grpc

from taskward.pb.taskward.v1 import tasks_pb2 as pb
from taskward.pb.taskward.v1 import tasks_pb2_grpc as pb_grpc
from tests.e2e.test_durability import start, wait_state
from tests.support.procs import TIMEOUT_MULT, NodeProc

FINISHED = ("task.completed", "task.failed", "task.aborted")


def child_of(stub: pb_grpc.TaskManagerStub, parent: str) -> str:
    return str(stub.StartTask(pb.StartTaskRequest(module="builtin", type="sleep", cluster_parent_id=parent,
                                                  args_json='{"duration": 0, "steps": 1}'), timeout=10).task_id)


def test_a_cluster_children_stream_carries_nothing_else(node: NodeProc) -> None:
    stub = node.stub()
    parent = str(uuid.uuid4())
    with grpc.insecure_channel(node.address) as ch:
        stream = pb_grpc.TaskManagerStub(ch).WatchEvents(
            pb.WatchEventsRequest(live_only=True, cluster_children_only=True), timeout=30 * TIMEOUT_MULT)
        assert ("taskward-events", "subscribed") in stream.initial_metadata()
        own = start(stub, "builtin", "sleep", duration=0, steps=2)
        wait_state(stub, own, "done")  # all of its events are published before the child's
        child = child_of(stub, parent)
        seen, last = [], pb.Event()
        for last in stream:
            seen.append((last.task_id, last.type, last.cluster_parent_id))
            if last.type in FINISHED:
                break
        stream.cancel()
    assert seen == [(child, t, parent) for t in ("task.started", "task.progress", "task.progress", "task.completed")]
    # The child's completion carries what it returned, as its status says it.
    assert last.HasField("result_json")
    assert last.result_json == stub.GetTaskStatus(pb.TaskIdRequest(task_id=child), timeout=5).result_json

    # Replayed from the store: the same filter, the same order (sequence numbers skip the node's own task).
    replayed = []
    for ev in stub.WatchEvents(pb.WatchEventsRequest(after_sequence=0, cluster_children_only=True),
                               timeout=30 * TIMEOUT_MULT):
        replayed.append(ev)
        if ev.type in FINISHED:
            break
    assert [(e.task_id, e.type) for e in replayed] == [(child, t) for _, t, _ in seen]
    assert [e.sequence for e in replayed] == sorted(e.sequence for e in replayed)
    assert replayed[-1].HasField("result_json")
    everything = []
    for ev in stub.WatchEvents(pb.WatchEventsRequest(after_sequence=0), timeout=30 * TIMEOUT_MULT):
        everything.append(ev.task_id)
        assert not ev.HasField("result_json")  # only a leader's stream carries results
        if ev.task_id == child and ev.type in FINISHED:
            break
    assert own in everything and everything.count(child) == 4  # the unfiltered stream has both
