"""The client library (``taskward.Client``, ``taskward.AsyncClient``) against real node processes: failover,
owner routing, the error tree, waits, results, events that resume across a SIGKILL and restart, many
threads on one client, both clients giving the same answers, and README's example run as written."""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from taskward import (
    AsyncClient,
    Client,
    InvalidArgument,
    NotAbortable,
    TaskFailed,
    TaskNotFound,
    TaskStatus,
    Unauthenticated,
    Unavailable,
    WaitTimeout,
)
from taskward.client import EventIterator
from taskward.errors import NoNodeReachable
from taskward.pb.taskward.v1 import tasks_pb2 as pb
from tests.support.grpc_proxy import CountingProxy
from tests.support.procs import REPO, TIMEOUT_MULT, NodeProc, free_port, new_test_module

NODE_ARGS = ["--enable-test-api", "--tasks", "tests.support.sample_tasks"]
UNKNOWN = "deadbeef-0000-4000-8000-00000000abcd"
T = 15 * TIMEOUT_MULT  # seconds any single wait below may take


@pytest.fixture
def two_nodes(tmp_path: Path) -> Iterator[tuple[NodeProc, NodeProc]]:
    """Two standalone nodes (each its own one-member cluster), both with the sample task types."""
    a = NodeProc(tmp_path / "a", node_id="a", extra=NODE_ARGS)
    b = NodeProc(tmp_path / "b", node_id="b", extra=NODE_ARGS)
    a.launch(cwd=REPO)
    b.launch(cwd=REPO)
    try:
        a.wait_ready(T)
        b.wait_ready(T)
        yield a, b
    finally:
        a.stop()
        b.stop()


def start_direct(node: NodeProc, module: str, type_: str, **args: object) -> str:
    """A task started on ``node`` with its own stub, behind the client's back."""
    req = pb.StartTaskRequest(module=module, type=type_, args_json=json.dumps(args))
    return str(node.stub().StartTask(req, timeout=T).task_id)


# ---------------------------------------------------------------- README


def readme_client_example() -> str:
    text = (REPO / "README.md").read_text()
    section = text[text.index("## Client library"):]
    match = re.search(r"```python\n(.*?)```", section, re.S)
    assert match is not None
    return match.group(1)


def test_the_readme_example_runs_as_written(tmp_path: Path) -> None:
    node = NodeProc(tmp_path / "n1", extra=["--tasks", "taskward.demo_tasks"]).start()
    try:
        script = tmp_path / "example.py"
        script.write_text(readme_client_example())
        env = {k: v for k, v in os.environ.items() if k != "TASKWARD_TOKEN"} | {"TASKWARD_NODES": node.address}
        out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, env=env, cwd=tmp_path,
                             timeout=60 * TIMEOUT_MULT, check=False)
        assert out.returncode == 0, out.stderr
        assert out.stdout == "done {'tables': 2, 'batches': 10}\nfailed: disk full\n"
    finally:
        node.stop()


# ---------------------------------------------------------------- failover and routing


def test_failover_when_the_first_listed_node_is_killed(two_nodes: tuple[NodeProc, NodeProc]) -> None:
    a, b = two_nodes
    with Client([a.address, b.address], timeout=T) as client:
        on_a = client.start("sample", "whoami")  # the first listed node takes calls that name no task
        assert on_a.wait(T).state == "done"
        assert a.stub().GetTaskStatus(pb.TaskIdRequest(task_id=on_a.id, keep=True)).stats.state == "done"
        a.kill()
        assert client.modules() == ["builtin", "sample"]  # b answers now
        on_b = client.start("sample", "whoami", extra="after the kill")
        assert on_b.result(T) == {"task_id": on_b.id, "extra": "after the kill"}
        assert b.stub().GetTaskStatus(pb.TaskIdRequest(task_id=on_b.id, keep=True)).stats.state == "done"
        assert [n["id"] for n in client.nodes()] == ["b"]
        with pytest.raises(Unavailable) as info:  # a's task may only live on a: it cannot be answered
            on_a.status()
        assert isinstance(info.value, NoNodeReachable) and a.address in info.value.message


