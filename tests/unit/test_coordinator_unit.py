"""The leader's bookkeeping in-process: which tasks a cycle looks at, and which finished ones retention
drops. The replica runs on the real embedded store (SQLite), fed by its real watch."""

from __future__ import annotations

import asyncio
import time
import uuid
from dataclasses import replace
from pathlib import Path
from typing import Any, cast

from taskward import convert
from taskward.coordinator.cache import ClusterCache
from taskward.coordinator.child_events import ChildEvents, _Stream, behind
from taskward.coordinator.leader import RETAIN_FINISHED, RETAIN_S, Leader, expired
from taskward.coordinator.records import TASKS, ClusterChild, ClusterTask, Member, check_task, encode_task
from taskward.coordinator.store.base import Put
from taskward.coordinator.store.embedded import EmbeddedStore
from taskward.events import Event, EventType
from taskward.model import TaskState
from taskward.pb.taskward.v1 import tasks_pb2 as pb


def task(state: TaskState = TaskState.RUNNING, *, end_time: float = 0.0, down_child: bool = False) -> ClusterTask:
    child = ClusterChild(node="n1", task_id=str(uuid.uuid4()), state=TaskState.FAILED if down_child else state,
                         down_since=time.time() if down_child else 0.0)
    return ClusterTask(id=str(uuid.uuid4()), module="builtin", type="sleep", state=state, end_time=end_time,
                       target_nodes=("n1",), children=(child,))


def test_expired_keeps_the_newest_finished_and_drops_the_old() -> None:
    now = time.time()
    old = task(TaskState.DONE, end_time=now - RETAIN_S - 1)
    recent = [task(TaskState.DONE, end_time=now - i) for i in range(RETAIN_FINISHED + 5)]
    running = task(TaskState.RUNNING)
    dropped = expired([running, old, *recent], now)
    # the one past the age limit, then the five oldest beyond the count limit; never a running task
    assert [t.id for t in dropped] == [old.id] + [t.id for t in sorted(recent, key=lambda t: t.end_time)[:5]]
    assert expired([running, *recent[:10]], now) == []


def test_children_are_replaced_in_one_pass_in_target_order() -> None:
    nodes = tuple(f"n{i}" for i in range(1, 21))
    t = ClusterTask(id=str(uuid.uuid4()), module="builtin", type="sleep", target_nodes=nodes,
                    children=tuple(ClusterChild(node=n) for n in reversed(nodes[:10])))
    started = [replace(c, task_id=str(uuid.uuid4()), state=TaskState.RUNNING) for c in t.children]
    new = [ClusterChild(node=n) for n in reversed(nodes[10:])]
    driven = t.with_children([*started, *new])
    assert [c.node for c in driven.children] == list(nodes)  # target order, whatever order they came in
    assert {c.node: c for c in driven.children} == {c.node: c for c in [*started, *new]}
    assert driven.with_children(driven.children) == driven  # nothing changed: no write
    one = replace(driven.children[4], state=TaskState.DONE)
    assert driven.with_child(one).children == (*driven.children[:4], one, *driven.children[5:])


async def test_replica_keeps_the_active_set_the_leader_cycles_over(tmp_path: Path) -> None:
    store = EmbeddedStore(tmp_path / "cluster.db")
    await store.start()
    cache = ClusterCache(store)
    cache.start()
    try:
        await cache.wait_synced(5)
        running, done, orphan = task(), task(TaskState.DONE, end_time=1.0), task(TaskState.FAILED, down_child=True)
        for t in (running, done, orphan):
            await store.txn((), (Put(TASKS + t.id, encode_task(t)),))
        async with asyncio.timeout(5):
            await asyncio.gather(*(cache.wait_for_task(t.id) for t in (running, done, orphan)))
        snap = cache.snapshot
        assert set(snap.tasks) == {running.id, done.id, orphan.id}
        assert set(snap.active) == {running.id, orphan.id}  # finished with a child marked down stays watched

        finished = replace(running, state=TaskState.DONE, end_time=2.0)
        await store.txn((), (Put(TASKS + running.id, encode_task(finished)),))
        while cache.snapshot.tasks[running.id].state is not TaskState.DONE:
            await cache.wait_change(5)
        assert set(cache.snapshot.active) == {orphan.id}
    finally:
        await cache.stop()
        await store.close()


