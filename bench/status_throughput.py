"""GetTaskStatus throughput of a real node vs. a bare grpc.aio handler returning the same message.

The node serves the status of a RUNNING builtin sleep (so reading it does not unregister it). The
baseline is bench/_bare_server.py in its own process, returning a pre-built copy of the very
TaskStatus the node returned (same bytes). One client process, one grpc.aio channel per server,
CALLERS concurrent callers; the two servers are measured alternately, ROUNDS times each, and the
median round of each is compared.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path

import grpc

from bench._common import (
    Load,
    cpu_seconds,
    md_table,
    rounds_main,
    run_load,
    spawn_script,
    start_node,
    stop_node,
)
from taskward.pb.taskward.v1 import tasks_pb2 as pb
from taskward.pb.taskward.v1 import tasks_pb2_grpc as pb_grpc

TARGET = 0.85


async def measure(address: str, task_id: str, pid: int, *, callers: int, seconds: float,
                  max_calls: int) -> tuple[Load, float]:
    async with grpc.aio.insecure_channel(address) as ch:
        stub = pb_grpc.TaskManagerStub(ch)
        req = pb.TaskIdRequest(task_id=task_id)

        async def call(_: int) -> object:
            return await stub.GetTaskStatus(req, timeout=10)

        await run_load(call, callers=callers, max_calls=max_calls, max_seconds=0.5)  # warm-up
        cpu0 = cpu_seconds(pid)
        load = await run_load(call, callers=callers, max_calls=max_calls, max_seconds=seconds)
        cpu_us = (cpu_seconds(pid) - cpu0) / max(load.calls, 1) * 1e6
    if load.errors:
        raise RuntimeError(f"{load.errors} failed calls against {address}")
    return load, cpu_us


async def bench(args: argparse.Namespace, scratch: Path) -> int:
    node, _ = start_node(scratch / "n1")
    bare = None
    try:
        async with grpc.aio.insecure_channel(node.address) as ch:
            stub = pb_grpc.TaskManagerStub(ch)
            tid = (await stub.StartTask(pb.StartTaskRequest(
                module="builtin", type="sleep", args_json='{"duration": 3600, "steps": 3600}'))).task_id
            deadline = time.monotonic() + 10
            while True:
                status = await stub.GetTaskStatus(pb.TaskIdRequest(task_id=tid))
                if status.stats.state == "running":
                    break
                if time.monotonic() > deadline:
                    raise RuntimeError(f"task not running: {status}")
                await asyncio.sleep(0.05)
        blob = status.SerializeToString()
        (scratch / "status.bin").write_bytes(blob)
        bare, bare_port = spawn_script("_bare_server.py", "--status", str(scratch / "status.bin"))
        bare_addr = f"127.0.0.1:{bare_port}"
        async with grpc.aio.insecure_channel(bare_addr) as ch:
            got = await pb_grpc.TaskManagerStub(ch).GetTaskStatus(pb.TaskIdRequest(task_id=tid))
            assert got.ByteSize() == len(blob), (got.ByteSize(), len(blob))

        results: dict[str, list[tuple[Load, float]]] = {"node": [], "bare": []}
        assert node.proc is not None
        targets = {"bare": (bare_addr, bare.pid), "node": (node.address, node.proc.pid)}
        for _ in range(args.rounds):
            for name, (addr, pid) in targets.items():
                results[name].append(await measure(addr, tid, pid, callers=args.callers, seconds=args.seconds,
                                                   max_calls=args.max_calls))
        async with grpc.aio.insecure_channel(node.address) as ch:
            stub = pb_grpc.TaskManagerStub(ch)
            final = await stub.GetTaskStatus(pb.TaskIdRequest(task_id=tid))
            assert final.stats.state == "running", final.stats.state
            await stub.AbortTask(pb.TaskIdRequest(task_id=tid))
    finally:
        stop_node(node)
        if bare is not None:
            bare.terminate()
            bare.wait(10)

    def pooled(runs: list[tuple[Load, float]]) -> tuple[Load, float]:
        """All rounds as one measurement: total calls / total seconds, latencies and CPU pooled."""
        calls = sum(r[0].calls for r in runs)
        load = Load(calls, sum(r[0].errors for r in runs), sum(r[0].seconds for r in runs),
                    [x for r in runs for x in r[0].latencies_ms])
        return load, sum(r[1] * r[0].calls for r in runs) / calls

    (nl, ncpu), (bl, bcpu) = pooled(results["node"]), pooled(results["bare"])
    ratio = nl.rate / bl.rate
    print(f"GetTaskStatus, {len(blob)}-byte TaskStatus, {args.callers} concurrent grpc.aio callers, "
          f"{args.rounds} alternating rounds of {args.seconds:g}s per server, all rounds pooled\n")
    rows = [
        ["taskward node", nl.rate, nl.p50, nl.pct(0.99), ncpu,
         ", ".join(f"{r[0].rate:,.0f}" for r in results["node"])],
        ["bare grpc.aio", bl.rate, bl.p50, bl.pct(0.99), bcpu,
         ", ".join(f"{r[0].rate:,.0f}" for r in results["bare"])],
    ]
    print(md_table(["server", "calls/s", "p50 ms", "p99 ms", "server CPU µs/call", "each round calls/s"], rows))
    paired = [n[0].rate / b[0].rate for n, b in zip(results["node"], results["bare"], strict=True)]
    print(f"\nper-round ratios (node / the bare round just before it): {', '.join(f'{x:.2f}' for x in paired)}; "
          f"server CPU per call ratio (bare / node) {bcpu / ncpu:.2f}\n")
    ok = ratio >= TARGET
    print(md_table(["figure", "taskward", "baseline (same run)", "ratio", "target"],
                   [["GetTaskStatus calls/s", nl.rate, bl.rate, f"{ratio:.2f}",
                     f"≥ {TARGET} ({'met' if ok else 'MISSED'})"]]))
    return 0


def main() -> int:
    return rounds_main(__doc__, "status", bench)


if __name__ == "__main__":
    sys.exit(main())
