"""The cron scheduler and the schedule service, in-process on the real embedded store with a clock the
test moves: each slot decided once (fired, skipped or missed), across a change of leader; policies;
atomic documents. Cluster schedules need no other process (their task is a record in the store)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from taskward.coordinator.cache import ClusterCache
from taskward.coordinator.catalog import CheckedArgs
from taskward.coordinator.cron.records import FIRED
from taskward.coordinator.cron.scheduler import Fired, Scheduler
from taskward.coordinator.cron.service import CronService
from taskward.coordinator.election import Election
from taskward.coordinator.node_client import NodeClients
from taskward.coordinator.records import MEMBERS, TASKS, ClusterTask, Member, decode_task, encode_member, encode_task
from taskward.coordinator.store.embedded import EmbeddedStore
from taskward.cron import Outcome, ScheduleInput
from taskward.errors import InvalidArgument
from taskward.model import TaskState

T0 = 1_800_000_000.0  # a minute boundary (2027-01-15 08:00:00 UTC)


class ManualClock:
    def __init__(self, now: float) -> None:
        self.t = now

    def now(self) -> float:
        return self.t

    def real_seconds(self, span: float) -> float:
        return span


class Catalog:
    """Two task types, ``builtin:sleep`` (duration required) and ``other:sleep``."""

    def check(self, module: str, type_name: str, args_json: str) -> CheckedArgs:
        if (module, type_name) not in {("builtin", "sleep"), ("other", "sleep"), ("builtin", "fail")}:
            raise InvalidArgument(f"task type {module}:{type_name} not found")
        args = json.loads(args_json)
        if type_name == "sleep" and "duration" not in args:
            raise InvalidArgument("missing required argument 'duration' for builtin:sleep")
        return CheckedArgs(json.dumps(args, sort_keys=True, separators=(",", ":")), True, "")

    def modules_with(self, type_name: str) -> list[str]:
        return {"sleep": ["builtin", "other"], "fail": ["builtin"]}.get(type_name, [])


@dataclass
class Host:
    """The scheduler's host as the coordinator is to it, on the same store."""

    store: EmbeddedStore
    fired_events: list[Fired] = field(default_factory=list)

    def new_cluster_task(self, module: str, type_name: str, args_json: str, *, entity: str,
                         task_id: str) -> ClusterTask:
        return ClusterTask(id=task_id, module=module, type=type_name, args_json=args_json, entity=entity,
                           target_nodes=("lead",))

    async def abort_cluster_task(self, task_id: str) -> None:
        kv = await self.store.get(TASKS + task_id)
        assert kv is not None
        t = decode_task(kv.value)
        assert t is not None
        await self.store.put(TASKS + task_id, encode_task(ClusterTask(**{**_fields(t), "abort_requested": True})))

    def cluster_task_committed(self) -> None:
        pass

    def fired(self, event: Fired) -> None:
        self.fired_events.append(event)


def _fields(t: ClusterTask) -> dict[str, object]:
    return {k: getattr(t, k) for k in t.__dataclass_fields__}


@dataclass
class World:
    store: EmbeddedStore
    cache: ClusterCache
    clock: ManualClock
    host: Host
    service: CronService
    election: Election
    clients: NodeClients

    def scheduler(self) -> Scheduler:
        """A scheduler as a (new) leader runs it."""
        return Scheduler(election=self.election, cache=self.cache, clients=self.clients, clock=self.clock,
                         host=self.host, rpc_timeout_s=1.0, dead_node_grace_s=60.0)

    async def settle(self) -> None:
        """Until the replica shows every write made so far."""
        _, revision = await self.store.get_prefix("")
        assert await self.cache.wait_until(lambda snap: snap.revision >= revision, 5)

    async def cluster_task(self, task_id: str) -> ClusterTask:
        kv = await self.store.get(TASKS + task_id)
        assert kv is not None
        t = decode_task(kv.value)
        assert t is not None
        return t

    async def finish(self, task_id: str) -> None:
        t = await self.cluster_task(task_id)
        await self.store.put(TASKS + task_id, encode_task(ClusterTask(**{**_fields(t), "state": TaskState.DONE,
                                                                         "end_time": 1.0})))
        await self.settle()


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[World]:
    store = EmbeddedStore(tmp_path / "cluster.sqlite3")
    await store.start()
    cache = ClusterCache(store)
    cache.start()
    await cache.wait_synced(5)
    lease = await store.grant_lease(600)
    election = Election(store, "lead", "instance")
    assert await election.campaign(lease)
    await store.put(MEMBERS + "lead", encode_member(Member(id="lead", address="127.0.0.1:9", version="t",
                                                           started_at=0.0, instance="instance")))
    clock = ManualClock(T0)
    host = Host(store)
    clients = NodeClients(None)
    w = World(store, cache, clock, host, CronService(store, cache, Catalog(), clock, replicate_timeout_s=5),
              election, clients)
    await w.settle()
    yield w
    await clients.close()
    await cache.stop()
    await store.close()


