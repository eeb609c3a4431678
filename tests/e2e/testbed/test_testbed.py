"""The docker-compose testbed (three etcd members, three nodes, a gateway) under container-level faults,
driven through the docker SDK: SIGKILL the leader's container mid-task, SIGKILL an etcd member, stop
and start a node, pause one; and nodes that must not join (wrong token, corrupted data dir, same id).

The module brings up its own Docker engine when none runs (root only), builds the image offline when
no registry is reachable, and tears everything down at the end. All traffic is on 127.0.0.1.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest

from taskward.pb.taskward.v1 import tasks_pb2 as pb
from taskward.pb.taskward.v1 import tasks_pb2_grpc as pb_grpc
from tests.support.procs import REPO, TIMEOUT_MULT, poll, taskward_cmd
from tests.support.testbed import (
    ETCD,
    IMAGE,
    METADATA,
    NODES,
    TOKEN,
    Engine,
    build_image,
    compose,
    containers,
    docker_available,
    wait_healthy,
)

pytestmark = [pytest.mark.testbed, pytest.mark.timeout(900)]


@dataclass
class RunningTestbed:
    engine: Engine
    client: Any
    started: float

    def container(self, service: str) -> Any:
        return containers(self.client)[service]


@pytest.fixture(scope="module")
def testbed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningTestbed]:
    why = docker_available()
    if why:
        pytest.skip(why)
    started = time.monotonic()
    engine = Engine(tmp_path_factory.mktemp("dockerd")).start()
    try:
        _, built = build_image(engine)
        print(f"\ntestbed: engine and image ready in {time.monotonic() - started:.0f}s (built: {built})")
        with contextlib.suppress(subprocess.CalledProcessError):
            compose(engine, "down", "-v", "--timeout", "2")  # what an interrupted run left
        compose(engine, "up", "-d")
        client = engine.client()
        wait_healthy(client)
        print(f"testbed: up and healthy after {time.monotonic() - started:.0f}s")
        yield RunningTestbed(engine, client, started)
    finally:
        with contextlib.suppress(Exception):
            compose(engine, "down", "-v", "--timeout", "5")
        engine.stop()
        print(f"testbed: done after {time.monotonic() - started:.0f}s")


def stub(service: str) -> pb_grpc.TaskManagerStub:
    return pb_grpc.TaskManagerStub(grpc.insecure_channel(NODES[service]))


def call(service: str, method: str, request: Any, timeout: float = 10.0) -> Any:
    with grpc.insecure_channel(NODES[service]) as ch:
        return getattr(pb_grpc.TaskManagerStub(ch), method)(request, timeout=timeout * TIMEOUT_MULT,
                                                           metadata=METADATA)


def start_cluster_task(duration: float, steps: int) -> str:
    req = pb.StartTaskRequest(module="builtin", type="sleep", cluster=True,
                              args_json=json.dumps({"duration": duration, "steps": steps}))
    return str(call("node1", "StartTask", req).task_id)


def children_of(task_id: str) -> list[str]:
    st = call("node1", "GetTaskStatus", pb.TaskIdRequest(task_id=task_id, keep=True))
    return [c.task_id for c in st.children_ids]


def leader() -> str:
    return next(n.id for n in call("node1", "ListNodes", pb.ListNodesRequest()).nodes if n.leader)


def wait_done(task_id: str, via: str = "node1", timeout: float = 90.0) -> pb.TaskStatus:
    def once() -> pb.TaskStatus | None:
        st = call(via, "WaitTask", pb.WaitTaskRequest(task_id=task_id, timeout=2), timeout=10)
        return st if st.stats.state in ("done", "failed") else None

    return poll(once, timeout, f"task {task_id} to finish")


def until_formed(timeout: float = 60.0) -> None:
    def formed() -> bool:
        for node in NODES:
            resp = call(node, "ListNodes", pb.ListNodesRequest(), timeout=3)
            leaders = sum(n.leader for n in resp.nodes)
            if resp.stale or sorted(n.id for n in resp.nodes) != sorted(NODES) or leaders != 1:
                return False
        return True

    poll(formed, timeout, "the three nodes to list each other and one leader")


def test_the_host_talks_to_it_with_the_usual_tools(testbed: RunningTestbed) -> None:
    until_formed()
    env = {**os.environ, "TASKWARD_TOKEN": TOKEN}
    nodes = subprocess.run([*taskward_cmd(), "tasks", "-p", "7202", "nodes"], capture_output=True, text=True,
                           env=env, cwd=REPO, timeout=30, check=False)
    assert nodes.returncode == 0, nodes.stderr
    assert [line.split()[0] for line in nodes.stdout.splitlines()[1:]] == ["node1", "node2", "node3"]
    resp = subprocess.run(["redis-cli", "-3", "-p", "3320", "--pass", TOKEN, "--no-auth-warning", "TASK.ADMIN", "LIST"],
                          capture_output=True, text=True, timeout=30, check=False)
    assert resp.returncode == 0 and "builtin:sleep" in resp.stdout, (resp.stdout, resp.stderr)
    import httpx

    with httpx.Client(base_url="http://127.0.0.1:10001", headers={"authorization": f"Bearer {TOKEN}"}) as rest:
        assert rest.get("/task_manager/list_modules").json()[0] == "builtin"
        assert rest.get("/health").json()["status"] == "ok"


def test_a_cluster_task_reads_the_same_from_every_node(testbed: RunningTestbed) -> None:
    until_formed()
    tid = start_cluster_task(duration=1.0, steps=2)
    final = wait_done(tid)
    assert final.stats.state == "done" and sorted(c.node for c in final.children_ids) == sorted(NODES)
    for node in NODES:
        st = call(node, "GetTaskStatus", pb.TaskIdRequest(task_id=tid, keep=True))
        assert st.stats.state == "done"
        assert [c.task_id for c in st.children_ids] == [c.task_id for c in final.children_ids]


def test_the_leaders_container_killed_mid_task_loses_nothing(testbed: RunningTestbed) -> None:
    until_formed()
    tid = start_cluster_task(duration=8.0, steps=8)
    children = poll(lambda: ids if len(ids := children_of(tid)) == 3 else None, 20, "children started")
    victim = leader()
    testbed.container(victim).kill()  # SIGKILL
    survivor = next(n for n in NODES if n != victim)
    time.sleep(1.0)
    testbed.container(victim).start()  # from its volume, as a restarted machine
    final = wait_done(tid, via=survivor)
    assert final.stats.state == "done", final
    assert [c.task_id for c in final.children_ids] == children  # the same children: re-attached, none re-run
    wait_healthy(testbed.client)


def test_an_etcd_member_killed_mid_task(testbed: RunningTestbed) -> None:
    until_formed()
    tid = start_cluster_task(duration=4.0, steps=4)
    testbed.container("etcd2").kill()
    final = wait_done(tid)
    assert final.stats.state == "done", final
    testbed.container("etcd2").start()
    wait_healthy(testbed.client)


def test_a_stopped_and_started_node_keeps_its_history(testbed: RunningTestbed) -> None:
    until_formed()
    tid = call("node2", "StartTask", pb.StartTaskRequest(module="builtin", type="sleep",
                                                          args_json='{"duration": 0.2, "steps": 2}')).task_id
    assert call("node2", "WaitTask", pb.WaitTaskRequest(task_id=tid, timeout=10)).stats.state == "done"
    testbed.container("node2").stop(timeout=10)
    testbed.container("node2").start()
    wait_healthy(testbed.client)
    st = call("node2", "GetTaskStatus", pb.TaskIdRequest(task_id=tid, keep=True))
    assert (st.stats.state, st.progress_completed, st.progress_total) == ("done", 2.0, 2.0)


def test_a_paused_node_is_reported_unreachable_and_converges(testbed: RunningTestbed) -> None:
    until_formed()
    tid = start_cluster_task(duration=8.0, steps=8)
    poll(lambda: len(children_of(tid)) == 3, 20, "children started")
    paused = "node3" if leader() != "node3" else "node2"
    testbed.container(paused).pause()
    try:
        entries = call("node1", "GetTaskStatusRecursive", pb.TaskIdRequest(task_id=tid, keep=True), timeout=15)
        on_paused = [s for s in entries.statuses if s.stats.state == "unknown"]
        assert len(on_paused) == 1 and paused in on_paused[0].error, entries
        assert call("node1", "ListModules", pb.ListModulesRequest()).modules  # the others keep serving
    finally:
        testbed.container(paused).unpause()
    final = wait_done(tid)
    assert final.stats.state == "done", final
    wait_healthy(testbed.client)


def one_off_node(testbed: RunningTestbed, node_id: str, *, token: str = TOKEN, volume: str = "",
                 timeout: float = 90.0) -> tuple[int, str]:
    """Run a node container that must not come up: its exit code and log."""
    volumes = {volume: {"bind": "/var/lib/taskward/data", "mode": "rw"}} if volume else {}
    c = testbed.client.containers.run(
        IMAGE, ["node", f"--id={node_id}", "--listen=127.0.0.1:7299"], network_mode="host", detach=True,
        environment={"TASKWARD_TOKEN": token, "TASKWARD_ETCD": ETCD, "TASKWARD_CLUSTER": "testbed",
                     "TASKWARD_DATA_DIR": "/var/lib/taskward/data"}, volumes=volumes)
    try:
        code = c.wait(timeout=timeout * TIMEOUT_MULT)["StatusCode"]
        return int(code), c.logs().decode(errors="replace")
    finally:
        c.remove(force=True)


def test_nodes_that_must_not_join(testbed: RunningTestbed, tmp_path: Path) -> None:
    until_formed()
    code, log = one_off_node(testbed, "node4", token="not-the-token")
    assert code == 2 and "error: the cluster refuses this node's token" in log, log
    code, log = one_off_node(testbed, "node1")
    assert code == 2 and "error: node id node1 is already live at 127.0.0.1:7201" in log, log
    vol = testbed.client.volumes.create("taskward-testbed-corrupt")
    try:
        testbed.client.containers.run(IMAGE, ["-c", "echo not-a-database > /var/lib/taskward/data/taskward.sqlite3"],
                                      entrypoint="sh", remove=True,
                                      volumes={vol.name: {"bind": "/var/lib/taskward/data", "mode": "rw"}})
        code, log = one_off_node(testbed, "node5", volume=vol.name)
        assert code == 2 and "is not a usable taskward database (file is not a database)" in log, log
    finally:
        vol.remove(force=True)
    assert sorted(n.id for n in call("node1", "ListNodes", pb.ListNodesRequest()).nodes) == sorted(NODES)
