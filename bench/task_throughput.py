"""Durable no-op task throughput of a real node vs. the raw-SQLite durable floor, same run.

taskward: CALLERS concurrent grpc.aio callers submit TASKS ``bench:noop`` tasks (a body that does
nothing, ``bench/_noop_tasks.py``) with StartTask; completion is observed on the node's WatchEvents stream (one
``task.completed`` per task, opened with replay from sequence 0 so nothing is missed). The clock runs
from the first submission to the last completion event. Afterwards ListTasks must show every task
``done`` (the node runs with a retention and user TTL large enough to keep them all).

Floor: raw ``sqlite3`` in WAL mode with the node's synchronous setting (FULL) and schema
(node.store.SCHEMA), one transaction per task, sequentially, writing exactly the statements the node
writes for such a task (built with node.store.Tx from the same records and event bodies): sequence
setting + created record; running record + task.started event + type stats; done record +
task.completed event + type stats. The statements are built before
the clock starts, so the floor is pure SQLite + fsync cost.

Client: the same callers start through the client library (``AsyncClient.start``), which carries starts
made while others are under way in shared ``StartTasks`` calls; completion seen by polling, as in the
first row.

Ceiling: the same callers sending the same StartTask to a bare grpc.aio server (bench/_bare_server.py)
that answers a fixed id and records nothing: what the transport alone allows a node on this machine,
with the client sharing its cores. A node cannot start tasks faster than that, so the ceiling's own
ratio to the floor bounds every taskward ratio of this bench.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sqlite3
import statistics
import sys
import time
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import grpc

from bench import _noop_tasks as noop_tasks
from bench._common import (
    cpu_seconds,
    md_table,
    py_spy,
    run_in_scratch,
    run_load,
    spawn_script,
    start_node,
    stop_node,
    submit_to_done,
)
from taskward import AsyncClient
from taskward.events import Event, EventType
from taskward.model import TaskRecord, new_task_id
from taskward.pb.taskward.v1 import tasks_pb2 as pb
from taskward.pb.taskward.v1 import tasks_pb2_grpc as pb_grpc
from taskward.store import SCHEMA, Statement, Tx

TARGET_RATIO = {"poll": 0.5, "events": 0.4, "batches": 0.4, "finished": 0.4, "client": 0.5}  # to the raw-SQLite floor
FINISHED = ("task.completed", "task.failed", "task.aborted")
TARGET_RATE = 1000.0
ARGS_JSON = "{}"
EVENTS_PER_TASK = 2  # task.started, task.completed
NOOP = pb.StartTaskRequest(module=noop_tasks.MODULE, type=noop_tasks.TYPE, args_json=ARGS_JSON)
NODE_TASKS = ["--tasks", noop_tasks.TASKS_ARG]


def task_statements(n: int, seq0: int) -> list[Statement]:
    """The statements the node commits for one bench:noop task (see TaskManager)."""
    now = datetime.now(UTC)
    module, ttype = noop_tasks.MODULE, noop_tasks.TYPE
    rec = TaskRecord(id=new_task_id(), module=module, type=ttype, created_at=now, sequence_number=n,
                     is_abortable=True, user_task=True, args=ARGS_JSON)
    tx = Tx().setting(f"seq:{module}:0", str(n)).put(rec)  # start_task
    rec = rec.started(now)
    t = time.time()
    stats = json.dumps({"completed": True, "started_at": int(t), "last_run": int(t)})

    def event(seq: int, etype: EventType, **extra: object) -> None:
        ev = Event(sequence=seq, type=etype, task_id=rec.id, module=module, task_type=ttype, time=t,
                   **extra)  # type: ignore[arg-type]
        tx.event(ev.sequence, ev.at, ev.to_dict())

    tx.put(rec)  # begin
    event(seq0 + 1, EventType.STARTED)
    tx.setting(f"type:{module}:{ttype}", stats)
    rec = rec.finished(now)  # complete
    rec = replace(rec, expires_at=now + timedelta(days=10))
    tx.put(rec)
    event(seq0 + 2, EventType.COMPLETED)
    tx.setting(f"type:{module}:{ttype}", stats)
    return tx.sql()


def durable_floor(path: Path, tasks: int, synchronous: str, max_seconds: float) -> tuple[int, float]:
    work = [task_statements(i + 1, EVENTS_PER_TASK * i) for i in range(tasks)]
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute(f"PRAGMA synchronous={synchronous}")
    conn.executescript(SCHEMA)
    done = 0
    t0 = time.perf_counter()
    deadline = t0 + max_seconds
    for stmts in work:
        conn.execute("BEGIN IMMEDIATE")
        for sql, params in stmts:
            conn.execute(sql, params)
        conn.execute("COMMIT")
        done += 1
        if time.perf_counter() > deadline:
            break
    elapsed = time.perf_counter() - t0
    conn.close()
    return done, elapsed


def rows_check(node_db: Path, floor_db: Path) -> str:
    """Compare what the node wrote with what the floor wrote: events per task, body shape, settings."""
    out = []
    for db in (node_db, floor_db):
        conn = sqlite3.connect(db)
        n_tasks = conn.execute("SELECT count(*) FROM tasks").fetchone()[0]
        n_events = conn.execute("SELECT count(*) FROM events").fetchone()[0]
        body = conn.execute("SELECT body FROM tasks ORDER BY rowid DESC LIMIT 1").fetchone()[0]
        avg = conn.execute("SELECT avg(length(body)) FROM tasks").fetchone()[0]
        settings = {k.split(":")[0] for (k,) in conn.execute("SELECT key FROM settings")}
        conn.close()
        out.append((n_events / n_tasks, sorted(json.loads(body)), avg, settings))
    (ne, keys, avg, st), (fe, fkeys, favg, fst) = out
    if abs(ne - fe) > 0.01 or keys != fkeys:
        raise RuntimeError(f"the floor does not write what the node writes: {out}")
    return (f"rows check: node {ne:.2f} events/task, floor {fe:.2f}; same task body fields; mean body "
            f"{avg:.0f} vs {favg:.0f} bytes; settings kinds node {sorted(st)}, floor {sorted(fst)}")


class EventCounter:
    """Completions seen on one WatchEvents stream (replayed from sequence 0, so none is missed); with
    ``finished_only`` the stream is asked for the finishing types alone (``WatchEventsRequest.types``);
    ``batched``: the same events on a WatchEventBatches stream (several per message)."""

    def __init__(self, stub: pb_grpc.TaskManagerStub, *, finished_only: bool = False, batched: bool = False) -> None:
        self._types = list(FINISHED) if finished_only else []
        self._batched = batched
        self.completed: set[str] = set()
        self.done_at: dict[str, float] = {}  # task id -> perf_counter() when its completion arrived
        self._goal = 0
        self._reached = asyncio.Event()
        self._task = asyncio.create_task(self._watch(stub))

    async def _watch(self, stub: pb_grpc.TaskManagerStub) -> None:
        req = pb.WatchEventsRequest(after_sequence=0, types=self._types)
        if self._batched:
            async for batch in stub.WatchEventBatches(req):
                for ev in batch.events:
                    self._take(ev)
        else:
            async for ev in stub.WatchEvents(req):
                self._take(ev)

    def _take(self, ev: pb.Event) -> None:
        if ev.type == "task.completed":
            self.completed.add(ev.task_id)
            self.done_at.setdefault(ev.task_id, time.perf_counter())
            if len(self.completed) >= self._goal:
                self._reached.set()
        elif ev.type in ("task.failed", "task.aborted"):
            raise RuntimeError(f"task {ev.task_id} {ev.type}: {ev.error}")

    async def wait_for(self, n: int, max_seconds: float) -> None:
        self._goal = n
        self._reached.clear()
        if len(self.completed) >= n:
            return
        waiter = asyncio.create_task(self._reached.wait())
        await asyncio.wait({waiter, self._task}, timeout=max_seconds, return_when=asyncio.FIRST_COMPLETED)
        if self._task.done():
            self._task.result()  # raise what the watcher raised
        if not waiter.done():
            waiter.cancel()
            raise RuntimeError(f"only {len(self.completed)} completions after {max_seconds}s")

    def close(self) -> None:
        self._task.cancel()


class ListPoller:
    """Completions seen by polling ListTasks every POLL_S from a cursor past the leading done tasks."""

    PAGE = 100
    POLL_S = 0.05

    def __init__(self, stub: pb_grpc.TaskManagerStub) -> None:
        self._stub = stub
        self._cursor = ""
        self._base = 0  # tasks before the cursor, all done

    async def count(self) -> int:
        while True:
            resp = await self._stub.ListTasks(pb.ListTasksRequest(
                module=NOOP.module, page_size=self.PAGE, page_token=self._cursor), timeout=30)
            states = [t.state for t in resp.tasks]
            if "failed" in states:
                raise RuntimeError("a task failed")
            done = states.count("done")
            if done == self.PAGE and resp.next_page_token:
                self._base += done
                self._cursor = resp.next_page_token
                continue
            return self._base + done

    async def wait_for(self, n: int, max_seconds: float) -> None:
        deadline = time.perf_counter() + max_seconds
        while (c := await self.count()) < n:
            if time.perf_counter() > deadline:
                raise RuntimeError(f"only {c} completions after {max_seconds}s")
            await asyncio.sleep(self.POLL_S)

    def close(self) -> None:
        pass


async def transport_ceiling(*, warmup: int, tasks: int, callers: int, max_seconds: float) -> tuple[float, float]:
    """(StartTask calls/s, server CPU µs per call) of the bare server that records nothing."""
    bare, port = spawn_script("_bare_server.py")
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as ch:
            stub = pb_grpc.TaskManagerStub(ch)
            async def start(_: int) -> object:
                return await stub.StartTask(NOOP, timeout=30)

            await run_load(start, callers=callers, max_calls=warmup, max_seconds=max_seconds)
            cpu0 = cpu_seconds(bare.pid)
            load = await run_load(start, callers=callers, max_calls=tasks, max_seconds=max_seconds)
            cpu = cpu_seconds(bare.pid) - cpu0
    finally:
        bare.terminate()
        bare.wait(10)
    if load.errors or load.calls != tasks:
        raise RuntimeError(f"bare StartTask: {load.errors} errors, {load.calls}/{tasks} answered")
    return load.rate, cpu / tasks * 1e6


async def node_run(address: str, pid: int, *, observe: str, warmup: int, tasks: int, callers: int,
                   max_seconds: float, profile: str | None = None, via_client: bool = False,
                   batched: bool = False) -> dict[str, float]:
    """``via_client``: start through ``AsyncClient.start`` (shared ``StartTasks`` calls) instead of one
    ``StartTask`` call per task on the raw stub. ``batched``: completions seen on ``WatchEventBatches``
    (``observe`` batches: every type; finished: the finishing types)."""
    async with grpc.aio.insecure_channel(address) as ch, AsyncClient(address) as client:
        stub = pb_grpc.TaskManagerStub(ch)
        observer = (ListPoller(stub) if observe == "poll"
                    else EventCounter(stub, finished_only=observe == "finished",
                                      batched=batched or observe == "batches"))
        submitted: list[str] = []
        submitted_at: dict[str, float] = {}

        async def start(_: int) -> object:
            t = time.perf_counter()
            if via_client:
                task_id = (await client.start(NOOP.module, NOOP.type)).id
            else:
                task_id = (await stub.StartTask(NOOP, timeout=30)).task_id
            submitted.append(task_id)
            submitted_at[task_id] = t
            return task_id

        w = await run_load(start, callers=callers, max_calls=warmup, max_seconds=max_seconds)
        await observer.wait_for(warmup, max_seconds)
        with py_spy(pid, profile):
            cpu0, ccpu0 = cpu_seconds(pid), time.process_time()
            t0 = time.perf_counter()
            load = await run_load(start, callers=callers, max_calls=tasks, max_seconds=max_seconds)
            t_submitted = time.perf_counter() - t0
            await observer.wait_for(warmup + tasks, max_seconds)
            elapsed = time.perf_counter() - t0
            cpu, ccpu = cpu_seconds(pid) - cpu0, time.process_time() - ccpu0
        observer.close()
        if load.errors or w.errors or load.calls != tasks:
            raise RuntimeError(f"StartTask errors: {load.errors + w.errors}, accepted {load.calls}/{tasks}")
        if isinstance(observer, EventCounter) and set(submitted) - observer.completed:
            raise RuntimeError(f"{len(set(submitted) - observer.completed)} tasks have no completion event")
        listing = await stub.ListTasks(pb.ListTasksRequest(module=NOOP.module), timeout=60)
        states = {t.task_id: t.state for t in listing.tasks}
        not_done = [tid for tid in submitted if states.get(tid) != "done"]
        if not_done or len(submitted) != warmup + tasks:
            raise RuntimeError(f"{len(not_done)} of {len(submitted)} tasks not listed as done")
    figures = {"rate": tasks / elapsed, "elapsed": elapsed, "submit_rate": tasks / t_submitted,
               "start_p50": load.p50, "cpu_us": cpu / tasks * 1e6, "client_cpu_us": ccpu / tasks * 1e6,
               "listed_done": len(states)}
    if isinstance(observer, EventCounter):  # each completion's arrival is known: submit → done per task
        done = submit_to_done(submitted_at, observer.done_at, submitted[warmup:], elapsed)
        figures |= {"done_p50": done.p50, "done_p99": done.pct(0.99)}
    return figures


async def bench(args: argparse.Namespace, scratch: Path) -> int:
    runs: dict[str, list[dict[str, float]]] = {"poll": [], "events": [], "batches": [], "finished": [], "client": []}
    check = ""
    floors: list[tuple[int, float]] = []
    plan = (["poll"] * args.rounds + ["events", "batches", "finished", "client"] if args.observe == ["both"]
            else args.observe * args.rounds)

    def floor() -> None:
        path = scratch / f"floor-{len(floors)}.sqlite3"
        floors.append(durable_floor(path, args.floor_tasks, args.synchronous, args.max_seconds))

    ceilings: list[tuple[float, float]] = []
    for i, observe in enumerate(plan):
        floor()  # interleaved with the node runs, so both see the same disk and machine state
        ceilings.append(await transport_ceiling(warmup=args.warmup, tasks=args.tasks, callers=args.callers,
                                                max_seconds=args.max_seconds))
        node, _ = start_node(scratch / f"n{i}-{observe}", extra=[
            "--retention-max-per-module", "1000000", "--user-task-ttl", str(30 * 24 * 3600),
            "--sqlite-synchronous", args.synchronous, *NODE_TASKS, *args.node_arg])
        try:
            assert node.proc is not None
            runs[observe].append(await node_run(
                node.address, node.proc.pid, observe="poll" if observe == "client" else observe,
                warmup=args.warmup, tasks=args.tasks, callers=args.callers, max_seconds=args.max_seconds,
                profile=args.profile, via_client=observe == "client"))
        finally:
            stop_node(node)
        if i == 0:
            check = rows_check(scratch / f"n{i}-{observe}" / "taskward.sqlite3", scratch / "floor-0.sqlite3")
    floor()
    floor_rates = sorted(n / s for n, s in floors)
    floor_rate = statistics.median(floor_rates)

    print(f"{args.tasks:,} no-op bench:noop tasks (after {args.warmup} warm-up) per run, {args.callers} "
          f"concurrent StartTask callers, synchronous={args.synchronous}, a fresh node per run; median of "
          f"runs\n")
    label = {"poll": "taskward, completion seen by ListTasks polling (no event subscriber)",
             "events": "taskward, completion seen on a WatchEvents stream (1 subscriber)",
             "batches": "taskward, completion seen on a WatchEventBatches stream (1 subscriber, every type)",
             "finished": "taskward, completion seen on a WatchEvents stream of finishing types only",
             "client": "taskward, started with AsyncClient.start (shared StartTasks calls), completion polled"}
    rows: list[list[object]] = []
    summary: list[list[object]] = []
    for k, rs in runs.items():
        if not rs:
            continue
        r = sorted(rs, key=lambda x: x["rate"])[len(rs) // 2]
        rows.append([label[k], r["rate"], ", ".join(f"{x['rate']:,.0f}" for x in rs),
                     f"{r['elapsed']:.2f}s; submissions alone {r['submit_rate']:,.0f}/s, StartTask p50 "
                     f"{r['start_p50']:.1f} ms; CPU µs/task: node {r['cpu_us']:,.0f}, client "
                     f"{r['client_cpu_us']:,.0f}; ListTasks: {int(r['listed_done']):,} done"])
        ratio = r["rate"] / floor_rate
        ok_ratio, ok_rate = ratio >= TARGET_RATIO[k], r["rate"] >= TARGET_RATE
        who = {"poll": "no subscriber", "events": "1 event subscriber",
               "batches": "1 event subscriber, several events per message",
               "finished": "1 subscriber of task.completed/failed/aborted",
               "client": "no subscriber, started with the client library"}[k]
        summary.append([f"durable no-op tasks/s ({who})",
                        r["rate"], floor_rate, f"{ratio:.3f}",
                        f"≥ {TARGET_RATIO[k]}x ({'met' if ok_ratio else 'MISSED'}), ≥ {TARGET_RATE:,.0f}/s "
                        f"({'met' if ok_rate else 'MISSED'})"])
    ceiling_rate, ceiling_cpu = sorted(ceilings)[len(ceilings) // 2]
    rows.append(["ceiling: bare grpc.aio StartTask, records nothing (same callers)", ceiling_rate,
                 ", ".join(f"{r:,.0f}" for r, _ in ceilings), f"server CPU µs/call {ceiling_cpu:,.0f}"])
    summary.append(["for scale: the transport's ceiling (bare StartTask) vs the floor", ceiling_rate, floor_rate,
                    f"{ceiling_rate / floor_rate:.3f}", "- (bounds the ratios above)"])
    rows.append(["durable floor (raw sqlite3, 1 tx/task, sequential)", floor_rate,
                 ", ".join(f"{x:,.0f}" for x in floor_rates), f"{args.floor_tasks:,} tasks per run"])
    print(md_table(["", "tasks/s", "all runs", "detail"], rows))
    print(f"\n{check}\n")
    print(md_table(["figure", "taskward", "baseline (same run)", "ratio", "target"], summary))
    return 0


def observe_kinds(text: str) -> list[str]:
    kinds = text.split(",")
    known = ("poll", "events", "batches", "finished", "client", "both")
    if any(k not in known for k in kinds) or ("both" in kinds and len(kinds) > 1):
        raise argparse.ArgumentTypeError(f"expected one of {', '.join(known)} (several but both: comma-separated)")
    return kinds


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--tasks", type=int, default=10_000)
    p.add_argument("--warmup", type=int, default=500)
    p.add_argument("--floor-tasks", type=int, default=5_000)
    p.add_argument("--callers", type=int, default=64)
    p.add_argument("--synchronous", default="FULL")
    p.add_argument("--observe", type=observe_kinds, default="both",
                   help="how completion is observed (finished: a stream of the finishing event types only; "
                        "batches: a WatchEventBatches stream; client: polled, the tasks started through the "
                        "client library); both = ROUNDS polling runs, then one run of each other kind; several "
                        "kinds separated by commas: ROUNDS rounds of each, alternating")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--node-arg", action="append", default=[], help="extra argument for `taskward node`")
    p.add_argument("--max-seconds", type=float, default=30.0)
    p.add_argument("--profile", metavar="FILE", help="py-spy the node during the timed phase (collapsed stacks)")
    return run_in_scratch(bench, p.parse_args(), "tasks")


if __name__ == "__main__":
    sys.exit(main())