def test_a_poll_answer_is_carried_until_the_record_has_it() -> None:
    """The record a drive starts from may lag what the last poll said (its write lost a compare): the answer
    is applied again, a finished one whole (with the result), progress only forwards."""
    running = ClusterChild(node="n1", task_id="c1", state=TaskState.RUNNING, progress_completed=5, progress_total=10)
    done = replace(running, state=TaskState.DONE, progress_completed=10, end_time=2.0, result_json='{"rows":10}')
    assert behind(running, done) == done
    assert behind(replace(running, progress_completed=2), running) == running
    assert behind(running, replace(running, progress_completed=2)) == running  # an older answer changes nothing
    failed = replace(running, state=TaskState.FAILED, error="node n1 unavailable")
    assert behind(failed, done) == failed  # the record's final word stands
    assert behind(running, replace(done, task_id="other")) == running  # a restarted child is another task


def test_a_child_run_again_after_its_node_restarted_reports_its_new_progress() -> None:
    """A node that restarts re-queues an interrupted child, which starts over: its progress after the new
    started event is a new run's. Before that event a lower progress is an event older than the poll."""
    events = ChildEvents(cast(Any, None), lambda: None)
    events._streams["n1"] = _Stream("127.0.0.1:1", "i", generation=1)
    parent, child_id = str(uuid.uuid4()), str(uuid.uuid4())
    polled = ClusterChild(node="n1", task_id=child_id, state=TaskState.RUNNING, progress_completed=70.0,
                          progress_total=100.0)
    events.polled(polled, events.mark("n1"))

    def event(seq: int, kind: EventType, completed: float = 0.0) -> None:
        events._record("n1", Event(sequence=seq, type=kind, task_id=child_id, module="builtin", task_type="sleep",
                                   time=time.time(), progress_completed=completed, progress_total=100.0,
                                   cluster_parent=parent))

    event(1, EventType.PROGRESS, 60.0)  # older than what the poll saw: not taken
    followed = events.follow(parent, polled)
    assert followed is not None and followed.progress_completed == 70.0
    event(2, EventType.STARTED)  # the node restarted and runs the child again
    event(3, EventType.PROGRESS, 5.0)
    followed = events.follow(parent, polled)
    assert followed is not None and (followed.state, followed.progress_completed) == (TaskState.RUNNING, 5.0)
    event(4, EventType.PROGRESS, 6.0)  # later progress of the new run carries the mark of its start
    followed = events.follow(parent, replace(polled, progress_completed=5.0))
    assert followed is not None and followed.progress_completed == 6.0


class _StartingClients:
    """Answers every start with the id the leader drew, or with ``existing`` (an idempotency-key repeat)."""

    def __init__(self, existing: str = "") -> None:
        self.existing = existing

    async def start(self, address: str, req: Any, *, timeout_s: float) -> str:
        assert req.task_id and req.idempotency_key
        return self.existing or str(req.task_id)


async def started_child(events: ChildEvents, clients: _StartingClients) -> tuple[ClusterTask, ClusterChild]:
    t = replace(task(TaskState.CREATED), children=())
    leader = Leader(cast(Any, None), cast(Any, clients), events, dead_node_grace_s=60, rpc_timeout_s=5)
    member = Member(id="n1", address="127.0.0.1:1", version="test", started_at=0.0, instance="i")
    return t, await leader._start_child(t, ClusterChild(node="n1"), member)


async def test_a_child_the_leaders_start_created_is_followed_without_a_poll() -> None:
    """Its node's stream was open before the start was sent, so nothing the child publishes can be missed."""
    events = ChildEvents(cast(Any, None), lambda: None)
    events._streams["n1"] = _Stream("127.0.0.1:1", "i", generation=1)
    t, c = await started_child(events, _StartingClients())
    assert c.state is TaskState.RUNNING and c.task_id
    assert events.follow(t.id, c) == c
    completed = Event(sequence=1, type=EventType.COMPLETED, task_id=c.task_id, module="builtin", task_type="sleep",
                      time=time.time(), progress_completed=1.0, progress_total=1.0, cluster_parent=t.id)
    events._record("n1", completed)
    assert events.follow(t.id, c) is None  # done, and its node did not say what it returned: ask it, once
    events._record("n1", replace(completed, sequence=2), '{"rows": 3}')
    done = events.follow(t.id, c)
    assert done is not None and (done.state, done.result_json, done.progress_completed) == (
        TaskState.DONE, '{"rows": 3}', 1.0)


