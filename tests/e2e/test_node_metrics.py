"""A node's own Prometheus metrics (DESIGN §11) on a real process: every name on ``--rest``'s ``/metrics``
and on the ``--metrics`` listener, values that move as tasks start, finish, fail and are aborted, cron
firings, the listener's answers to anything but a scrape and its token check, a cluster's leader and etcd
figures, and a scrape whose cost does not grow with the tasks the node retains."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from taskward.api.prometheus import NODE_METRIC_NAMES
from taskward.pb.taskward.v1 import tasks_pb2 as pb
from tests.support.cluster import Cluster, unique_cluster_name
from tests.support.etcd import EtcdCluster
from tests.support.procs import TIMEOUT_MULT, NodeProc, free_port, poll
from tests.support.rest import expect_error, wait_http

SPEED = 60.0  # the cron clock: one cron minute per real second
Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(url: str, headers: dict[str, str] | None = None) -> Samples:
    resp = httpx.get(url, headers=headers, timeout=10 * TIMEOUT_MULT)
    assert resp.status_code == 200, resp.text
    assert resp.headers["content-type"].startswith("text/plain; version=")
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for f in text_string_to_metric_families(resp.text) for s in f.samples}


def names_in(url: str) -> set[str]:
    text = httpx.get(url, timeout=10 * TIMEOUT_MULT).text
    return {f.name + ("_total" if f.type == "counter" else "") for f in text_string_to_metric_families(text)}


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


@dataclass
class Metered:
    node: NodeProc
    rest: str
    metrics: str

    def start(self, type_name: str, **args: object) -> str:
        req = pb.StartTaskRequest(module="builtin", type=type_name, args_json=json.dumps(args))
        return str(self.node.stub().StartTask(req, timeout=10).task_id)

    def wait(self, task_id: str) -> str:
        req = pb.WaitTaskRequest(task_id=task_id, timeout=20 * TIMEOUT_MULT)
        return str(self.node.stub().WaitTask(req, timeout=30 * TIMEOUT_MULT).stats.state)


@pytest.fixture(scope="module")
def metered(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Metered]:
    """One slot (so a second task queues), an accelerated cron clock, and room for thousands of tasks."""
    rest, metrics = f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"
    node = NodeProc(tmp_path_factory.mktemp("metrics") / "n1", extra=[
        "--rest", rest, "--metrics", metrics, "--concurrency", "1", "--cron-test-clock", f"{time.time()}:{SPEED}",
        "--retention-max-per-module", "10000"]).start()
    try:
        wait_http(f"http://{rest}", node.proc, 15, node.log)
        yield Metered(node, f"http://{rest}/metrics", f"http://{metrics}/metrics")
    finally:
        assert node.stop() == 0, node.log()


def test_every_name_is_served_on_rest_and_on_the_metrics_listener(metered: Metered) -> None:
    assert set(NODE_METRIC_NAMES) <= names_in(metered.rest)
    assert names_in(metered.metrics) == set(NODE_METRIC_NAMES)  # the node's families, no REST ones
    listener = scrape(metered.metrics)
    assert value(listener, "taskward_node_info", node="n1", version=__import__("taskward").__version__) == 1
    assert value(listener, "taskward_is_leader") == 1  # alone, a node leads its embedded cluster


def test_values_move_as_tasks_start_finish_fail_and_are_aborted(metered: Metered) -> None:
    before = scrape(metered.metrics)
    assert metered.wait(metered.start("sleep", duration=0, steps=1)) == "done"
    assert metered.wait(metered.start("fail", error="on purpose")) == "failed"
    held = metered.start("sleep", duration=60, steps=600)
    queued = metered.start("sleep", duration=0, steps=1)  # waits: the node has one slot

    def busy() -> Samples | None:
        s = scrape(metered.metrics)
        return s if value(s, "taskward_tasks_running", module="builtin") == 1 and \
            value(s, "taskward_queue_depth") == 1 else None

    during = poll(busy, 15, "one task running and one queued")
    metered.node.stub().AbortTask(pb.TaskIdRequest(task_id=held), timeout=10)
    assert metered.wait(held) == "failed" and metered.wait(queued) == "done"
    after = scrape(metered.metrics)

    def moved(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert moved("taskward_tasks_started_total", module="builtin", type="sleep") == 3
    assert moved("taskward_tasks_started_total", module="builtin", type="fail") == 1
    assert moved("taskward_tasks_finished_total", module="builtin", type="sleep", outcome="done") == 2
    assert moved("taskward_tasks_finished_total", module="builtin", type="fail", outcome="failed") == 1
    assert moved("taskward_tasks_finished_total", module="builtin", type="sleep", outcome="aborted") == 1
    assert moved("taskward_task_duration_seconds_count", module="builtin", type="sleep") == 3
    assert moved("taskward_task_duration_seconds_bucket", module="builtin", type="sleep", le="+Inf") == 3
    assert moved("taskward_events_published_total") >= 12  # 4 runs: started + ended each, plus progress
    assert moved("taskward_store_commit_seconds_count") >= 4
    assert value(during, "taskward_tasks_running", module="builtin") == 1
    assert value(after, "taskward_tasks_running", module="builtin") == 0 and value(after, "taskward_queue_depth") == 0
    on_rest = scrape(metered.rest)
    for key, v in after.items():
        if key[0].startswith("taskward_tasks_"):
            assert on_rest[key] == v, key  # one registry behind both endpoints


def test_cron_firings_and_their_delay_are_counted(metered: Metered) -> None:
    rest = metered.rest.removesuffix("/metrics")
    schedule = {"id": "every-minute", "module": "builtin", "task_type": "sleep", "schedule": "* * * * *",
                "args": {"duration": 0, "steps": 1}}
    assert httpx.put(f"{rest}/cron", json={"schedules": [schedule]}, timeout=10).status_code == 200

    def twice() -> Samples | None:
        s = scrape(metered.metrics)
        return s if value(s, "taskward_cron_fired_total", schedule="every-minute") >= 2 else None

    try:
        fired = poll(twice, 20, "two cron firings")
    finally:
        assert httpx.put(f"{rest}/cron", json={"schedules": []}, timeout=10).status_code == 200
    assert value(fired, "taskward_cron_delay_seconds_count") >= 2
    assert value(fired, "taskward_cron_delay_seconds_sum") < 30  # real seconds late, at most a few


def test_the_listener_serves_metrics_only_and_says_so(metered: Metered) -> None:
    base = metered.metrics.removesuffix("/metrics")
    expect_error(httpx.get(f"{base}/"), 404, "not found: this listener serves /metrics only")
    expect_error(httpx.get(f"{base}/task_manager/list_modules"), 404, "not found: this listener serves /metrics only")
    refused = httpx.post(metered.metrics, content=b"x")
    expect_error(refused, 405, "method POST not allowed on /metrics: use GET")
    assert refused.headers["allow"] == "GET, HEAD"
    head = httpx.head(metered.metrics)
    assert head.status_code == 200 and head.content == b"" and int(head.headers["content-length"]) > 1000


def test_a_scrape_costs_the_same_for_10_and_2000_retained_tasks(metered: Metered) -> None:
    """The node's CPU for 50 scrapes of ``--rest``'s ``/metrics`` (which once listed every task of every
    module per scrape: 20 scrapes of 3,379 tasks cost 0.69 s) with ~10 retained tasks and then 2,000 more."""
    pid = metered.node.proc.pid if metered.node.proc else 0

    def cpu_of_scrapes(n: int = 50) -> float:
        with open(f"/proc/{pid}/stat") as f:
            before = f.read().rsplit(")", 1)[1].split()
        with httpx.Client(timeout=10 * TIMEOUT_MULT) as c:
            for _ in range(n):
                assert c.get(metered.rest).status_code == 200
        with open(f"/proc/{pid}/stat") as f:
            after = f.read().rsplit(")", 1)[1].split()
        ticks = sum(int(after[i]) - int(before[i]) for i in (11, 12))  # utime, stime
        return ticks / 100

    few_cpu = min(cpu_of_scrapes(), cpu_of_scrapes())
    stub = metered.node.stub()
    req = pb.StartTaskRequest(module="builtin", type="sleep", args_json='{"duration": 0, "steps": 0}')
    with ThreadPoolExecutor(16) as pool:
        ids = list(pool.map(lambda _: stub.StartTask(req, timeout=30).task_id, range(2000)))
    assert metered.wait(ids[-1]) == "done"
    listed = stub.ListTasks(pb.ListTasksRequest(module="builtin"), timeout=30).tasks
    assert len(listed) >= 2000  # retained: what the old scrape walked
    many_cpu = min(cpu_of_scrapes(), cpu_of_scrapes())
    assert many_cpu <= 1.5 * few_cpu + 0.1, (few_cpu, many_cpu)


def test_the_listener_asks_for_a_token_when_auth_is_on(tmp_path: Path) -> None:
    tokens = tmp_path / "tokens.toml"
    tokens.write_text('[[token]]\nname = "scraper"\nrole = "read"\ntoken = "scrape-secret-0123456789"\n'
                      '[[token]]\nname = "peer"\nrole = "node"\ntoken = "node-secret-0123456789ab"\n')
    tokens.chmod(0o600)
    address = f"127.0.0.1:{free_port()}"
    node = NodeProc(tmp_path / "n1", extra=["--tokens-file", str(tokens), "--metrics", address,
                                            "--auth-failure-limit", "0"]).start()
    try:
        url = f"http://{address}/metrics"
        for headers in ({}, {"authorization": "Bearer wrong"}, {"authorization": "scrape-secret-0123456789"}):
            refused = httpx.get(url, headers=headers)
            expect_error(refused, 401, "missing or wrong bearer token")
            assert refused.headers["www-authenticate"] == "Bearer"
        ok = scrape(url, {"authorization": "Bearer scrape-secret-0123456789"})
        assert value(ok, "taskward_is_leader") == 1
    finally:
        assert node.stop() == 0, node.log()


@pytest.mark.needs_etcd
def test_a_cluster_shows_one_leader_and_its_etcd_requests(etcd: EtcdCluster, tmp_path: Path,
                                                         request: pytest.FixtureRequest) -> None:
    c = Cluster(tmp_path, etcd.endpoints, name=unique_cluster_name(request.node.name))
    urls = {}
    for n in c.nodes:
        address = f"127.0.0.1:{free_port()}"
        n.extra += ["--metrics", address]
        urls[n.node_id] = f"http://{address}/metrics"
    try:
        leader = c.start().leader()
        got = {node_id: scrape(url) for node_id, url in urls.items()}
        assert {n: value(s, "taskward_is_leader") for n, s in got.items()} == {
            n: 1.0 if n == leader.node_id else 0.0 for n in urls}
        for node_id, s in got.items():
            assert value(s, "taskward_etcd_request_seconds_count", op="range") >= 1, node_id  # its replica's list
            assert value(s, "taskward_etcd_request_seconds_count", op="lease_grant") >= 1, node_id
        assert value(got[leader.node_id], "taskward_etcd_request_seconds_count", op="txn") >= 1  # the campaign
    finally:
        c.stop()
