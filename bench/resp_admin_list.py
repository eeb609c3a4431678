"""Pipelined ``TASK.ADMIN LIST`` throughput of the RESP3 admin surface with 1,000 registered task types.

A task module declaring TYPES no-op task types is generated into a temp dir (put on PYTHONPATH) and
loaded by a real node with ``--tasks``. One client process, one TCP connection, pipelines of PIPELINE
commands, CALLS commands per round (bounded also by MAX_SECONDS). The baseline is the same client
sending pipelined ``PING``s to the same server on the same connection: it measures what the
connection, the parser and the event loop cost per command, so the ratio shows what answering
``TASK.ADMIN LIST`` adds on top. Rounds alternate LIST and PING; the median round of each is reported.
The client counts reply bytes instead of decoding them (every LIST reply is the same size while no
task runs, and the first reply is decoded and checked), so the client is not the bottleneck.
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import sys
import time
from pathlib import Path

from bench._common import REPO, NodeProc, cpu_seconds, free_port, md_table, scratch_dir, stop_node
from taskward.api.resp.commands import TypeListCache
from taskward.model import TypeStats

TARGET_RATE = 5000.0


def write_task_module(directory: Path, types: int) -> str:
    """A module with ``types`` distinct no-op task types across ten modules (``bench0:type-0000`` ...)."""
    lines = ["from taskward import task_type", "", "", "def _make():", "    async def body(ctx) -> None:",
             "        return None", "", "    return body", ""]
    lines += [f't{i:05d} = task_type("bench{i % 10}", "type-{i:04d}")(_make())' for i in range(types)]
    (directory / "bench_many_types.py").write_text("\n".join(lines) + "\n")
    return "bench_many_types"


def command(*args: str) -> bytes:
    return b"".join([b"*%d\r\n" % len(args), *(b"$%d\r\n%s\r\n" % (len(a), a.encode()) for a in args)])


def read_exact(sock: socket.socket, buf: bytearray, n: int) -> None:
    """Receive exactly ``n`` bytes into ``buf`` (reused between calls, so no per-reply allocation)."""
    view = memoryview(buf)
    got = 0
    while got < n:
        k = sock.recv_into(view[got:n])
        if not k:
            raise ConnectionError("server closed the connection")
        got += k


def one_reply_size(sock: socket.socket, request: bytes) -> tuple[int, bytes]:
    """Send one request and learn its reply's size by waiting until the stream goes quiet."""
    sock.sendall(request)
    data = b""
    sock.settimeout(0.3)
    try:
        while True:
            chunk = sock.recv(1 << 20)
            if not chunk:
                break
            data += chunk
    except TimeoutError:
        pass
    sock.settimeout(30)
    return len(data), data


def measure(sock: socket.socket, request: bytes, reply_size: int, *, calls: int, pipeline: int,
            max_seconds: float, pid: int) -> tuple[float, float, int]:
    """Pipelined calls until ``calls`` done or ``max_seconds`` passed; returns calls/s, node CPU µs per
    call, calls made."""
    batch = request * pipeline
    buf = bytearray(reply_size * pipeline)
    done = 0
    cpu0 = cpu_seconds(pid)
    t0 = time.perf_counter()
    deadline = t0 + max_seconds
    while done < calls and time.perf_counter() < deadline:
        sock.sendall(batch)
        read_exact(sock, buf, len(buf))
        done += pipeline
    elapsed = time.perf_counter() - t0
    cpu_us = (cpu_seconds(pid) - cpu0) / max(done, 1) * 1e6
    return done / elapsed, cpu_us, done


class _ChangingStats:
    """A stats source whose version changes on every read, so the cache rebuilds on every call; either
    one type's stats change between reads (a task started or finished) or every type's do."""

    def __init__(self, types: int, *, change_all: bool) -> None:
        self._stats = [TypeStats(f"bench{i % 10}:type-{i:04d}", started_at=1752582119) for i in range(types)]
        self._change_all = change_all
        self._version = 0

    @property
    def type_stats_version(self) -> int:
        self._version += 1
        return self._version

    def list_task_types(self) -> list[TypeStats]:
        v = self._version
        if self._change_all:
            return [TypeStats(st.name, started_at=v) for st in self._stats]
        self._stats[v % len(self._stats)] = TypeStats(self._stats[v % len(self._stats)].name, started_at=v)
        return list(self._stats)


