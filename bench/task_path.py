"""The task path without a transport: how fast the node's own task logic runs durable no-op tasks.

The real ``TaskManager`` and ``Store`` in this process (no gRPC, no client process), ``synchronous`` as
the node's, CALLERS concurrent starters each looping start → wait for done on ``bench:noop``, against the
raw-SQLite floor of ``task_throughput.py`` (the same rows, one transaction per task) in the same run,
rounds alternating. CPU is this process's (all threads) per task.

Why it exists: ``task_throughput.py`` compares a node reached over gRPC with the floor, and a bare
grpc.aio StartTask already costs a third to a half of a node's CPU per task. This bench says what the
task logic alone allows: a node over any transport cannot be faster than this row.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from pathlib import Path

from bench._common import md_table, run_in_scratch
from bench._noop_tasks import MODULE, TASKS_ARG, TYPE
from bench.task_throughput import durable_floor
from taskward.config import ManagerConfig
from taskward.manager import TaskManager
from taskward.registry import Registry, import_task_module
from taskward.store import Store


async def task_path(data_dir: Path, *, tasks: int, callers: int, synchronous: str) -> tuple[float, float]:
    """(tasks/s, CPU µs per task) of one fresh in-process node running ``tasks`` no-op tasks."""
    registry = Registry()
    registry.load_module(import_task_module(TASKS_ARG), source=TASKS_ARG)
    store = Store(data_dir / "tasks.sqlite3", synchronous=synchronous)
    manager = TaskManager(ManagerConfig(node_id="bench"), store, registry)
    await manager.start()
    try:
        left = tasks

        async def caller() -> None:
            nonlocal left
            while left > 0:
                left -= 1
                tid = await manager.start_task(MODULE, TYPE)
                view = await manager.wait(tid)
                assert view.record.state == "done", view.record.state

        await asyncio.gather(*(caller() for _ in range(min(callers, 8))))  # warm-up: first imports, caches
        left = tasks
        cpu0, t0 = time.process_time(), time.perf_counter()
        await asyncio.gather(*(caller() for _ in range(callers)))
        wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    finally:
        await manager.stop()  # closes the store
    return tasks / wall, cpu / tasks * 1e6


async def bench(args: argparse.Namespace, scratch: Path) -> int:
    path_rates: list[float] = []
    cpus: list[float] = []
    floors: list[float] = []
    for i in range(args.rounds):
        rate, cpu = await task_path(scratch / f"node{i}", tasks=args.tasks, callers=args.callers,
                                    synchronous=args.synchronous)
        path_rates.append(rate)
        cpus.append(cpu)
        done, elapsed = durable_floor(scratch / f"floor{i}.sqlite3", args.floor_tasks, args.synchronous, 30.0)
        floors.append(done / elapsed)
    ratios = [r / f for r, f in zip(path_rates, floors, strict=True)]
    print(f"{args.tasks:,} no-op tasks per round, {args.callers} concurrent starters in-process, "
          f"synchronous={args.synchronous}, {args.rounds} alternating rounds\n")
    print(md_table(["round", "task path tasks/s", "CPU µs/task", "floor tasks/s", "ratio"],
                   [[i + 1, r, c, f, f"{x:.3f}"] for i, (r, c, f, x) in
                    enumerate(zip(path_rates, cpus, floors, ratios, strict=True))]))
    print(f"\nmedian: {statistics.median(path_rates):,.0f} tasks/s, {statistics.median(cpus):,.0f} µs CPU/task, "
          f"ratio to the floor {statistics.median(ratios):.3f}")
    return 0


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--tasks", type=int, default=6000)
    p.add_argument("--floor-tasks", type=int, default=4000)
    p.add_argument("--callers", type=int, default=64)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--synchronous", default="FULL", choices=["FULL", "NORMAL"])
    p.add_argument("--profile", metavar="FILE", help="cProfile the task path's rounds (pstats file)")
    args = p.parse_args()
    if not args.profile:
        return run_in_scratch(bench, args, "task-path")
    import cProfile
    with cProfile.Profile() as prof:
        code = run_in_scratch(bench, args, "task-path")
    prof.dump_stats(args.profile)
    return code


if __name__ == "__main__":
    sys.exit(main())
