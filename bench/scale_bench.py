"""Scale: real clusters of N nodes (3 and 20 by default) on one etcd member, loopback, three figures.

(1) start → visible on all N: a cluster start (builtin sleep, duration 0, one step) sent to a follower,
    until GetTaskStatus of the new id answers on every one of the N nodes, all polled at once (one
    coroutine per node, on grpc.aio channels connected before the clock; a NOT_FOUND answer is asked
    again, each poll loop bounded in count and time). p50 / p90 over S starts per N. Baseline: one raw
    etcd Put of a record-sized value (400 B) from the same process to the same etcd, p50, sampled in
    turn with the starts. Target: p50 with the most nodes ≤ 5 x p50 with the fewest.
    Where the time goes, from the same samples and the same rotation: when the start's answer came;
    when a plain etcd watch on the records' prefix, opened by the bench beside the nodes' own watches,
    delivered the new record; each node's first answer, and the leader's own (it also sends every
    child's start); and, on their own, a probe round for a task
    every node already holds (all N at once, one node after another, one node) and the raw Put to a
    key all N nodes watch. Samples are taken in a rotating order, each on a quiet cluster: the previous
    start has finished everywhere (untimed WaitTask), then a short pause. Every size runs at once on the
    same etcd member and their samples alternate (a rotation on one cluster, then on the other, once the
    first one's nodes spent no CPU for a clock tick), so a change in the host's speed during the run
    weighs on both sizes alike; an idle cluster costs about 0.005 of a core per node.
(2) the leader's CPU (fraction of one core, from /proc/PID/stat over a window), idle and with T cluster
    tasks running, one child per node each (builtin sleep, long duration, one progress step a second
    per child; nodes run with --concurrency above T so that no child waits in a queue), beside the
    followers' mean and etcd's.
(3) RSS per node (VmRSS, mean and max over the N nodes), idle and with the T tasks running.
(2) and (3) are measured on one cluster at a time, the others idle; its tasks are aborted afterwards.

Every loop is bounded in count and in time, and the whole run by --budget seconds.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import grpc

from bench._common import REPO, Load, MachineLoad, cpu_seconds, md_table, rss_mb, scratch_dir
from bench._watch_clock import WatchClock
from taskward.pb.taskward.v1 import tasks_pb2 as pb
from taskward.pb.taskward.v1 import tasks_pb2_grpc as pb_grpc
from tests.support.cluster import Cluster
from tests.support.etcd import EtcdCluster
from tests.support.procs import NodeProc

LEASE_TTL = 6  # the product's default: the bench measures a cluster as it is run
TARGET_SCALE = 5.0
WARMUP = 10
RECORD = b"x" * 400
SAMPLE_TIMEOUT_S = 10.0
MAX_POLLS = 10_000
VERDICT = {True: "met", False: "NOT met"}
VISIBLE = "visible"


async def first_answer(stub: pb_grpc.TaskManagerStub, task_id: str, t0: float) -> tuple[float, int]:
    """Milliseconds from ``t0`` until this node answers for ``task_id``, and how many NOT_FOUND it said first."""
    req = pb.TaskIdRequest(task_id=task_id, keep=True)
    deadline = t0 + SAMPLE_TIMEOUT_S
    for misses in range(MAX_POLLS):
        try:
            await stub.GetTaskStatus(req, timeout=5)
        except grpc.aio.AioRpcError as exc:
            if exc.code() != grpc.StatusCode.NOT_FOUND or time.perf_counter() > deadline:
                raise
            await asyncio.sleep(0)
            continue
        return (time.perf_counter() - t0) * 1000, misses
    raise TimeoutError(f"{task_id} not visible after {MAX_POLLS} polls")


@dataclass(frozen=True)
class Latencies:
    """Every latency sample of one cluster size (ms), by figure, and how often a node answered NOT_FOUND."""

    samples: dict[str, list[float]]
    not_found: int
    watch_missed: int
    leader_last: int
    """Samples in which the leader was the last node to answer."""

    def load(self, figure: str) -> Load:
        xs = self.samples[figure]
        return Load(len(xs), 0, 0.0, xs)


class LatencySampler:
    """Figure (1) and its decomposition on one cluster, one rotation at a time, so that the samples of two
    clusters running side by side can alternate. Starts go to a follower, the common case (forwarded to
    the leader)."""

    def __init__(self, c: Cluster, leader: NodeProc, etcd: EtcdCluster, pause_s: float) -> None:
        from aetcd import rpc

        self._rpc = rpc
        self._c, self._leader, self._pause_s = c, leader, pause_s
        self._entry = next(n for n in c.nodes if n is not leader)
        self._etcd_port = etcd.members[0].client_port
        self._req = pb.StartTaskRequest(module="builtin", type="sleep", args_json='{"duration": 0, "steps": 1}',
                                        cluster=True)
        self.samples: dict[str, list[float]] = {}
        self._counts = {"not_found": 0, "watch_missed": 0, "leader_last": 0}
        self._unfinished: list[str] = []
        self._last_id = ""
        self._kinds: list[Callable[[bool], Awaitable[None]]] = []

    def result(self) -> Latencies:
        return Latencies(self.samples, self._counts["not_found"], self._counts["watch_missed"],
                         self._counts["leader_last"])

    async def open(self) -> None:
        """Channels (on the running loop) and the watch, then a first start the probes can ask about."""
        c = self._c
        self._chans = [grpc.aio.insecure_channel(n.address) for n in c.nodes]
        self._etcd_ch = grpc.aio.insecure_channel(f"127.0.0.1:{self._etcd_port}")
        self._clock = WatchClock(self._etcd_ch, f"/taskward/{c.name}/tasks/")
        self._stubs = [pb_grpc.TaskManagerStub(ch) for ch in self._chans]
        self._kv = self._rpc.KVStub(self._etcd_ch)
        async with asyncio.timeout(30):
            await asyncio.gather(self._etcd_ch.channel_ready(), *(ch.channel_ready() for ch in self._chans))
            await self._clock.open()
        rpc, kv = self._rpc, self._kv
        entry_stub = self._stubs[c.nodes.index(self._entry)]
        self._kinds = [
            self._start,
            self._timed("put", lambda: kv.Put(rpc.PutRequest(key=f"/bench/{c.name}/k".encode(), value=RECORD),
                                              timeout=5)),
            # the same Put under the cluster's prefix, which all N nodes watch: etcd's own fan-out to N watchers
            self._timed("put_watched", lambda: kv.Put(rpc.PutRequest(key=f"/taskward/{c.name}/bench/k".encode(),
                                                                     value=RECORD), timeout=5)),
            self._timed("probe_concurrent", lambda: asyncio.gather(*(self._status_of(s) for s in self._stubs))),
            self._timed("probe_sequential", self._probe_sequential),
            self._timed("probe_one", lambda: self._status_of(entry_stub)),
        ]
        await self._start(False)  # the probes need a task every node holds

    async def rotation(self, record: bool) -> None:
        """Every kind of sample once, each on a quiet cluster; the kinds' order rotates each time."""
        self._kinds = self._kinds[1:] + self._kinds[:1]
        for kind in self._kinds:
            await self._settle()
            await kind(record)

    async def quiet(self, interval_s: float = 0.02, budget_s: float = 1.0) -> None:
        """Until this cluster's nodes spent no CPU for ``interval_s`` (a clock tick), at most ``budget_s``: the
        other cluster's next sample does not share the machine with this one's trailing work (a finished
        record's fan-out to its replicas)."""
        pids = [n.pid for n in self._c.nodes if n.pid is not None]
        before = sum(cpu_seconds(p) for p in pids)
        for _ in range(int(budget_s / interval_s)):
            await asyncio.sleep(interval_s)
            now = sum(cpu_seconds(p) for p in pids)
            if now == before:
                return
            before = now

    async def close(self) -> None:
        try:
            await self._settle()
        finally:
            await self._clock.close()
            for ch in self._chans:
                await ch.close(None)
            await self._etcd_ch.close(None)

    def _keep(self, figure: str, ms: float, record: bool = True) -> None:
        if record:
            self.samples.setdefault(figure, []).append(ms)

    async def _settle(self) -> None:
        """Untimed: the last start has run to its end on every node, so no sample pays for another's."""
        leader_stub = self._stubs[self._c.nodes.index(self._leader)]
        while self._unfinished:
            tid = self._unfinished.pop()
            await leader_stub.WaitTask(pb.WaitTaskRequest(task_id=tid, timeout=SAMPLE_TIMEOUT_S),
                                       timeout=SAMPLE_TIMEOUT_S + 5)
        await asyncio.sleep(self._pause_s)

    async def _start(self, record: bool) -> None:
        entry_stub = self._stubs[self._c.nodes.index(self._entry)]
        t0 = time.perf_counter()
        tid = (await entry_stub.StartTask(self._req, timeout=SAMPLE_TIMEOUT_S)).task_id
        answered = (time.perf_counter() - t0) * 1000
        self._unfinished.append(tid)
        per_node = await asyncio.gather(*(first_answer(s, tid, t0) for s in self._stubs))
        visible = (time.perf_counter() - t0) * 1000
        seen = await self._clock.seen_at(tid, 2.0)
        self._last_id = tid
        if not record:
            return
        firsts = [t for t, _ in per_node]
        leader_first = firsts[self._c.nodes.index(self._leader)]
        self._counts["not_found"] += sum(m for _, m in per_node)
        self._counts["leader_last"] += leader_first == max(firsts)
        self._keep(VISIBLE, visible)
        self._keep("answered", answered)
        self._keep("after_answer", visible - answered)
        self._keep("node_median", statistics.median(firsts))
        self._keep("last_node", max(firsts))
        self._keep("leader_first", leader_first)  # the node that also sends every child's start
        if seen is None:
            self._counts["watch_missed"] += 1
        else:
            self._keep("watch", (seen - t0) * 1000)

    def _timed(self, figure: str, call: Callable[[], Awaitable[object]]) -> Callable[[bool], Awaitable[None]]:
        async def run(record: bool) -> None:
            t = time.perf_counter()
            await call()
            self._keep(figure, (time.perf_counter() - t) * 1000, record)
        return run

    def _status_of(self, stub: pb_grpc.TaskManagerStub) -> Awaitable[object]:
        return stub.GetTaskStatus(pb.TaskIdRequest(task_id=self._last_id, keep=True), timeout=5)  # type: ignore[no-any-return]

    async def _probe_sequential(self) -> None:
        for s in self._stubs:
            await self._status_of(s)