def every_minute(sid: str = "m", **kw: object) -> ScheduleInput:
    fields: dict[str, object] = {"id": sid, "module": "builtin", "task_type": "sleep", "schedule": "* * * * *",
                                 "args_json": '{"duration": 1}', "cluster": True, **kw}
    return ScheduleInput(**fields)  # type: ignore[arg-type]


async def state_of(w: World, sid: str):  # type: ignore[no-untyped-def]
    await w.settle()
    return w.cache.snapshot.cron_states[sid]


async def test_each_slot_fires_once_even_across_a_new_leader(world: World) -> None:
    w = world
    await w.service.put_document([every_minute(concurrency="allow")])
    first = w.scheduler()
    await first.cycle()
    assert w.host.fired_events == []  # created at T0: slots at or before it never fire
    w.clock.t = T0 + 60
    await first.cycle()
    await first.cycle()  # the same slot again: decided already
    assert [e.slot for e in w.host.fired_events] == [int(T0 + 60)]
    # A new leader (its replica may lag) finds the slot decided and fires only the next one.
    second = w.scheduler()
    await second.cycle()
    w.clock.t = T0 + 125
    await second.cycle()
    assert [e.slot for e in w.host.fired_events] == [int(T0 + 60), int(T0 + 120)]
    st = await state_of(w, "m")
    assert st.last_slot == int(T0 + 120) and [h.outcome for h in st.history] == [Outcome.FIRED] * 2
    t = await w.cluster_task(st.last_task_id)
    assert (t.entity, t.module, t.type, json.loads(t.args_json)) == ("m", "builtin", "sleep", {"duration": 1})
    keys, _ = await w.store.get_prefix(FIRED)
    assert [kv.key for kv in keys] == [f"{FIRED}m/{int(T0 + 120)}"]  # one marker, the newest slot's


async def test_a_lost_race_fires_nothing_twice(world: World) -> None:
    """Two leaders deciding the same slot from the same state: the second compare fails."""
    w = world
    await w.service.put_document([every_minute(concurrency="allow")])
    w.clock.t = T0 + 60
    a, b = w.scheduler(), w.scheduler()
    await a.cycle()
    b._latest.clear()  # b decides from the replica as it was, like a leader that has not seen a's write
    await b.cycle()
    assert [e.slot for e in w.host.fired_events] == [int(T0 + 60)]


async def test_missed_slots_beyond_grace_are_recorded_and_the_rest_fire(world: World) -> None:
    w = world
    await w.service.put_document([every_minute(concurrency="allow", misfire_grace_s=90)])
    w.clock.t = T0 + 600  # ten slots passed with no leader; grace covers the last one only
    await w.scheduler().cycle()
    st = await state_of(w, "m")
    missed = [h for h in st.history if h.outcome is Outcome.MISSED]
    assert len(missed) == 1 and missed[0].count == 8 and missed[0].slot == int(T0 + 480)
    assert "8 slot(s) from 2027-01-15T08:01:00Z to 2027-01-15T08:08:00Z" in missed[0].reason
    assert [e.slot for e in w.host.fired_events] == [int(T0 + 540), int(T0 + 600)]


