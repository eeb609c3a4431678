"""What TLS costs: ``GetTaskStatus`` over gRPC and ``task_status`` over REST, TLS vs. plaintext, same run.

Two real nodes on this machine, each with ``--rest``: one plaintext, one with TLS and client certificates
required on every listener (``--tls-cert/--tls-key/--tls-client-ca/--tls-ca``, certificates from a test CA
made with ``openssl``), so its REST port is HTTPS and REST's own hop to its gRPC is mTLS too. The task read
is a RUNNING builtin sleep (a status read never unregisters it). Connections are opened once per round
(gRPC: one channel; REST: one keep-alive connection per caller, a minimal asyncio HTTP/1.1 client), so the
figures are the per-call cost of encryption, not of handshakes. Rounds alternate between the two nodes;
the median round of each is compared. Every load loop is bounded in calls and seconds; loopback only.
"""

from __future__ import annotations

import argparse
import asyncio
import ssl
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import grpc
import orjson

from bench._common import NODE_COMMAND, Load, cpu_seconds, free_port, md_table, rounds_main, run_load, stop_node
from taskward.pb.taskward.v1 import tasks_pb2 as pb
from taskward.pb.taskward.v1 import tasks_pb2_grpc as pb_grpc
from tests.support.certs import CertPair, TestCA
from tests.support.procs import NodeProc

TARGET = 0.8


@dataclass(frozen=True)
class Side:
    """One node and how a client reaches it."""

    name: str
    node: NodeProc
    rest_port: int
    credentials: grpc.ChannelCredentials | None
    ssl_context: ssl.SSLContext | None

    def channel(self) -> grpc.aio.Channel:
        if self.credentials is None:
            return grpc.aio.insecure_channel(self.node.address)
        return grpc.aio.secure_channel(self.node.address, self.credentials)


