"""Randomized faults, bounded (part of the normal suite, well under 3 minutes).

100 short cluster tasks are submitted across the nodes while nodes — the leader included — are
SIGKILLed and restarted from their data dirs at random (never more than one down at once). Seeded:
``TASKWARD_FAULT_SEED=N`` replays the same choices (thread timing still varies). The soak,
``pytest -m slow tests/test_cluster_faults.py``, runs it with 20 other seeds in a row.

Invariants checked at the end:
- liveness: once the faults stop and the cluster is whole, every task finishes within its own duration +
  the lease TTL + 5 s (a child re-queued by a restart runs again from the start; a new leader takes over
  within the TTL); a task that does not is named with its children, their states on their nodes and
  the leader's view;
- every submitted id is known to every node, and the task is ``done`` or ``failed`` with a reason;
- every node reports identical records;
- nothing ran twice: every ``task.started`` of a builtin task on a node belongs to the one child the
  replicated record holds for that node (no second copy under another id), every child is on attempt 0
  (no child was given up as lost and started anew), and a child started at most once per life of its node
  that it lived through (a retryable child is re-queued by a restart, under the same id).
"""

from __future__ import annotations

import itertools
import json
import os
import random
import threading
import time
from collections import Counter
from pathlib import Path

import grpc
import pytest

from taskward.pb.taskward.v1 import tasks_pb2 as pb
from tests.support.cluster import (
    LEASE_TTL,
    Cluster,
    cluster_records,
    finished_by,
    started_times,
    status,
    unique_cluster_name,
)
from tests.support.etcd import EtcdCluster
from tests.support.procs import TIMEOUT_MULT, deadline_after, poll

SEED = int(os.environ.get("TASKWARD_FAULT_SEED", "20261125"))
SOAK_SEEDS = [20261300 + i for i in range(20)]
TASKS = 100
MAX_KILLS = 12
GRACE_S = 60.0  # far longer than a restart: children are re-attached, never failed as unavailable

pytestmark = [pytest.mark.needs_etcd, pytest.mark.timeout(240)]


def test_random_kills_lose_nothing_and_run_nothing_twice(etcd: EtcdCluster, tmp_path: Path) -> None:
    random_kills(etcd, tmp_path, SEED)


@pytest.mark.slow
@pytest.mark.parametrize("seed", SOAK_SEEDS)
def test_soak_random_kills(etcd: EtcdCluster, tmp_path: Path, seed: int) -> None:
    random_kills(etcd, tmp_path, seed)


