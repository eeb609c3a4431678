"""No-op tasks end to end, Celery 5 + Redis vs taskward: same machine, same run, same load.

Three systems are measured in alternating rounds (Celery, taskward at ``--sqlite-synchronous FULL``,
taskward at ``NORMAL``; ROUNDS times; the median of the runs per system), each driven the same way:
CALLERS concurrent submitters send TASKS tasks after WARMUP untimed ones, bounded by MAX_SECONDS per
phase, loopback only. The clock runs from the first timed submission until the last timed task is seen
done. A task's latency runs from just before its submission call until its completion reaches the bench;
submitters do not wait for completions, so under this load it is mostly time spent behind the backlog.

Celery (``bench/_celery_app.py``), with the settings a production deployment of short tasks would use:
- a worker started fresh for each round as ``celery -A bench._celery_app worker --pool prefork
  --concurrency 2 -O fair --loglevel WARNING`` (two pool processes, one per core);
- ``task_acks_late=True`` (a message is acknowledged after its task ran, so a crashed worker loses
  nothing), ``worker_prefetch_multiplier=1``, a Redis result backend (how completion is observable),
  JSON; everything else is Celery's default (broker pool of 10 connections, no task events, no
  ``task_track_started``). ``--loglevel WARNING`` leaves out the two INFO lines Celery logs per task,
  which many deployments keep: that favours Celery;
- one ``redis-server`` on a free loopback port for the whole bench, ``--save '' --appendonly no`` in a
  scratch dir, flushed before each round. Neither queue nor results are persisted, so Celery
  acknowledges from memory where taskward fsyncs its commits (at FULL): that too favours Celery;
- submitters: Celery's client is synchronous, so CALLERS threads call ``noop.apply_async()``, handed
  work from the same asyncio load loop as taskward's callers (``bench._common.run_load``). As always
  with a Redis result backend, ``apply_async`` also subscribes to the task's result channel;
- completion: one ``PSUBSCRIBE celery-task-meta-*`` on the result backend's pub/sub (the messages
  ``AsyncResult.get()`` waits for), read in the bench's loop with ``redis.asyncio``;
- checks after each run: every task's stored result is ``SUCCESS`` and the queue is empty.

taskward (``bench.task_throughput.node_run``): a fresh ``taskward node`` per run, tasks started with the
client library (``AsyncClient.start``, as Celery's side uses ``apply_async``; concurrent starts share
``StartTasks`` calls), completion seen on one event stream of the finishing types
(``types=task.completed,task.failed,task.aborted``: the analogue of Celery's result channel, which
carries results and nothing else), taken as the client library follows a node (``WatchEventBatches``:
the completions one commit published arrive in one message); ListTasks must list every task ``done``
afterwards. The body is ``bench:noop`` (``bench/_noop_tasks.py``, loaded with ``--tasks``): a coroutine
that returns None, as Celery's body does.

Needs ``celery[redis]`` (``pip install -e '.[bench]'``) and ``redis-server`` on PATH; without them it
says which is missing and exits with code 2.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import importlib
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from contextlib import suppress
from pathlib import Path
from typing import Any

from bench._celery_app import NOOP_TASK, REDIS_URL_ENV, make_app
from bench._common import (
    REPO,
    cpu_seconds,
    free_port,
    md_table,
    run_in_scratch,
    run_load,
    start_node,
    stop_node,
    submit_to_done,
)
from bench.task_throughput import NODE_TASKS, node_run
from taskward.processes import LOOPBACK, ChildProcess, tcp_open

TARGETS = {"FULL": 2.0, "NORMAL": 3.0}  # taskward tasks/s ÷ Celery tasks/s
RESULT_PREFIX = "celery-task-meta-"  # the Redis backend's key and pub/sub channel per task
CELERY_QUEUE = "celery"
INSTALL_HELP = ("Install them with:\n"
                "  .venv/bin/pip install 'celery[redis]'\n"
                "  apt-get install -y redis-server")


def missing_dependencies() -> list[str]:
    """What this bench needs and cannot find: Celery 5 with the Redis client, and a redis-server binary."""
    missing: list[str] = []
    try:
        celery = importlib.import_module("celery")
        importlib.import_module("redis")
    except ImportError as exc:
        missing.append(f"the Python package celery[redis] ({exc.name or 'celery'} cannot be imported)")
    else:
        if celery.VERSION[0] != 5:
            missing.append(f"the Python package celery[redis] at Celery 5 (found {celery.__version__})")
    if shutil.which("redis-server") is None:
        missing.append("redis-server (not on PATH)")
    return missing


class RedisServer(ChildProcess):
    """A throwaway redis-server on a free loopback port: no snapshots, no append-only file."""

    def __init__(self, scratch: Path) -> None:
        super().__init__("redis-server", scratch / "redis-server.log")
        self.dir = scratch / "redis"
        self.address = f"{LOOPBACK}:{free_port()}"
        self.url = f"redis://{self.address}"

    def start(self, timeout_s: float = 30.0) -> RedisServer:
        self.dir.mkdir(parents=True, exist_ok=True)
        port = self.address.rpartition(":")[2]
        self.spawn(["redis-server", "--bind", LOOPBACK, "--port", port, "--save", "", "--appendonly", "no",
                    "--dir", str(self.dir)], cwd=self.dir)
        self.wait_until(lambda: tcp_open(self.address), timeout_s, "redis-server listening")
        return self

    def version(self) -> str:
        out = subprocess.run(["redis-server", "--version"], capture_output=True, text=True, check=False).stdout
        return next((w[2:] for w in out.split() if w.startswith("v=")), "?")


class CeleryWorker(ChildProcess):
    """``celery worker`` for ``bench._celery_app``, in its own process group so that a pool process left
    behind by a hard stop goes with it."""

    def __init__(self, log_path: Path, redis_url: str) -> None:
        super().__init__("celery-worker", log_path)
        self.redis_url = redis_url

    def launch(self) -> CeleryWorker:
        self.spawn([sys.executable, "-m", "celery", "-A", "bench._celery_app", "worker", "--pool", "prefork",
                    "--concurrency", "2", "-O", "fair", "--loglevel", "WARNING"],
                   env={REDIS_URL_ENV: self.redis_url}, cwd=REPO, own_session=True)
        return self

    def pids(self) -> list[int]:
        """The worker's main process and its pool processes (its children, from /proc)."""
        assert self.pid is not None
        children = [int(c) for t in Path(f"/proc/{self.pid}/task").iterdir()
                    for c in (t / "children").read_text().split()]
        return [self.pid, *children]

    def stop(self, grace_s: float = 15.0) -> int | None:
        code = super().stop(grace_s)  # SIGTERM: Celery's warm shutdown
        if self.pid is not None:
            with suppress(ProcessLookupError):
                os.killpg(self.pid, signal.SIGKILL)
        return code


