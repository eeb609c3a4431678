"""A cluster of real ``taskward node`` processes on one etcd, and helpers the cluster tests share.

Every wait is bounded by a deadline (scaled by ``TASKWARD_TEST_TIMEOUT_MULT``); nothing polls forever.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import signal
import subprocess
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

import grpc

from taskward.pb.taskward.v1 import cluster_pb2 as cpb
from taskward.pb.taskward.v1 import tasks_pb2 as pb
from tests.support.etcd import range_prefix
from tests.support.procs import TIMEOUT_MULT, NodeProc, poll

LEASE_TTL = 3
CLUSTER_TASKS = ["--tasks", "tests.support.sample_tasks"]


def unique_cluster_name(hint: str = "") -> str:
    clean = "".join(ch if ch.isalnum() else "-" for ch in hint)[-30:].strip("-")
    return f"{clean or 't'}-{uuid.uuid4().hex[:8]}"


def in_parallel(fns: Sequence[Callable[[], object]]) -> list[object]:
    """Run ``fns`` in threads and return their results in order; re-raise the first failure."""
    results: list[object] = [None] * len(fns)
    errors: list[BaseException] = []

    def run(i: int) -> None:
        try:
            results[i] = fns[i]()
        except BaseException as exc:  # handed back to the caller
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i,), daemon=True) for i in range(len(fns))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120 * TIMEOUT_MULT)
    if errors:
        raise errors[0]
    return results


class Cluster:
    """``size`` nodes n1..nN joined to one cluster name in one etcd (or one embedded node)."""

    def __init__(self, root: Path, etcd_endpoints: str | None, *, size: int = 3, name: str = "",
                 dead_node_grace: float = 10.0, lease_ttl: int = LEASE_TTL, extra: Sequence[str] = (),
                 credentials: grpc.ChannelCredentials | None = None) -> None:
        self.etcd_endpoints = etcd_endpoints
        self.name = name or unique_cluster_name()
        self.lease_ttl = lease_ttl
        args = [*CLUSTER_TASKS, *extra]
        if etcd_endpoints is not None:
            args += ["--etcd", etcd_endpoints, "--cluster", self.name, "--lease-ttl", str(lease_ttl),
                     "--dead-node-grace", str(dead_node_grace)]
        self.nodes = [NodeProc(root / f"n{i}", node_id=f"n{i}", extra=args, credentials=credentials)
                      for i in range(1, size + 1)]

    # ------------------------------------------------------------------ processes

    def start(self, timeout: float = 30.0, *, node_timeout: float = 15.0) -> Cluster:
        """Start every node at once; ``node_timeout`` bounds each node's start-up, which grows with the
        node count when many start together on a small machine (the scale bench starts 20)."""
        in_parallel([functools.partial(n.start, node_timeout) for n in self.nodes])
        self.wait_formed(timeout)
        return self

    def stop(self) -> dict[str, int | None]:
        """SIGTERM every live node at once, then wait; returns each node's exit code."""
        for n in self.nodes:
            n._close_channel()
            if n.proc is not None and n.proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    n.proc.send_signal(signal.SIGCONT)  # a paused node must be able to exit
                n.proc.send_signal(signal.SIGTERM)
        codes: dict[str, int | None] = {}
        for n in self.nodes:
            if n.proc is None:
                codes[n.node_id] = None
                continue
            try:
                n.proc.wait(15 * TIMEOUT_MULT)
            except subprocess.TimeoutExpired:
                n.proc.kill()
                n.proc.wait(10)
            codes[n.node_id] = n.proc.returncode
        return codes

    def node(self, node_id: str) -> NodeProc:
        return next(n for n in self.nodes if n.node_id == node_id)

    @property
    def alive(self) -> list[NodeProc]:
        return [n for n in self.nodes if n.proc is not None and n.proc.poll() is None]

    # ------------------------------------------------------------------ membership

    def members_seen_by(self, n: NodeProc, timeout: float = 2.0) -> pb.ListNodesResponse:
        return n.stub().ListNodes(pb.ListNodesRequest(), timeout=timeout)

    def leader_seen_by(self, n: NodeProc) -> str | None:
        leaders = [m.id for m in self.members_seen_by(n).nodes if m.leader]
        return leaders[0] if len(leaders) == 1 else None

    def wait_formed(self, timeout: float = 30.0, nodes: Iterable[NodeProc] | None = None) -> str:
        """Until every given (default: live) node lists exactly those members and the same one leader, from a
        live replica (a node that lost etcd keeps listing its last view, marked stale)."""
        group = list(nodes) if nodes is not None else self.alive
        want = sorted(n.node_id for n in group)
        views: dict[str, str] = {}  # what each node listed last: the timeout's message says it

        def formed() -> str | None:
            leaders, agreed = set(), True
            for n in group:
                resp = self.members_seen_by(n)
                members = sorted(m.id for m in resp.nodes)
                lead = tuple(m.id for m in resp.nodes if m.leader)
                views[n.node_id] = f"{'STALE ' if resp.stale else ''}members {members} leader {list(lead)}"
                agreed = agreed and not resp.stale and members == want
                leaders.add(lead)
            if agreed and len(leaders) == 1:
                (lead,) = leaders
                if len(lead) == 1:
                    return lead[0]
            return None

        try:
            return poll(formed, timeout, f"cluster {self.name} to form with members {want} and one leader")
        except TimeoutError as exc:
            tails = "".join(f"\n--- {n.node_id}, last lines of its log:\n" + "\n".join(n.log().splitlines()[-25:])
                            for n in group)
            raise TimeoutError(f"{exc}; each node's last view: {views}{tails}") from None

    def leader(self, timeout: float = 15.0) -> NodeProc:
        return self.node(self.wait_formed(timeout))

    def followers(self) -> list[NodeProc]:
        lead = self.leader()
        return [n for n in self.alive if n is not lead]


