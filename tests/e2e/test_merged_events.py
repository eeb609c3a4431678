"""The gateway's merged ``GET /events`` and the client library's ``cluster_events``: every event of every
listed node exactly once, in each node's order, across client disconnects (resumed with the SSE id),
a node killed with SIGKILL and restarted mid-stream, and a node that comes back with a new data dir.
Checked against each node's own stream, replayed from its store."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from taskward import Client
from taskward.convert import event_pb_to_dict
from taskward.pb.taskward.v1 import tasks_pb2 as pb
from tests.support.cluster import Cluster, start_cluster_task, wait_finished
from tests.support.procs import TIMEOUT_MULT, NodeProc
from tests.support.rest import GatewayProc, expect_error
from tests.support.sse import Frame, SseFollower

Event = dict[str, Any]


def start(node: NodeProc, duration: float, steps: int) -> str:
    req = pb.StartTaskRequest(module="builtin", type="sleep", args_json=json.dumps({"duration": duration,
                                                                                    "steps": steps}))
    return str(node.stub().StartTask(req, timeout=10).task_id)


def own_events(node: NodeProc, upto: int) -> list[Event]:
    """The node's own stream, replayed from its store, up to sequence ``upto`` (as JSON, like SSE data)."""
    out: list[Event] = []
    call = node.stub().WatchEvents(pb.WatchEventsRequest(after_sequence=0), timeout=30 * TIMEOUT_MULT)
    try:
        for ev in call:
            out.append(event_pb_to_dict(ev))
            if ev.sequence >= upto:
                break
    finally:
        call.cancel()
    return out


def merged_of(frames: list[Frame], node_id: str, upto: int) -> list[Event]:
    """What the merged stream gave of one node, up to ``upto``, without the ``node`` field."""
    return [{k: v for k, v in f.data.items() if k != "node"} for f in frames
            if f.data["node"] == node_id and f.data["sequence"] <= upto]


def completed(frames: list[Frame], task_ids: set[str]) -> bool:
    return task_ids <= {f.data["task_id"] for f in frames if f.event == "task.completed"}


@pytest.fixture
def gateway(cluster3: Cluster, tmp_path: Path) -> Iterator[GatewayProc]:
    g = GatewayProc(tmp_path, cluster3.nodes).start()
    try:
        yield g
    finally:
        assert g.stop() == 0, g.log()


@pytest.mark.needs_etcd
def test_every_event_of_every_node_once_across_resumes_and_a_node_killed(cluster3: Cluster,
                                                                         gateway: GatewayProc) -> None:
    n1, n2, n3 = cluster3.nodes
    follower = SseFollower(f"{gateway.url}/events", drop_every=25).start()
    try:
        wave1 = {start(n, 0.4, 4) for n in (n1, n3) for _ in range(3)}
        wave1 |= {start(n2, 0.4, 4) for _ in range(3)}
        long_on_n2 = {start(n2, 3.0, 6) for _ in range(2)}  # running when n2 dies: re-queued on its restart
        cluster_task = start_cluster_task(n1, duration=0.5, steps=2)
        follower.wait_for(lambda fs: completed(fs, wave1), 30, "the first wave's completions")
        follower.wait_for(lambda fs: any(f.data["task_id"] in long_on_n2 and f.event == "task.progress"
                                         for f in fs), 15, "n2's long tasks to make progress")

        n2.kill()
        connects_at_kill = follower.connects
        wave2 = {start(n, 0.2, 2) for n in (n1, n3) for _ in range(4)}
        follower.wait_for(lambda fs: completed(fs, wave2), 30, "the other nodes' events while n2 is down")
        assert follower.connects > connects_at_kill, "no resume happened while a node was down"

        n2.start()
        wave3 = {start(n, 0.2, 2) for n in (n1, n2, n3) for _ in range(2)}
        follower.wait_for(lambda fs: completed(fs, wave3 | long_on_n2), 40,
                          "the restarted node's re-queued tasks and the last wave")
        wait_finished(cluster3.nodes, cluster_task)
        markers = {n.node_id: start(n, 0, 1) for n in cluster3.nodes}
        follower.wait_for(lambda fs: completed(fs, set(markers.values())), 30, "every node's marker task")
    finally:
        follower.stop()

    frames = list(follower.frames)
    assert follower.resumes >= 5, f"only {follower.resumes} resumes: the test did not exercise them"
    assert {f.data["node"] for f in frames} == {"n1", "n2", "n3"}
    for node in cluster3.nodes:
        marker_seq = next(f.data["sequence"] for f in frames
                          if f.data["task_id"] == markers[node.node_id] and f.event == "task.completed")
        mine = merged_of(frames, node.node_id, marker_seq)
        truth = own_events(node, marker_seq)
        assert [e["sequence"] for e in mine] == [e["sequence"] for e in truth], f"{node.node_id}: gaps or repeats"
        assert mine == truth, f"{node.node_id}: the merged events differ from the node's own"
    assert all(f.event == f.data["type"] for f in frames)
    restarted = [f for f in frames if f.data["node"] == "n2" and f.data["task_id"] in long_on_n2]
    assert sum(f.event == "task.completed" for f in restarted) == 2  # re-queued after the crash, then done