class HttpConn:
    """One keep-alive HTTP/1.1 connection (TLS when given a context): GET, read headers, read the body."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, host: str) -> None:
        self.reader, self.writer, self.host = reader, writer, host

    @classmethod
    async def open(cls, host: str, port: int, ctx: ssl.SSLContext | None) -> HttpConn:
        reader, writer = await asyncio.open_connection(host, port, ssl=ctx,
                                                       server_hostname=host if ctx is not None else None)
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


async def measure_grpc(side: Side, tid: str, args: argparse.Namespace) -> tuple[Load, float]:
    assert side.node.proc is not None
    pid = side.node.proc.pid
    async with side.channel() as ch:
        stub = pb_grpc.TaskManagerStub(ch)
        req = pb.TaskIdRequest(task_id=tid)

        async def call(_: int) -> object:
            return await stub.GetTaskStatus(req, timeout=10)

        await run_load(call, callers=args.callers, max_calls=args.max_calls, max_seconds=0.5)  # warm-up
        cpu0 = cpu_seconds(pid)
        load = await run_load(call, callers=args.callers, max_calls=args.max_calls, max_seconds=args.seconds)
        return load, (cpu_seconds(pid) - cpu0) / max(load.calls, 1) * 1e6


async def measure_rest(side: Side, tid: str, args: argparse.Namespace) -> tuple[Load, float]:
    assert side.node.proc is not None
    pid = side.node.proc.pid
    conns = [await HttpConn.open("127.0.0.1", side.rest_port, side.ssl_context) for _ in range(args.callers)]
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
        cpu0 = cpu_seconds(pid)
        load = await run_load(call, callers=args.callers, max_calls=args.max_calls, max_seconds=args.seconds)
        return load, (cpu_seconds(pid) - cpu0) / max(load.calls, 1) * 1e6
    finally:
        for c in conns:
            c.close()


def start_side(name: str, scratch: Path, tls: tuple[TestCA, CertPair, CertPair] | None) -> Side:
    rest = free_port()
    extra = ["--rest", f"127.0.0.1:{rest}"]
    credentials = ctx = None
    if tls is not None:
        ca, server, client = tls
        extra += ["--tls-cert", str(server.cert), "--tls-key", str(server.key), "--tls-client-ca", str(ca.cert),
                  "--tls-ca", str(ca.cert)]
        credentials = grpc.ssl_channel_credentials(ca.cert.read_bytes(), client.key.read_bytes(),
                                                   client.cert.read_bytes())
        ctx = ssl.create_default_context(cafile=str(ca.cert))
        ctx.load_cert_chain(client.cert, client.key)
    node = NodeProc(scratch / name, node_id=name, extra=extra, command=NODE_COMMAND, credentials=credentials)
    node.start(timeout=60)
    return Side(name, node, rest, credentials, ctx)


async def running_task(side: Side) -> str:
    async with side.channel() as ch:
        stub = pb_grpc.TaskManagerStub(ch)
        tid = str((await stub.StartTask(pb.StartTaskRequest(
            module="builtin", type="sleep", args_json='{"duration": 3600, "steps": 3600}'))).task_id)
        deadline = time.monotonic() + 10
        while (await stub.GetTaskStatus(pb.TaskIdRequest(task_id=tid, keep=True))).stats.state != "running":
            if time.monotonic() > deadline:
                raise RuntimeError("task not running")
            await asyncio.sleep(0.05)
    return tid


async def abort(side: Side, tid: str) -> None:
    async with side.channel() as ch:
        stub = pb_grpc.TaskManagerStub(ch)
        assert (await stub.GetTaskStatus(pb.TaskIdRequest(task_id=tid, keep=True))).stats.state == "running"
        await stub.AbortTask(pb.TaskIdRequest(task_id=tid))


Results = dict[str, list[tuple[Load, float]]]


def median_round(runs: list[tuple[Load, float]]) -> tuple[Load, float]:
    return sorted(runs, key=lambda r: r[0].rate)[len(runs) // 2]


async def bench(args: argparse.Namespace, scratch: Path) -> int:
    ca = TestCA(scratch / "ca")
    sides: list[Side] = []
    try:
        sides.append(start_side("plain", scratch, None))
        sides.append(start_side("tls", scratch, (ca, ca.issue("server"), ca.issue("client"))))
        tids = {s.name: await running_task(s) for s in sides}
        results: Results = {f"{surface} {s.name}": [] for surface in ("grpc", "rest") for s in sides}
        for _ in range(args.rounds):
            for s in sides:
                results[f"grpc {s.name}"].append(await measure_grpc(s, tids[s.name], args))
            for s in sides:
                results[f"rest {s.name}"].append(await measure_rest(s, tids[s.name], args))
        for name, runs in results.items():
            if any(r[0].errors for r in runs):
                raise RuntimeError(f"{name}: {sum(r[0].errors for r in runs)} failed calls")
        for s in sides:
            await abort(s, tids[s.name])
    finally:
        for s in sides:
            stop_node(s.node)
    report(results, args)
    return 0


def report(results: Results, args: argparse.Namespace) -> None:
    print(f"one running task's status, {args.callers} concurrent callers, {args.rounds} alternating rounds of "
          f"{args.seconds:g}s, median round; TLS = TLS 1.3 with client certificates required\n")
    rows = []
    for name, runs in results.items():
        load, cpu = median_round(runs)
        rows.append([name, load.rate, load.p50, load.pct(0.99), cpu, ", ".join(f"{r[0].rate:,.0f}" for r in runs)])
    print(md_table(["surface / node", "calls/s", "p50 ms", "p99 ms", "node CPU µs/call", "all rounds"], rows))
    print()
    figures = []
    for surface, label in (("grpc", "GetTaskStatus (gRPC)"), ("rest", "task_status (REST)")):
        tls, plain = median_round(results[f"{surface} tls"])[0], median_round(results[f"{surface} plain"])[0]
        ratio = tls.rate / plain.rate
        paired = [t[0].rate / p[0].rate for t, p in zip(results[f"{surface} tls"], results[f"{surface} plain"],
                                                        strict=True)]
        figures.append([f"{label} calls/s", tls.rate, plain.rate, f"{ratio:.2f}",
                        f"{statistics.median(paired):.2f}", f"≥ {TARGET} ({'met' if ratio >= TARGET else 'MISSED'})"])
    print(md_table(["figure", "TLS", "plaintext (same run)", "ratio", "median per-round ratio", "target"], figures))


def main() -> int:
    return rounds_main(__doc__, "tls", bench)


if __name__ == "__main__":
    sys.exit(main())