# ---------------------------------------------------------------------- task helpers


def start_cluster_task(n: NodeProc, *, duration: float = 1.0, steps: int = 4, nodes: Sequence[str] = (),
                       module: str = "builtin", type_: str = "sleep", args: dict[str, object] | None = None,
                       idempotency_key: str = "", timeout: float = 10.0) -> str:
    body = args if args is not None else {"duration": duration, "steps": steps}
    req = pb.StartTaskRequest(module=module, type=type_, args_json=json.dumps(body), cluster=True, nodes=list(nodes),
                              idempotency_key=idempotency_key)
    return str(n.stub().StartTask(req, timeout=timeout).task_id)


def status(n: NodeProc, task_id: str, timeout: float = 5.0) -> pb.TaskStatus:
    return n.stub().GetTaskStatus(pb.TaskIdRequest(task_id=task_id, keep=True), timeout=timeout)


def recursive(n: NodeProc, task_id: str, timeout: float = 5.0) -> list[pb.TaskStatus]:
    return list(n.stub().GetTaskStatusRecursive(pb.TaskIdRequest(task_id=task_id, keep=True), timeout=timeout).statuses)


def wait_task(n: NodeProc, task_id: str, timeout: float = 30.0) -> pb.TaskStatus:
    return n.stub().WaitTask(pb.WaitTaskRequest(task_id=task_id, timeout=timeout * TIMEOUT_MULT),
                             timeout=timeout * TIMEOUT_MULT + 5)


def wait_finished(nodes: Sequence[NodeProc], task_id: str, timeout: float = 30.0) -> pb.TaskStatus:
    """WaitTask on the first node that answers (others may be restarting)."""

    def once() -> pb.TaskStatus | None:
        for n in nodes:
            try:
                st = n.stub().WaitTask(pb.WaitTaskRequest(task_id=task_id, timeout=1.0), timeout=3.0)
            except grpc.RpcError as exc:
                if exc.code() in (grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.UNAVAILABLE):
                    continue
                raise
            return st
        return None

    return poll(once, timeout, f"cluster task {task_id} to finish")


def finished_by(c: Cluster, task_id: str, deadline: float) -> pb.TaskStatus:
    """WaitTask until the monotonic ``deadline`` on a whole cluster; past it, an AssertionError that tells
    what the cluster knows of the task (``explain_unfinished``)."""
    left = deadline - time.monotonic()
    if left > 0:
        try:
            return wait_task(c.nodes[0], task_id, timeout=left / TIMEOUT_MULT)
        except grpc.RpcError as exc:
            if exc.code() != grpc.StatusCode.DEADLINE_EXCEEDED:
                raise
    raise AssertionError(f"cluster task {task_id} did not finish in time\n{explain_unfinished(c, task_id)}")