async def test_a_child_started_before_is_polled_before_it_is_followed() -> None:
    """A start answered with another id found the child an earlier start made (a lost write, a dead leader):
    what it did before the stream opened is unknown, so it is polled; so is a child started before its
    node's stream was established."""
    events = ChildEvents(cast(Any, None), lambda: None)
    events._streams["n1"] = _Stream("127.0.0.1:1", "i", generation=1)
    earlier = str(uuid.uuid4())
    t, c = await started_child(events, _StartingClients(existing=earlier))
    assert c.task_id == earlier and events.follow(t.id, c) is None
    events._streams["n1"] = _Stream("127.0.0.1:1", "i", generation=0)
    t, c = await started_child(events, _StartingClients())
    assert events.follow(t.id, c) is None


class _LoggingClients:
    """Logs each start as it is sent, and makes some other work ready at that moment (as a read arriving
    over the network would be)."""

    def __init__(self) -> None:
        self.log: list[str] = []

    async def start(self, address: str, req: Any, *, timeout_s: float) -> str:
        self.log.append(f"send {address}")
        asyncio.get_running_loop().call_soon(self.log.append, f"other work after {address}")
        await asyncio.sleep(0)
        return str(req.task_id)


async def test_a_fan_out_sends_each_call_in_its_own_turn_of_the_loop() -> None:
    """Other work this node serves gets its turn between the calls of a fan-out: sent in one turn, 20
    calls held a status read of the very task behind all of them."""
    nodes = tuple(f"n{i}" for i in range(1, 21))
    members = {n: Member(id=n, address=f"127.0.0.1:{i}", version="test", started_at=0.0, instance="i")
               for i, n in enumerate(nodes, 1)}
    clients = _LoggingClients()
    leader = Leader(cast(Any, None), cast(Any, clients), ChildEvents(cast(Any, clients), lambda: None),
                    dead_node_grace_s=60, rpc_timeout_s=5)
    t = ClusterTask(id=str(uuid.uuid4()), module="builtin", type="sleep", target_nodes=nodes)
    driven = await leader._drive(t, members)
    assert [c.node for c in driven.children] == list(nodes) and all(c.task_id for c in driven.children)
    assert driven.state is TaskState.RUNNING
    sends = [i for i, line in enumerate(clients.log) if line.startswith("send")]
    first_other = clients.log.index("other work after 127.0.0.1:1")
    assert len(sends) == 20 and first_other < sends[1]  # the work made ready by the first send ran before the second


class _AnsweringClients:
    """Answers a child's status poll with ``answer`` (what a node sent on the wire)."""

    def __init__(self, answer: pb.TaskStatus) -> None:
        self.answer = answer

    async def status(self, address: str, task_id: str, *, timeout_s: float) -> Any:
        return convert.status_from_pb(replace_task_id(self.answer, task_id))


def replace_task_id(msg: pb.TaskStatus, task_id: str) -> pb.TaskStatus:
    out = pb.TaskStatus()
    out.CopyFrom(msg)
    out.stats.task_id = task_id
    return out


async def test_a_child_a_record_cannot_hold_fails_instead_of_the_whole_record_vanishing() -> None:
    """Replicas skip a record with a value out of range, whole: written as a node reported it, progress
    of 1e300 would have made the cluster task vanish from every node, the leader's cycle included."""
    member = Member(id="n1", address="127.0.0.1:1", version="test", started_at=0.0, instance="i")
    t = task()
    for progress, result in ((1e300, ""), (2.0, "[" * 100 + "]" * 100)):
        answer = pb.TaskStatus(module="builtin", progress_completed=progress, progress_total=4.0, result_json=result,
                               stats=pb.TaskStats(type="sleep", kind="node", scope="node",
                                                   state="done" if result else "running"))
        leader = Leader(cast(Any, None), cast(Any, _AnsweringClients(answer)),
                        ChildEvents(cast(Any, None), lambda: None), dead_node_grace_s=60, rpc_timeout_s=5)
        driven = await leader._drive(t, {"n1": member})
        (child,) = driven.children
        assert child.state is TaskState.FAILED and child.error.startswith(
            "node n1 reported what cannot be recorded: "), child
        assert (child.task_id, child.progress_completed) == (t.children[0].task_id, 0.0)  # as it was, failed
        assert driven.state is TaskState.FAILED and "n1" in driven.error
        check_task(driven)  # the record every replica will read is a valid one
