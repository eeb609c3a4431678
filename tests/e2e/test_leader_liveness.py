"""A cluster task ends as soon as its children do, through every window in which news can go missing.

The leader runs in this process (the real ``Coordinator`` on the real embedded store, so the test can
hold its replica back); its three member nodes are real ``taskward node`` processes, each reached only
through a real gRPC proxy that can break, hold back or thin out their event streams. The periodic
reconcile poll is switched off (an hour) except where it is the subject, so each test shows that the
mechanism it names is enough on its own.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from pathlib import Path
from typing import TypeVar

import grpc
import pytest

from taskward.config import ClusterConfig, EtcdConfig
from taskward.coordinator.catalog import CheckedArgs
from taskward.coordinator.cluster import Coordinator
from taskward.coordinator.records import MEMBERS, TASKS, ClusterTask, Member, decode_task, encode_member
from taskward.coordinator.store.base import Compare, Op, TxnResult, WatchEvent
from taskward.coordinator.store.embedded import EmbeddedStore
from taskward.model import TaskState
from taskward.pb.taskward.v1 import tasks_pb2 as pb
from taskward.pb.taskward.v1 import tasks_pb2_grpc as pb_grpc
from tests.support.grpc_proxy import CountingProxy
from tests.support.procs import TIMEOUT_MULT, NodeProc

T = TypeVar("T")
NODES = ("n1", "n2", "n3")
NO_RECONCILE = 3600.0


class HeldBackStore(EmbeddedStore):
    """The embedded store, whose watchers (the leader's replica) can be held back while writes go on,
    as a watch-fed replica lags its store; it counts record writes that lost their compare."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.lost_compares = 0
        self._flowing = asyncio.Event()
        self._flowing.set()
        self._committed = asyncio.Event()

    def hold_watch(self) -> None:
        self._flowing.clear()

    def release_watch(self) -> None:
        self._flowing.set()

    async def txn(self, compares: Sequence[Compare], ops: Sequence[Op]) -> TxnResult:
        result = await super().txn(compares, ops)
        if not result.succeeded and any(c.key.startswith(TASKS) for c in compares):
            self.lost_compares += 1
        if result.succeeded:
            fired, self._committed = self._committed, asyncio.Event()
            fired.set()
        return result

    async def watch(self, prefix: str, *, from_revision: int) -> AsyncIterator[WatchEvent]:  # type: ignore[override]
        async for ev in super().watch(prefix, from_revision=from_revision):
            await self._flowing.wait()
            yield ev

    async def committed_task(self, task_id: str, done: Callable[[ClusterTask], bool], within: float) -> ClusterTask:
        """The record as committed (not as any replica shows it), once ``done`` holds of it."""
        async with asyncio.timeout(within * TIMEOUT_MULT):
            while True:
                committed = self._committed
                kv = await self.get(TASKS + task_id)
                t = decode_task(kv.value) if kv else None
                if t is not None and done(t):
                    return t
                await committed.wait()


class Leader:
    """An in-process coordinator that leads a cluster of the three node processes."""

    def __init__(self, root: Path, nodes: Sequence[NodeProc], proxies: dict[str, CountingProxy], *,
                 node_id: str = "lead", reconcile_s: float = NO_RECONCILE) -> None:
        self.store = HeldBackStore(root / "cluster.sqlite3")
        config = ClusterConfig(etcd=EtcdConfig(timeout_s=1.0), lease_ttl_s=3, loop_interval_s=0.5,
                               reconcile_interval_s=reconcile_s)
        self.coord = Coordinator(config, self.store, node_id=node_id, address="127.0.0.1:9", version="test",
                                 instance=node_id, token=None, catalog=AnyArgs())
        self._nodes = nodes
        self._proxies = proxies

    async def start(self) -> Leader:
        await self.coord.start()
        # Members as the nodes would register, reached through their proxies: on a live lease, as a member
        # only counts while its lease lives (one long enough for the test, kept by no one).
        lease = await self.store.grant_lease(3600)
        for n in self._nodes:
            m = Member(id=n.node_id, address=self._proxies[n.node_id].address, version="test",
                       started_at=time.time(), instance=(n.data_dir / "instance").read_text().strip())
            await self.store.put(MEMBERS + n.node_id, encode_member(m), lease=lease)
        await until(lambda: self.coord.is_leader and set(NODES) <= set(self.coord.snapshot.members), 10,
                    "the in-process coordinator to lead the three nodes")
        return self

    async def stop(self) -> None:
        await self.coord.stop()

    async def start_sleep(self, duration: float, steps: int) -> str:
        return await self.coord.start_task("builtin", "sleep", json.dumps({"duration": duration, "steps": steps}),
                                           nodes=list(NODES))

    async def followed(self, task_id: str) -> ClusterTask:
        """Until every child of the task is followed from its node's stream (polled since it was up)."""
        def all_trusted() -> ClusterTask | None:
            t = self.coord.snapshot.tasks.get(task_id)
            ok = t is not None and len(t.children) == 3 and all(
                c.task_id and self.coord.child_events.trusted(c) for c in t.children)
            return t if ok else None

        return await until(all_trusted, 10, f"every child of {task_id} to be followed")

    async def started(self, task_id: str) -> ClusterTask:
        """Until the record holds a started child on every node."""
        def all_started() -> ClusterTask | None:
            t = self.coord.snapshot.tasks.get(task_id)
            return t if t is not None and len(t.children) == 3 and all(c.task_id for c in t.children) else None

        return await until(all_started, 10, f"children of {task_id} to start")

    async def finished(self, task_id: str, within: float) -> ClusterTask:
        rec = await self.coord.wait(task_id, within * TIMEOUT_MULT)
        t = self.coord.snapshot.tasks[rec.id]
        assert t.state is TaskState.DONE, t
        assert [c.state for c in t.children] == [TaskState.DONE] * 3, t.children
        return t


class AnyArgs:
    """The leader's catalog: every type exists and takes any arguments (the nodes check them)."""

    def check(self, module: str, type_name: str, args_json: str) -> CheckedArgs:
        return CheckedArgs(json.dumps(json.loads(args_json), sort_keys=True, separators=(",", ":")), True, "")

    def modules_with(self, type_name: str) -> list[str]:
        return ["builtin"]


async def until(fn: Callable[[], T | None], within: float, what: str) -> T:
    """Check ``fn`` every 20 ms (what it reads has no notification of its own) until it gives a value."""
    deadline = time.monotonic() + within * TIMEOUT_MULT
    while (value := fn()) is None or value is False:
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {within}s waiting for {what}")
        await asyncio.sleep(0.02)
    return value


async def children_done_on_their_nodes(nodes: Sequence[NodeProc], t: ClusterTask) -> None:
    """Wait on each node itself (WaitTask: the node's own notification) until its child has finished."""
    by_id = {n.node_id: n for n in nodes}

    async def one(node: str, child_id: str) -> None:
        async with grpc.aio.insecure_channel(by_id[node].address) as ch:
            st = await pb_grpc.TaskManagerStub(ch).WaitTask(
                pb.WaitTaskRequest(task_id=child_id, timeout=20 * TIMEOUT_MULT), timeout=25 * TIMEOUT_MULT)
            assert st.stats.state == "done", st

    await asyncio.gather(*(one(c.node, c.task_id) for c in t.children))


@pytest.fixture(scope="module")
def members(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[list[NodeProc], dict[str, CountingProxy]]]:
    """Three standalone node processes, each behind a proxy of its own; shared by the module's tests."""
    root = tmp_path_factory.mktemp("members")
    nodes = [NodeProc(root / n, node_id=n) for n in NODES]
    proxies: dict[str, CountingProxy] = {}
    try:
        for n in nodes:
            n.start()
            proxies[n.node_id] = CountingProxy(n.address).start()
        yield nodes, proxies
    finally:
        for p in proxies.values():
            p.stop()
        for n in nodes:
            n.stop()


@pytest.fixture
def cluster(members: tuple[list[NodeProc], dict[str, CountingProxy]]) -> Iterator[
        tuple[list[NodeProc], dict[str, CountingProxy]]]:
    nodes, proxies = members
    yield nodes, proxies
    for p in proxies.values():
        p.release_streams()
        p.drop_messages(lambda raw: False)


async def test_news_whose_write_lost_its_compare_is_written_again(
        cluster: tuple[list[NodeProc], dict[str, CountingProxy]], tmp_path: Path) -> None:
    """The failure CI found: the leader's replica lags its own last write of a record, so the next write
    (carrying the children's completions) loses its compare. The news must be written again at once."""
    nodes, proxies = cluster
    lead = await Leader(tmp_path, nodes, proxies).start()
    try:
        tid = await lead.start_sleep(duration=2.0, steps=8)
        t = await lead.followed(tid)
        lead.store.hold_watch()  # from here the leader's snapshot shows an ever older record
        await children_done_on_their_nodes(nodes, t)
        committed = await lead.store.committed_task(tid, lambda t: t.state.finished, within=5)
        assert committed.state is TaskState.DONE, committed
        assert lead.store.lost_compares >= 1  # the writes did race the lagging replica
        lead.store.release_watch()
        await lead.finished(tid, within=5)
    finally:
        lead.store.release_watch()
        await lead.stop()


async def test_start_and_completion_before_the_streams_are_subscribed(
        cluster: tuple[list[NodeProc], dict[str, CountingProxy]], tmp_path: Path) -> None:
    nodes, proxies = cluster
    for p in proxies.values():
        p.hold_streams()
    lead = await Leader(tmp_path, nodes, proxies).start()
    try:
        tid = await lead.start_sleep(duration=0.05, steps=1)
        t = await lead.started(tid)
        await children_done_on_their_nodes(nodes, t)
        assert not any(lead.coord.child_events.trusted(c) for c in t.children)
        for p in proxies.values():
            p.release_streams()  # subscribed only now, after every event of the children
        await lead.finished(tid, within=5)
    finally:
        await lead.stop()


async def test_completion_while_the_streams_reconnect(
        cluster: tuple[list[NodeProc], dict[str, CountingProxy]], tmp_path: Path) -> None:
    nodes, proxies = cluster
    lead = await Leader(tmp_path, nodes, proxies).start()
    try:
        tid = await lead.start_sleep(duration=1.5, steps=4)
        t = await lead.followed(tid)
        for p in proxies.values():
            p.hold_streams()
            p.break_streams()  # every stream drops; the new ones wait until the children are done
        await children_done_on_their_nodes(nodes, t)
        for p in proxies.values():
            p.release_streams()
        await lead.finished(tid, within=5)
    finally:
        await lead.stop()


async def test_completion_across_a_node_restart(
        cluster: tuple[list[NodeProc], dict[str, CountingProxy]], tmp_path: Path) -> None:
    nodes, proxies = cluster
    lead = await Leader(tmp_path, nodes, proxies).start()
    try:
        tid = await lead.start_sleep(duration=2.0, steps=4)
        t = await lead.followed(tid)
        n2 = nodes[1]
        await asyncio.to_thread(n2.kill)  # SIGKILL; the retryable child is re-queued when n2 starts again
        await asyncio.to_thread(n2.start)
        await children_done_on_their_nodes(nodes, t)
        final = await lead.finished(tid, within=5)
        assert [(c.task_id, c.attempt) for c in final.children] == [(c.task_id, 0) for c in t.children]
    finally:
        await lead.stop()


async def test_completion_across_a_leadership_change(
        cluster: tuple[list[NodeProc], dict[str, CountingProxy]], tmp_path: Path) -> None:
    nodes, proxies = cluster
    first = await Leader(tmp_path, nodes, proxies, node_id="lead-a").start()
    try:
        tid = await first.start_sleep(duration=1.5, steps=4)
        t = await first.followed(tid)
    finally:
        await first.stop()  # gone before any child finishes: nobody hears their completions
    await children_done_on_their_nodes(nodes, t)
    second = await Leader(tmp_path, nodes, proxies, node_id="lead-b").start()
    try:
        await second.finished(tid, within=5)
    finally:
        await second.stop()


async def test_a_lost_event_costs_seconds_not_forever(
        cluster: tuple[list[NodeProc], dict[str, CountingProxy]], tmp_path: Path) -> None:
    """Defence in depth: completions that never arrive (dropped without a trace, the stream stays up) are
    found by the leader's slow reconcile poll of followed children."""
    nodes, proxies = cluster
    dropped: list[str] = []

    def completion(raw: bytes) -> bool:
        ev = pb.Event.FromString(raw)
        if ev.type == "task.completed":
            dropped.append(ev.task_id)
            return True
        return False

    for p in proxies.values():
        p.drop_messages(completion)
    reconcile_s = 1.0
    lead = await Leader(tmp_path, nodes, proxies, reconcile_s=reconcile_s).start()
    try:
        tid = await lead.start_sleep(duration=1.0, steps=4)
        t = await lead.followed(tid)
        await children_done_on_their_nodes(nodes, t)
        started = time.monotonic()
        await lead.finished(tid, within=reconcile_s + 2.0)
        assert sorted(dropped) == sorted(c.task_id for c in t.children)
        assert time.monotonic() - started <= (reconcile_s + 2.0) * TIMEOUT_MULT
    finally:
        await lead.stop()