def explain_unfinished(c: Cluster, task_id: str) -> str:
    """The task, the replicated record's children, each child's state on its own node, and the leader's view."""
    lines = []
    try:
        leader = c.leader_seen_by(c.nodes[0])
    except grpc.RpcError as exc:
        leader = f"unknown ({exc.code().name})"
    lines.append(f"leader: {leader}")
    for n in c.nodes:
        try:
            st = status(n, task_id)
            lines.append(f"  {n.node_id}{' (leader)' if n.node_id == leader else ''} sees {st.stats.state} "
                         f"{st.progress_completed}/{st.progress_total} error={st.error!r}")
        except grpc.RpcError as exc:
            lines.append(f"  {n.node_id} cannot answer: {exc.code().name}")
    record = cluster_records(c).get(task_id) if c.etcd_endpoints is not None else None
    if record is None:
        return "\n".join([*lines, "  no replicated record"])
    lines.append(f"record: state={record.state} abort_requested={record.abort_requested} "
                 f"targets={list(record.target_nodes)}")
    for ch in record.children:
        try:
            own = status(c.node(ch.node), ch.task_id).stats.state if ch.task_id else "never started"
        except grpc.RpcError as exc:
            own = f"unknown ({exc.code().name})"
        lines.append(f"  child {ch.task_id or '-'} on {ch.node}: record says {ch.state} "
                     f"{ch.progress_completed}/{ch.progress_total} attempt={ch.attempt}, its node says {own}")
    return "\n".join(lines)


def children_running(n: NodeProc, task_id: str, count: int, timeout: float = 15.0) -> list[pb.ChildRef]:
    """Until the cluster task lists ``count`` children and each child's own node says it runs."""

    def ready() -> list[pb.ChildRef] | None:
        st = status(n, task_id)
        if len(st.children_ids) != count:
            return None
        sts = recursive(n, task_id)
        if len(sts) != count + 1 or any(s.stats.state != "running" for s in sts[1:]):
            return None
        return list(st.children_ids)

    return poll(ready, timeout, f"{count} running children of {task_id}")


def started_times(n: NodeProc, idle: float = 0.4, timeout: float = 20.0) -> dict[str, list[float]]:
    """Wall-clock times of the task.started events per task id on node ``n``, replayed from its durable
    event log. The stream then follows live events: it is ended once no event came for ``idle`` seconds."""
    times: dict[str, list[float]] = {}
    call = n.stub().WatchEvents(pb.WatchEventsRequest(after_sequence=0), timeout=timeout * TIMEOUT_MULT)
    last = [time.monotonic()]
    finished = threading.Event()

    def watchdog() -> None:
        while not finished.wait(0.05):
            if time.monotonic() - last[0] > idle * TIMEOUT_MULT:
                call.cancel()
                return

    dog = threading.Thread(target=watchdog, daemon=True)
    dog.start()
    try:
        for ev in call:
            last[0] = time.monotonic()
            if ev.type == "task.started":
                times.setdefault(ev.task_id, []).append(ev.time.seconds + ev.time.nanos / 1e9)
    except grpc.RpcError as exc:
        if exc.code() not in (grpc.StatusCode.CANCELLED, grpc.StatusCode.DEADLINE_EXCEEDED):
            raise
    finally:
        finished.set()
        dog.join(5)
    return times


def started_events(n: NodeProc, idle: float = 0.4) -> Counter[str]:
    """task.started events per task id on node ``n``."""
    return Counter({tid: len(ts) for tid, ts in started_times(n, idle).items()})


def pause(n: NodeProc) -> None:
    assert n.proc is not None
    os.kill(n.proc.pid, signal.SIGSTOP)


def resume(n: NodeProc) -> None:
    assert n.proc is not None
    os.kill(n.proc.pid, signal.SIGCONT)


# ---------------------------------------------------------------------- etcd inspection


def etcd_items(endpoints: str, prefix: str, timeout: float = 5.0, keys_only: bool = False) -> dict[str, bytes]:
    """Keys (relative to ``prefix``) and values read straight from a plain-text etcd."""
    hosts = [e.split("://", 1)[-1] for e in endpoints.split(",")]
    with grpc.insecure_channel("ipv4:" + ",".join(hosts)) as ch:
        return range_prefix(ch, prefix, keys_only=keys_only, timeout=timeout)


def etcd_keys(endpoints: str, prefix: str, timeout: float = 5.0) -> list[str]:
    return sorted(etcd_items(endpoints, prefix, timeout, keys_only=True))


def cluster_task_keys(c: Cluster) -> list[str]:
    assert c.etcd_endpoints is not None
    return [k for k in etcd_keys(c.etcd_endpoints, f"/taskward/{c.name}/") if k.startswith("tasks/")]


def cluster_records(c: Cluster) -> dict[str, cpb.ClusterTaskRecord]:
    """The raw replicated records (with fields the API does not show, such as each child's attempt)."""
    assert c.etcd_endpoints is not None
    items = etcd_items(c.etcd_endpoints, f"/taskward/{c.name}/tasks/")
    return {k: cpb.ClusterTaskRecord.FromString(v) for k, v in items.items()}
