"""Shared helpers for the benchmark scripts: real node processes, a bounded load loop, /proc readings.

Run a bench from the repository root as a module: ``python -m bench.NAME`` (it uses the tests' process
harness, ``tests.support``, on top of ``taskward.processes``).

Everything runs on loopback (127.0.0.1). Every load loop is bounded both in calls and in seconds.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Coroutine, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from taskward.processes import free_port
from tests.support.procs import REPO, NodeProc

# BENCH_NODE_CPROFILE=FILE profiles the node's event-loop thread (bench/_cprofile_node.py).
NODE_COMMAND = [sys.executable, str(REPO / "bench" / "_cprofile_node.py")] if os.environ.get("BENCH_NODE_CPROFILE") \
    else None

__all__ = [
    "REPO",
    "Load",
    "MachineLoad",
    "NodeProc",
    "cpu_seconds",
    "free_port",
    "md_table",
    "py_spy",
    "rounds_main",
    "rss_mb",
    "run_load",
    "scratch_dir",
    "spawn_script",
    "start_node",
    "stop_node",
    "submit_to_done",
]

CLK_TCK = os.sysconf("SC_CLK_TCK")


@contextlib.contextmanager
def scratch_dir(prefix: str) -> Iterator[Path]:
    """A temporary directory on the same file system for node and baseline (removed afterwards)."""
    path = Path(tempfile.mkdtemp(prefix=f"taskward-bench-{prefix}-"))
    try:
        yield path
    finally:
        if os.environ.get("BENCH_KEEP_SCRATCH"):
            print(f"(kept {path})", file=sys.stderr)
        else:
            shutil.rmtree(path, ignore_errors=True)


def start_node(data_dir: Path, extra: Sequence[str] = (), timeout: float = 60.0) -> tuple[NodeProc, float]:
    """Start a real ``taskward node`` (as tests/procs.py does); returns it and its start-up seconds
    (spawn until the health check answers SERVING)."""
    node = NodeProc(data_dir, extra=list(extra), command=NODE_COMMAND)
    t0 = time.perf_counter()
    node.start(timeout=timeout)
    return node, time.perf_counter() - t0


def stop_node(node: NodeProc) -> None:
    code = node.stop(grace_s=15.0)
    if code != 0:
        print(f"warning: node exited with {code}", file=sys.stderr)


def spawn_script(name: str, *args: str) -> tuple[subprocess.Popen[str], int]:
    """Start ``bench/NAME`` as its own process; it prints its port on the first stdout line."""
    proc = subprocess.Popen([sys.executable, str(REPO / "bench" / name), *args], stdout=subprocess.PIPE,
                            text=True, cwd=REPO)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line.strip().isdigit():
        proc.kill()
        raise RuntimeError(f"{name} did not report a port (got {line!r})")
    return proc, int(line)


@contextlib.contextmanager
def py_spy(pid: int | None, out: str | None) -> Iterator[None]:
    """Profile ``pid`` with py-spy (``pip install py-spy``) into ``out`` (collapsed stacks) while the
    block runs; does nothing when ``out`` is empty. BENCH_PY_SPY_GIL=1 samples only the GIL holder;
    BENCH_PY_SPY_NATIVE=1 adds native frames (that pauses the process per sample: slow)."""
    native = bool(os.environ.get("BENCH_PY_SPY_NATIVE"))
    if not out or pid is None:
        yield
        return
    exe = Path(sys.executable).parent / "py-spy"
    cmd = [str(exe if exe.exists() else "py-spy"), "record", "-p", str(pid), "-o", out, "-f", "raw",
           "-r", "200", *(["--native"] if native else ["--nonblocking"]),
           *(["--gil"] if os.environ.get("BENCH_PY_SPY_GIL") else [])]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(0.5)
    try:
        yield
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(30)


def rss_mb(pid: int, key: str = "VmRSS") -> float:
    """A memory figure of /proc/PID/status in MiB (VmRSS, or e.g. VmHWM: the peak RSS)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{key}:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no {key}")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (all its threads)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def _machine_ticks() -> tuple[int, int]:
    """(busy, steal) jiffies of all CPUs from /proc/stat."""
    f = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = f[:8]
    return user + nice + system + irq + softirq, steal


def _own_cpu() -> float:
    """CPU seconds of this process and of its reaped children (nodes, baseline servers)."""
    s, c = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return s.ru_utime + s.ru_stime + c.ru_utime + c.ru_stime


