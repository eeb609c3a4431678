"""The client library's cost, against the raw generated stub and the node's own task bench, same run.

(a) Status reads of a RUNNING ``builtin:sleep`` (so nothing is unregistered; both sides send ``keep``):
    - async: ``AsyncTaskHandle.status()`` (owner routing, error mapping, a ``TaskStatus`` built from the
      answer) vs ``TaskManagerStub.GetTaskStatus`` on the *same* ``grpc.aio`` channel (the client's own),
      in the same event loop, CALLERS concurrent coroutines;
    - sync: ``TaskHandle.status()`` from THREADS caller threads vs the raw stub called the same way,
      i.e. a coroutine awaiting ``stub.GetTaskStatus(...)`` handed to the client's loop with
      ``asyncio.run_coroutine_threadsafe`` (what ``Client`` does with its own), on the same channel, from
      as many threads.
    Client and raw run alternately, ROUNDS times each; all rounds of each side are pooled.
(b) Durable no-op ``bench:noop`` tasks (a body that does nothing), submit → done: through
    ``AsyncClient.start`` (CALLERS concurrent starts) with completion seen on ``AsyncClient.events(after=0)``
    (one subscriber, every listed node followed), vs ``bench.task_throughput.node_run`` with the same
    observation (one raw WatchEvents subscriber), each on a fresh node with the same flags, alternately;
    the median run of each is compared. Informational: the same tasks through ``handle.wait()`` per task
    (one more call per task than the baseline makes).

127.0.0.1 only; every loop is bounded in calls and seconds.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench._common import Load, md_table, run_in_scratch, run_load, start_node, stop_node
from bench.task_throughput import NODE_TASKS, NOOP, node_run
from taskward import AsyncClient, Client
from taskward.client.node_pool import NodePool
from taskward.pb.taskward.v1 import tasks_pb2 as pb
from taskward.pb.taskward.v1 import tasks_pb2_grpc as pb_grpc

TARGET = 0.9
NODE_FLAGS = [*NODE_TASKS, "--retention-max-per-module", "1000000", "--user-task-ttl", str(30 * 24 * 3600)]


def pooled(runs: list[Load]) -> Load:
    return Load(sum(r.calls for r in runs), sum(r.errors for r in runs), sum(r.seconds for r in runs),
                [x for r in runs for x in r.latencies_ms])


def thread_load(call: Callable[[], object], *, threads: int, max_calls: int, max_seconds: float) -> Load:
    """``threads`` threads call ``call()`` until ``max_calls`` calls were started or ``max_seconds`` passed."""
    lock = threading.Lock()
    issued = errors = 0
    lat: list[float] = []
    deadline = time.perf_counter() + max_seconds

    def worker() -> None:
        nonlocal issued, errors
        mine: list[float] = []
        while True:
            with lock:
                if issued >= max_calls or time.perf_counter() >= deadline:
                    break
                issued += 1
            t = time.perf_counter()
            try:
                call()
            except Exception:
                with lock:
                    errors += 1
                continue
            mine.append((time.perf_counter() - t) * 1000)
        with lock:
            lat.extend(mine)

    t0 = time.perf_counter()
    workers = [threading.Thread(target=worker) for _ in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    return Load(len(lat), errors, time.perf_counter() - t0, lat)


async def running_task(client: AsyncClient) -> str:
    handle = await client.start("builtin", "sleep", duration=3600, steps=3600)
    deadline = time.monotonic() + 10
    while (await handle.status()).state != "running":
        if time.monotonic() > deadline:
            raise RuntimeError("the task did not start")
        await asyncio.sleep(0.05)
    return handle.id


async def status_async(address: str, task_id: str, args: argparse.Namespace,
                       cpu: dict[str, float]) -> dict[str, list[Load]]:
    out: dict[str, list[Load]] = {"client": [], "raw": []}
    async with AsyncClient(address) as client:
        handle = client.task(task_id)
        pool: NodePool = client._pool()
        node = pool.nodes[0]
        stub = pb_grpc.TaskManagerStub(node.channel)  # the client's own channel
        req = pb.TaskIdRequest(task_id=task_id, keep=True)

        async def raw(_: int) -> object:
            return await stub.GetTaskStatus(req, timeout=30.0, metadata=node.metadata)

        async def lib(_: int) -> object:
            return await handle.status()

        calls = {"raw": raw, "client": lib}
        for call in calls.values():  # warm-up
            await run_load(call, callers=args.callers, max_calls=args.max_calls, max_seconds=0.5)
        for _ in range(args.rounds):
            for name, call in calls.items():
                cpu0 = time.process_time()
                load = await run_load(call, callers=args.callers, max_calls=args.max_calls, max_seconds=args.seconds)
                cpu[name] += time.process_time() - cpu0
                if load.errors:
                    raise RuntimeError(f"{load.errors} failed {name} calls")
                out[name].append(load)
    return out


def status_sync(address: str, task_id: str, args: argparse.Namespace,
                cpu: dict[str, float]) -> dict[str, list[Load]]:
    out: dict[str, list[Load]] = {"client": [], "raw": []}
    with Client(address) as client:
        handle = client.task(task_id)
        loop = client._runner.loop

        async def channel_stub() -> tuple[pb_grpc.TaskManagerStub, Any]:
            node = client._async._pool().nodes[0]
            return pb_grpc.TaskManagerStub(node.channel), node.metadata

        stub, metadata = client._runner.run(channel_stub())
        req = pb.TaskIdRequest(task_id=task_id, keep=True)

        async def get() -> object:  # the call is made on the loop, as the client's coroutine makes its own
            return await stub.GetTaskStatus(req, timeout=30.0, metadata=metadata)

        def raw() -> object:
            return asyncio.run_coroutine_threadsafe(get(), loop).result()

        calls: dict[str, Callable[[], object]] = {"raw": raw, "client": handle.status}
        for call in calls.values():
            thread_load(call, threads=args.threads, max_calls=args.max_calls, max_seconds=0.5)
        for _ in range(args.rounds):
            for name, call in calls.items():
                cpu0 = time.process_time()
                load = thread_load(call, threads=args.threads, max_calls=args.max_calls, max_seconds=args.seconds)
                cpu[name] += time.process_time() - cpu0
                if load.errors:
                    raise RuntimeError(f"{load.errors} failed {name} calls")
                out[name].append(load)
    return out


async def client_run(address: str, *, warmup: int, tasks: int, callers: int, max_seconds: float,
                     via_wait: bool = False) -> dict[str, float]:
    """``node_run``'s measurement, through the client library: starts via ``AsyncClient.start``, completion
    seen on ``AsyncClient.events(after=0)`` (or, ``via_wait``, each caller waits for its own task)."""
    async with AsyncClient(address) as client:
        completed: set[str] = set()
        goal = 0
        reached = asyncio.Event()
        stream = client.events(after=0)

        async def count() -> None:
            async for ev in stream:
                if ev["type"] == "task.completed":
                    completed.add(ev["task_id"])
                    if len(completed) >= goal:
                        reached.set()
                elif ev["type"] in ("task.failed", "task.aborted"):
                    raise RuntimeError(f"task {ev['task_id']} {ev['type']}: {ev['error']}")

        counter = asyncio.create_task(count())
        submitted: list[str] = []

        async def start(_: int) -> object:
            handle = await client.start(NOOP.module, NOOP.type)  # the body node_run starts
            submitted.append(handle.id)
            if via_wait:
                await handle.wait(max_seconds)
            return handle

        async def until(n: int) -> None:
            nonlocal goal
            goal = n
            reached.clear()
            if len(completed) >= n:
                return
            waiter = asyncio.create_task(reached.wait())
            await asyncio.wait({waiter, counter}, timeout=max_seconds, return_when=asyncio.FIRST_COMPLETED)
            if counter.done():
                counter.result()
            if not waiter.done():
                waiter.cancel()
                raise RuntimeError(f"only {len(completed)} completions after {max_seconds}s")

        w = await run_load(start, callers=callers, max_calls=warmup, max_seconds=max_seconds)
        await until(warmup)
        cpu0 = time.process_time()
        t0 = time.perf_counter()
        load = await run_load(start, callers=callers, max_calls=tasks, max_seconds=max_seconds)
        t_submitted = time.perf_counter() - t0
        await until(warmup + tasks)
        elapsed = time.perf_counter() - t0
        ccpu = time.process_time() - cpu0
        counter.cancel()
        await stream.aclose()
        if load.errors or w.errors or load.calls != tasks:
            raise RuntimeError(f"start errors: {load.errors + w.errors}, accepted {load.calls}/{tasks}")
        if set(submitted) - completed:
            raise RuntimeError(f"{len(set(submitted) - completed)} tasks have no completion event")
        states = {t.id: t.state for t in await client.tasks(NOOP.module)}
        not_done = [tid for tid in submitted if states.get(tid) != "done"]
        if not_done:
            raise RuntimeError(f"{len(not_done)} of {len(submitted)} tasks not listed as done")
    return {"rate": tasks / elapsed, "elapsed": elapsed, "submit_rate": tasks / t_submitted, "start_p50": load.p50,
            "client_cpu_us": ccpu / tasks * 1e6}


async def tasks_bench(args: argparse.Namespace, scratch: Path) -> dict[str, list[dict[str, float]]]:
    runs: dict[str, list[dict[str, float]]] = {"raw": [], "client": [], "wait": []}
    plan = ["raw", "client"] * args.task_rounds + (["wait"] if args.wait_round else [])
    for i, kind in enumerate(plan):
        node, _ = start_node(scratch / f"t{i}-{kind}", NODE_FLAGS)
        try:
            assert node.proc is not None
            if kind == "raw":
                runs[kind].append(await node_run(node.address, node.proc.pid, observe="events", warmup=args.warmup,
                                                 tasks=args.tasks, callers=args.callers,
                                                 max_seconds=args.max_seconds))
            else:
                runs[kind].append(await client_run(node.address, warmup=args.warmup, tasks=args.tasks,
                                                   callers=args.callers, max_seconds=args.max_seconds,
                                                   via_wait=kind == "wait"))
        finally:
            stop_node(node)
    return runs


async def bench(args: argparse.Namespace, scratch: Path) -> int:
    summary: list[list[object]] = []
    if args.part in ("status", "both"):
        summary += await status_part(args, scratch)
    if args.part in ("tasks", "both"):
        summary += await tasks_part(args, scratch)
    print()
    print(md_table(["figure", "client library", "baseline (same run)", "ratio", "target"], summary))
    return 0


async def status_part(args: argparse.Namespace, scratch: Path) -> list[list[object]]:
    node, _ = start_node(scratch / "status")
    try:
        async with AsyncClient(node.address) as client:
            tid = await running_task(client)
        a = await status_async(node.address, tid, args, cpu_a := {"client": 0.0, "raw": 0.0})
        s = await asyncio.to_thread(status_sync, node.address, tid, args, cpu_s := {"client": 0.0, "raw": 0.0})
        async with AsyncClient(node.address) as client:
            assert (await client.task(tid).status()).state == "running"
            await client.task(tid).abort()
    finally:
        stop_node(node)

    print(f"(a) status of a running task; async: {args.callers} coroutines on one loop; sync: {args.threads} "
          f"threads; {args.rounds} alternating rounds of {args.seconds:g}s per side, pooled\n")
    rows = []
    summary: list[list[object]] = []
    for label, res, cpu in (("async", a, cpu_a), ("sync", s, cpu_s)):
        lib, raw = pooled(res["client"]), pooled(res["raw"])
        ratio = lib.rate / raw.rate
        paired = [c.rate / r.rate for c, r in zip(res["client"], res["raw"], strict=True)]
        rows.append([f"{label} client `status()`", lib.rate, lib.p50, lib.pct(0.99),
                     cpu["client"] / max(lib.calls, 1) * 1e6, ", ".join(f"{x.rate:,.0f}" for x in res["client"])])
        rows.append([f"{label} raw stub, same channel{', same loop' if label == 'sync' else ''}", raw.rate, raw.p50,
                     raw.pct(0.99), cpu["raw"] / max(raw.calls, 1) * 1e6,
                     ", ".join(f"{x.rate:,.0f}" for x in res["raw"])])
        summary.append([f"{label} client status calls/s", lib.rate, raw.rate, f"{ratio:.2f}",
                        f"≥ {TARGET} ({'met' if ratio >= TARGET else 'MISSED'}); per round "
                        + ", ".join(f"{x:.2f}" for x in paired)])
    print(md_table(["", "calls/s", "p50 ms", "p99 ms", "client CPU µs/call", "each round calls/s"], rows))
    print()
    return summary


def median(rs: list[dict[str, float]]) -> dict[str, float]:
    return sorted(rs, key=lambda x: x["rate"])[len(rs) // 2]


async def tasks_part(args: argparse.Namespace, scratch: Path) -> list[list[object]]:
    tasks = await tasks_bench(args, scratch)

    print(f"(b) {args.tasks:,} durable no-op tasks per run (after {args.warmup} warm-up), {args.callers} "
          f"concurrent starts, a fresh node per run, median run\n")
    trows = []
    label = {"raw": "node bench (`task_throughput.node_run`, raw stub, 1 WatchEvents subscriber)",
             "client": "`AsyncClient.start` + `AsyncClient.events(after=0)`",
             "wait": "`AsyncClient.start` + `handle.wait()` per task (informational)"}
    for kind, rs in tasks.items():
        if rs:
            r = median(rs)
            trows.append([label[kind], r["rate"], ", ".join(f"{x['rate']:,.0f}" for x in rs),
                          f"submissions alone {r['submit_rate']:,.0f}/s; start p50 {r['start_p50']:.1f} ms; "
                          f"client CPU {r['client_cpu_us']:,.0f} µs/task"])
    print(md_table(["", "tasks/s", "all runs", "detail"], trows))
    lib_rate, raw_rate = median(tasks["client"])["rate"], median(tasks["raw"])["rate"]
    ratio = lib_rate / raw_rate
    paired = [c["rate"] / r["rate"] for c, r in zip(tasks["client"], tasks["raw"], strict=True)]
    return [["durable no-op tasks/s through the client", lib_rate, raw_rate, f"{ratio:.2f}",
             f"≥ {TARGET} ({'met' if ratio >= TARGET else 'MISSED'}); per run pair "
             + ", ".join(f"{x:.2f}" for x in paired) + f" (median {statistics.median(paired):.2f})"]]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--part", choices=["status", "tasks", "both"], default="both")
    p.add_argument("--callers", type=int, default=32, help="concurrent coroutines (a), concurrent starts (b)")
    p.add_argument("--threads", type=int, default=8, help="caller threads of the sync client (a)")
    p.add_argument("--seconds", type=float, default=2.5)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--max-calls", type=int, default=200_000)
    p.add_argument("--tasks", type=int, default=5_000)
    p.add_argument("--warmup", type=int, default=500)
    p.add_argument("--task-rounds", type=int, default=3)
    p.add_argument("--wait-round", action=argparse.BooleanOptionalAction, default=True)
    p.add_argument("--max-seconds", type=float, default=60.0)
    return run_in_scratch(bench, p.parse_args(), "client")


if __name__ == "__main__":
    sys.exit(main())
