"""Cron on a 3-node cluster over a real etcd, with the leader SIGKILLed again and again: every slot fires
exactly once (no duplicate, no gap within the grace), for node-task and cluster-task schedules."""

from __future__ import annotations

import json
import random
import time
from pathlib import Path

import grpc
import pytest

from taskward.pb.taskward.v1 import cron_pb2 as cpb
from taskward.pb.taskward.v1 import cron_pb2_grpc as cron_grpc
from taskward.pb.taskward.v1 import tasks_pb2 as pb
from tests.support.cluster import Cluster, unique_cluster_name
from tests.support.etcd import EtcdCluster
from tests.support.procs import NodeProc, poll

pytestmark = [pytest.mark.needs_etcd, pytest.mark.timeout(240)]

SPEED = 20.0  # a cron minute every three real seconds
KILLS = 3


def schedule(c: Cluster, sid: str) -> cpb.ScheduleStatus:
    for n in c.alive:
        try:
            return cron_grpc.CronStub(n.channel()).GetSchedule(cpb.ScheduleIdRequest(id=sid), timeout=5)
        except grpc.RpcError:
            continue
    raise AssertionError("no node answered")


def fired(st: cpb.ScheduleStatus) -> list[cpb.CronHistoryEntry]:
    return [h for h in reversed(st.history) if h.outcome == "fired"]  # oldest first


def tasks_with_entity(nodes: list[NodeProc], entity: str, kind: str) -> dict[str, str]:
    """task id -> node id of every task labelled ``entity`` (cluster tasks: as n1 lists them)."""
    out: dict[str, str] = {}
    for n in nodes:
        for t in n.stub().ListTasks(pb.ListTasksRequest(module="builtin"), timeout=5).tasks:
            if t.entity == entity and t.kind == kind:
                out.setdefault(t.task_id, n.node_id)
    return out


def test_each_slot_fires_once_while_the_leader_is_killed(etcd: EtcdCluster, tmp_path: Path) -> None:
    rng = random.Random(20261202)
    epoch = time.time()
    c = Cluster(tmp_path, etcd.endpoints, name=unique_cluster_name("cron"),
                extra=["--cron-test-clock", f"{epoch}:{SPEED}"])
    try:
        c.start()
        args = json.dumps({"duration": 0.05, "steps": 1})
        doc = [cpb.CronSchedule(id=sid, task_type="sleep", schedule="* * * * *", args_json=args, cluster=cluster,
                                concurrency="allow", misfire_grace_s=600) for sid, cluster in (("node-tick", False),
                                                                                              ("cluster-tick", True))]
        cron_grpc.CronStub(c.nodes[0].channel()).PutSchedules(cpb.PutSchedulesRequest(schedules=doc), timeout=10)
        poll(lambda: len(fired(schedule(c, "node-tick"))) >= 2, 20, "two firings before the first kill")
        kills = []
        for _ in range(KILLS):
            time.sleep(rng.uniform(0.2, 3.0))  # anywhere in the slot cycle
            leader = c.leader()
            kills.append(leader.node_id)
            leader.kill()
            time.sleep(rng.uniform(0.2, 1.5))
            leader.start()
            c.wait_formed(20)
            seen = len(fired(schedule(c, "node-tick")))
            poll(lambda seen=seen: len(fired(schedule(c, "node-tick"))) > seen, 20, "a firing after the kill")
        for sid in ("node-tick", "cluster-tick"):
            cron_grpc.CronStub(c.nodes[0].channel()).SetScheduleEnabled(
                cpb.SetScheduleEnabledRequest(id=sid, enabled=False), timeout=10)
        for sid, kind in (("node-tick", "node"), ("cluster-tick", "cluster")):
            st = schedule(c, sid)
            log = fired(st)
            explain = f"{sid} after kills of {kills}: " + ", ".join(
                f"{h.slot}:{h.outcome}:{h.task_id[:8]}@{h.node}" for h in reversed(st.history))
            assert len(st.history) < 20, explain  # the whole run fits in the kept history
            assert [h.outcome for h in st.history if h.outcome != "fired"] == [], explain  # nothing missed
            slots = [h.slot for h in log]
            assert slots == list(range(slots[0], slots[0] + 60 * len(slots), 60)), explain  # no gap, no duplicate
            nodes = c.nodes if kind == "node" else c.nodes[:1]
            want = len(log)
            ran = poll(lambda sid=sid, kind=kind, nodes=nodes, want=want: (
                got if len(got := tasks_with_entity(nodes, sid, kind)) >= want else None), 20, f"tasks of {sid}")
            assert set(ran) == {h.task_id for h in log}, (explain, ran)  # each slot ran once, nothing else ran
            if kind == "node":
                assert all(ran[h.task_id] == h.node for h in log), (explain, ran)
    finally:
        c.stop()
