"""taskward's own REST surfaces on a node's ``--rest`` port: SSE events with resume, Prometheus metrics,
OpenAPI docs, health, the test API switched off, clean shutdown with open streams, and bind rules."""

from __future__ import annotations

import json
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.support.procs import REPO, TIMEOUT_MULT, NodeProc, free_port, taskward_cmd
from tests.support.rest import client, expect_error, rest_url, wait_http


def rest_node(data_dir: Path, *extra: str) -> NodeProc:
    node = NodeProc(data_dir, extra=["--rest", f"127.0.0.1:{free_port()}", *extra]).start()
    wait_http(rest_url(node), node.proc, 15, node.log)
    return node


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NodeProc]:
    """A node without the test API, serving REST on its own port."""
    n = rest_node(tmp_path_factory.mktemp("rest-surfaces") / "n1")
    try:
        yield n
    finally:
        assert n.stop() == 0, n.log()


@pytest.fixture(scope="module")
def rest(node: NodeProc) -> Iterator[httpx.Client]:
    with client(rest_url(node)) as c:
        yield c


def read_events(rest: httpx.Client, until: Any, headers: dict[str, str] | None = None,
                params: dict[str, str] | None = None) -> list[tuple[int, str, dict[str, Any]]]:
    """(id, event, data) frames of /events until ``until(frame)`` is true."""
    frames: list[tuple[int, str, dict[str, Any]]] = []
    with rest.stream("GET", "/events", headers=headers, params=params, timeout=20 * TIMEOUT_MULT) as resp:
        assert resp.status_code == 200 and resp.headers["content-type"].startswith("text/event-stream")
        fields: dict[str, str] = {}
        for line in resp.iter_lines():
            if line.startswith(":"):
                continue
            if line:
                key, _, value = line.partition(": ")
                fields[key] = value
                continue
            if fields:
                frame = (int(fields["id"]), fields["event"], json.loads(fields["data"]))
                frames.append(frame)
                fields = {}
                if until(frame):
                    return frames
    raise AssertionError(f"stream ended early after {frames}")


def test_events_and_resume(rest: httpx.Client) -> None:
    tid = rest.post("/tasks/builtin/sleep", json={"duration": 0.3, "steps": 3}).json()

    def completed(frame: tuple[int, str, dict[str, Any]]) -> bool:
        return frame[1] == "task.completed" and frame[2]["task_id"] == tid

    frames = read_events(rest, completed)
    mine = [f for f in frames if f[2]["task_id"] == tid]
    assert [f[1] for f in mine] == ["task.started", *["task.progress"] * (len(mine) - 2), "task.completed"]
    assert [f[0] for f in frames] == sorted(f[0] for f in frames) and all(f[0] == f[2]["sequence"] for f in frames)
    assert mine[-1][2]["progress_completed"] == 3 and mine[-1][2]["module"] == "builtin"
    middle = mine[1][0]
    resumed = read_events(rest, completed, headers={"last-event-id": str(middle)})
    assert resumed == [f for f in frames if f[0] > middle], "resume must continue right after Last-Event-ID"
    assert read_events(rest, completed, params={"after": str(middle)}) == resumed