async def sample_latencies(samplers: list[LatencySampler], starts: int, budget_s: float) -> list[Latencies]:
    """Figure (1) on every cluster at once: one rotation on each in turn (the order alternating), so a
    change in the host's speed during the run weighs on every size alike."""
    opened: list[LatencySampler] = []
    try:
        for s in samplers:
            await s.open()
            opened.append(s)
        end = time.monotonic() + budget_s
        previous: LatencySampler | None = None
        for i in range(starts + WARMUP):
            if time.monotonic() > end:
                break
            for s in samplers if i % 2 == 0 else samplers[::-1]:
                if previous is not None and previous is not s:
                    await previous.quiet()
                await s.rotation(i >= WARMUP)
                previous = s
    finally:
        for s in opened:
            await s.close()
    return [s.result() for s in samplers]


@dataclass(frozen=True)
class Usage:
    """CPU as a fraction of one core over a window, and RSS at its end (MiB)."""

    leader_cpu: float
    followers_cpu: list[float]
    etcd_cpu: float
    rss: list[float]

    @property
    def total(self) -> float:
        return self.leader_cpu + sum(self.followers_cpu) + self.etcd_cpu


async def usage_window(c: Cluster, leader: NodeProc, etcd_pid: int, window_s: float) -> Usage:
    """The window is a measurement interval: nothing is awaited but time."""
    pids = [n.pid for n in c.nodes]
    if None in pids:
        raise RuntimeError("a node is not running")
    live = [p for p in pids if p is not None]
    before = {p: cpu_seconds(p) for p in [*live, etcd_pid]}
    t0 = time.monotonic()
    await asyncio.sleep(window_s)
    wall = time.monotonic() - t0
    share = {p: (cpu_seconds(p) - before[p]) / wall for p in before}
    return Usage(leader_cpu=share[leader.pid or 0],
                 followers_cpu=[share[p] for p in live if p != leader.pid],
                 etcd_cpu=share[etcd_pid], rss=[rss_mb(p) for p in live])