class ResultWatcher:
    """Celery completions as the Redis result backend publishes them: one pattern subscription."""

    def __init__(self, redis_url: str) -> None:
        redis_asyncio = importlib.import_module("redis.asyncio")
        self.client: Any = redis_asyncio.Redis.from_url(f"{redis_url}/1")
        self.done_at: dict[str, float] = {}  # task id -> perf_counter() when its SUCCESS arrived
        self._pubsub: Any = self.client.pubsub()
        self._goal = 0
        self._reached = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await self._pubsub.psubscribe(f"{RESULT_PREFIX}*")  # subscribed before anything is submitted
        self._task = asyncio.create_task(self._watch(), name="celery-results")

    async def _watch(self) -> None:
        async for msg in self._pubsub.listen():
            if msg["type"] != "pmessage":
                continue
            meta = json.loads(msg["data"])
            if meta["status"] == "SUCCESS":
                self.done_at.setdefault(meta["task_id"], time.perf_counter())
                if len(self.done_at) >= self._goal:
                    self._reached.set()
            elif meta["status"] in ("FAILURE", "REVOKED"):
                raise RuntimeError(f"Celery task {meta['task_id']} {meta['status']}: {meta.get('result')}")

    async def wait_for(self, n: int, max_seconds: float) -> None:
        """Until ``n`` tasks are done: TimeoutError after ``max_seconds``, RuntimeError if a task failed."""
        assert self._task is not None
        self._goal = n
        self._reached.clear()
        if len(self.done_at) >= n:
            return
        waiter = asyncio.create_task(self._reached.wait())
        await asyncio.wait({waiter, self._task}, timeout=max_seconds, return_when=asyncio.FIRST_COMPLETED)
        if self._task.done():
            self._task.result()
        if not waiter.done():
            waiter.cancel()
            raise TimeoutError(f"only {len(self.done_at)} Celery completions after {max_seconds}s")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with suppress(asyncio.CancelledError):
                await self._task
        await self._pubsub.aclose()
        await self.client.aclose()


