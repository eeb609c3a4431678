"""ListTasks paging latency, RSS and start-up time of a node retaining 100,000 finished tasks.

The node's data dir is pre-populated before start with the node's own record format: the rows are
built from TaskRecord values run through the same transitions as a real no-op ``builtin:sleep``
(created -> started -> progress -> finished, user task with an expiry) and written with the statements
of node.store.Tx (record_to_json), plus one task.completed event each and the node's settings rows.
The node then loads them at start-up exactly as after a restart. It runs with
--retention-max-per-module 200000 and a 10-day user TTL so nothing is pruned.

Measured: start-up (spawn -> gRPC health SERVING), VmRSS after start-up and after the calls, a full
walk of the module with page_size=100 (which also yields the real page tokens), then CALLS sequential
ListTasks(page_size=100) calls at page tokens drawn at random from that walk.

Baselines, same run: the same client calling a bare grpc.aio server (bench/_bare_server.py) that
returns a pre-built ListTasksResponse equal to one of those pages; a node started on an empty data
dir with the same flags (its start-up time and RSS).
"""

from __future__ import annotations

import argparse
import random
import re
import sqlite3
import sys
import time
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import grpc

from bench._common import Load, md_table, rss_mb, run_in_scratch, spawn_script, start_node, stop_node
from taskward.events import Event, EventType
from taskward.model import TaskRecord, new_task_id
from taskward.pb.taskward.v1 import tasks_pb2 as pb
from taskward.pb.taskward.v1 import tasks_pb2_grpc as pb_grpc
from taskward.store import SCHEMA, Tx

TARGET_P50_MS = 50.0
TARGET_RSS_MB = 300.0
USER_TTL = 10 * 24 * 3600
CANON_ARGS = '{"duration":0.0,"steps":0}'
NODE_FLAGS = ["--retention-max-per-module", "200000", "--user-task-ttl", str(USER_TTL)]


