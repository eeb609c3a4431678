"""Replicated records are input: each field is range-checked before the replica uses it, a bad record is
skipped and named (the replica then reads as stale, the store still counts as reachable), and a member
counts only on a live lease with a valid address. The replica runs on the real embedded store."""

from __future__ import annotations

import logging
import math
import uuid
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from taskward.coordinator.cache import ClusterCache
from taskward.coordinator.record_checks import BadRecord, valid_address
from taskward.coordinator.records import (
    MEMBERS,
    TASKS,
    ClusterChild,
    ClusterTask,
    Member,
    encode_member,
    encode_task,
    parse_member,
    parse_task,
)
from taskward.coordinator.store.base import Delete, Put
from taskward.coordinator.store.embedded import EmbeddedStore
from taskward.model import TaskState
from taskward.pb.taskward.v1 import cluster_pb2 as cpb


def good_task(**fields: Any) -> ClusterTask:
    child = ClusterChild(node="n1", task_id=str(uuid.uuid4()), state=TaskState.DONE, progress_completed=2,
                         progress_total=2, start_time=1.7e9, end_time=1.7e9 + 1, result_json='{"ok":true}')
    t = ClusterTask(id=str(uuid.uuid4()), module="builtin", type="sleep", args_json='{"duration":1}',
                    state=TaskState.DONE, created_at=1.7e9, start_time=1.7e9, end_time=1.7e9 + 1,
                    target_nodes=("n1",), children=(child,))
    return replace(t, **fields)


def with_child(**fields: Any) -> ClusterTask:
    t = good_task()
    return replace(t, children=(replace(t.children[0], **fields),))


BAD_TASKS = [
    (good_task(created_at=1e300), "created_at 1e+300 is not a time (0 to 253402300799 seconds)"),
    (good_task(start_time=-5.0), "start_time -5.0 is not a time (0 to 253402300799 seconds)"),
    (good_task(end_time=math.nan), "end_time nan is not a time (0 to 253402300799 seconds)"),
    (with_child(progress_completed=math.nan), "progress_completed of the child on n1 nan is not a progress value"),
    (with_child(progress_total=-1.0), "progress_total of the child on n1 -1.0 is not a progress value"),
    (with_child(node="no such node!"), "child node 'no such node!' is not a node id"),
    (with_child(task_id="7"), "child task id on n1 '7' is not a task id"),
    (with_child(result_json="[" * 100 + "]" * 100), "result of the child on n1 nested 100 levels deep"),
    (with_child(result_json="{"), "result of the child on n1 are not valid JSON"),
    (good_task(args_json='{"duration": NaN}'), "args are not valid JSON: NaN is not a JSON number"),
    (good_task(args_json="[1]"), "args is not a JSON object"),
    (good_task(entity="e" * 1_000_000), "entity is longer than 1024 characters"),
    (good_task(idempotency_key="k" * 200_000), "idempotency_key is longer than 1024 characters"),
    (good_task(target_nodes=("n1", "")), "target node '' is not a node id"),
    (good_task(module=""), "module is empty"),
]


@pytest.mark.parametrize(("task", "reason"), BAD_TASKS)
def test_a_task_record_out_of_range_is_refused_naming_the_field(task: ClusterTask, reason: str) -> None:
    with pytest.raises(BadRecord) as err:
        parse_task(encode_task(task), task_id=task.id)
    assert str(err.value).startswith(reason)


@pytest.mark.parametrize(("task", "reason"), [b for b in BAD_TASKS if "child" in b[1]])
def test_a_changed_child_is_checked_even_against_a_previous_version(task: ClusterTask, reason: str) -> None:
    """The replica checks again only children that changed since the version it holds: a bad child is
    refused whatever came before, and what passes is what a full check gives."""
    good = replace(task, children=(replace(good_task().children[0], node=task.children[0].node or "n1"),))
    with pytest.raises(BadRecord) as err:
        parse_task(encode_task(task), task_id=task.id, checked=good)
    assert str(err.value).startswith(reason)
    second = ClusterChild(node="n2", state=TaskState.RUNNING, progress_total=4)
    before = good_task(target_nodes=("n1", "n2"))
    before = replace(before, children=(*before.children, second))
    after = replace(before, children=(before.children[0], replace(second, progress_completed=3)))
    parsed = parse_task(encode_task(after), task_id=after.id, checked=before)
    assert parsed == parse_task(encode_task(after), task_id=after.id)
    assert parsed.children[0] is before.children[0]  # unchanged: taken as it was, not built again


def test_a_good_task_record_passes_and_must_sit_under_its_own_id() -> None:
    t = good_task()
    assert parse_task(encode_task(t), task_id=t.id) == t
    with pytest.raises(BadRecord, match="is not the key's"):
        parse_task(encode_task(t), task_id=str(uuid.uuid4()))
    with pytest.raises(BadRecord, match="not a cluster task record"):
        parse_task(b"\xff\xff\xff\xff")
    with pytest.raises(BadRecord, match="unknown state"):
        parse_task(cpb.ClusterTaskRecord(id=t.id, module="m", type="t", state="exploded").SerializeToString())
    bad_child = cpb.ClusterTaskRecord.FromString(encode_task(t))
    bad_child.children[0].state = "exploded"
    with pytest.raises(BadRecord, match="unknown state: 'exploded'"):
        parse_task(bad_child.SerializeToString(), task_id=t.id, checked=t)