async def celery_run(app: Any, redis: RedisServer, log_path: Path, *, warmup: int, tasks: int, callers: int,
                     max_seconds: float, startup_seconds: float) -> dict[str, float]:
    """One Celery run on a flushed Redis and a fresh worker: readiness probe, warm-up, timed phase, checks."""
    broker_db: Any = importlib.import_module("redis.asyncio").Redis.from_url(f"{redis.url}/0")
    await broker_db.flushall()
    watcher = ResultWatcher(redis.url)
    await watcher.start()
    worker = CeleryWorker(log_path, redis.url).launch()
    noop = app.tasks[NOOP_TASK]
    loop = asyncio.get_running_loop()
    submitted: list[str] = []
    submitted_at: dict[str, float] = {}
    try:
        with ThreadPoolExecutor(callers, thread_name_prefix="celery-submit") as pool:
            async def start(_: int) -> object:
                task_id = str(uuid.uuid4())
                submitted_at[task_id] = time.perf_counter()
                await loop.run_in_executor(pool, functools.partial(noop.apply_async, task_id=task_id))
                submitted.append(task_id)
                return task_id

            await start(0)  # readiness: one task round trip through the worker's pool
            deadline = time.perf_counter() + startup_seconds
            while len(watcher.done_at) < 1:
                worker.check_alive()
                if time.perf_counter() > deadline:
                    raise RuntimeError(f"the Celery worker ran no task within {startup_seconds}s:\n"
                                       f"{worker.log(tail=4000)}")
                with suppress(TimeoutError):
                    await watcher.wait_for(1, 0.5)
            w = await run_load(start, callers=callers, max_calls=warmup, max_seconds=max_seconds)
            await watcher.wait_for(1 + warmup, max_seconds)
            worker_pids, redis_pid = worker.pids(), redis.pid
            assert redis_pid is not None
            wcpu0, rcpu0 = sum(map(cpu_seconds, worker_pids)), cpu_seconds(redis_pid)
            ccpu0, t0 = time.process_time(), time.perf_counter()
            load = await run_load(start, callers=callers, max_calls=tasks, max_seconds=max_seconds)
            t_submitted = time.perf_counter() - t0
            await watcher.wait_for(1 + warmup + tasks, max_seconds)
            elapsed = time.perf_counter() - t0
            wcpu = sum(map(cpu_seconds, worker_pids)) - wcpu0
            rcpu, ccpu = cpu_seconds(redis_pid) - rcpu0, time.process_time() - ccpu0
        if load.errors or w.errors or load.calls != tasks:
            raise RuntimeError(f"apply_async errors: {load.errors + w.errors}, accepted {load.calls}/{tasks}")
        stored = await watcher.client.mget([f"{RESULT_PREFIX}{t}" for t in submitted])
        not_done = sum(1 for raw in stored if raw is None or json.loads(raw)["status"] != "SUCCESS")
        queued = await broker_db.llen(CELERY_QUEUE)
        if not_done or queued or len(submitted) != 1 + warmup + tasks:
            raise RuntimeError(f"{not_done} of {len(submitted)} Celery results not SUCCESS, {queued} left queued")
        done = submit_to_done(submitted_at, watcher.done_at, submitted[1 + warmup:], elapsed)
    finally:
        worker.stop()
        await watcher.close()
        await broker_db.aclose()
    return {"rate": tasks / elapsed, "elapsed": elapsed, "submit_rate": tasks / t_submitted,
            "start_p50": load.p50, "done_p50": done.p50, "done_p99": done.pct(0.99),
            "cpu_us": wcpu / tasks * 1e6, "redis_cpu_us": rcpu / tasks * 1e6, "client_cpu_us": ccpu / tasks * 1e6}


async def taskward_run(scratch: Path, synchronous: str, args: argparse.Namespace) -> dict[str, float]:
    node, _ = start_node(scratch, extra=["--retention-max-per-module", "1000000", "--user-task-ttl",
                                         str(30 * 24 * 3600), "--sqlite-synchronous", synchronous,
                                         *NODE_TASKS])
    try:
        assert node.proc is not None
        return await node_run(node.address, node.proc.pid, observe="finished", warmup=args.warmup, tasks=args.tasks,
                              callers=args.callers, max_seconds=args.max_seconds, via_client=True, batched=True)
    finally:
        stop_node(node)


