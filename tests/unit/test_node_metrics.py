"""The node's own metrics, in-process on the real TaskManager and SQLite store: what each transition
counts once it has committed (runs started, tasks finished by outcome, durations, running, events,
commits), the Prometheus text they become, and that a scrape's work does not grow with retained tasks."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from taskward import TaskContext, task_type
from taskward.api.prometheus import NODE_METRIC_NAMES, NodeCollector, node_registry
from taskward.events import EventType
from taskward.manager import TaskManager
from taskward.metrics import Histogram, NodeMetrics, Outcome
from taskward.store import Store
from tests.support.managers import in_process_manager

RELEASE: dict[str, asyncio.Event] = {}


@task_type("met", "quick")
async def quick(ctx: TaskContext, *, steps: int = 2) -> None:
    for i in range(steps):
        ctx.report_progress(i + 1, steps)


@task_type("met", "boom")
async def boom(ctx: TaskContext) -> None:
    raise RuntimeError("boom")


@task_type("met", "held", abortable=True)
async def held(ctx: TaskContext, *, key: str) -> None:
    while not RELEASE[key].is_set():
        ctx.check_aborted()
        await asyncio.sleep(0.01)


@task_type("met", "flaky", retries=1, retry_backoff=(0.01, 0.01))
async def flaky(ctx: TaskContext, *, key: str) -> None:
    if not RELEASE[key].is_set():
        RELEASE[key].set()
        raise RuntimeError("first attempt fails")


@pytest.fixture
async def manager(tmp_path: Path) -> AsyncIterator[TaskManager]:
    metrics = NodeMetrics()
    store = Store(tmp_path / "db.sqlite3", synchronous="NORMAL", metrics=metrics)
    m = in_process_manager(tmp_path, sys.modules[__name__], store=store, metrics=metrics)
    await m.start()
    try:
        yield m
    finally:
        await m.stop()


def families(metrics: NodeMetrics) -> dict[str, object]:
    text = generate_latest(node_registry(metrics, node_id="u1", version="9.9.9")).decode()
    return {f.name: f for f in text_string_to_metric_families(text)}


def samples(metrics: NodeMetrics, name: str) -> dict[tuple[tuple[str, str], ...], float]:
    """The samples called ``name`` (full sample name, ``_total``/``_count`` included), by sorted labels."""
    text = generate_latest(node_registry(metrics, node_id="u1", version="9.9.9")).decode()
    return {tuple(sorted(s.labels.items())): s.value for f in text_string_to_metric_families(text)
            for s in f.samples if s.name == name}


def test_histogram_counts_into_inclusive_buckets() -> None:
    h = Histogram((0.1, 1.0))
    for v in (0.05, 0.1, 0.5, 1.0, 7.0):
        h.observe(v)
    assert list(h.cumulative()) == [(0.1, 2), (1.0, 4), (float("inf"), 5)]
    assert h.count == 5 and h.total == pytest.approx(8.65)


async def test_done_failed_and_aborted_runs_are_counted_with_durations(manager: TaskManager) -> None:
    m = manager.metrics
    events = manager.events.subscribe(live_only=True).events()
    done = await manager.start_task("met", "quick")
    failed = await manager.start_task("met", "boom")
    RELEASE["abort"] = asyncio.Event()
    aborted = await manager.start_task("met", "held", '{"key": "abort"}')
    await manager.wait(done, 5)
    await manager.wait(failed, 5)
    async with asyncio.timeout(5):
        async for ev in events:
            if ev.task_id == aborted and ev.type is EventType.STARTED:
                break
    await events.aclose()
    assert m.tasks_running["met"] == 1  # only the held one still runs
    assert m.tasks_started == {("met", "quick"): 1, ("met", "boom"): 1, ("met", "held"): 1}
    await manager.abort(aborted)
    await manager.wait(aborted, 5)
    assert m.tasks_finished == {("met", "quick", Outcome.DONE): 1, ("met", "boom", Outcome.FAILED): 1,
                                ("met", "held", Outcome.ABORTED): 1}
    assert m.tasks_running["met"] == 0 and m.tasks_running["builtin"] == 0
    assert {k: h.count for k, h in m.task_duration.items()} == {("met", "quick"): 1, ("met", "boom"): 1,
                                                                ("met", "held"): 1}
    # quick: started, two progress, completed; boom: started, failed; held: started, aborted
    assert m.events_published == 8
    assert m.store_commit_seconds.count >= 1 and m.store_commit_seconds.total > 0
    finished = samples(m, "taskward_tasks_finished_total")
    assert finished[(("module", "met"), ("outcome", "aborted"), ("type", "held"))] == 1


async def test_a_retried_task_is_one_run_and_a_task_aborted_in_the_queue_never_ran(tmp_path: Path) -> None:
    m = in_process_manager(tmp_path, sys.modules[__name__], concurrency=1)
    await m.start()
    try:
        RELEASE["retry"] = asyncio.Event()
        retried = await m.start_task("met", "flaky", '{"key": "retry"}')
        assert (await m.wait(retried, 5)).record.attempt == 2
        RELEASE["busy"] = asyncio.Event()
        busy = await m.start_task("met", "held", '{"key": "busy"}')
        queued = await m.start_task("met", "quick")
        assert m.metrics.queue_depth() == 1  # the only slot is busy
        await m.abort(queued)
        await m.wait(queued, 5)
        RELEASE["busy"].set()
        await m.wait(busy, 5)
        metrics = m.metrics
        assert metrics.tasks_started == {("met", "flaky"): 1, ("met", "held"): 1}
        assert metrics.tasks_finished == {("met", "flaky", Outcome.DONE): 1, ("met", "held", Outcome.DONE): 1,
                                          ("met", "quick", Outcome.ABORTED): 1}
        assert ("met", "quick") not in metrics.task_duration and metrics.tasks_running["met"] == 0
        assert metrics.queue_depth() == 0
    finally:
        await m.stop()


def test_every_family_is_exported_even_before_anything_happened() -> None:
    got = families(NodeMetrics())
    exported = {name + ("_total" if getattr(f, "type", "") == "counter" else "") for name, f in got.items()}
    assert exported == set(NODE_METRIC_NAMES)
    info = samples(NodeMetrics(), "taskward_node_info")
    assert info == {(("node", "u1"), ("version", "9.9.9")): 1.0}


def test_etcd_leader_and_cron_values_reach_the_text() -> None:
    m = NodeMetrics()
    m.etcd_request("txn", 0.002, failed=False)
    m.etcd_request("txn", 2.0, failed=True)
    m.cron_fired_slot("nightly", 0.3)
    m.cron_fired_slot("nightly", None)  # run-now: fired, no slot delay
    m.is_leader = lambda: True
    assert samples(m, "taskward_etcd_request_seconds_count") == {(("op", "txn"),): 2.0}
    assert samples(m, "taskward_etcd_request_errors_total") == {(("op", "txn"),): 1.0}
    assert samples(m, "taskward_cron_fired_total") == {(("schedule", "nightly"),): 2.0}
    assert samples(m, "taskward_cron_delay_seconds_count") == {(): 1.0}
    assert samples(m, "taskward_is_leader") == {(): 1.0}
    buckets = samples(m, "taskward_etcd_request_seconds_bucket")
    assert buckets[(("le", "0.0025"), ("op", "txn"))] == 1.0 and buckets[(("le", "+Inf"), ("op", "txn"))] == 2.0


def test_a_scrape_reads_kinds_of_things_never_tasks() -> None:
    """The collector's output depends on the label sets seen, not on how many tasks came and went."""
    few, many = NodeMetrics(), NodeMetrics()
    for metrics, n in ((few, 10), (many, 20_000)):
        for i in range(n):
            metrics.task_started("m", "t")
            metrics.task_finished("m", "t", Outcome.DONE if i % 2 else Outcome.FAILED, 0.01)
    def sizes(metrics: NodeMetrics) -> list[int]:
        return [len(f.samples) for f in NodeCollector(metrics, node_id="u1", version="1").collect()]
    assert sizes(few) == sizes(many)