def populate(db: Path, n: int) -> float:
    """Write ``n`` finished builtin:sleep tasks as the node would have; returns seconds spent."""
    t0 = time.perf_counter()
    db.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(db, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    conn.executescript(SCHEMA)
    start = datetime.now(UTC) - timedelta(hours=1)
    tx = Tx()
    for i in range(n):
        created = start + timedelta(seconds=3600 * i / n)
        rec = TaskRecord(id=new_task_id(), module="builtin", type="sleep", created_at=created,
                         sequence_number=i + 1, is_abortable=True, progress_units="steps", user_task=True,
                         args=CANON_ARGS)
        rec = rec.started(created + timedelta(milliseconds=1)).with_progress(0.0, 0.0, "")
        rec = rec.finished(created + timedelta(milliseconds=2))
        assert rec.end_time is not None
        rec = replace(rec, expires_at=rec.end_time + timedelta(seconds=USER_TTL))
        tx.put(rec)
        ev = Event(sequence=i + 1, type=EventType.COMPLETED, task_id=rec.id, module="builtin", task_type="sleep",
                   time=rec.end_time.timestamp())
        tx.event(ev.sequence, ev.at, ev.to_dict())
    tx.setting("seq:builtin:0", str(n)).setting("task_ttl", "0").setting("user_task_ttl", str(USER_TTL))
    conn.execute("BEGIN IMMEDIATE")
    for sql, params in tx.sql():
        conn.execute(sql, params)
    conn.execute("COMMIT")
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()
    return time.perf_counter() - t0


async def timed_calls(stub: pb_grpc.TaskManagerStub, tokens: list[str], calls: int, seed: int) -> Load:
    rng = random.Random(seed)
    lat = []
    t0 = time.perf_counter()
    for _ in range(calls):
        req = pb.ListTasksRequest(module="builtin", page_size=100, page_token=rng.choice(tokens))
        t = time.perf_counter()
        resp = await stub.ListTasks(req, timeout=30)
        lat.append((time.perf_counter() - t) * 1000)
        assert len(resp.tasks) == 100 or not resp.next_page_token
    return Load(len(lat), 0, time.perf_counter() - t0, lat)


async def walk(stub: pb_grpc.TaskManagerStub) -> tuple[list[str], int, Load, pb.ListTasksResponse]:
    """Page through the whole module; returns the page tokens, tasks seen, latencies, a full page."""
    tokens, token, seen, lat = [""], "", 0, []
    page = None
    t0 = time.perf_counter()
    while len(lat) < 10_000:
        t = time.perf_counter()
        resp = await stub.ListTasks(pb.ListTasksRequest(module="builtin", page_size=100, page_token=token),
                                    timeout=30)
        lat.append((time.perf_counter() - t) * 1000)
        seen += len(resp.tasks)
        if page is None and len(resp.tasks) == 100:
            page = resp
        if any(t.state != "done" for t in resp.tasks):
            raise RuntimeError("a retained task is not done")
        if not resp.next_page_token:
            break
        token = resp.next_page_token
        tokens.append(token)
    assert page is not None
    return tokens[:-1] if len(tokens) > 1 else tokens, seen, Load(len(lat), 0, time.perf_counter() - t0, lat), page


def loaded_count(log: str) -> int:
    m = re.findall(r"task manager ready: (\d+) tasks loaded", log)
    return int(m[-1]) if m else -1


async def bench(args: argparse.Namespace, scratch: Path) -> int:
    data = scratch / "n1"
    prep_s = populate(data / "taskward.sqlite3", args.tasks)
    db_mb = sum(f.stat().st_size for f in data.iterdir()) / 2**20

    node, startup_s = start_node(data, NODE_FLAGS, timeout=60)
    try:
        assert node.proc is not None
        pid = node.proc.pid
        rss_start = rss_mb(pid)
        loaded = loaded_count(node.log())
        async with grpc.aio.insecure_channel(node.address) as ch:
            stub = pb_grpc.TaskManagerStub(ch)
            tokens, seen, walk_load, page = await walk(stub)
            node_load = await timed_calls(stub, tokens, args.calls, args.seed)
        rss_end = rss_mb(pid)
        vm_hwm = rss_mb(pid, "VmHWM")
    finally:
        stop_node(node)
    if seen != args.tasks or loaded != args.tasks:
        raise RuntimeError(f"expected {args.tasks} tasks, node loaded {loaded} and listed {seen}")

    (scratch / "page.bin").write_bytes(page.SerializeToString())
    bare, port = spawn_script("_bare_server.py", "--list", str(scratch / "page.bin"))
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as ch:
            stub = pb_grpc.TaskManagerStub(ch)
            await timed_calls(stub, tokens, 20, args.seed + 1)  # warm-up, like the walk for the node
            bare_load = await timed_calls(stub, tokens, args.calls, args.seed)
    finally:
        bare.terminate()
        bare.wait(10)

    empty, empty_startup_s = start_node(scratch / "empty", NODE_FLAGS)
    try:
        assert empty.proc is not None
        empty_rss = rss_mb(empty.proc.pid)
    finally:
        stop_node(empty)

    per_task = (rss_start - empty_rss) * 2**20 / args.tasks
    print(f"{args.tasks:,} finished tasks retained in module builtin (SQLite {db_mb:.0f} MB, written in "
          f"{prep_s:.1f}s before start); {args.calls} sequential ListTasks(page_size=100) calls at random real "
          f"page tokens; page = {page.ByteSize():,} bytes\n")
    print(md_table(["", "p50 ms", "p90 ms", "p99 ms", "max ms"], [
        ["taskward, random pages", node_load.p50, node_load.pct(0.9), node_load.pct(0.99), max(node_load.latencies_ms)],
        [f"taskward, full walk ({walk_load.calls:,} pages in {walk_load.seconds:.1f}s)", walk_load.p50,
         walk_load.pct(0.9), walk_load.pct(0.99), max(walk_load.latencies_ms)],
        ["bare grpc.aio, same page pre-built", bare_load.p50, bare_load.pct(0.9), bare_load.pct(0.99),
         max(bare_load.latencies_ms)],
    ]))
    print()
    print(md_table(["node", "start-up s (spawn → SERVING)", "VmRSS MB after start", "VmRSS MB after calls",
                    "VmHWM MB"], [
        [f"{args.tasks:,} tasks retained", startup_s, rss_start, rss_end, vm_hwm],
        ["empty data dir", empty_startup_s, empty_rss, "", ""],
    ]))
    print(f"\n≈ {per_task:,.0f} bytes of RSS per retained task; start-up spends "
          f"{startup_s - empty_startup_s:.2f}s more than an empty node loading them")
    print()
    ok_lat, ok_rss = node_load.p50 <= TARGET_P50_MS, max(rss_start, rss_end) <= TARGET_RSS_MB
    print(md_table(["figure", "taskward", "baseline (same run)", "ratio", "target"], [
        ["ListTasks page_size=100 p50 ms, 100k retained", node_load.p50, f"{bare_load.p50:.2f} (bare gRPC)",
         f"{node_load.p50 / bare_load.p50:.2f}", f"≤ {TARGET_P50_MS:g} ms ({'met' if ok_lat else 'MISSED'})"],
        ["node VmRSS MB, 100k retained", max(rss_start, rss_end), f"{empty_rss:.0f} (empty node)",
         f"{max(rss_start, rss_end) / empty_rss:.2f}", f"≤ {TARGET_RSS_MB:g} MB ({'met' if ok_rss else 'MISSED'})"],
        ["start-up s, 100k retained", startup_s, f"{empty_startup_s:.2f} (empty node)",
         f"{startup_s / empty_startup_s:.2f}", "reported"],
    ]))
    return 0


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--tasks", type=int, default=100_000)
    p.add_argument("--calls", type=int, default=200)
    p.add_argument("--seed", type=int, default=7)
    return run_in_scratch(bench, p.parse_args(), "retention")


if __name__ == "__main__":
    sys.exit(main())