async def test_forbid_skips_while_the_previous_task_runs(world: World) -> None:
    w = world
    await w.service.put_document([every_minute()])
    s = w.scheduler()
    w.clock.t = T0 + 60
    await s.cycle()
    first = w.host.fired_events[0].task_id
    await w.settle()
    w.clock.t = T0 + 120
    await s.cycle()
    st = await state_of(w, "m")
    assert (st.history[0].outcome, st.history[0].reason) == (
        Outcome.SKIPPED, f"forbid: task {first} of the same type and arguments is still running")
    await w.finish(first)
    w.clock.t = T0 + 180
    await s.cycle()
    assert len(w.host.fired_events) == 2 and (await state_of(w, "m")).history[0].outcome is Outcome.FIRED


async def test_replace_aborts_the_previous_task(world: World) -> None:
    w = world
    await w.service.put_document([every_minute(concurrency="replace")])
    s = w.scheduler()
    w.clock.t = T0 + 60
    await s.cycle()
    await w.settle()
    w.clock.t = T0 + 120
    await s.cycle()
    first, second = (e.task_id for e in w.host.fired_events)
    assert (await w.cluster_task(first)).abort_requested
    assert not (await w.cluster_task(second)).abort_requested


async def test_run_now_fires_outside_the_slots(world: World) -> None:
    w = world
    await w.service.put_document([every_minute(concurrency="allow")])
    s = w.scheduler()
    st = await s.run_now(w.service.get("m"))
    assert st.last_slot == 0 and st.history[0].reason == "run now" and w.host.fired_events[0].run_now
    w.clock.t = T0 + 60
    await s.cycle()
    assert [e.run_now for e in w.host.fired_events] == [True, False]


async def test_a_disabled_schedule_does_not_fire_and_re_enabling_skips_what_passed(world: World) -> None:
    w = world
    await w.service.put_document([every_minute(concurrency="allow", enabled=False)])
    s = w.scheduler()
    w.clock.t = T0 + 300
    await s.cycle()
    assert w.host.fired_events == []
    await w.service.set_enabled("m", True)
    await s.cycle()
    assert w.host.fired_events == []  # slots before the enable never fire
    w.clock.t = T0 + 360
    await s.cycle()
    assert [e.slot for e in w.host.fired_events] == [int(T0 + 360)]


async def test_a_document_is_atomic(world: World) -> None:
    w = world
    await w.service.put_document([every_minute("a"), every_minute("b")])
    before = dict(w.cache.snapshot.schedules)
    bad = [every_minute("a"), every_minute("c", schedule="61 * * * *")]
    with pytest.raises(InvalidArgument) as err:
        await w.service.put_document(bad)
    assert err.value.message == "schedule 'c': schedule '61 * * * *' is not a valid cron expression"
    with pytest.raises(InvalidArgument) as dup:
        await w.service.put_document([every_minute("a"), every_minute("a")])
    assert dup.value.message == "schedule 'a': duplicate id in the document"
    with pytest.raises(InvalidArgument) as ambiguous:
        await w.service.put_document([ScheduleInput(id="x", task_type="sleep", schedule="@daily",
                                                    args_json='{"duration": 1}')])
    assert ambiguous.value.message == ("schedule 'x': task type 'sleep' is in several modules (builtin, other): "
                                       "name the module")
    await w.settle()
    assert dict(w.cache.snapshot.schedules) == before
    await w.service.put_document([every_minute("b"), ScheduleInput(id="f", task_type="fail", schedule="@daily")])
    assert set(w.cache.snapshot.schedules) == {"b", "f"} and w.cache.snapshot.schedules["f"].module == "builtin"
    assert w.cache.snapshot.schedules["b"].since == before["b"].since  # unchanged timing keeps its start
    keys, _ = await w.store.get_prefix("cron/s/")
    assert len(keys) == 2  # the old generation is gone


async def test_states_of_deleted_schedules_are_dropped(world: World) -> None:
    w = world
    await w.service.put_document([every_minute(concurrency="allow")])
    s = w.scheduler()
    w.clock.t = T0 + 60
    await s.cycle()
    await w.service.delete("m")
    await s.cycle()
    await w.settle()
    assert w.cache.snapshot.cron_states == {}
    assert (await w.store.get_prefix(FIRED))[0] == []
