"""The REST reads the dashboard is built on, against a real node and gateway: task types with their
signatures, module lists with full statuses that never unregister anything, ``keep`` on status reads,
live-only events, the member stream, and a ``wait_task`` whose client goes away."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from taskward.pb.taskward.v1 import tasks_pb2 as pb
from tests.support.grpc_proxy import CountingProxy
from tests.support.procs import TIMEOUT_MULT, NodeProc, free_port, poll
from tests.support.rest import GatewayProc, client, expect_error

NODE_ARGS = ["--enable-test-api", "--tasks", "tests.support.sample_tasks"]


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[NodeProc, httpx.Client]]:
    address = f"127.0.0.1:{free_port()}"
    n = NodeProc(tmp_path_factory.mktemp("dash") / "n1", extra=[*NODE_ARGS, "--rest", address]).start()
    try:
        with client(f"http://{address}") as rest:
            yield n, rest
    finally:
        assert n.stop() == 0, n.log()


def start(rest: httpx.Client, type_name: str, **args: object) -> str:
    resp = rest.post(f"/tasks/builtin/{type_name}", json=args)
    assert resp.status_code == 200, resp.text
    return str(resp.json())


def test_task_types_describe_their_arguments(served: tuple[NodeProc, httpx.Client]) -> None:
    _, rest = served
    types = {f"{t['module']}:{t['type']}": t for t in rest.get("/task_types").json()}
    assert types["builtin:sleep"]["params"] == [
        {"name": "duration", "type": "number", "required": True},
        {"name": "steps", "type": "integer", "required": False, "default": 10},
    ]
    assert types["builtin:fail"]["params"] == [{"name": "error", "type": "string", "required": False,
                                                "default": "failed"}]
    assert types["builtin:sleep"]["abortable"] is True and types["builtin:fail"]["abortable"] is False
    assert types["builtin:sleep"]["extra_args"] is False and types["builtin:sleep"]["name"] == "builtin:sleep"


def test_module_list_with_statuses_never_unregisters(served: tuple[NodeProc, httpx.Client]) -> None:
    n, rest = served
    tid = start(rest, "sleep", duration=0.1, steps=2)
    assert rest.get(f"/task_manager/wait_task/{tid}?timeout=20").json()["state"] == "done"
    for _ in range(2):  # reading a finished root twice: still there
        body = rest.get("/tasks/builtin").json()
        mine = [t for t in body["tasks"] if t["task_id"] == tid]
        assert len(mine) == 1 and body["unreachable"] == [] and body["truncated"] is False
        t = mine[0]
        assert (t["state"], t["progress_completed"], t["progress_total"], t["progress_fraction"]) == ("done", 2, 2, 1)
        assert t["served_by"] == n.address and t["parent_id"] == "none"
        assert rest.get(f"/task_manager/task_status/{tid}?keep=true").json()["state"] == "done"
        assert rest.get(f"/task_manager/task_status_recursive/{tid}?keep=TRUE").json()[0]["task_id"] == tid
    # ScyllaDB's plain read unregisters it, exactly once: the reads above did not.
    assert rest.get(f"/task_manager/task_status/{tid}").json()["state"] == "done"
    expect_error(rest.get(f"/task_manager/task_status/{tid}?keep=true"), 400, f"task with id {tid} not found")


def test_bad_reads_say_what_is_wrong_and_change_nothing(served: tuple[NodeProc, httpx.Client]) -> None:
    _, rest = served
    tid = start(rest, "sleep", duration=30, steps=30)
    try:
        expect_error(rest.get(f"/task_manager/task_status/{tid}?keep=maybe"), 400,
                     "bad parameter keep: expected true, false, 1 or 0, got 'maybe'")
        expect_error(rest.get("/tasks/no-such-module"), 400)
        expect_error(rest.get("/tasks/builtin?internal=sometimes"), 400,
                     "bad parameter internal: expected true, false, 1 or 0, got 'sometimes'")
        assert rest.get(f"/task_manager/task_status/{tid}?keep=true").json()["state"] == "running"
    finally:
        rest.post(f"/task_manager/abort_task/{tid}")


def sse_frames(rest: httpx.Client, path: str, count: int, timeout: float = 15.0,
               after_open: object = None) -> list[tuple[str, dict[str, object]]]:
    """The first ``count`` data frames of an SSE stream as (event, data); ``after_open()`` runs once the
    stream answered."""
    out: list[tuple[str, dict[str, object]]] = []
    with rest.stream("GET", path, timeout=timeout * TIMEOUT_MULT) as resp:
        assert resp.status_code == 200 and resp.headers["content-type"].startswith("text/event-stream")
        event = ""
        for line in resp.iter_lines():
            if line.startswith(": connected") and callable(after_open):
                after_open()
            elif line.startswith("event: "):
                event = line[7:]
            elif line.startswith("data: "):
                out.append((event, json.loads(line[6:])))
                if len(out) >= count:
                    return out
    raise AssertionError(f"stream ended after {out}")


def test_live_events_skip_the_replay(served: tuple[NodeProc, httpx.Client]) -> None:
    _, rest = served
    old = start(rest, "sleep", duration=0.05, steps=1)
    rest.get(f"/task_manager/wait_task/{old}?timeout=20")
    new: list[str] = []
    frames = sse_frames(rest, "/events?live=true", 1, after_open=lambda: new.append(start(rest, "fail", error="x")))
    assert frames[0][1]["task_id"] == new[0]  # nothing of the earlier task was replayed
    replay = sse_frames(rest, "/events?after=0", 1)
    assert replay[0][1]["sequence"] == 1  # without live, the retained events come first


def test_the_member_stream_starts_with_the_members(served: tuple[NodeProc, httpx.Client]) -> None:
    _, rest = served
    [(event, data)] = sse_frames(rest, "/cluster/nodes/stream", 1)
    assert event == "nodes" and data["stale"] is False
    assert [(m["id"], m["alive"], m["leader"]) for m in data["nodes"]] == [("n1", True, True)]  # type: ignore[union-attr]


@pytest.mark.needs_etcd
def test_the_member_stream_reports_a_dead_node(cluster3: object, tmp_path: Path) -> None:
    from tests.support.cluster import LEASE_TTL, Cluster

    assert isinstance(cluster3, Cluster)
    gw = GatewayProc(tmp_path, cluster3.nodes).start()
    try:
        with client(gw.url) as rest:
            killed: list[float] = []

            def kill() -> None:
                cluster3.node("n3").kill()
                killed.append(time.monotonic())

            frames = sse_frames(rest, "/cluster/nodes/stream", 2, timeout=LEASE_TTL + 15, after_open=kill)
            took = time.monotonic() - killed[0]
        assert sorted(m["id"] for m in frames[0][1]["nodes"]) == ["n1", "n2", "n3"]  # type: ignore[union-attr]
        assert sorted(m["id"] for m in frames[1][1]["nodes"]) == ["n1", "n2"]  # type: ignore[union-attr]
        assert took <= (LEASE_TTL + 2) * TIMEOUT_MULT, took
    finally:
        gw.stop()


def test_an_abandoned_wait_cancels_its_grpc_call_at_once(tmp_path: Path) -> None:
    """gateway → counting proxy → node: the proxy sees the gateway's WaitTask call end as soon as the
    REST client is gone, while the task itself goes on running."""
    n = NodeProc(tmp_path / "n1", extra=NODE_ARGS).start()
    proxy = CountingProxy(n.address).start()
    gw = GatewayProc(tmp_path, [proxy.address]).start()
    try:
        tid = n.stub().StartTask(pb.StartTaskRequest(module="builtin", type="sleep",
                                                     args_json='{"duration": 60, "steps": 60}'), timeout=5).task_id
        host, port = gw.address.rsplit(":", 1)
        sock = socket.create_connection((host, int(port)), timeout=5)
        sock.sendall(f"GET /task_manager/wait_task/{tid}?timeout=50 HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        poll(lambda: proxy.in_flight("WaitTask") == 1, 10, "the gateway's WaitTask to reach the node")
        sock.close()
        t0 = time.monotonic()
        poll(lambda: proxy.in_flight("WaitTask") == 0, 5, "the abandoned WaitTask to be cancelled")
        assert time.monotonic() - t0 < 2 * TIMEOUT_MULT
        st = n.stub().GetTaskStatus(pb.TaskIdRequest(task_id=tid, keep=True), timeout=5)
        assert st.stats.state == "running"  # the task is untouched; only the wait went
        # A wait whose client stays still answers.
        with client(gw.url) as rest:
            rest.post(f"/task_manager/abort_task/{tid}")
            assert rest.get(f"/task_manager/wait_task/{tid}?timeout=20").json()["aborted"] is True
    finally:
        gw.stop()
        proxy.stop()
        assert n.stop() == 0, n.log()
