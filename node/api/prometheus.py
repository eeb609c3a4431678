"""The node's metrics in the Prometheus text format: ``NodeMetrics`` read at scrape time.

A scrape walks what ``taskward.metrics.NodeMetrics`` already holds (one entry per module, type,
outcome, etcd operation and schedule), so its cost depends on how many kinds of things the node has
seen, never on how many tasks it retains. The names are fixed (DESIGN §11) and listed in
``NODE_METRIC_NAMES``; ``deploy/grafana/`` builds on them and a unit test checks that it queries
nothing else.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from taskward.metrics import Histogram, NodeMetrics

NODE_METRIC_NAMES = (
    "taskward_node_info",
    "taskward_tasks_started_total",
    "taskward_tasks_finished_total",
    "taskward_task_duration_seconds",
    "taskward_tasks_running",
    "taskward_queue_depth",
    "taskward_events_published_total",
    "taskward_store_commit_seconds",
    "taskward_is_leader",
    "taskward_etcd_request_seconds",
    "taskward_etcd_request_errors_total",
    "taskward_cron_fired_total",
    "taskward_cron_delay_seconds",
)
"""Every family a node exports, as PromQL names it (a counter with ``_total``, a histogram by its base
name: queries use ``_bucket``, ``_sum`` and ``_count``)."""


def _buckets(hist: Histogram) -> list[tuple[str, float]]:
    """Cumulative (``le``, count) pairs, bounds spelt as Prometheus' own client spells them."""
    return [("+Inf" if bound == float("inf") else repr(float(bound)), float(n)) for bound, n in hist.cumulative()]


def _histogram(name: str, doc: str, labels: list[str], hists: Iterable[tuple[tuple[str, ...], Histogram]]
               ) -> HistogramMetricFamily:
    family = HistogramMetricFamily(name, doc, labels=labels)
    for values, hist in hists:
        family.add_metric(list(values), _buckets(hist), hist.total)
    return family


class NodeCollector(Collector):
    """Yields the node's families from ``metrics`` on every scrape (no state of its own)."""

    def __init__(self, metrics: NodeMetrics, *, node_id: str, version: str) -> None:
        self._m = metrics
        self._info = (node_id, version)

    def describe(self) -> Iterator[Metric]:
        return self.collect()

    def collect(self) -> Iterator[Metric]:
        m = self._m
        info = GaugeMetricFamily("taskward_node_info", "This node: its id and version (always 1)",
                                 labels=["node", "version"])
        info.add_metric(list(self._info), 1.0)
        yield info
        started = CounterMetricFamily("taskward_tasks_started", "Task runs started on this node (a retried task "
                                      "counts once)", labels=["module", "type"])
        for (module, type_name), n in m.tasks_started.items():
            started.add_metric([module, type_name], n)
        yield started
        finished = CounterMetricFamily("taskward_tasks_finished", "Tasks that ended on this node, by outcome "
                                       "(done, failed, aborted)", labels=["module", "type", "outcome"])
        for (module, type_name, outcome), n in m.tasks_finished.items():
            finished.add_metric([module, type_name, outcome.value], n)
        yield finished
        yield _histogram("taskward_task_duration_seconds", "Seconds from a task's start to its end (retries "
                         "included)", ["module", "type"], m.task_duration.items())
        running = GaugeMetricFamily("taskward_tasks_running", "Tasks running on this node now (between retry "
                                    "attempts included)", labels=["module"])
        for module, n in m.tasks_running.items():
            running.add_metric([module], n)
        yield running
        yield GaugeMetricFamily("taskward_queue_depth", "Root tasks waiting for an executor slot",
                                value=m.queue_depth())
        yield CounterMetricFamily("taskward_events_published", "Events published on this node's stream",
                                  value=m.events_published)
        yield _histogram("taskward_store_commit_seconds", "Seconds per SQLite group commit (fsync included)", [],
                         [((), m.store_commit_seconds)])
        yield GaugeMetricFamily("taskward_is_leader", "1 while this node leads the cluster, else 0",
                                value=1.0 if m.is_leader() else 0.0)
        yield _histogram("taskward_etcd_request_seconds", "Seconds per etcd request, by operation (failed ones "
                         "included)", ["op"], (((op,), h) for op, h in m.etcd_request_seconds.items()))
        errors = CounterMetricFamily("taskward_etcd_request_errors", "etcd requests that failed, by operation",
                                     labels=["op"])
        for op, n in m.etcd_request_errors.items():
            errors.add_metric([op], n)
        yield errors
        fired = CounterMetricFamily("taskward_cron_fired", "Cron firings this node made as the leader, by "
                                    "schedule (run-now included)", labels=["schedule"])
        for schedule, n in m.cron_fired.items():
            fired.add_metric([schedule], n)
        yield fired
        yield _histogram("taskward_cron_delay_seconds", "Seconds from a cron slot's time to its firing", [],
                         [((), m.cron_delay_seconds)])


def node_registry(metrics: NodeMetrics, *, node_id: str, version: str) -> CollectorRegistry:
    """A registry holding only this node's families (served on ``--rest``'s and ``--metrics``' ``/metrics``)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(NodeCollector(metrics, node_id=node_id, version=version))
    return registry
