"""What roles and the audit log cost: durable no-op task throughput of a node without auth and without an
audit log, against the same node with a tokens file and its audit log, in the same run.

Each run starts a fresh node. CALLERS concurrent grpc.aio callers submit TASKS ``builtin:sleep`` tasks
(duration=0, steps=0) with StartTask; completion is observed on one WatchEvents stream opened before the
first submission (replay from sequence 0, so none is missed). The clock runs from the first submission to
the last completion. With auth, the callers send an ``operate`` token and the stream a ``read`` token, so
every start is authenticated (SHA-256 and a compare per entry), authorized, and audited (one JSON line,
written before the start is answered); afterwards the audit log must hold one ``task.start`` line per task.

Runs alternate (no auth, auth, auth, no auth, ...) so both modes see the same machine state; the figure is
the ratio of the medians. Target: auth and audit cost at most 5% of the throughput.

Run from the repository root: ``python -m bench.auth_cost_bench [--tasks N] [--rounds R]``.
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

from bench._common import cpu_seconds, md_table, run_in_scratch, run_load, start_node, stop_node
from taskward.pb.taskward.v1 import tasks_pb2 as pb
from taskward.pb.taskward.v1 import tasks_pb2_grpc as pb_grpc

TARGET_COST = 0.05
ARGS_JSON = '{"duration": 0, "steps": 0}'
TOKENS = {"read": "bench-reader-token-0123", "operate": "bench-operator-token-0123",
          "admin": "bench-admin-token-0123", "node": "bench-node-token-0123"}
TOKENS_FILE = "".join(f'[[token]]\nname = "{role}-bench"\nrole = "{role}"\ntoken = "{token}"\n\n'
                      for role, token in TOKENS.items())


MODES = {
    "plain": ("no auth, --audit-log off", False, ["--audit-log", "off"]),
    "full": ("--tokens-file (4 roles) + audit log", True, []),
    "tokens": ("--tokens-file, --audit-log off", True, ["--audit-log", "off"]),
    "audit": ("no auth, audit log", False, []),
}
"""What each mode runs: the comparison is plain against full; the other two tell the costs apart."""


def metadata(role: str, auth: bool) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {TOKENS[role]}"),) if auth else ()


class Completions:
    """``task.completed`` events seen on one stream, replayed from 0."""

    def __init__(self, stub: pb_grpc.TaskManagerStub, md: tuple[tuple[str, str], ...]) -> None:
        self.done: set[str] = set()
        self._goal = 0
        self._reached = asyncio.Event()
        self._task = asyncio.create_task(self._watch(stub, md))

    async def _watch(self, stub: pb_grpc.TaskManagerStub, md: tuple[tuple[str, str], ...]) -> None:
        async for ev in stub.WatchEvents(pb.WatchEventsRequest(after_sequence=0), metadata=md):
            if ev.type == "task.completed":
                self.done.add(ev.task_id)
                if len(self.done) >= self._goal:
                    self._reached.set()
            elif ev.type in ("task.failed", "task.aborted"):
                raise RuntimeError(f"task {ev.task_id} {ev.type}: {ev.error}")

    async def wait_for(self, n: int, max_seconds: float) -> None:
        self._goal = n
        self._reached.clear()
        if len(self.done) >= n:
            return
        waiter = asyncio.create_task(self._reached.wait())
        await asyncio.wait({waiter, self._task}, timeout=max_seconds, return_when=asyncio.FIRST_COMPLETED)
        if self._task.done():
            self._task.result()
        if not waiter.done():
            waiter.cancel()
            raise RuntimeError(f"only {len(self.done)} completions after {max_seconds}s")

    def close(self) -> None:
        self._task.cancel()


async def one_run(address: str, pid: int, *, auth: bool, warmup: int, tasks: int, callers: int,
                  max_seconds: float) -> dict[str, float]:
    async with grpc.aio.insecure_channel(address) as ch:
        stub = pb_grpc.TaskManagerStub(ch)
        seen = Completions(stub, metadata("read", auth))
        req = pb.StartTaskRequest(module="builtin", type="sleep", args_json=ARGS_JSON)
        md = metadata("operate", auth)

        async def start(_: int) -> object:
            return await stub.StartTask(req, timeout=30, metadata=md)

        w = await run_load(start, callers=callers, max_calls=warmup, max_seconds=max_seconds)
        await seen.wait_for(warmup, max_seconds)
        cpu0 = cpu_seconds(pid)
        t0 = time.perf_counter()
        load = await run_load(start, callers=callers, max_calls=tasks, max_seconds=max_seconds)
        await seen.wait_for(warmup + tasks, max_seconds)
        elapsed = time.perf_counter() - t0
        cpu = cpu_seconds(pid) - cpu0
        seen.close()
        if load.errors or w.errors or load.calls != tasks:
            raise RuntimeError(f"StartTask errors: {load.errors + w.errors}, accepted {load.calls}/{tasks}")
    return {"rate": tasks / elapsed, "p50": load.p50, "cpu_us": cpu / tasks * 1e6}


def audited_starts(path: Path) -> int:
    return sum(1 for line in path.read_text().splitlines()
               if (r := json.loads(line))["operation"] == "task.start" and r["outcome"] == "ok")


async def bench(args: argparse.Namespace, scratch: Path) -> int:
    tokens = scratch / "tokens.toml"
    tokens.write_text(TOKENS_FILE)
    tokens.chmod(0o600)
    modes = ["plain", "full", *args.also]
    runs: dict[str, list[dict[str, float]]] = {m: [] for m in modes}
    plan = [m for i in range(args.rounds) for m in (modes if i % 2 == 0 else modes[::-1])]
    for i, mode in enumerate(plan):
        _, auth, mode_args = MODES[mode]
        data = scratch / f"run{i}"
        extra = ["--retention-max-per-module", "1000000", "--user-task-ttl", str(30 * 24 * 3600), *mode_args]
        extra += ["--tokens-file", str(tokens)] if auth else []
        node, _ = start_node(data, extra=extra)
        try:
            assert node.proc is not None
            runs[mode].append(await one_run(node.address, node.proc.pid, auth=auth, warmup=args.warmup,
                                            tasks=args.tasks, callers=args.callers, max_seconds=args.max_seconds))
        finally:
            stop_node(node)
        audited = "off" not in mode_args
        if audited and (n := audited_starts(data / "audit.jsonl")) != args.warmup + args.tasks:
            raise RuntimeError(f"the audit log holds {n} task.start lines, not {args.warmup + args.tasks}")
        if not audited and (data / "audit.jsonl").exists():
            raise RuntimeError("--audit-log off still wrote an audit log")

    def med(mode: str, key: str) -> float:
        return statistics.median(r[key] for r in runs[mode])

    print(f"{args.tasks:,} no-op builtin:sleep tasks per run (after {args.warmup} warm-up), {args.callers} concurrent "
          f"StartTask callers, completion on one WatchEvents stream; {args.rounds} runs per mode, alternating\n")
    rows = []
    for mode in modes:
        rows.append([MODES[mode][0], med(mode, "rate"), ", ".join(f"{r['rate']:,.0f}" for r in runs[mode]),
                     med(mode, "p50"), med(mode, "cpu_us")])
    print(md_table(["node", "tasks/s (median)", "all runs", "StartTask p50 ms", "node CPU µs/task"], rows))
    ratio = med("full", "rate") / med("plain", "rate")
    cost = 1 - ratio
    cpu_delta = med("full", "cpu_us") - med("plain", "cpu_us")
    print(f"\nthroughput with auth + audit / without: {ratio:.3f} (cost {cost:+.1%}; target ≤ {TARGET_COST:.0%}: "
          f"{'met' if cost <= TARGET_COST else 'MISSED'}); node CPU per task {cpu_delta:+,.0f} µs")
    return 0


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--tasks", type=int, default=5_000)
    p.add_argument("--warmup", type=int, default=300)
    p.add_argument("--callers", type=int, default=64)
    p.add_argument("--rounds", type=int, default=3, help="runs per mode")
    p.add_argument("--max-seconds", type=float, default=60.0)
    p.add_argument("--also", nargs="*", choices=["tokens", "audit"], default=[],
                   help="also run these modes (tokens without audit, audit without tokens) to tell the costs apart")
    return run_in_scratch(bench, p.parse_args(), "auth")


if __name__ == "__main__":
    sys.exit(main())