def test_a_task_on_the_second_node_is_found_through_the_list(two_nodes: tuple[NodeProc, NodeProc]) -> None:
    a, b = two_nodes
    b.stub().SetTtl(pb.SetTtlRequest(kind=pb.TTL_KIND_TASK, ttl=1000))  # a finished test task stays
    with new_test_module(b) as test_api:
        running = test_api.CreateTestTask(pb.CreateTestTaskRequest()).task_id  # runs until finished
        with Client([a.address, b.address], timeout=T) as client:
            handle = client.task(running)
            st = handle.status()
            assert (st.id, st.state, st.module, st.type) == (running, "running", "test", "test")
            assert client._async._pool().owner_of(running) == b.address  # located once, then cached
            assert [s.id for s in handle.tree()] == [running]
            with pytest.raises(NotAbortable):
                handle.abort()
            test_api.FinishTestTask(pb.FinishTestTaskRequest(task_id=running))
            assert handle.wait(T).state == "done"
            assert handle.status().state == "done" and handle.status().finished  # reads keep it
            with Client(a.address) as only_a, pytest.raises(TaskNotFound):
                only_a.task(running).status()


# ---------------------------------------------------------------- errors


def test_errors_are_the_tree_with_the_nodes_messages(tmp_path: Path) -> None:
    node = NodeProc(tmp_path / "n1", extra=NODE_ARGS).start()
    try:
        with Client(node.address, timeout=T) as client:
            with pytest.raises(TaskNotFound) as nf:
                client.task(UNKNOWN).status()
            assert nf.value.message == f"task with id {UNKNOWN} not found"
            with pytest.raises(TaskNotFound):
                client.task(UNKNOWN).wait(1)
            with pytest.raises(InvalidArgument) as bad:  # refused before any call
                client.task("../etc")
            assert bad.value.message == "malformed task id '../etc': expected a canonical lowercase UUID"
            with pytest.raises(InvalidArgument) as bad:  # and by the node, in the same words
                client.call("GetTaskStatus", pb.TaskIdRequest(task_id="../etc"))
            assert bad.value.message == "malformed task id '../etc': expected a canonical lowercase UUID"
            with pytest.raises(InvalidArgument) as bad:
                client.start("builtin", "nope")
            assert bad.value.message == "task type builtin:nope not found"
            with pytest.raises(InvalidArgument, match="must be JSON values"):
                client.start("builtin", "sleep", duration={1, 2})
            with new_test_module(node) as test_api:
                tid = test_api.CreateTestTask(pb.CreateTestTaskRequest()).task_id
                with pytest.raises(NotAbortable) as na:
                    client.task(tid).abort()
                assert na.value.message == f"Task with id {tid} is not abortable"
                t0 = time.monotonic()
                with pytest.raises(TimeoutError) as timeout:
                    client.task(tid).wait(timeout=0.3)
                assert isinstance(timeout.value, WaitTimeout) and time.monotonic() - t0 >= 0.3
        with Client(f"127.0.0.1:{free_port()}", timeout=T) as nowhere, pytest.raises(Unavailable) as un:
            nowhere.modules()
        assert un.value.message.startswith("no node reachable: 127.0.0.1:")
    finally:
        node.stop()


def test_a_wrong_token_is_unauthenticated(tmp_path: Path) -> None:
    node = NodeProc(tmp_path / "n1", env={"TASKWARD_TOKEN": "s3cret"}).start()
    try:
        for token in ("wrong", None):
            with Client(node.address, token=token) as client:
                with pytest.raises(Unauthenticated) as info:
                    client.modules()
                assert info.value.message == "missing or wrong bearer token"
                with pytest.raises(Unauthenticated), client.events() as events:  # not retried: it cannot succeed
                    next(events)
        with Client(node.address, token="s3cret") as client:
            assert client.modules() == ["builtin"]
    finally:
        node.stop()


# ---------------------------------------------------------------- waits, results, failures


