"""CPU-bound task bodies in the node's threads vs. its worker processes (``executor="process"``), same run.

One real node (``--tasks bench._cpu_tasks``, default ``--process-workers``: one per core) runs BODIES
copies of the same pure-Python loop, declared twice: ``bench:cpu-thread`` (a synchronous body in the
node's thread pool, where the GIL lets one body run at a time) and ``bench:cpu-process`` (in the pool of
worker processes). Each body is sized to take about ``--body-seconds`` of one core here (calibrated in
this process before the node starts), in ten batches with progress and an abort check between them. A
round starts all BODIES tasks at once over gRPC and ends when the last has finished (WaitTask); rounds
alternate between the two types, and the median round of each is compared. A first, untimed round of the
process type starts the worker processes (they start when a task first needs one). Each round also says
how many CPUs other processes used meanwhile (the machine's busy time less the node's, its workers' and
this script's): on a 2-core machine, one core taken by others halves what the pool can do, not what the
threads can. Every wait is bounded; loopback only.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import time
from pathlib import Path

import grpc

from bench._common import CLK_TCK, _machine_ticks, cpu_seconds, md_table, run_in_scratch, start_node, stop_node
from taskward.pb.taskward.v1 import tasks_pb2 as pb
from taskward.pb.taskward.v1 import tasks_pb2_grpc as pb_grpc

TARGET = 1.8
TYPES = ("cpu-thread", "cpu-process")


def calibrate(seconds: float) -> int:
    """Rounds of ``bench._cpu_tasks.crunch``'s inner loop that take ``seconds`` of CPU here (best of three)."""
    probe = 2_000_000
    best = float("inf")
    for _ in range(3):
        t0 = time.process_time()
        total = 0
        for i in range(probe):
            total += i % 7
        best = min(best, time.process_time() - t0)
    return int(probe * seconds / best)


def tree_cpu(pid: int) -> float:
    """CPU seconds of process ``pid`` and its live children (a node and its workers), plus this script's."""
    total = time.process_time()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            if int(stat.parent.name) == pid or int(fields[1]) == pid:
                total += cpu_seconds(int(stat.parent.name))
        except (FileNotFoundError, ProcessLookupError):
            continue
    return total


class Others:
    """CPUs other processes used during a round."""

    def __init__(self, node_pid: int) -> None:
        self._pid = node_pid
        self._busy0, self._tree0, self._t0 = _machine_ticks()[0], tree_cpu(node_pid), time.perf_counter()

    def cpus(self) -> float:
        busy_s = (_machine_ticks()[0] - self._busy0) / CLK_TCK
        return max(0.0, busy_s - (tree_cpu(self._pid) - self._tree0)) / (time.perf_counter() - self._t0)


async def one_round(stub: pb_grpc.TaskManagerStub, type_name: str, bodies: int, rounds: int, timeout_s: float) -> float:
    """Wall seconds from the first start until the last of ``bodies`` tasks has finished ``done``."""
    args = json.dumps({"rounds": rounds})
    t0 = time.perf_counter()
    ids = await asyncio.gather(*(stub.StartTask(pb.StartTaskRequest(module="bench", type=type_name, args_json=args),
                                                timeout=10) for _ in range(bodies)))
    finals = await asyncio.gather(*(stub.WaitTask(pb.WaitTaskRequest(task_id=r.task_id, timeout=timeout_s),
                                                  timeout=timeout_s + 5) for r in ids))
    wall = time.perf_counter() - t0
    bad = [f.error for f in finals if f.stats.state != "done"]
    if bad:
        raise RuntimeError(f"{type_name}: {len(bad)} bodies did not finish done: {bad[:3]}")
    return wall


async def bench(args: argparse.Namespace, scratch: Path) -> int:
    rounds = calibrate(args.body_seconds)
    node, _ = start_node(scratch / "n1", ["--tasks", "bench._cpu_tasks", "--user-task-ttl", "0"])
    walls: dict[str, list[float]] = {t: [] for t in TYPES}
    others: dict[str, list[float]] = {t: [] for t in TYPES}
    timeout_s = args.bodies * args.body_seconds * 20 + 60  # bounded, with room for a very busy machine
    try:
        async with grpc.aio.insecure_channel(node.address) as channel:
            stub = pb_grpc.TaskManagerStub(channel)
            warm = await one_round(stub, "cpu-process", os.cpu_count() or 1, rounds // 100, timeout_s)
            for _ in range(args.rounds):
                for type_name in TYPES:
                    assert node.pid is not None
                    busy = Others(node.pid)
                    walls[type_name].append(await one_round(stub, type_name, args.bodies, rounds, timeout_s))
                    others[type_name].append(busy.cpus())
    finally:
        stop_node(node)
    report(walls, others, args, rounds, warm)
    return 0


def report(walls: dict[str, list[float]], others: dict[str, list[float]], args: argparse.Namespace, rounds: int,
           warm: float) -> None:
    print(f"{args.bodies} CPU-bound bodies of ~{args.body_seconds:g} s each ({rounds:,} loop rounds), "
          f"{args.rounds} alternating rounds, median round; {os.cpu_count()} CPUs; worker start-up round "
          f"(untimed): {warm:.2f} s\n")
    rows = [[f"bench:{t}", statistics.median(walls[t]), ", ".join(f"{w:.2f}" for w in walls[t]),
             ", ".join(f"{o:.2f}" for o in others[t])] for t in TYPES]
    print(md_table(["type", "median wall s", "all rounds s", "CPUs used by other processes, per round"], rows))
    thread, process = (statistics.median(walls[t]) for t in TYPES)
    ratio = thread / process
    paired = [t / p for t, p in zip(walls["cpu-thread"], walls["cpu-process"], strict=True)]
    print()
    print(md_table(["figure", "executor=\"process\"", "threads (same run)", "speed-up", "median per-round", "target"],
                   [[f"{args.bodies} bodies, wall s", process, thread, f"{ratio:.2f}x",
                     f"{statistics.median(paired):.2f}x", f"≥ {TARGET}x ({'met' if ratio >= TARGET else 'MISSED'})"]]))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--bodies", type=int, default=8)
    p.add_argument("--body-seconds", type=float, default=1.0)
    p.add_argument("--rounds", type=int, default=3)
    return run_in_scratch(bench, p.parse_args(), "procpool")


if __name__ == "__main__":
    sys.exit(main())