def median_of(runs: list[dict[str, float]], key: str) -> float:
    return statistics.median(r[key] for r in runs)


def report(args: argparse.Namespace, runs: dict[str, list[dict[str, float]]], versions: str) -> None:
    print(f"{args.tasks:,} no-op tasks per run (after {args.warmup} warm-up), {args.callers} concurrent "
          f"submitters, {args.rounds} rounds of Celery → taskward FULL → taskward NORMAL; {versions}; median of "
          f"the runs per system (each figure on its own)\n")
    label = {"celery": "Celery + Redis (prefork, 2 processes, acks_late, prefetch 1, Redis results)",
             "FULL": "taskward, --sqlite-synchronous FULL", "NORMAL": "taskward, --sqlite-synchronous NORMAL"}
    rows: list[list[object]] = []
    for system, rs in runs.items():
        cpu = f"worker {median_of(rs, 'cpu_us'):,.0f} + redis {median_of(rs, 'redis_cpu_us'):,.0f}" \
            if system == "celery" else f"node {median_of(rs, 'cpu_us'):,.0f}"
        rows.append([label[system], median_of(rs, "rate"), ", ".join(f"{r['rate']:,.0f}" for r in rs),
                     median_of(rs, "done_p50"), median_of(rs, "done_p99"),
                     f"submissions alone {median_of(rs, 'submit_rate'):,.0f}/s, submit call p50 "
                     f"{median_of(rs, 'start_p50'):.1f} ms; CPU µs/task: {cpu}, client "
                     f"{median_of(rs, 'client_cpu_us'):,.0f}"])
    print(md_table(["system", "tasks/s", "all runs", "submit → done p50 ms", "p99 ms", "detail"], rows))
    celery_rate = median_of(runs["celery"], "rate")
    summary: list[list[object]] = []
    for sync, target in TARGETS.items():
        rate = median_of(runs[sync], "rate")
        per_round = ", ".join(f"{t['rate'] / c['rate']:.2f}" for t, c in zip(runs[sync], runs["celery"], strict=True))
        summary.append([f"no-op tasks/s, submit → done, taskward at {sync}", rate, celery_rate,
                        f"{rate / celery_rate:.2f}x (rounds {per_round})",
                        f"≥ {target:g}x ({'met' if rate / celery_rate >= target else 'NOT met'})"])
    print()
    print(md_table(["figure", "taskward", "Celery (same run)", "ratio", "target"], summary))


async def bench(args: argparse.Namespace, scratch: Path) -> int:
    redis = RedisServer(scratch).start()
    try:
        app = make_app(redis.url)
        runs: dict[str, list[dict[str, float]]] = {"celery": [], "FULL": [], "NORMAL": []}
        for i in range(args.rounds):
            runs["celery"].append(await celery_run(
                app, redis, scratch / f"celery-worker-{i}.log", warmup=args.warmup, tasks=args.tasks,
                callers=args.callers, max_seconds=args.max_seconds, startup_seconds=args.startup_seconds))
            for sync in TARGETS:
                runs[sync].append(await taskward_run(scratch / f"n{i}-{sync}", sync, args))
        versions = f"Celery {importlib.import_module('celery').__version__}, Redis {redis.version()}"
    except (RuntimeError, TimeoutError) as exc:
        print(f"celery_compare: a run failed: {exc}", file=sys.stderr)
        return 1
    finally:
        redis.stop()
    report(args, runs, versions)
    return 0


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tasks", type=int, default=3000, help="timed tasks per run")
    p.add_argument("--warmup", type=int, default=300, help="untimed tasks before each timed phase")
    p.add_argument("--callers", type=int, default=32, help="concurrent submitters")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--max-seconds", type=float, default=60.0, help="bound on each phase (submit, wait)")
    p.add_argument("--startup-seconds", type=float, default=60.0, help="bound on a Celery worker's start")
    args = p.parse_args()
    missing = missing_dependencies()
    if missing:
        print(f"celery_compare needs Celery 5 with its Redis client and a redis-server binary; missing: "
              f"{'; '.join(missing)}.\n{INSTALL_HELP}", file=sys.stderr)
        return 2
    return run_in_scratch(bench, args, "celery")


if __name__ == "__main__":
    sys.exit(main())
