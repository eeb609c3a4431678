"""The leader follows its children through the nodes' event streams instead of polling them each cycle:
counted at the nodes, through real gRPC proxies each node advertises to its peers."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from taskward.pb.taskward.v1 import tasks_pb2 as pb
from tests.support.cluster import (
    Cluster,
    recursive,
    start_cluster_task,
    status,
    unique_cluster_name,
    wait_finished,
    wait_task,
)
from tests.support.etcd import EtcdCluster
from tests.support.grpc_proxy import CountingProxy
from tests.support.procs import TIMEOUT_MULT, poll

pytestmark = pytest.mark.needs_etcd

LOOP_INTERVAL = 0.5  # the nodes' loop interval with the tests' lease TTL of 3 s


@pytest.fixture
def proxied(etcd: EtcdCluster, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[
        tuple[Cluster, dict[str, CountingProxy]]]:
    """Three nodes, each reached by its peers only through a counting proxy of its own."""
    c = Cluster(tmp_path, etcd.endpoints, name=unique_cluster_name(request.node.name))
    proxies = {n.node_id: CountingProxy(n.address).start() for n in c.nodes}
    for n in c.nodes:
        n.extra += ["--advertise", proxies[n.node_id].address]
    try:
        c.start()
        yield c, proxies
    finally:
        c.stop()
        for p in proxies.values():
            p.stop()


def streams_open(proxies: dict[str, CountingProxy]) -> None:
    """The leader keeps one stream open to every node, idle or not."""
    poll(lambda: all(p.live_streams() == 1 for p in proxies.values()) or None, 15, "the leader's streams to open")


def test_an_idle_leader_keeps_its_streams_open_and_they_carry_only_cluster_children(
        proxied: tuple[Cluster, dict[str, CountingProxy]]) -> None:
    """The streams ask for cluster children's events only: a node running its own tasks sends the leader
    nothing, so the leader can keep them open and a cluster start does not pay for opening them."""
    c, proxies = proxied
    streams_open(proxies)
    for n in c.nodes:
        tid = n.stub().StartTask(pb.StartTaskRequest(module="builtin", type="sleep",
                                                     args_json='{"duration": 0, "steps": 2}'), timeout=5).task_id
        assert wait_task(n, tid).stats.state == "done"
    tid = start_cluster_task(c.nodes[0], duration=0.2, steps=2)
    assert wait_task(c.nodes[0], tid).stats.state == "done"
    # The cluster children's events came through the same streams; the node tasks' (published before
    # them, in order) did not: each node sent its child's started, progress and completed events only.
    poll(lambda: all(p.events() >= 5 for p in proxies.values()) or None, 10, "children's events")
    assert {n: p.events() for n, p in proxies.items()} == dict.fromkeys(proxies, 5), \
        "the child's started, progress 0, 1 and 2 of 2, completed; nothing of the node tasks"
    # never reopened, and several events per message (a node that serves them)
    assert {n: (p.count("WatchEventBatches"), p.count("WatchEvents")) for n, p in proxies.items()} == dict.fromkeys(
        proxies, (1, 0))
    # The leader's role did not change: starts do not log "leading: N unfinished" / "leading: idle" lines.
    assert "unfinished cluster task" not in c.leader().log()


def test_running_children_are_followed_not_polled(proxied: tuple[Cluster, dict[str, CountingProxy]]) -> None:
    c, proxies = proxied
    duration = 4.0
    leader = c.leader()
    streams_open(proxies)
    before = {n: p.count("GetTaskStatus") for n, p in proxies.items()}
    t0 = time.monotonic()
    tid = start_cluster_task(c.nodes[0], duration=duration, steps=8)
    final = wait_task(c.nodes[0], tid, timeout=20)
    took = time.monotonic() - t0
    assert (final.stats.state, final.progress_completed, final.progress_total) == ("done", 24.0, 24.0), final
    assert all(p.count("WatchEventBatches") >= 1 for p in proxies.values())  # followed while the task ran
    polls = {n: p.count("GetTaskStatus") - before[n] for n, p in proxies.items()}
    # A polling leader asks each node about its child every cycle: ~duration/LOOP_INTERVAL = 8 times.
    # Following the streams it need not ask at all: a child its own start created after the stream was
    # open has nothing before it, and its completion carries its result. One poll is allowed: the 5 s
    # reconcile of a slow run, or a stream whose confirmation reached the leader after the start went out.
    assert all(k <= 1 for k in polls.values()), (polls, leader.node_id)
    # The completion events wake the leader: the record is done soon after the last child, not a tick later.
    assert took < duration + 1.5 * TIMEOUT_MULT, took
    kids = recursive(c.nodes[1], tid)[1:]
    assert [(s.stats.state, s.progress_completed, s.progress_total) for s in kids] == [("done", 8.0, 8.0)] * 3


def test_progress_is_followed_while_running(proxied: tuple[Cluster, dict[str, CountingProxy]]) -> None:
    c, proxies = proxied
    tid = start_cluster_task(c.nodes[1], duration=4.0, steps=8)
    def advanced() -> pb.TaskStatus | None:
        st = status(c.nodes[2], tid)
        return st if st.progress_completed >= 15 else None

    seen = poll(advanced, 10, "progress to advance")
    polls = sum(p.count("GetTaskStatus") for p in proxies.values())
    assert seen.stats.state == "running"
    assert polls <= 6, polls  # the progress came from the events
    assert wait_task(c.nodes[0], tid).stats.state == "done"


def test_children_with_subtrees_end_with_the_nodes_own_progress(
        proxied: tuple[Cluster, dict[str, CountingProxy]]) -> None:
    """A child whose progress is rolled up from its descendants (which its own events do not carry)
    ends with the progress its node reports, as when every child was polled."""
    c, _ = proxied
    tid = start_cluster_task(c.nodes[0], module="sample", type_="tree",
                             args={"fanout": 2, "depth": 2, "duration": 0.3})
    final = wait_finished(c.nodes, tid, timeout=30)
    assert final.stats.state == "done", final
    kids = [s for s in recursive(c.nodes[0], tid)[1:] if s.parent_id == tid]
    assert len(kids) == 3
    assert final.progress_total == sum(k.progress_total for k in kids) > 0
    assert final.progress_completed == sum(k.progress_completed for k in kids)
