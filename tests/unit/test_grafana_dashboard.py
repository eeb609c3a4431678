"""The Grafana dashboards under deploy/grafana/ query only what a node exports: every ``taskward_*`` series
in every panel and variable exists in the node's registry, with the labels the query selects on."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from taskward.api.prometheus import node_registry
from taskward.metrics import NodeMetrics, Outcome

DASHBOARDS = sorted((Path(__file__).resolve().parents[2] / "deploy" / "grafana").glob("*.json"))
SERIES = re.compile(r"\b(taskward_[a-z_]+)\b(\{[^}]*\})?")
MATCHER = re.compile(r"([a-zA-Z_][a-zA-Z0-9_]*)\s*(=~|!~|!=|=)")


def exported() -> dict[str, set[str]]:
    """Every sample name a node exports (one of each label set filled in), with its label names."""
    m = NodeMetrics()
    m.task_started("builtin", "sleep")
    m.task_finished("builtin", "sleep", Outcome.DONE, 0.1)
    m.etcd_request("txn", 0.001, failed=True)
    m.cron_fired_slot("nightly", 0.2)
    text = generate_latest(node_registry(m, node_id="n1", version="0.0.0")).decode()
    names: dict[str, set[str]] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            names.setdefault(s.name, set()).update(s.labels)
    return names


def queries(node: Any) -> Iterator[str]:
    """Every PromQL string in a dashboard: panel targets and templating queries, at any depth."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key in ("expr", "definition") and isinstance(value, str):
                yield value
            elif key == "query" and isinstance(value, str | dict):
                yield from ([value] if isinstance(value, str) else queries(value))
            else:
                yield from queries(value)
    elif isinstance(node, list):
        for item in node:
            yield from queries(item)


def test_there_is_a_dashboard() -> None:
    assert DASHBOARDS, "deploy/grafana/*.json missing"
    for path in DASHBOARDS:
        dash = json.loads(path.read_text())
        ids = [p["id"] for p in dash["panels"]]
        assert len(ids) == len(set(ids)) and dash["uid"] and dash["title"]
        assert any(p.get("targets") for p in dash["panels"])


def test_every_series_a_dashboard_queries_exists_with_its_labels() -> None:
    names = exported()
    checked = 0
    for path in DASHBOARDS:
        for promql in queries(json.loads(path.read_text())):
            for name, selector in SERIES.findall(promql):
                assert name in names, f"{path.name}: {name} is not exported by a node (in {promql!r})"
                for label, _ in MATCHER.findall(selector):
                    assert label in names[name], f"{path.name}: {name} has no label {label!r} (in {promql!r})"
                checked += 1
    assert checked >= 20  # the check looked at the dashboards' queries, not at nothing


def test_the_checker_catches_a_missing_series() -> None:
    names = exported()
    assert "taskward_tasks_started_total" in names and "taskward_tasks_started" not in names
    assert names["taskward_task_duration_seconds_bucket"] >= {"le", "module", "type"}
    assert [n for n, _ in SERIES.findall('rate(taskward_nope_total{a="b"}[5m])')] == ["taskward_nope_total"]
