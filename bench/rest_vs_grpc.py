"""task_status throughput: REST through a ``taskward gateway`` vs. the same call over direct gRPC.

One real node, one real gateway process in front of it (``--node`` = that node), one client process,
same run, same machine. The task is a RUNNING builtin sleep, so reading its status never unregisters
it. gRPC: ``GetTaskStatus`` on one grpc.aio channel. REST: ``GET /task_manager/task_status/{id}`` over
keep-alive HTTP/1.1 connections (one per caller) with a minimal asyncio client, decoding the JSON body
(as the gRPC client decodes protobuf), so the client is not what is measured. Both sides use CALLERS
concurrent callers; rounds alternate, and the median round of each is compared.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from pathlib import Path

import grpc
import orjson

from bench._common import Load, cpu_seconds, md_table, py_spy, rounds_main, run_load, start_node, stop_node
from taskward.pb.taskward.v1 import tasks_pb2 as pb
from taskward.pb.taskward.v1 import tasks_pb2_grpc as pb_grpc
from tests.support.rest import GatewayProc

TARGET = 0.8


class HttpConn:
    """One keep-alive HTTP/1.1 connection: GET, read headers, read Content-Length bytes."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, host: str) -> None:
        self.reader, self.writer, self.host = reader, writer, host

    @classmethod
    async def open(cls, host: str, port: int) -> HttpConn:
        reader, writer = await asyncio.open_connection(host, port)
        return cls(reader, writer, f"{host}:{port}")

    async def get(self, path: str) -> tuple[int, bytes]:
        self.writer.write(f"GET {path} HTTP/1.1\r\nHost: {self.host}\r\n\r\n".encode())
        head = await self.reader.readuntil(b"\r\n\r\n")
        status = int(head[9:12])
        length = 0
        for line in head.split(b"\r\n"):
            if line[:15].lower() == b"content-length:":
                length = int(line[15:])
        return status, await self.reader.readexactly(length)

    def close(self) -> None:
        self.writer.close()


async def measure_grpc(address: str, tid: str, pid: int, args: argparse.Namespace) -> tuple[Load, float]:
    async with grpc.aio.insecure_channel(address) as ch:
        stub = pb_grpc.TaskManagerStub(ch)
        req = pb.TaskIdRequest(task_id=tid)

        async def call(_: int) -> object:
            return await stub.GetTaskStatus(req, timeout=10)

        await run_load(call, callers=args.callers, max_calls=args.max_calls, max_seconds=0.5)  # warm-up
        cpu0 = cpu_seconds(pid)
        load = await run_load(call, callers=args.callers, max_calls=args.max_calls, max_seconds=args.seconds)
        return load, (cpu_seconds(pid) - cpu0) / max(load.calls, 1) * 1e6


async def measure_rest(port: int, tid: str, pids: tuple[int, int], args: argparse.Namespace) -> tuple[Load, float]:
    conns = [await HttpConn.open("127.0.0.1", port) for _ in range(args.callers)]
    free: asyncio.Queue[HttpConn] = asyncio.Queue()
    for c in conns:
        free.put_nowait(c)
    path = f"/task_manager/task_status/{tid}"

    async def call(_: int) -> object:
        conn = await free.get()
        try:
            status, body = await conn.get(path)
        finally:
            free.put_nowait(conn)
        if status != 200:
            raise RuntimeError(f"HTTP {status}: {body[:200]!r}")
        return orjson.loads(body)

    try:
        await run_load(call, callers=args.callers, max_calls=args.max_calls, max_seconds=0.5)  # warm-up
        cpu0 = sum(cpu_seconds(p) for p in pids)
        load = await run_load(call, callers=args.callers, max_calls=args.max_calls, max_seconds=args.seconds)
        return load, (sum(cpu_seconds(p) for p in pids) - cpu0) / max(load.calls, 1) * 1e6
    finally:
        for c in conns:
            c.close()


async def bench(args: argparse.Namespace, scratch: Path) -> int:
    node, _ = start_node(scratch / "n1")
    gw = GatewayProc(scratch, [node])
    try:
        gw.start()
        async with grpc.aio.insecure_channel(node.address) as ch:
            stub = pb_grpc.TaskManagerStub(ch)
            tid = (await stub.StartTask(pb.StartTaskRequest(
                module="builtin", type="sleep", args_json='{"duration": 3600, "steps": 3600}'))).task_id
            deadline = time.monotonic() + 10
            while (await stub.GetTaskStatus(pb.TaskIdRequest(task_id=tid))).stats.state != "running":
                if time.monotonic() > deadline:
                    raise RuntimeError("task not running")
                await asyncio.sleep(0.05)
        assert node.proc is not None and gw.proc is not None
        results: dict[str, list[tuple[Load, float]]] = {"grpc": [], "rest": []}
        for i in range(args.rounds):
            results["grpc"].append(await measure_grpc(node.address, tid, node.proc.pid, args))
            with py_spy(gw.proc.pid, args.profile if i == args.rounds - 1 else None):
                results["rest"].append(await measure_rest(gw.port, tid, (node.proc.pid, gw.proc.pid), args))
        for name, runs in results.items():
            if any(r[0].errors for r in runs):
                raise RuntimeError(f"{name}: {sum(r[0].errors for r in runs)} failed calls")
        async with grpc.aio.insecure_channel(node.address) as ch:
            stub = pb_grpc.TaskManagerStub(ch)
            assert (await stub.GetTaskStatus(pb.TaskIdRequest(task_id=tid))).stats.state == "running"
            await stub.AbortTask(pb.TaskIdRequest(task_id=tid))
    finally:
        gw.stop()
        stop_node(node)

    def median_round(runs: list[tuple[Load, float]]) -> tuple[Load, float]:
        return sorted(runs, key=lambda r: r[0].rate)[len(runs) // 2]

    (gl, gcpu), (rl, rcpu) = median_round(results["grpc"]), median_round(results["rest"])
    ratio = rl.rate / gl.rate
    print(f"task_status of a running task, {args.callers} concurrent callers, {args.rounds} alternating rounds "
          f"of {args.seconds:g}s, median round\n")
    rows = [
        ["REST via gateway", rl.rate, rl.p50, rl.pct(0.99), rcpu,
         ", ".join(f"{r[0].rate:,.0f}" for r in results["rest"])],
        ["direct gRPC", gl.rate, gl.p50, gl.pct(0.99), gcpu,
         ", ".join(f"{r[0].rate:,.0f}" for r in results["grpc"])],
    ]
    print(md_table(["path", "calls/s", "p50 ms", "p99 ms", "server CPU µs/call (node+gateway)", "all rounds"],
                   rows))
    ok = ratio >= TARGET
    print()
    print(md_table(["figure", "REST", "gRPC (same run)", "ratio", "target"],
                   [["task_status calls/s", rl.rate, gl.rate, f"{ratio:.2f}",
                     f"≥ {TARGET} ({'met' if ok else 'MISSED'})"]]))
    paired = [r[0].rate / g[0].rate for r, g in zip(results["rest"], results["grpc"], strict=True)]
    print(f"\nper-round ratios: {', '.join(f'{x:.2f}' for x in paired)}; median {statistics.median(paired):.2f}")
    return 0


def main() -> int:
    return rounds_main(__doc__, "rest", bench,
                       profile_help="py-spy the gateway during the last REST round (collapsed stacks)")


if __name__ == "__main__":
    sys.exit(main())