def random_kills(etcd: EtcdCluster, tmp_path: Path, seed: int) -> None:
    rng = random.Random(seed)
    c = Cluster(tmp_path, etcd.endpoints, name=unique_cluster_name("faults"), dead_node_grace=GRACE_S)
    channels = {}
    try:
        c.start()
        channels = {n.node_id: grpc.insecure_channel(n.address) for n in c.nodes}
        plan = [(f"fault-{i}", round(rng.uniform(0.3, 1.5), 2), rng.randint(3, 6)) for i in range(TASKS)]
        entries = [rng.choice(c.nodes).node_id for _ in range(TASKS)]
        kills: Counter[str] = Counter()
        kill_times: dict[str, list[float]] = {n.node_id: [] for n in c.nodes}
        down: set[str] = set()
        leader_kills: list[str] = []
        lock = threading.Lock()
        stop_faults = threading.Event()
        fault_errors: list[BaseException] = []

        def faults() -> None:
            frng = random.Random(seed + 1)
            try:
                for _ in range(MAX_KILLS):
                    if stop_faults.wait(frng.uniform(1.0, 3.0)):
                        return
                    lead = c.leader_seen_by(c.nodes[0]) if c.nodes[0].proc.poll() is None else None  # type: ignore[union-attr]
                    victim = c.node(lead) if lead and frng.random() < 0.4 else frng.choice(c.nodes)
                    if victim.node_id == lead:
                        leader_kills.append(lead)
                    with lock:
                        down.add(victim.node_id)
                    kill_times[victim.node_id].append(time.time())
                    victim.kill()
                    kills[victim.node_id] += 1
                    time.sleep(frng.uniform(0.2, 2.0))
                    victim.start()
                    with lock:
                        down.discard(victim.node_id)
                    c.wait_formed(20)  # one node down at a time: the next kill waits for a whole cluster
            except BaseException as exc:
                fault_errors.append(exc)

        def submit(i: int) -> str:
            key, duration, steps = plan[i]
            req = pb.StartTaskRequest(module="builtin", type="sleep", cluster=True, idempotency_key=key,
                                      args_json=json.dumps({"duration": duration, "steps": steps}))
            end = deadline_after(30)
            order = [entries[i]] + [n.node_id for n in c.nodes if n.node_id != entries[i]]
            attempt = 0
            while True:
                node_id = order[attempt % len(order)]
                attempt += 1
                with lock:
                    skip = node_id in down
                if not skip:
                    try:
                        stub = pb_stub(channels[node_id])
                        return str(stub.StartTask(req, timeout=5).task_id)
                    except grpc.RpcError as exc:
                        if exc.code() not in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
                            raise
                if time.monotonic() > end:
                    raise TimeoutError(f"submission {key} not accepted within 30s")
                time.sleep(0.1)

        fault_thread = threading.Thread(target=faults, daemon=True)
        fault_thread.start()
        ids: list[str] = []
        for i in range(TASKS):
            ids.append(submit(i))
            time.sleep(rng.uniform(0.1, 0.5))
        stop_faults.set()
        fault_thread.join(60)
        assert not fault_thread.is_alive()
        if fault_errors:
            raise fault_errors[0]
        assert len(set(ids)) == TASKS, "an idempotency key returned another task's id"
        c.wait_formed(20)
        whole = time.monotonic()

        finals = {tid: finished_by(c, tid, whole + (plan[i][1] + LEASE_TTL + 5) * TIMEOUT_MULT)
                  for i, tid in enumerate(ids)}
        bad = {tid: (st.stats.state, st.error) for tid, st in finals.items()
               if st.stats.state not in ("done", "failed") or (st.stats.state == "failed" and not st.error)}
        assert bad == {}

        # Identical on every node (replicas catch up within moments).
        def identical() -> bool:
            return all(status(n, tid) == status(c.nodes[0], tid) for tid in ids for n in c.nodes[1:])

        poll(identical, 10, "identical records on every node", interval=0.5)
        for n in c.nodes:
            listed = {t.task_id for t in n.stub().ListTasks(pb.ListTasksRequest(module="builtin")).tasks}
            assert set(ids) <= listed

        # Nothing ran twice.
        records = cluster_records(c)
        assert set(ids) <= set(records)
        owner: dict[str, tuple[str, str]] = {}  # child id -> (cluster task id, node id)
        for tid in ids:
            rec = records[tid]
            # every live member when it was started: a node whose lease lapsed while it restarted is left out
            assert sorted(ch.node for ch in rec.children) == sorted(rec.target_nodes)
            assert set(rec.target_nodes) <= {"n1", "n2", "n3"} and len(rec.target_nodes) >= 2
            for ch in rec.children:
                assert ch.attempt == 0, (tid, ch)
                owner[ch.task_id] = (tid, ch.node)
        for n in c.nodes:
            started = started_times(n, idle=1.0)
            for child, times in started.items():
                assert child in owner, f"{n.node_id} started {child}, which no cluster record holds"
                assert owner[child][1] == n.node_id
                for a, b in itertools.pairwise(sorted(times)):  # started again only after its node died
                    assert any(a < k < b for k in kill_times[n.node_id]), (n.node_id, child, times)
            mine = [child for child, (_, node) in owner.items() if node == n.node_id]
            assert all(child in started for child in mine)
        states = Counter(st.stats.state for st in finals.values())
        print(f"seed {seed}: kills {dict(kills)} ({len(leader_kills)} of the leader), final states {dict(states)}")
        assert sum(kills.values()) >= 3 and leader_kills
    finally:
        for ch in channels.values():
            ch.close()
        c.stop()


def pb_stub(channel: grpc.Channel):  # type: ignore[no-untyped-def]
    from taskward.pb.taskward.v1 import tasks_pb2_grpc

    return tasks_pb2_grpc.TaskManagerStub(channel)