@pytest.mark.parametrize(("address", "ok"), [
    ("127.0.0.1:7100", True), ("node-3.example.org:443", True), ("[::1]:7100", True), ("localhost:1", True),
    ("127.0.0.1", False), ("127.0.0.1:0", False), ("127.0.0.1:65536", False), (":7100", False),
    ("not an address:7100", False), ("::1:7100", False), ("[nonsense]:7100", False), ("1.2.3:7100", False),
    ("host:+80", False), ("host:٣", False), ("a..b:80", False), ("", False),
])
def test_member_addresses_are_host_port(address: str, ok: bool) -> None:
    assert valid_address(address) is ok


def member(node_id: str, address: str = "127.0.0.1:7101") -> Member:
    return Member(id=node_id, address=address, version="1.0.0", started_at=1.7e9, instance="i-" + node_id)


def test_a_member_record_needs_a_lease_its_own_id_and_an_address() -> None:
    m = member("n1")
    assert parse_member(encode_member(m), node_id="n1", lease=7) == m
    with pytest.raises(BadRecord, match="not bound to a lease"):
        parse_member(encode_member(m), node_id="n1", lease=0)
    with pytest.raises(BadRecord, match="is not the key's"):
        parse_member(encode_member(m), node_id="n2", lease=7)
    with pytest.raises(BadRecord, match="'nowhere' is not a HOST:PORT address"):
        parse_member(encode_member(member("n1", "nowhere")), node_id="n1", lease=7)
    with pytest.raises(BadRecord, match="started_at inf is not a time"):
        parse_member(encode_member(replace(m, started_at=math.inf)), node_id="n1", lease=7)


class ExpiringLeases(EmbeddedStore):
    """The embedded store, whose ``lease_alive`` says no for the leases in ``expired`` (as etcd's
    TimeToLive does for a lease that ran out between a put and the question)."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.expired: set[int] = set()

    async def lease_alive(self, lease: int) -> bool:
        return lease not in self.expired and await super().lease_alive(lease)


async def test_the_replica_skips_bad_records_names_them_and_keeps_the_rest(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    store = ExpiringLeases(tmp_path / "cluster.sqlite3")
    await store.start()
    cache = ClusterCache(store)
    live = await store.grant_lease(30)
    good, bad = good_task(), good_task(created_at=1e300)
    await store.txn((), (Put(MEMBERS + "n1", encode_member(member("n1")), live),
                         Put(TASKS + good.id, encode_task(good)), Put(TASKS + bad.id, encode_task(bad))))
    caplog.set_level(logging.INFO, "taskward.coordinator")
    cache.start()
    try:
        await cache.wait_synced(5)
        snap = cache.snapshot
        assert (set(snap.tasks), set(snap.members)) == ({good.id}, {"n1"})
        assert dict(snap.skipped) == {TASKS + bad.id: "created_at 1e+300 is not a time (0 to 253402300799 seconds)"}
        assert (snap.stale, snap.reads_stale) == (False, True)  # the store is reachable: the node may lead

        # a member key written by hand: no lease, or a live lease and an address that names nothing
        other = await store.grant_lease(30)
        await store.txn((), (Put(MEMBERS + "ghost", encode_member(member("ghost"))),
                             Put(MEMBERS + "lost", encode_member(member("lost", "lost")), other),
                             Put(TASKS + good.id, b"\x08\x96\x01\xff")))
        assert await cache.wait_until(lambda s: len(s.skipped) == 4, 5)
        snap = cache.snapshot
        assert (set(snap.tasks), set(snap.members)) == (set(), {"n1"})  # the overwritten record is gone too
        assert snap.skipped[MEMBERS + "ghost"] == "not bound to a lease (a member is alive only while its lease is)"
        assert snap.skipped[MEMBERS + "lost"] == "address 'lost' is not a HOST:PORT address"
        assert snap.skipped[TASKS + good.id] == "not a cluster task record"
        skipped_lines = [r.getMessage() for r in caplog.records if "skipping bad cluster record" in r.getMessage()]
        assert len(skipped_lines) == 4 and any(f"'{MEMBERS}ghost'" in line for line in skipped_lines)

        # a member whose lease the store says is not alive (it expired before the replica asked)
        expiring = await store.grant_lease(30)
        store.expired.add(expiring)
        await store.txn((), (Put(MEMBERS + "late", encode_member(member("late")), expiring),))
        assert await cache.wait_until(lambda s: MEMBERS + "late" in s.skipped, 5)
        assert cache.snapshot.skipped[MEMBERS + "late"] == f"its lease {expiring:x} is not alive"
        assert set(cache.snapshot.members) == {"n1"}

        # fixed or deleted: readers are no longer told the view is stale
        await store.txn((), (Delete(MEMBERS + "ghost"), Delete(MEMBERS + "lost"), Delete(MEMBERS + "late"),
                             Put(TASKS + good.id, encode_task(good)), Delete(TASKS + bad.id)))
        assert await cache.wait_until(lambda s: not s.skipped, 5)
        assert (set(cache.snapshot.tasks), cache.snapshot.reads_stale) == ({good.id}, False)
    finally:
        await cache.stop()
        await store.close()


async def test_a_relisting_does_not_log_a_known_bad_record_again(tmp_path: Path, caplog: pytest.LogCaptureFixture
                                                                 ) -> None:
    store = EmbeddedStore(tmp_path / "cluster.sqlite3")
    await store.start()
    bad = good_task(start_time=-1.0)
    await store.txn((), (Put(TASKS + bad.id, encode_task(bad)),))
    caplog.set_level(logging.ERROR, "taskward.coordinator")
    cache = ClusterCache(store)
    cache.start()
    try:
        await cache.wait_synced(5)
        cache._load(*(await store.get_prefix("")))  # what a watch gap leads to
        assert TASKS + bad.id in cache.snapshot.skipped
    finally:
        await cache.stop()
        await store.close()
    assert len([r for r in caplog.records if "skipping bad cluster record" in r.getMessage()]) == 1
