"""Server CPU per call of a grpc.aio server whose methods are registered (what grpc's generated
``add_*Servicer_to_server`` does) against the same server serving them as generic handlers only (what
taskward's ``WrappingServer`` does).

Two server processes, the same servicer (TaskManager, a trivial ListModules), one client process with
32 concurrent callers on one channel; rounds of a few seconds alternate between the two servers and
the order flips every round. Server CPU comes from /proc. Every loop is bounded in time and in calls.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import subprocess
import sys
import time
from typing import Any

import grpc

from bench._common import cpu_seconds, md_table
from taskward.pb.taskward.v1 import tasks_pb2 as pb
from taskward.pb.taskward.v1 import tasks_pb2_grpc as pb_grpc
from taskward.processes import free_port

MODES = ("registered", "generic")
CALLERS = 32
MAX_CALLS = 200_000


class Modules(pb_grpc.TaskManagerServicer):
    async def ListModules(self, request: pb.ListModulesRequest, context: Any) -> pb.ListModulesResponse:
        return pb.ListModulesResponse(modules=["m"])


class GenericOnly:
    """Stands for the server: generic handlers pass, registered ones are left out (as ``WrappingServer``)."""

    def __init__(self, server: grpc.aio.Server) -> None:
        self._server = server

    def add_generic_rpc_handlers(self, handlers: Any) -> None:
        self._server.add_generic_rpc_handlers(handlers)

    def add_registered_method_handlers(self, service: str, handlers: Any) -> None:
        pass


async def serve(mode: str, port: int) -> None:
    server = grpc.aio.server()
    pb_grpc.add_TaskManagerServicer_to_server(Modules(), server if mode == "registered" else GenericOnly(server))
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    await server.wait_for_termination()


async def load(port: int, seconds: float) -> int:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as ch:
        async with asyncio.timeout(30):
            await ch.channel_ready()
        stub = pb_grpc.TaskManagerStub(ch)
        calls = 0
        end = time.monotonic() + seconds

        async def caller() -> None:
            nonlocal calls
            while time.monotonic() < end and calls < MAX_CALLS:
                await stub.ListModules(pb.ListModulesRequest(), timeout=5)
                calls += 1

        await asyncio.gather(*(caller() for _ in range(CALLERS)))
        return calls


def main() -> int:
    p = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    p.add_argument("--rounds", type=int, default=6)
    p.add_argument("--seconds", type=float, default=3.0)
    p.add_argument("--serve", nargs=2, metavar=("MODE", "PORT"), help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.serve:
        asyncio.run(serve(args.serve[0], int(args.serve[1])))
        return 0
    servers = {m: (free_port(), m) for m in MODES}
    procs = {m: subprocess.Popen([sys.executable, "-m", "bench.grpc_registration", "--serve", m, str(port)])
             for m, (port, _) in servers.items()}
    per_call: dict[str, list[float]] = {m: [] for m in MODES}
    rate: dict[str, list[float]] = {m: [] for m in MODES}
    try:
        for r in range(args.rounds):
            for mode in MODES if r % 2 == 0 else MODES[::-1]:
                pid, port = procs[mode].pid, servers[mode][0]
                c0, t0 = cpu_seconds(pid), time.monotonic()
                calls = asyncio.run(load(port, args.seconds))
                per_call[mode].append((cpu_seconds(pid) - c0) / calls * 1e6)
                rate[mode].append(calls / (time.monotonic() - t0))
    finally:
        for proc in procs.values():
            proc.terminate()
            proc.wait(10)
    rows = [[m, f"{statistics.median(per_call[m]):.0f}", f"{statistics.median(rate[m]):,.0f}",
             ", ".join(f"{x:.0f}" for x in per_call[m])] for m in MODES]
    print(md_table(["methods served as", "server CPU µs/call, median", "calls/s, median", "µs/call per round"], rows))
    ratio = statistics.median(per_call["generic"]) / statistics.median(per_call["registered"])
    print(f"\ngeneric / registered server CPU per call: {ratio:.2f} ({args.rounds} rounds of {args.seconds:g} s each)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
