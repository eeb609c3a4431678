"""The node's own metrics, kept incrementally as things happen: what a scrape reads, never recomputes.

Components record into one ``NodeMetrics`` that the composition root hands them (the task middleware,
the store, the event log, the etcd store, the cron scheduler); the Prometheus exposition
(``taskward.api.prometheus``) turns it into text at scrape time. So a scrape costs the same whether the
node retains ten tasks or a hundred thousand, and the domain core stays free of any metrics library.

Everything here is touched on the node's event loop only (recording and scraping alike), so plain ints,
dicts and lists need no lock, and recording costs a dict update: nothing a task's throughput notices.
Values live in memory and start again at zero with the process, as Prometheus counters do.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from enum import StrEnum

TASK_DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0,
                         3600.0, 14400.0, 86400.0)
"""Seconds: task bodies range from no-ops to day-long batch jobs."""
COMMIT_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
"""Seconds: an fsync'd group commit takes about a millisecond on an ordinary disk."""
ETCD_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
"""Seconds: etcd answers in 1 to 5 ms on a healthy cluster; a call times out after at most 2 s."""
CRON_DELAY_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)
"""Seconds between a slot's time and its firing: a fraction of a second unless a failover intervened."""


class Outcome(StrEnum):
    """How a task ended, as ``taskward_tasks_finished_total`` labels it."""

    DONE = "done"
    FAILED = "failed"
    ABORTED = "aborted"


class Histogram:
    """Observations counted into fixed buckets (upper bounds, inclusive, as Prometheus' ``le``)."""

    __slots__ = ("bounds", "count", "counts", "total")

    def __init__(self, bounds: Sequence[float]) -> None:
        self.bounds = tuple(sorted(bounds))
        self.counts = [0] * (len(self.bounds) + 1)  # the last one is +Inf
        self.count = 0
        self.total = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1
        self.count += 1
        self.total += value

    def cumulative(self) -> Iterator[tuple[float, int]]:
        """(upper bound, observations at or below it), ending with (+inf, count)."""
        running = 0
        for bound, n in zip((*self.bounds, float("inf")), self.counts, strict=True):
            running += n
            yield bound, running


def _zero() -> int:
    return 0


def _no() -> bool:
    return False


@dataclass(slots=True, eq=False)
class NodeMetrics:
    """What one node counts. Keys are label values: (module, type), (module, type, outcome), module,
    etcd operation, cron schedule id.

    ``queue_depth`` and ``is_leader`` are read when scraped (their owners set them to a cheap callable),
    because they are states, not events: reading one is O(1) and never needs keeping in step."""

    tasks_started: dict[tuple[str, str], int] = field(default_factory=dict)
    tasks_finished: dict[tuple[str, str, Outcome], int] = field(default_factory=dict)
    task_duration: dict[tuple[str, str], Histogram] = field(default_factory=dict)
    tasks_running: dict[str, int] = field(default_factory=dict)
    events_published: int = 0
    store_commit_seconds: Histogram = field(default_factory=lambda: Histogram(COMMIT_BUCKETS))
    etcd_request_seconds: dict[str, Histogram] = field(default_factory=dict)
    etcd_request_errors: dict[str, int] = field(default_factory=dict)
    cron_fired: dict[str, int] = field(default_factory=dict)
    cron_delay_seconds: Histogram = field(default_factory=lambda: Histogram(CRON_DELAY_BUCKETS))
    queue_depth: Callable[[], int] = _zero
    is_leader: Callable[[], bool] = _no

    # ---------------------------------------------------------------- tasks

    def known_module(self, module: str) -> None:
        """Show ``taskward_tasks_running{module}`` at 0 before the module's first run (dashboards then list it)."""
        self.tasks_running.setdefault(module, 0)

    def task_started(self, module: str, type_name: str) -> None:
        key = (module, type_name)
        self.tasks_started[key] = self.tasks_started.get(key, 0) + 1
        self.tasks_running[module] = self.tasks_running.get(module, 0) + 1

    def task_finished(self, module: str, type_name: str, outcome: Outcome, duration_s: float | None) -> None:
        """A task ended; ``duration_s`` is None for one that never ran here (aborted while queued), which
        was never counted as running either."""
        key = (module, type_name, outcome)
        self.tasks_finished[key] = self.tasks_finished.get(key, 0) + 1
        if duration_s is not None:
            self.tasks_running[module] = self.tasks_running.get(module, 0) - 1
            hist = self.task_duration.get((module, type_name))
            if hist is None:
                hist = self.task_duration[(module, type_name)] = Histogram(TASK_DURATION_BUCKETS)
            hist.observe(duration_s)

    # ---------------------------------------------------------------- etcd and cron

    def etcd_request(self, op: str, seconds: float, *, failed: bool) -> None:
        hist = self.etcd_request_seconds.get(op)
        if hist is None:
            hist = self.etcd_request_seconds[op] = Histogram(ETCD_BUCKETS)
        hist.observe(seconds)
        if failed:
            self.etcd_request_errors[op] = self.etcd_request_errors.get(op, 0) + 1

    def cron_fired_slot(self, schedule_id: str, delay_s: float | None) -> None:
        """A schedule fired; ``delay_s`` (slot time to firing) is None for a run-now, which has no slot."""
        self.cron_fired[schedule_id] = self.cron_fired.get(schedule_id, 0) + 1
        if delay_s is not None:
            self.cron_delay_seconds.observe(delay_s)