@dataclass(frozen=True)
class Busy:
    idle: Usage
    running: Usage
    tasks: int
    ramp_s: float
    units_per_s: float
    leader_kept: bool


async def measure_usage(c: Cluster, leader: NodeProc, etcd: EtcdCluster, tasks: int, duration: float, steps: int,
                        window_s: float, warmup_s: float) -> Busy:
    """Figures (2) and (3): an idle window, then ``tasks`` cluster tasks with one child per node, then the
    busy window once every child runs on its node (so the window sees the steady state, not the fan-out
    of the starts)."""
    etcd_pid = etcd.members[0].pid
    assert etcd_pid is not None
    chans = [grpc.aio.insecure_channel(n.address) for n in c.nodes]
    try:
        nodes = [pb_grpc.TaskManagerStub(ch) for ch in chans]
        stub = nodes[c.nodes.index(leader)]
        idle = await usage_window(c, leader, etcd_pid, window_s)
        req = pb.StartTaskRequest(module="builtin", type="sleep", cluster=True,
                                  args_json=json.dumps({"duration": duration, "steps": steps}))
        t0 = time.monotonic()
        ids = [(await stub.StartTask(req, timeout=SAMPLE_TIMEOUT_S)).task_id for _ in range(tasks)]

        async def statuses() -> list[pb.TaskStatus]:
            return list(await asyncio.gather(*(stub.GetTaskStatus(pb.TaskIdRequest(task_id=t, keep=True), timeout=10)
                                               for t in ids)))

        async def fewest_running() -> int:
            """Children running on the node that runs the fewest (a child still queued is ``created``)."""
            answers: list[pb.ListTasksResponse] = await asyncio.gather(
                *(node.ListTasks(pb.ListTasksRequest(module="builtin", internal=True), timeout=10) for node in nodes))
            return min(sum(t.kind == "node" and t.state == "running" for t in a.tasks) for a in answers)

        for _ in range(300):  # every child running on its node: at most 60 s
            if await fewest_running() >= tasks:
                break
            await asyncio.sleep(0.2)
        else:
            raise TimeoutError(f"{tasks} cluster tasks x {len(c.nodes)} children not all running within 60 s "
                               f"(fewest running on one node: {await fewest_running()})")
        ramp_s = time.monotonic() - t0
        await asyncio.sleep(warmup_s)  # the leader's first poll of each child is behind us
        units0, read0 = sum(s.progress_completed for s in await statuses()), time.monotonic()
        running = await usage_window(c, leader, etcd_pid, window_s)
        units1, read1 = sum(s.progress_completed for s in await statuses()), time.monotonic()
        leaders = [m.id for m in (await stub.ListNodes(pb.ListNodesRequest(), timeout=5)).nodes if m.leader]
    finally:
        for ch in chans:
            await ch.close(None)
    return Busy(idle=idle, running=running, tasks=tasks, ramp_s=ramp_s, units_per_s=(units1 - units0) / (read1 - read0),
                leader_kept=leaders == [leader.node_id])