def test_wait_result_and_task_failed(tmp_path: Path) -> None:
    node = NodeProc(tmp_path / "n1", extra=NODE_ARGS).start()
    try:
        with Client(node.address, timeout=T) as client:
            h = client.start("sample", "whoami", extra={"rows": 3}, keyspace="ks", entity="e")
            st = h.wait(T)
            assert (st.state, st.finished, st.failed, st.keyspace, st.entity) == ("done", True, False, "ks", "e")
            assert h.result() == st.result == {"task_id": h.id, "extra": {"rows": 3}}
            assert st.args == {"extra": {"rows": 3}} and st.parent_id is None and st.end_time is not None
            assert (st.attempt, st.max_attempts, st.next_attempt_at) == (1, 1, None)
            assert h.status() == h.status() == st  # reads never unregister a finished root
            failing = client.start("builtin", "fail", error="it broke")
            with pytest.raises(TaskFailed) as info:
                failing.result(T)
            assert (info.value.task_id, info.value.error) == (failing.id, "it broke")
            final = info.value.status
            assert isinstance(final, TaskStatus) and (final.id, final.state, final.error) == (
                failing.id, "failed", "it broke")
            sleeper = client.start("builtin", "sleep", duration=30, steps=300)
            sleeper.abort()
            with pytest.raises(TaskFailed) as info:
                sleeper.wait(T)
            assert info.value.error == "aborted" and isinstance(info.value.status, TaskStatus)
            assert info.value.status.aborted
            # a cluster task (the embedded coordinator): its result per node, its children in the tree
            cluster = client.start("sample", "whoami", cluster=True)
            result = cluster.result(T)
            tree = cluster.tree()
            assert tree[0].kind == "cluster" and [c.node for c in tree[0].children_ids] == ["n1"]
            assert result == {"n1": {"task_id": tree[0].children_ids[0].task_id, "extra": None}}
            # the CLI's ScyllaDB read: a finished root leaves once read that way
            assert h.status(unregister=True).state == "done"
            with pytest.raises(TaskNotFound):
                h.status()
    finally:
        node.stop()


# ---------------------------------------------------------------- events


def test_task_events_end_when_the_task_has_finished(tmp_path: Path) -> None:
    node = NodeProc(tmp_path / "n1", extra=NODE_ARGS).start()
    try:
        node.stub().SetTtl(pb.SetTtlRequest(kind=pb.TTL_KIND_TASK, ttl=1000))  # a finished test task stays
        with Client(node.address, timeout=T) as client:
            with new_test_module(node) as test_api:
                tid = test_api.CreateTestTask(pb.CreateTestTaskRequest()).task_id
                events = client.task(tid).events()  # subscribed: nothing it does from here on is missed
                test_api.FinishTestTask(pb.FinishTestTaskRequest(task_id=tid, error="bad"))
                seen = [(e["type"], e["task_id"], e["error"]) for e in events]
                assert seen == [("task.failed", tid, "bad")]
                assert list(client.task(tid).events()) == []  # a finished task's stream ends at once
            # a cluster task has no events of its own: its children's, until it has finished
            cluster = client.start("builtin", "sleep", duration=0.3, steps=3, cluster=True)
            evs = list(cluster.events())
            assert cluster.status().state == "done"
            child = cluster.status().children_ids[0].task_id
            assert {e["task_id"] for e in evs} == {child} and {e["cluster_parent_id"] for e in evs} == {cluster.id}
            assert evs[-1]["type"] == "task.completed" and evs[-1]["node"] == node.address
            with pytest.raises(TaskNotFound):
                list(client.task(UNKNOWN).events())
    finally:
        node.stop()


def consecutive(seqs: list[int]) -> bool:
    return seqs == list(range(seqs[0], seqs[0] + len(seqs)))


def take_until(events: EventIterator, task_id: str, kind: str = "task.completed") -> list[dict[str, Any]]:
    """Events until ``task_id``'s ``kind`` event, inclusive. Bounded: past the deadline the iterator is
    closed from a timer thread (which ends a ``next`` that waits), and the test fails saying what it saw."""
    out: list[dict[str, Any]] = []
    timer = threading.Timer(2 * T, events.close)
    timer.start()
    try:
        for ev in events:
            out.append(ev)
            if ev["task_id"] == task_id and ev["type"] == kind:
                return out
    finally:
        timer.cancel()
    raise AssertionError(f"the stream ended (or the deadline passed) before {kind} of {task_id}: {out}")


