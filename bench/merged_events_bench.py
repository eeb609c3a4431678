"""Merged event stream throughput: the gateway's ``GET /events`` over three nodes vs. one node's own
``--rest`` ``/events``, same run, same machine.

Three real nodes (n1 also serves ``--rest``) and a real gateway in front of all three. Before the clock,
each node runs TASKS ``builtin:sleep`` tasks (duration 0, STEPS steps), so each retains exactly
TASKS x (STEPS + 3) events (started, STEPS + 1 progress, completed). Each round then reads one stream
from ``after=0`` (a replay: every event is already committed, so the stream's own delivery is what is
timed, not how fast tasks produce events) until it has every retained event:

- single: n1's ``/events`` on its own ``--rest`` port (one node's events);
- merged: the gateway's ``/events`` (all three nodes' events, each with ``node`` and a resume token);
- merged, gRPC: ``AsyncClient.cluster_events(after=0)`` over the same three nodes (no HTTP).

The reader is a bare asyncio socket that counts ``data:`` lines, so the client is not what is measured.
Rounds alternate; the median round of each is compared (events/s delivered to the reader).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from pathlib import Path

import grpc

from bench._common import NODE_COMMAND, NodeProc, cpu_seconds, free_port, md_table, run_in_scratch, stop_node
from taskward import AsyncClient
from taskward.pb.taskward.v1 import tasks_pb2 as pb
from taskward.pb.taskward.v1 import tasks_pb2_grpc as pb_grpc
from tests.support.rest import GatewayProc, wait_http

TARGET = 0.8
MARK = b"\ndata: "


async def sse_count(host: str, port: int, path: str, want: int, max_seconds: float) -> tuple[int, float]:
    """Read ``path`` until ``want`` events arrived (or ``max_seconds`` passed): (events, seconds)."""
    reader, writer = await asyncio.open_connection(host, port)
    t0 = time.perf_counter()
    writer.write(f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nAccept: text/event-stream\r\n"
                 "Connection: close\r\n\r\n".encode())
    seen, tail = 0, b""
    try:
        async with asyncio.timeout(max_seconds):
            while seen < want:
                chunk = await reader.read(256 * 1024)
                if not chunk:
                    break
                data = tail + chunk
                seen += data.count(MARK)
                tail = data[-(len(MARK) - 1):]
    except TimeoutError:
        pass
    elapsed = time.perf_counter() - t0
    writer.close()
    return seen, elapsed


async def grpc_count(addresses: list[str], want: int, max_seconds: float) -> tuple[int, float]:
    seen = 0
    t0 = time.perf_counter()
    async with AsyncClient(addresses) as client:
        stream = client.cluster_events(after=0)
        try:
            async with asyncio.timeout(max_seconds):
                async for _ in stream:
                    seen += 1
                    if seen >= want:
                        break
        except TimeoutError:
            pass
        finally:
            await stream.aclose()
    return seen, time.perf_counter() - t0


async def produce(address: str, tasks: int, steps: int, max_seconds: float) -> None:
    """``tasks`` sleeps on one node, all finished (so their events are committed and retained)."""
    async with grpc.aio.insecure_channel(address) as ch:
        stub = pb_grpc.TaskManagerStub(ch)
        req = pb.StartTaskRequest(module="builtin", type="sleep", args_json=json.dumps({"duration": 0, "steps": steps}))
        ids: list[str] = []
        sem = asyncio.Semaphore(32)

        async def one() -> None:
            async with sem:
                ids.append((await stub.StartTask(req, timeout=30)).task_id)

        await asyncio.gather(*(one() for _ in range(tasks)))
        for tid in ids:
            st = await stub.WaitTask(pb.WaitTaskRequest(task_id=tid, timeout=max_seconds), timeout=max_seconds + 5)
            if st.stats.state != "done":
                raise RuntimeError(f"task {tid} ended {st.stats.state}")


async def bench(args: argparse.Namespace, scratch: Path) -> int:
    rest_port = free_port()
    nodes = []
    gateway: GatewayProc | None = None
    try:
        for i in (1, 2, 3):
            extra = ["--retention-max-per-module", "100000", *(["--rest", f"127.0.0.1:{rest_port}"] if i == 1 else [])]
            nodes.append(NodeProc(scratch / f"n{i}", node_id=f"n{i}", extra=extra, command=NODE_COMMAND).start(60))
        wait_http(f"http://127.0.0.1:{rest_port}", nodes[0].proc, 30, nodes[0].log)
        gateway = GatewayProc(scratch, nodes).start()
        per_node = args.tasks * (args.steps + 3)
        t0 = time.perf_counter()
        await asyncio.gather(*(produce(n.address, args.tasks, args.steps, args.max_seconds) for n in nodes))
        print(f"produced {3 * per_node:,} events ({per_node:,} per node) in {time.perf_counter() - t0:.1f}s\n")

        gw_port = int(gateway.address.rpartition(":")[2])
        runs: dict[str, list[tuple[int, float, float]]] = {"single": [], "merged": [], "grpc": []}
        gw_pid = gateway.proc.pid if gateway.proc else 0
        n1_pid = nodes[0].proc.pid if nodes[0].proc else 0
        for _ in range(args.rounds):
            c0 = cpu_seconds(n1_pid)
            got, secs = await sse_count("127.0.0.1", rest_port, "/events?after=0", per_node, args.max_seconds)
            runs["single"].append((got, secs, cpu_seconds(n1_pid) - c0))
            c0 = cpu_seconds(gw_pid)
            got, secs = await sse_count("127.0.0.1", gw_port, "/events?after=0", 3 * per_node, args.max_seconds)
            runs["merged"].append((got, secs, cpu_seconds(gw_pid) - c0))
            got, secs = await grpc_count([n.address for n in nodes], 3 * per_node, args.max_seconds)
            runs["grpc"].append((got, secs, 0.0))
        for name, rs in runs.items():
            want = per_node if name == "single" else 3 * per_node
            short = [got for got, _, _ in rs if got != want]
            if short:
                raise RuntimeError(f"{name}: a round delivered {short[0]:,} of {want:,} events")
    finally:
        if gateway is not None:
            gateway.stop()
        for n in nodes:
            stop_node(n)

    def rate(rs: list[tuple[int, float, float]]) -> float:
        return statistics.median(got / secs for got, secs, _ in rs)

    label = {"single": "one node's `/events` (n1 `--rest`)", "merged": "gateway `/events`, 3 nodes merged",
             "grpc": "`AsyncClient.cluster_events`, 3 nodes merged"}
    rows = [[label[k], f"{rate(rs):,.0f}", ", ".join(f"{g / s:,.0f}" for g, s, _ in rs),
             f"{statistics.median(c / g * 1e6 for g, _, c in rs):.1f}" if k != "grpc" else "—"]
            for k, rs in runs.items()]
    print(f"{args.rounds} rounds, replay from after=0 of {per_node:,} events per node; median round\n")
    print(md_table(["stream", "events/s", "all rounds", "server CPU µs/event (n1 or gateway)"], rows))
    ratio = rate(runs["merged"]) / rate(runs["single"])
    ok = ratio >= TARGET
    print(f"\n| figure | merged | single node (same run) | ratio | target |\n|---|---|---|---|---|\n"
          f"| events/s delivered | {rate(runs['merged']):,.0f} | {rate(runs['single']):,.0f} | {ratio:.2f} | "
          f"≥ {TARGET}x ({'met' if ok else 'MISSED'}) |")
    return 0 if ok else 1


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tasks", type=int, default=200, help="tasks per node")
    p.add_argument("--steps", type=int, default=97, help="steps per task (events per task = steps + 3)")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--max-seconds", type=float, default=120.0)
    return run_in_scratch(bench, p.parse_args(), "merged-events")


if __name__ == "__main__":
    sys.exit(main())