@dataclass(frozen=True)
class SizeResult:
    size: int
    formed_s: float
    lat: Latencies
    busy: Busy


def run_sizes(scratch: Path, etcd: EtcdCluster, sizes: list[int], args: argparse.Namespace, deadline: float
              ) -> list[SizeResult]:
    """Every size at once on the shared etcd member, each under its own cluster name: (1) alternates
    between them; (2) and (3) are measured on one cluster at a time while the others idle."""
    # --concurrency: each node must run all the tasks' children at once (the default lets 16 roots run)
    clusters = [Cluster(scratch / f"size{size}", etcd.endpoints, size=size, name=f"scale{size}", lease_ttl=LEASE_TTL,
                        dead_node_grace=120, extra=["--concurrency", str(max(16, args.tasks + 2))]) for size in sizes]
    started: list[Cluster] = []
    try:
        formed: list[float] = []
        for c in clusters:
            t0 = time.monotonic()
            started.append(c)
            c.start(timeout=60, node_timeout=15 + 3 * len(c.nodes))
            formed.append(time.monotonic() - t0)
        leaders = [c.leader() for c in clusters]
        budget = min(args.sample_budget * len(sizes), deadline - time.monotonic() - 60 * len(sizes))
        lats = asyncio.run(sample_latencies([LatencySampler(c, leader, etcd, args.pause)
                                             for c, leader in zip(clusters, leaders, strict=True)],
                                            args.starts, max(budget, 1.0)))
        results = []
        for c, leader, formed_s, lat in zip(clusters, leaders, formed, lats, strict=True):
            if not lat.samples.get(VISIBLE):
                raise RuntimeError(f"{len(c.nodes)} nodes: no start was timed within the budget (raise --budget)")
            busy = asyncio.run(measure_usage(c, leader, etcd, args.tasks, args.task_duration, args.task_steps,
                                             args.window, warmup_s=3.0))
            results.append(SizeResult(len(c.nodes), formed_s, lat, busy))
            asyncio.run(abort_all(c, leader))
        return results
    finally:
        for c in started:
            c.stop()