def test_metrics(rest: httpx.Client) -> None:
    tid = rest.post("/tasks/builtin/sleep", json={"duration": 0, "steps": 1}).json()
    assert rest.get(f"/task_manager/wait_task/{tid}", params={"timeout": 10}).json()["state"] == "done"
    expect_error(rest.get("/task_manager/task_status/nope"), 400)
    resp = rest.get("/metrics")
    assert resp.status_code == 200 and resp.headers["content-type"].startswith("text/plain")
    families = {f.name: f for f in text_string_to_metric_families(resp.text)}
    requests = {(s.labels["method"], s.labels["route"], s.labels["status"]): s.value
                for s in families["taskward_rest_requests"].samples if s.name.endswith("_total")}
    assert requests[("POST", "/tasks/{module}/{type_name}", "200")] >= 1
    assert requests[("GET", "/task_manager/task_status/{task_id}", "400")] >= 1
    assert requests[("GET", "/task_manager/wait_task/{task_id}", "200")] >= 1
    latency = [s for s in families["taskward_rest_request_duration_seconds"].samples
               if s.name.endswith("_count") and s.labels["route"] == "/task_manager/wait_task/{task_id}"]
    assert latency and latency[0].value >= 1
    finished = {(s.labels["module"], s.labels["type"], s.labels["outcome"]): s.value
                for s in families["taskward_tasks_finished"].samples}
    assert finished[("builtin", "sleep", "done")] >= 1
    assert [s.value for s in families["taskward_tasks_running"].samples if s.labels["module"] == "builtin"] == [0.0]
    assert not families["taskward_node_up"].samples  # a gateway's: a node's REST shows the node's own metrics


def test_docs_and_openapi(rest: httpx.Client) -> None:
    spec = rest.get("/openapi.json").json()
    paths = set(spec["paths"])
    for p in ("/task_manager/list_modules", "/task_manager/list_module_tasks/{module}",
              "/task_manager/task_status/{task_id}", "/task_manager/task_status_recursive/{task_id}",
              "/task_manager/abort_task/{task_id}", "/task_manager/wait_task/{task_id}", "/task_manager/ttl",
              "/task_manager/user_ttl", "/task_manager/drain/{module}", "/task_manager_test/test_module",
              "/task_manager_test/test_task", "/task_manager_test/finish_test_task/{task_id}",
              "/tasks/{module}/{type_name}", "/cluster/nodes", "/events", "/metrics", "/health"):
        assert p in paths, p
    assert set(spec["paths"]["/task_manager/ttl"]) == {"get", "post"}
    assert "ErrorBody" in spec["components"]["schemas"]
    docs = rest.get("/docs")
    assert docs.status_code == 200 and "swagger" in docs.text.lower()


def test_health_and_nodes(rest: httpx.Client, node: NodeProc) -> None:
    assert rest.get("/health").json() == {"status": "ok", "nodes": {node.address: True}}
    nodes = rest.get("/cluster/nodes").json()
    assert [(n["id"], n["address"], n["alive"]) for n in nodes] == [("n1", node.address, True)]
    assert set(nodes[0]) == {"id", "address", "alive", "leader", "version", "started_at"}


def test_test_api_disabled(rest: httpx.Client) -> None:
    message = "the test API is disabled; start the node with --enable-test-api"
    expect_error(rest.post("/task_manager_test/test_module"), 404, message)
    expect_error(rest.post("/task_manager_test/test_task"), 404, message)
    assert "test" not in rest.get("/task_manager/list_modules").json()


def test_stop_with_open_event_stream(tmp_path: Path) -> None:
    node = rest_node(tmp_path / "n1")
    opened = threading.Event()

    def listen() -> None:
        with httpx.stream("GET", f"{rest_url(node)}/events", timeout=30) as resp:
            opened.set()
            for _ in resp.iter_lines():
                pass

    reader = threading.Thread(target=listen, daemon=True)
    reader.start()
    assert opened.wait(10 * TIMEOUT_MULT)
    t0 = time.monotonic()
    assert node.stop() == 0, node.log()
    assert time.monotonic() - t0 < 5 * TIMEOUT_MULT, "an open SSE stream held up shutdown"
    reader.join(5)


@pytest.mark.parametrize("args", [["gateway", "--listen", "0.0.0.0:{port}"],
                                  ["gateway", "--listen", "nonsense"],
                                  ["gateway", "--node", "127.0.0.1:1,bad"]])
def test_gateway_bind_rules(args: list[str]) -> None:
    cmd = [*taskward_cmd(), *(a.format(port=free_port()) for a in args)]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=30, cwd=REPO, check=False)
    assert done.returncode == 2 and done.stderr.startswith("error: "), (done.returncode, done.stderr)
