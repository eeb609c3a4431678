"""Cron: firing accuracy over consecutive slots, and the leader's idle cost with many schedules.

(a) One node (embedded store) whose scheduler runs on an accelerated clock (``--cron-test-clock``,
SPEED minutes of cron time per real minute): one ``* * * * *`` schedule (concurrency ``allow``, a no-op
node task, a misfire grace of an hour of cron time: at 600x the default 60 s would be 0.1 real seconds)
over SLOTS consecutive slots. From the node's ``cron.fired`` events: duplicates (a slot fired
twice; must be 0), misses (a slot in the range never fired; 0 without faults), and the firing delay in
real milliseconds (event time minus the slot's real time), p50 / p99 / max. Baseline, same run: the
delay of a bare asyncio timer in this process asked to wake at the same real times.

(b) The same node with N enabled schedules that do not fire during the window (yearly), then with none:
the node's CPU (user + system, all threads) over WINDOW seconds of idle, as a share of one core. Target:
under 10% of a core with 10,000 schedules.

Run: ``.venv/bin/python -m bench.cron_bench [--slots 1000] [--speed 600] [--schedules 10000]``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import threading
import time
from pathlib import Path

import grpc

from bench._common import cpu_seconds, md_table, scratch_dir, start_node, stop_node
from taskward.pb.taskward.v1 import cron_pb2 as cpb
from taskward.pb.taskward.v1 import cron_pb2_grpc as cron_grpc
from taskward.pb.taskward.v1 import tasks_pb2 as pb
from taskward.pb.taskward.v1 import tasks_pb2_grpc as pb_grpc


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def fired_events(address: str, stop: threading.Event, out: list[pb.Event]) -> None:
    with grpc.insecure_channel(address) as ch:
        call = pb_grpc.TaskManagerStub(ch).WatchEvents(pb.WatchEventsRequest(live_only=True))
        threading.Thread(target=lambda: (stop.wait(), call.cancel()), daemon=True).start()
        try:
            for ev in call:
                if ev.type == "cron.fired":
                    out.append(ev)
        except grpc.RpcError:
            return


async def timer_baseline(targets: list[float]) -> list[float]:
    """How late a bare asyncio timer wakes at each real time (ms), in this process."""
    delays = []
    for t in targets:
        await asyncio.sleep(max(0.0, t - time.time()))
        delays.append((time.time() - t) * 1000)
    return delays


def slots_run(scratch: Path, slots: int, speed: float) -> tuple[list[str], list[float]]:
    epoch = time.time()
    node, _ = start_node(scratch / "a", ["--cron-test-clock", f"{epoch}:{speed}"])
    try:
        events: list[pb.Event] = []
        stop = threading.Event()
        watcher = threading.Thread(target=fired_events, args=(node.address, stop, events), daemon=True)
        watcher.start()
        time.sleep(0.5)
        cron = cron_grpc.CronStub(node.channel())
        cron.PutSchedules(cpb.PutSchedulesRequest(schedules=[cpb.CronSchedule(
            id="tick", task_type="sleep", schedule="* * * * *", concurrency="allow", misfire_grace_s=3600,
            args_json=json.dumps({"duration": 0, "steps": 1}))]), timeout=10)
        deadline = time.monotonic() + slots * 60 / speed + 30  # bounded in time
        while len(events) < slots and time.monotonic() < deadline:
            time.sleep(0.2)
        cron.SetScheduleEnabled(cpb.SetScheduleEnabledRequest(id="tick", enabled=False), timeout=10)
        stop.set()
        watcher.join(5)
    finally:
        stop_node(node)
    got = events[:slots]
    fired_slots = [e.slot for e in got]
    duplicates = len(fired_slots) - len(set(fired_slots))
    span = range(min(fired_slots), max(fired_slots) + 60, 60) if fired_slots else range(0)
    missing = sorted(set(span) - set(fired_slots))
    misses = len(missing)
    if missing:
        print(f"missed slots: {missing[:10]} (node log kept with BENCH_KEEP_SCRATCH=1)", file=sys.stderr)
    delays = [(e.time.seconds + e.time.nanos / 1e9 - (epoch + (e.slot - epoch) / speed)) * 1000 for e in got]
    targets = [time.time() + 0.05 + i * 60 / speed for i in range(min(200, slots))]
    base = asyncio.run(timer_baseline(targets))
    rows = [
        ["cron firing delay, real ms", f"{statistics.median(delays):.1f} / {pct(delays, 0.99):.1f} / "
                                       f"{max(delays):.1f}",
         f"{statistics.median(base):.2f} / {pct(base, 0.99):.2f} / {max(base):.2f} bare asyncio timer"],
        ["slots fired / duplicates / misses", f"{len(got)} / {duplicates} / {misses}", "—"],
    ]
    return [md_table(["figure", "taskward p50 / p99 / max", "baseline, same run"], rows)], delays


def idle_cpu(scratch: Path, schedules: int, window: float) -> tuple[float, float]:
    """(share of a core with ``schedules`` yearly schedules, share with none) over ``window`` s of idle."""
    shares = []
    for n in (schedules, 0):
        node, _ = start_node(scratch / f"b{n}")
        try:
            cron = cron_grpc.CronStub(node.channel())
            doc = [cpb.CronSchedule(id=f"s{i}", task_type="sleep", schedule=f"{i % 60} {i % 24} 1 1 *",
                                    args_json='{"duration": 0}') for i in range(n)]
            cron.PutSchedules(cpb.PutSchedulesRequest(schedules=doc), timeout=120)
            assert node.pid is not None
            settle_until = time.monotonic() + 60  # the first cycle after a document computes every next slot
            while time.monotonic() < settle_until:
                c0 = cpu_seconds(node.pid)
                time.sleep(1.0)
                if cpu_seconds(node.pid) - c0 < 0.05:
                    break
            c0, t0 = cpu_seconds(node.pid), time.monotonic()
            time.sleep(window)
            shares.append((cpu_seconds(node.pid) - c0) / (time.monotonic() - t0))
        finally:
            stop_node(node)
    return shares[0], shares[1]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--slots", type=int, default=1000)
    p.add_argument("--speed", type=float, default=600.0, help="cron minutes per real minute")
    p.add_argument("--schedules", type=int, default=10_000)
    p.add_argument("--window", type=float, default=10.0, help="idle seconds measured in (b)")
    a = p.parse_args()
    with scratch_dir("cron") as scratch:
        (table,), _ = slots_run(scratch, a.slots, a.speed)
        many, none = idle_cpu(scratch, a.schedules, a.window)
    print(f"## Cron ({a.slots} slots at {a.speed:g}x, {a.schedules:,} schedules)\n")
    print(table)
    print()
    print(md_table(["figure", "taskward", "baseline, same run", "target"], [
        [f"leader CPU between firings, {a.schedules:,} enabled schedules", f"{many:.1%} of a core",
         f"{none:.1%} of a core with none", "< 10% ✔" if many < 0.10 else "< 10% ✘"],
    ]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