class MachineLoad:
    """How busy the machine was with processes other than this benchmark (and its reaped children):
    other benchmarks or test runs on a 2-core machine distort every figure, so each script reports it."""

    def __init__(self) -> None:
        self._t0 = time.perf_counter()
        self._busy0, self._steal0 = _machine_ticks()
        self._own0 = _own_cpu()

    def report(self) -> str:
        wall = time.perf_counter() - self._t0
        busy, steal = _machine_ticks()
        busy_s, steal_s = (busy - self._busy0) / CLK_TCK, (steal - self._steal0) / CLK_TCK
        other = max(0.0, busy_s - (_own_cpu() - self._own0)) / wall
        return (f"machine: {os.cpu_count()} CPUs; other processes used {other:.2f} CPUs on average during this "
                f"run{' (NOISY: figures unreliable)' if other > 0.15 else ''}; steal {steal_s / wall:.2f} CPUs")


@dataclass(frozen=True)
class Load:
    calls: int
    errors: int
    seconds: float
    latencies_ms: list[float]

    @property
    def rate(self) -> float:
        return self.calls / self.seconds if self.seconds else 0.0

    def pct(self, q: float) -> float:
        if not self.latencies_ms:
            return float("nan")
        xs = sorted(self.latencies_ms)
        return xs[min(len(xs) - 1, int(q * len(xs)))]

    @property
    def p50(self) -> float:
        return statistics.median(self.latencies_ms) if self.latencies_ms else float("nan")


def submit_to_done(submitted_at: Mapping[str, float], done_at: Mapping[str, float], ids: Iterable[str],
                   seconds: float) -> Load:
    """Each task's latency from its submission to its observed completion (both ``perf_counter()``
    readings in this process), as a ``Load`` for its percentiles. A task with no completion raises
    KeyError: a bench must not report a latency for work it never saw finish."""
    lat = [(done_at[i] - submitted_at[i]) * 1000 for i in ids]
    return Load(len(lat), 0, seconds, lat)


async def run_load(call: Callable[[int], Awaitable[object]], *, callers: int, max_calls: int,
                   max_seconds: float) -> Load:
    """``callers`` concurrent coroutines issue ``call(i)`` until ``max_calls`` calls were started or
    ``max_seconds`` passed, whichever comes first."""
    issued = 0
    errors = 0
    lat: list[float] = []
    deadline = time.perf_counter() + max_seconds

    async def caller() -> None:
        nonlocal issued, errors
        while issued < max_calls and time.perf_counter() < deadline:
            i = issued
            issued += 1
            t = time.perf_counter()
            try:
                await call(i)
            except Exception:
                errors += 1
                continue
            lat.append((time.perf_counter() - t) * 1000)

    t0 = time.perf_counter()
    await asyncio.gather(*(caller() for _ in range(callers)))
    return Load(len(lat), errors, time.perf_counter() - t0, lat)


def md_table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    def fmt(v: object) -> str:
        if isinstance(v, float):
            return f"{v:,.2f}" if abs(v) < 100 else f"{v:,.0f}"
        if isinstance(v, int):
            return f"{v:,}"
        return str(v)

    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(fmt(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def rounds_main(doc: str | None, scratch_name: str,
                bench: Callable[[argparse.Namespace, Path], Coroutine[Any, Any, int]], *,
                profile_help: str = "") -> int:
    """The command line shared by the alternating-rounds throughput benches (``--profile FILE`` when the
    bench says what it profiles)."""
    p = argparse.ArgumentParser(description=doc)
    p.add_argument("--callers", type=int, default=32)
    p.add_argument("--seconds", type=float, default=2.5)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--max-calls", type=int, default=200_000)
    if profile_help:
        p.add_argument("--profile", metavar="FILE", help=profile_help)
    return run_in_scratch(bench, p.parse_args(), scratch_name)


def run_in_scratch(bench: Callable[[argparse.Namespace, Path], Coroutine[Any, Any, int]], args: argparse.Namespace,
                   scratch_name: str) -> int:
    """Run one bench in a fresh scratch dir, then say how busy the rest of the machine was meanwhile."""
    machine = MachineLoad()
    with scratch_dir(scratch_name) as scratch:
        code = asyncio.run(bench(args, scratch))
    print(f"\n{machine.report()}")
    return code