def rebuild_rate(types: int, *, change_all: bool, seconds: float = 1.0) -> float:
    """Listings/s when every call has to rebuild the reply (in-process, no network, no manager)."""
    cache = TypeListCache(_ChangingStats(types, change_all=change_all))
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        cache.reply(3)
        n += 1
    return n / (time.perf_counter() - t0)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--types", type=int, default=1000)
    p.add_argument("--calls", type=int, default=20_000, help="commands per round")
    p.add_argument("--pipeline", type=int, default=100)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--max-seconds", type=float, default=20.0, help="bound on one round")
    args = p.parse_args()

    with scratch_dir("resp") as tmp:
        module = write_task_module(tmp, args.types)
        port = free_port()
        node = NodeProc(tmp / "node", extra=["--admin", f"127.0.0.1:{port}", "--tasks", module],
                        env={"PYTHONPATH": os.pathsep.join([str(tmp), str(REPO)])})
        node.start(timeout=60)
        assert node.proc is not None
        try:
            sock = socket.create_connection(("127.0.0.1", port))
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            _, hello = one_reply_size(sock, command("HELLO", "3"))
            assert hello.startswith(b"%7\r\n"), hello[:40]
            list_cmd, ping_cmd = command("TASK.ADMIN", "LIST"), command("PING")
            list_size, first = one_reply_size(sock, list_cmd)
            expected_types = args.types + 2  # + builtin:sleep and builtin:fail
            assert first.startswith(b"%%%d\r\n" % expected_types), first[:40]
            assert first.count(b"+running\r\n#f\r\n") == expected_types
            ping_size = len(b"+PONG\r\n")
            results: dict[str, list[tuple[float, float, int]]] = {"list": [], "ping": []}
            for req, size in ((list_cmd, list_size), (ping_cmd, ping_size)):  # warm-up
                measure(sock, req, size, calls=args.pipeline * 10, pipeline=args.pipeline, max_seconds=2,
                        pid=node.proc.pid)
            for _ in range(args.rounds):
                for kind, req, size in (("list", list_cmd, list_size), ("ping", ping_cmd, ping_size)):
                    results[kind].append(measure(sock, req, size, calls=args.calls, pipeline=args.pipeline,
                                                 max_seconds=args.max_seconds, pid=node.proc.pid))
            sock.close()
        finally:
            stop_node(node)

    def median(kind: str) -> tuple[float, float, int]:
        return sorted(results[kind])[len(results[kind]) // 2]

    lst, ping = median("list"), median("ping")
    rebuild_one = rebuild_rate(expected_types, change_all=False)
    rebuild_all = rebuild_rate(expected_types, change_all=True)
    spread = statistics.pstdev([r[0] for r in results["list"]]) / lst[0] * 100
    rows = [
        [f"TASK.ADMIN LIST ({expected_types} types, {list_size:,} B reply)", lst[0], lst[1], lst[0] * list_size / 1e6],
        ["PING (baseline, same server and connection)", ping[0], ping[1], ping[0] * ping_size / 1e6],
        ["reply rebuilt per call, 1 type changed (in-process, no I/O)", rebuild_one, 1e6 / rebuild_one, "-"],
        ["reply rebuilt per call, all types changed (in-process, no I/O)", rebuild_all, 1e6 / rebuild_all, "-"],
    ]
    met = lst[0] >= TARGET_RATE
    print(f"RESP3 admin: pipelined TASK.ADMIN LIST, {args.types} registered types, pipelines of {args.pipeline}, "
          f"{args.calls:,} calls per round, median of {args.rounds} rounds (LIST spread ±{spread:.0f}%)")
    print(md_table(["workload", "calls/s", "node CPU µs/call", "reply MB/s"], rows))
    print(f"\nLIST/PING ratio: {lst[0] / ping[0]:.3f}; target ≥ {TARGET_RATE:,.0f} LIST calls/s: "
          f"{'met' if met else 'MISSED'}")
    return 0 if met else 1


if __name__ == "__main__":
    sys.exit(main())