async def abort_all(c: Cluster, leader: NodeProc) -> None:
    """End (2)'s long tasks, so that the next cluster's windows are not measured beside them."""
    async with grpc.aio.insecure_channel(leader.address) as ch:
        stub = pb_grpc.TaskManagerStub(ch)
        listed = await stub.ListTasks(pb.ListTasksRequest(module="builtin"), timeout=10)
        running = [t.task_id for t in listed.tasks if t.kind == "cluster" and t.state == "running"]
        await asyncio.gather(*(stub.AbortTask(pb.TaskIdRequest(task_id=tid), timeout=10) for tid in running))
        for tid in running:
            await stub.WaitTask(pb.WaitTaskRequest(task_id=tid, timeout=30), timeout=35)


def ms(load: Load) -> str:
    return f"p50 {load.p50:.2f} ms (p90 {load.pct(0.9):.2f})"


def tables(results: list[SizeResult], args: argparse.Namespace) -> tuple[str, str]:
    """The headline table (as the other benches and README's rows) and the per-size breakdown."""
    rows: list[list[object]] = []
    for r in results:
        vis, put = r.lat.load("visible"), r.lat.load("put")
        rows.append([f"(1) start → visible on all {r.size} nodes, sent to a follower", ms(vis),
                     f"{vis.p50 / put.p50:.2f}x put", "-"])
        rows.append([f"(1) baseline: raw etcd Put, 400 B, during the {r.size}-node run", f"p50 {put.p50:.2f} ms",
                     "1x", "-"])
    small, big = results[0], results[-1]
    if len(results) > 1:
        scale = big.lat.load("visible").p50 / small.lat.load("visible").p50
        rows.append([f"(1) {big.size}-node p50 / {small.size}-node p50", f"{scale:.2f}x", "-",
                     f"≤ {TARGET_SCALE:g}x: {VERDICT[scale <= TARGET_SCALE]}"])
    for r in results:
        b = r.busy
        rows.append([f"(2) leader CPU, {b.tasks} cluster tasks x {r.size} children running",
                     f"{b.running.leader_cpu:.3f} of a core",
                     f"{b.running.leader_cpu / max(b.idle.leader_cpu, 1e-3):.0f}x idle", "-"])
        rows.append([f"(2) leader CPU, idle ({r.size} nodes)", f"{b.idle.leader_cpu:.3f} of a core", "1x", "-"])
    for r in results:
        b = r.busy
        rows.append([f"(3) RSS per node, {r.size} nodes, idle / {b.tasks} tasks running (mean; max)",
                     f"{statistics.mean(b.idle.rss):.0f}; {max(b.idle.rss):.0f} MiB / "
                     f"{statistics.mean(b.running.rss):.0f}; {max(b.running.rss):.0f} MiB", "-", "-"])
    main = md_table(["figure", "result", "ratio", "target"], rows)

    steps_per_s = args.task_steps / args.task_duration

    def col(fn: Callable[[SizeResult], str]) -> list[str]:
        return [fn(r) for r in results]

    def p50(figure: str) -> Callable[[SizeResult], str]:
        return lambda r: f"{r.lat.load(figure).p50:.2f}" if r.lat.samples.get(figure) else "-"

    breakdown = [
        ["start → visible on all nodes (the figure above)", *col(p50("visible"))],
        ["StartTask answered (sent to a follower)", *col(p50("answered"))],
        ["the bench's own etcd watch delivered the new record", *col(p50("watch"))],
        ["a node's first answer, median over the nodes", *col(p50("node_median"))],
        ["the last node's first answer", *col(p50("last_node"))],
        ["the leader's first answer (it sends every child's start)", *col(p50("leader_first"))],
        ["samples in which the leader answered last",
         *col(lambda r: f"{r.lat.leader_last} of {len(r.lat.samples[VISIBLE])}")],
        ["visible - answered, per sample (the probe's share)", *col(p50("after_answer"))],
        ["NOT_FOUND answers, all samples together", *col(lambda r: str(r.lat.not_found))],
        ["probe round alone, all nodes at once (task held everywhere)", *col(p50("probe_concurrent"))],
        ["probe round alone, one node after another", *col(p50("probe_sequential"))],
        ["one GetTaskStatus, one node", *col(p50("probe_one"))],
        ["raw etcd Put, 400 B", *col(p50("put"))],
        ["the same Put to a key all nodes watch", *col(p50("put_watched"))],
        ["followers' CPU, idle / running, mean (of a core)",
         *col(lambda r: f"{statistics.mean(r.busy.idle.followers_cpu):.3f} / "
                        f"{statistics.mean(r.busy.running.followers_cpu):.3f}")],
        ["all nodes and etcd together, idle / running (of the machine's cores)",
         *col(lambda r: f"{r.busy.idle.total:.2f} / {r.busy.running.total:.2f}")],
        ["etcd CPU, idle / running (of a core)",
         *col(lambda r: f"{r.busy.idle.etcd_cpu:.3f} / {r.busy.running.etcd_cpu:.3f}")],
        ["progress units/s reaching the records while running, of the children's (leader commits in batches)",
         *col(lambda r: f"{r.busy.units_per_s:,.0f} of {r.busy.tasks * r.size * steps_per_s:,.0f}")],
        ["all children running after the starts (s)", *col(lambda r: f"{r.busy.ramp_s:.1f}")],
        ["cluster formed after the start of its nodes (s)", *col(lambda r: f"{r.formed_s:.1f}")],
    ]
    detail = md_table(["ms, p50 unless said", *(f"{r.size} nodes" for r in results)], breakdown)
    return main, detail