def test_events_resume_across_a_sigkill_and_restart_without_gap_or_duplicate(tmp_path: Path) -> None:
    """The client reaches the node through a proxy that holds its reconnects back until the restarted
    node has published new events: those must come from the replay, exactly once, in order."""
    node = NodeProc(tmp_path / "n1", extra=NODE_ARGS).start()
    proxy = CountingProxy(node.address).start()
    try:
        with Client(proxy.address, timeout=T) as client, client.events() as events:
            before = start_direct(node, "builtin", "sleep", duration=0.05, steps=2)
            seen = take_until(events, before)
            assert [e["type"] for e in seen] == ["task.started"] + ["task.progress"] * 3 + ["task.completed"]
            proxy.hold_streams()  # the client's reconnects wait, unsubscribed, at the proxy
            node.kill()
            node.start()
            after = start_direct(node, "builtin", "sleep", duration=0.05, steps=2)
            node.stub().WaitTask(pb.WaitTaskRequest(task_id=after, timeout=T), timeout=T + 5)
            proxy.release_streams()
            seen += take_until(events, after)
            seqs = [e["sequence"] for e in seen]
            assert consecutive(seqs), seqs
            assert seqs[0] == 1 and len(seqs) == 10 and {e["node"] for e in seen} == {proxy.address}
            assert events.positions == {proxy.address: seqs[-1]}
            # replay of what was retained: from the start, or after a position
            with client.events(after=0) as replay:
                assert [e["sequence"] for e in take_until(replay, after)] == seqs
            with client.events(after=5) as replay:
                assert [e["sequence"] for e in take_until(replay, after)] == seqs[5:]
    finally:
        proxy.stop()
        node.stop()


def test_a_break_before_the_first_event_loses_nothing(tmp_path: Path) -> None:
    """A live stream says where it starts (the node's last published sequence), so a client whose stream
    breaks before any event arrived resumes from there: what happened in between comes from the replay."""
    node = NodeProc(tmp_path / "n1", extra=NODE_ARGS).start()
    old = start_direct(node, "builtin", "sleep", duration=0, steps=0)  # history the live stream must not replay
    node.stub().WaitTask(pb.WaitTaskRequest(task_id=old, timeout=T), timeout=T + 5)
    proxy = CountingProxy(node.address).start()
    try:
        with Client(proxy.address, timeout=T) as client, client.events() as events:
            proxy.hold_streams()
            node.kill()
            node.start()
            missed = start_direct(node, "builtin", "sleep", duration=0.05, steps=2)  # while the client is away
            node.stub().WaitTask(pb.WaitTaskRequest(task_id=missed, timeout=T), timeout=T + 5)
            proxy.release_streams()
            seen = take_until(events, missed)
            assert {e["task_id"] for e in seen} == {missed}  # all of it, and nothing from before the stream
            assert [e["type"] for e in seen] == ["task.started"] + ["task.progress"] * 3 + ["task.completed"]
            assert consecutive([e["sequence"] for e in seen])
    finally:
        proxy.stop()
        node.stop()


def test_events_of_every_listed_node_each_resumed_after_a_sigkill(two_nodes: tuple[NodeProc, NodeProc]) -> None:
    a, b = two_nodes
    with Client([a.address, b.address], timeout=T) as client, client.events() as events:
        first = {n.address: start_direct(n, "sample", "whoami") for n in (a, b)}
        seen = take_until(events, first[a.address]) + take_until(events, first[b.address])
        b.kill()
        b.start()  # restarted from its data dir: its sequence numbers go on
        second = start_direct(b, "sample", "whoami")
        seen += take_until(events, second)
        later = start_direct(a, "sample", "whoami")
        seen += take_until(events, later)
        for node in (a, b):
            seqs = [e["sequence"] for e in seen if e["node"] == node.address]
            assert consecutive(seqs) and seqs[0] == 1, (node.address, seqs)
        assert {e["task_id"] for e in seen} == {*first.values(), second, later}
        positions = events.positions
    # a new iterator resumes each node where this one stopped, with what happened in between
    missed = {n.address: start_direct(n, "sample", "whoami") for n in (a, b)}
    for n in (a, b):
        n.stub().WaitTask(pb.WaitTaskRequest(task_id=missed[n.address], timeout=T), timeout=T + 5)
    with Client([a.address, b.address], timeout=T) as client, client.events(after=positions) as resumed:
        got = take_until(resumed, missed[a.address])
        got += [] if any(e["task_id"] == missed[b.address] and e["type"] == "task.completed" for e in got) \
            else take_until(resumed, missed[b.address])
        for node in (a, b):
            seqs = [e["sequence"] for e in got if e["node"] == node.address]
            assert seqs[0] == positions[node.address] + 1 and consecutive(seqs), (node.address, seqs)