@pytest.mark.needs_etcd
def test_resume_positions_are_checked_and_plain_sequences_and_live_work(cluster3: Cluster,
                                                                        gateway: GatewayProc) -> None:
    with httpx.Client(base_url=gateway.url, timeout=10 * TIMEOUT_MULT) as rest:
        for headers, params, message in [
            ({"last-event-id": "not a token!"}, {}, "malformed resume token 'not a token!': not base64url; "
                                                   "send back an id of this stream unchanged"),
            ({}, {"after": "bjE6YWI="}, "malformed resume token 'bjE6YWI=': not base64url; send back an id of "
                                        "this stream unchanged"),
            ({}, {"after": "bjE6YWI"}, "malformed resume token 'bjE6YWI': an entry is not node:epoch:sequence; "
                                       "send back an id of this stream unchanged"),
            ({}, {"after": "99999999999999999999999"}, "bad parameter after: 99999999999999999999999 is too large"),
            ({}, {"live": "maybe"}, None),
        ]:
            expect_error(rest.get("/events", headers=headers, params=params), 400, message)
    n1 = cluster3.nodes[0]
    first = start(n1, 0, 1)
    everything = SseFollower(f"{gateway.url}/events?after=0").start()
    try:
        everything.wait_for(lambda fs: completed(fs, {first}), 20, "the replay from sequence 0")
    finally:
        everything.stop()
    assert len({(f.data["node"], f.data["sequence"]) for f in everything.frames}) == len(everything.frames)
    live = SseFollower(f"{gateway.url}/events?live=true").start()
    try:
        assert live.subscribed.wait(20 * TIMEOUT_MULT), "the live stream never said it was subscribed"
        later = start(n1, 0, 1)
        live.wait_for(lambda fs: completed(fs, {later}), 20, "a live event")
    finally:
        live.stop()
    assert first not in {f.data["task_id"] for f in live.frames}, "live=true replayed an old event"


def test_the_client_library_resumes_by_position_and_replays_a_node_with_a_new_data_dir(tmp_path: Path) -> None:
    """Two single nodes (no etcd): ``Client.cluster_events`` merges them by node id; a position resumes
    exactly; a node that returns with a new database (same id, same address) is replayed from its start."""
    a = NodeProc(tmp_path / "a", node_id="a").start()
    b = NodeProc(tmp_path / "b", node_id="b").start()
    new_b: NodeProc | None = None
    try:
        with Client([a.address, b.address], timeout=10) as client:
            stream = client.cluster_events(after=0)
            before = {start(a, 0, 1), start(b, 0, 2)}
            seen: list[Event] = []
            with stream:
                for ev in stream:
                    seen.append(ev)
                    if completed([Frame("", e["type"], e) for e in seen], before):
                        break
                position = stream.position
            assert {e["node"] for e in seen} == {"a", "b"}

            b.stop()
            new_b = NodeProc(tmp_path / "b-new", node_id="b")
            new_b.port = b.port
            new_b.start()
            after = {start(a, 0, 1), start(new_b, 0, 1)}
            resumed: list[Event] = []
            with client.cluster_events(after=position) as again:
                for ev in again:
                    resumed.append(ev)
                    if completed([Frame("", e["type"], e) for e in resumed], after):
                        break
        keys = [(e["node"], e["sequence"], e["task_id"]) for e in seen + resumed]
        assert len(keys) == len(set(keys)), "an event came twice"
        from_new_b = [e for e in resumed if e["node"] == "b"]
        assert [e["sequence"] for e in from_new_b] == list(range(1, len(from_new_b) + 1)), \
            "the new database's events were not replayed from its first"
        assert next(e["sequence"] for e in resumed if e["node"] == "a") == \
            max(e["sequence"] for e in seen if e["node"] == "a") + 1, "node a did not continue where it stood"
    finally:
        for n in (a, b, new_b):
            if n is not None:
                n.stop()


@pytest.mark.needs_etcd
def test_the_gateway_stops_at_once_with_a_merged_stream_open(cluster3: Cluster, gateway: GatewayProc) -> None:
    follower = SseFollower(f"{gateway.url}/events?live=true", read_timeout_s=30).start()
    try:
        assert follower.subscribed.wait(20 * TIMEOUT_MULT), "the stream never said it was subscribed"
        t0 = time.monotonic()
        assert gateway.stop() == 0, gateway.log()
        assert time.monotonic() - t0 < 5 * TIMEOUT_MULT, "an open merged stream held the gateway's stop"
    finally:
        follower.stop()