def reading(results: list[SizeResult]) -> str:
    """The decomposition in words, from the figures of this run."""
    parts = []
    for r in results:
        f = {k: r.lat.load(k).p50 for k in r.lat.samples}
        parts.append(
            f"{r.size} nodes: visible {f['visible']:.2f} ms = answered {f['answered']:.2f} ms (the bench's watch had "
            f"the record at {f.get('watch', float('nan')):.2f} ms) + {f['after_answer']:.2f} ms of probing; "
            f"{r.lat.not_found} NOT_FOUND answers over {len(r.lat.samples[VISIBLE])} starts; a probe round alone "
            f"takes {f['probe_concurrent']:.2f} ms at once, {f['probe_sequential']:.2f} ms one after another")
    notes = [f"{r.size}-node leader changed during the busy window" for r in results if not r.busy.leader_kept]
    notes += [f"{r.size} nodes: the bench's watch missed {r.lat.watch_missed} records within 2 s"
              for r in results if r.lat.watch_missed]
    return "Decomposition: " + "; ".join(parts) + "." + "".join(f" Note: {n}." for n in notes)


def main() -> int:
    p = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    p.add_argument("--nodes", default="3,20", help="cluster sizes, comma-separated, run side by side")
    p.add_argument("--starts", type=int, default=100, help="timed cluster starts per size for (1)")
    p.add_argument("--pause", type=float, default=0.02, help="quiet seconds before every sample")
    p.add_argument("--sample-budget", type=float, default=240.0,
                   help="seconds at most for (1), per size (the sizes share them)")
    p.add_argument("--tasks", type=int, default=30, help="running cluster tasks for (2) and (3)")
    p.add_argument("--task-duration", type=float, default=600.0)
    p.add_argument("--task-steps", type=int, default=600)
    p.add_argument("--window", type=float, default=10.0, help="seconds per CPU window")
    p.add_argument("--budget", type=float, default=1200.0, help="seconds for the whole run")
    p.add_argument("--append-results", action="store_true", help=f"append the section to {REPO}/bench/RESULTS.md")
    args = p.parse_args()
    sizes = [int(x) for x in args.nodes.split(",")]
    if not sizes or min(sizes) < 2:
        p.error("--nodes: each cluster needs at least 2 nodes (a leader and a follower to send starts to)")
    machine = MachineLoad()
    t_start = time.monotonic()
    deadline = t_start + args.budget
    with scratch_dir("scale") as scratch:
        (scratch / "etcd").mkdir()
        etcd = EtcdCluster(scratch / "etcd", size=1)
        try:
            etcd.start()
            results = run_sizes(scratch, etcd, sizes, args, deadline)
        finally:
            etcd.stop()
    took = time.monotonic() - t_start
    main_table, detail = tables(results, args)
    report = "\n".join([
        "",
        f"## Scale: {' vs '.join(str(r.size) for r in results)} nodes on one etcd member — start → visible, "
        "leader CPU, RSS (`bench/scale_bench.py`)",
        "",
        "Method: " + " ".join(line.strip() for line in (__doc__ or "").split("\n\n", 1)[1].split("\n")
                              if line.strip() and not line.startswith("Every loop")),
        f"Runs: {', '.join(f'{len(r.lat.samples[VISIBLE])} starts on {r.size} nodes' for r in results)} "
        f"(+{WARMUP} warm-up each); {args.tasks} tasks of {args.task_steps} steps over {args.task_duration:g} s; "
        f"CPU windows of {args.window:g} s; lease TTL {LEASE_TTL} s; the whole run took {took:.0f} s. "
        f"{machine.report()}.",
        "",
        main_table,
        "",
        detail,
        "",
        reading(results),
        "",
    ])
    print(report)
    if args.append_results:
        with open(REPO / "bench" / "RESULTS.md", "a") as f:
            f.write(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
