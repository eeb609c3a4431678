"""What the REST surface's bounds cost per request: uvicorn's httptools protocol with and without them.

``taskward.api.rest.bounded_http`` counts header bytes, checks the URL length, moves the header deadline
and checks the requests in progress on every request. Two measurements, each protocol in turn:

1. The protocol's own work: one request fed to a connection (parsing and every callback; the app is not
   started, the transport discards what is written), timed with ``timeit`` — the least of many repeats,
   which other processes on the machine hardly move.
2. Served over loopback: a trivial ASGI app (the protocol is what is measured, not FastAPI) in this
   process, driven by keep-alive HTTP/1.1 connections from the same loop; CPU seconds per request (client
   and server together: the difference is the protocol's) and requests per second. Rounds alternate; the
   median and the best (least CPU) round are shown.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
import timeit
from typing import Any

import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.server import ServerState

from bench._common import MachineLoad, md_table
from taskward.api.rest.app import bind_socket
from taskward.api.rest.bounded_http import bounded_protocol
from taskward.processes import free_port
from taskward.resource_limits import RestLimits

BODY = b'{"task_id":"3f2c0000-0000-4000-8000-000000000000","state":"running"}'
REQUEST = b"GET /task_manager/task_status/3f2c0000-0000-4000-8000-000000000000 HTTP/1.1\r\nHost: bench\r\n" \
          b"Authorization: Bearer 0123456789abcdef\r\nAccept: */*\r\n\r\n"


async def app(scope: dict[str, object], receive: object, send: object) -> None:
    assert callable(send)
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(BODY)).encode())]})
    await send({"type": "http.response.body", "body": BODY})


async def drive(port: int, connections: int, requests: int, seconds: float) -> tuple[int, float, float]:
    """(requests answered, CPU seconds, wall seconds) for ``requests`` spread over ``connections``."""
    streams = [await asyncio.open_connection("127.0.0.1", port) for _ in range(connections)]
    done = 0
    deadline = time.monotonic() + seconds

    async def loop(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal done
        while done < requests and time.monotonic() < deadline:
            writer.write(REQUEST)
            await reader.readuntil(b"\r\n\r\n")
            await reader.readexactly(len(BODY))
            done += 1

    cpu0, wall0 = time.process_time(), time.perf_counter()
    await asyncio.gather(*(loop(r, w) for r, w in streams))
    cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
    for _, w in streams:
        w.close()
    return done, cpu, wall


async def one_round(protocol: type[asyncio.Protocol], args: argparse.Namespace) -> tuple[float, float]:
    """(µs of CPU per request, requests per second) with ``protocol``."""
    address = f"127.0.0.1:{free_port()}"
    server = uvicorn.Server(uvicorn.Config(app, http=protocol, log_config=None, access_log=False, lifespan="off",
                                           server_header=False))
    serving = asyncio.create_task(server.serve(sockets=[bind_socket(address)]), name="bench-server")
    while not server.started:  # uvicorn offers no event for it
        if serving.done():
            serving.result()
        await asyncio.sleep(0.01)
    try:
        port = int(address.rpartition(":")[2])
        await drive(port, args.connections, 2000, 0.5)  # warm-up
        done, cpu, wall = await drive(port, args.connections, args.requests, args.seconds)
    finally:
        server.should_exit = True
        await serving
    return cpu / done * 1e6, done / wall


class DiscardingTransport(asyncio.Transport):
    """Where the protocol-only measurement writes: nothing is sent, nothing closes."""

    def write(self, data: bytes | bytearray | memoryview) -> None:
        pass

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"peername": ("127.0.0.1", 50000), "sockname": ("127.0.0.1", 8000)}.get(name, default)

    def is_closing(self) -> bool:
        return False

    def close(self) -> None:
        pass


def protocol_only_us(protocol: type[HttpToolsProtocol], repeats: int) -> float:
    """µs of the protocol's own work per request (least of ``repeats`` runs of 2,000 requests)."""

    class NoApp(protocol):  # type: ignore[valid-type,misc]  # a class made at run time
        def _start_asgi_task(self, cycle: Any, app: Any) -> None:
            cycle.response_complete = True  # as if answered at once: the next request starts a new cycle

    config = uvicorn.Config(app, log_config=None, access_log=False, lifespan="off")
    config.load()
    conn = NoApp(config=config, server_state=ServerState(), app_state={})
    conn.connection_made(DiscardingTransport())
    best = min(timeit.repeat(lambda: conn.data_received(REQUEST), number=2000, repeat=repeats))
    conn.connection_lost(None)
    return best / 2000 * 1e6


async def bench(args: argparse.Namespace) -> int:
    kinds: dict[str, type[HttpToolsProtocol]] = {"httptools, bounded": bounded_protocol(RestLimits()),
                                                 "httptools, plain": HttpToolsProtocol}
    alone = {name: protocol_only_us(protocol, args.repeats) for name, protocol in kinds.items()}
    print(f"1. The protocol's own work per request (least of {args.repeats} runs of 2,000 requests)\n")
    print(md_table(["protocol", "µs/request"], [[name, f"{us:.2f}"] for name, us in alone.items()]))
    bounded_us, plain_us = alone.values()
    print(f"\nthe bounds cost {bounded_us - plain_us:+.2f} µs per request\n")
    results: dict[str, list[tuple[float, float]]] = {k: [] for k in kinds}
    for _ in range(args.rounds):
        for name, protocol in kinds.items():
            results[name].append(await one_round(protocol, args))
    rows = []
    for name, runs in results.items():
        rows.append([name, f"{statistics.median(r[0] for r in runs):.1f}", f"{min(r[0] for r in runs):.1f}",
                     f"{statistics.median(r[1] for r in runs):,.0f}", ", ".join(f"{r[0]:.1f}" for r in runs)])
    print(f"2. Served over loopback: {args.connections} keep-alive connections, {args.rounds} alternating rounds of "
          f"up to {args.requests:,} requests / {args.seconds:g} s\n")
    print(md_table(["protocol", "CPU µs/request, median (client + server)", "best round", "requests/s, median",
                    "CPU µs/request, each round"], rows))
    for label, pick in (("median", statistics.median), ("best", min)):
        bounded, plain = (pick(r[0] for r in results[k]) for k in kinds)
        print(f"\n{label} rounds: the bounds cost {bounded - plain:+.1f} µs of CPU per request "
              f"({(bounded / plain - 1) * 100:+.1f}%)", end="")
    print()
    return 0


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--connections", type=int, default=16)
    p.add_argument("--requests", type=int, default=40_000)
    p.add_argument("--seconds", type=float, default=5.0)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--repeats", type=int, default=200)
    args = p.parse_args()
    machine = MachineLoad()
    code = asyncio.run(bench(args))
    print(f"\n{machine.report()}")
    return code


if __name__ == "__main__":
    sys.exit(main())