# ---------------------------------------------------------------- threads, and both clients alike


def test_one_sync_client_from_many_threads(tmp_path: Path) -> None:
    node = NodeProc(tmp_path / "n1", extra=NODE_ARGS).start()
    try:
        with Client(node.address, timeout=T) as client:
            watcher = client.events()
            completed: set[str] = set()

            def watch() -> None:
                for ev in watcher:
                    if ev["type"] == "task.completed":
                        completed.add(ev["task_id"])

            reader = threading.Thread(target=watch)
            reader.start()

            def work(i: int) -> tuple[str, Any, bool]:
                h = client.start("sample", "whoami", extra=i)
                result = h.result(T)
                return h.id, result, h.status() == h.status() and client.modules() == ["builtin", "sample"]

            with ThreadPoolExecutor(8) as pool:
                answers = list(pool.map(work, range(40)))
            assert [r for _, r, _ in answers] == [{"task_id": tid, "extra": i} for i, (tid, _, _) in enumerate(answers)]
            assert all(ok for _, _, ok in answers)
            ids = {tid for tid, _, _ in answers}
            deadline = time.monotonic() + T
            while not ids <= completed and time.monotonic() < deadline:
                time.sleep(0.02)
            watcher.close()  # from another thread than the reader's: its loop ends
            reader.join(T)
            assert not reader.is_alive() and ids <= completed
    finally:
        node.stop()


async def test_async_and_sync_clients_answer_alike(tmp_path: Path) -> None:
    node = NodeProc(tmp_path / "n1", extra=NODE_ARGS).start()
    try:
        with Client(node.address, timeout=T) as sync_client:
            async with AsyncClient(node.address, timeout=T) as async_client:
                handle = await async_client.start("sample", "tree", fanout=2, depth=2)
                done = await handle.wait(T)
                assert done == sync_client.task(handle.id).wait(T)
                assert await handle.status() == sync_client.task(handle.id).status() == done
                tree = await handle.tree()
                assert tree == sync_client.task(handle.id).tree() and tree[0] == done
                assert len(tree) == 3  # the root and its two children; the folded grandchildren are gone
                assert await async_client.tasks("sample") == sync_client.tasks("sample")
                assert await async_client.tasks("sample", internal=True) == sync_client.tasks("sample", True)
                assert await async_client.modules() == sync_client.modules()
                assert await async_client.nodes() == sync_client.nodes()
                assert await async_client.ttl(user=True) == sync_client.ttl(user=True) == 3600
                with pytest.raises(TaskFailed) as a_failed:
                    await (await async_client.start("builtin", "fail", error="x")).result(T)
                with pytest.raises(TaskFailed) as s_failed:
                    sync_client.task(a_failed.value.task_id).result(T)
                assert a_failed.value.status == s_failed.value.status
                async with async_client.events(after=0) as stream:
                    first = [ev async for ev in _take(stream, 5)]
                with sync_client.events(after=0) as it:
                    assert [next(it) for _ in range(5)] == first
    finally:
        node.stop()


async def _take(stream: Any, n: int) -> Any:
    async for ev in stream:
        yield ev
        n -= 1
        if n == 0:
            return


def test_a_closed_client_says_so(tmp_path: Path) -> None:
    client = Client(f"127.0.0.1:{free_port()}")
    client.close()
    client.close()  # idempotent
    with pytest.raises(RuntimeError, match="closed"):
        client.modules()
    assert asyncio.run(_closed_async()) == "closed"


async def _closed_async() -> str:
    client = AsyncClient(f"127.0.0.1:{free_port()}")
    await client.close()
    try:
        await client.modules()
    except RuntimeError as exc:
        return "closed" if "closed" in str(exc) else str(exc)
    return "not refused"
