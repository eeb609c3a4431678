"""A node's watch-fed replica of the cluster state (Patroni's KVCache idea).

List the prefix, then watch from the listing's revision; after a gap, list again. Readers get an
immutable ``ClusterSnapshot`` at once, from memory. When the store is unreachable the replica keeps
serving its last state, marked ``stale``.

Every record is checked before it is used (``records.parse_*``, ``record_checks``): one that is bad is
skipped and logged with its key (``skipped.py``), and the replica reads as stale while any is, but the
node keeps serving and leading. A member counts only while its key is bound to a live lease, so a key
written by hand, without one, never receives a call.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from taskward.coordinator.cron.records import (
    CRON,
    DOC,
    SCHEDULES,
    STATES,
    decode_doc,
    decode_schedule,
    decode_state,
)
from taskward.coordinator.record_checks import BadRecord, check_key_text
from taskward.coordinator.records import (
    LEADER,
    MEMBERS,
    TASKS,
    ClusterTask,
    Member,
    decode_leader,
    parse_member,
    parse_task,
)
from taskward.coordinator.skipped import SkippedRecords
from taskward.coordinator.store.base import ClusterStore, KeyValue, WatchEventType, WatchGap
from taskward.cron import CronSchedule, CronState
from taskward.errors import CoordinatorUnavailable

logger = logging.getLogger(__name__)

RETRY_S = 0.5


@dataclass(frozen=True, slots=True)
class ClusterSnapshot:
    revision: int = 0
    leader: str | None = None
    leader_record: bytes = b""
    """The leader key's value as stored (the holder's node id and instance): a node named ``leader`` leads
    only if this is the value it wrote itself."""
    members: Mapping[str, Member] = field(default_factory=dict)
    tasks: Mapping[str, ClusterTask] = field(default_factory=dict)
    active: Mapping[str, ClusterTask] = field(default_factory=dict)
    """The tasks the leader has to look at each cycle: unfinished ones, and finished ones with a child
    marked down (``ClusterTask.may_run_orphaned``). Kept apart so a cycle costs O(active), not O(retained history)."""
    stale: bool = True
    cron_generation: str = ""
    schedules: Mapping[str, CronSchedule] = field(default_factory=dict)
    """The schedules of the document in force (``cron/doc``), by id."""
    cron_states: Mapping[str, CronState] = field(default_factory=dict)
    skipped: Mapping[str, str] = field(default_factory=dict)
    """Keys whose records are bad and not used, and why: while any is, readers are told the view is stale
    (``reads_stale``), though the store is reachable and the node keeps leading."""

    @property
    def reads_stale(self) -> bool:
        """What readers are told: the replica is cut off from the store, or is missing a bad record."""
        return self.stale or bool(self.skipped)


class ClusterCache:
    def __init__(self, store: ClusterStore) -> None:
        self._store = store
        self._members: dict[str, Member] = {}
        self._tasks: dict[str, ClusterTask] = {}
        self._active: dict[str, ClusterTask] = {}
        self._leader: str | None = None
        self._leader_record = b""
        self._cron_generation = ""
        self._schedules: dict[str, dict[str, CronSchedule]] = {}  # generation -> id -> schedule
        self._cron_states: dict[str, CronState] = {}
        self._revision = 0
        self._stale = True
        self._skipped = SkippedRecords()
        self._live_leases: set[int] = set()  # member leases the store said were alive
        self._member_leases: dict[str, int] = {}  # node id -> the lease its admitted key is bound to
        self._snapshot = ClusterSnapshot()
        self._dirty = False
        self._change = asyncio.Event()
        self._synced = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.on_leader_change: Callable[[str | None], None] = lambda leader: None
        """Called when the leader key changes hands (a new holder, or None once it is gone), so an election
        or a new leader's first cycle starts at once rather than at its loop's next tick."""

    @property
    def snapshot(self) -> ClusterSnapshot:
        """An immutable copy, built on the first read after a change: a burst of watch events costs
        one copy, not one per event."""
        if self._dirty:
            self._snapshot = ClusterSnapshot(
                revision=self._revision, leader=self._leader, leader_record=self._leader_record,
                members=MappingProxyType(dict(self._members)),
                tasks=MappingProxyType(dict(self._tasks)), active=MappingProxyType(dict(self._active)),
                stale=self._stale, cron_generation=self._cron_generation,
                schedules=MappingProxyType(dict(self._schedules.get(self._cron_generation, {}))),
                cron_states=MappingProxyType(dict(self._cron_states)), skipped=self._skipped.keys,
            )
            self._dirty = False
        return self._snapshot

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="cluster-cache")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    async def wait_synced(self, timeout_s: float) -> None:
        async with asyncio.timeout(timeout_s):
            await self._synced.wait()

    async def wait_change(self, timeout_s: float) -> None:
        """Return after the next change (or after ``timeout_s``)."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout_s):
                await self._change.wait()

    async def wait_until(self, done: Callable[[ClusterSnapshot], bool], timeout_s: float) -> bool:
        """Whether the replica came to satisfy ``done`` within ``timeout_s`` (checked at each change)."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout_s):
                while not done(self.snapshot):
                    await self._change.wait()
                return True
        return False

    async def wait_for_task(self, task_id: str) -> None:
        """Return once the replica holds ``task_id`` (callers bound the wait)."""
        while task_id not in self._tasks:
            await self._change.wait()

    def mark_stale(self, stale: bool) -> None:
        if stale != self._stale:
            self._stale = stale
            logger.warning("cluster replica is %s", "STALE (cluster store unreachable)" if stale else "live again")
            self._publish()

    def _publish(self) -> None:
        self._dirty = True
        fired, self._change = self._change, asyncio.Event()
        fired.set()

    def _apply(self, key: str, value: bytes | None, lease: int = 0) -> None:
        """Apply a put (``value``) or a delete (None) of ``key``. A bad record is skipped: what this key held
        before is gone from the store, so it is dropped here too, and the key is remembered as skipped."""
        try:
            if value is not None:
                check_key_text(key)
            self._apply_checked(key, value, lease)
        except BadRecord as exc:
            self._apply_checked(key, None, 0)
            self._skipped.skip(key, str(exc))
        else:
            self._skipped.clear(key)

    def _apply_checked(self, key: str, value: bytes | None, lease: int) -> None:
        if key.startswith(MEMBERS):
            node_id = key[len(MEMBERS):]
            if value is None:
                old = self._members.pop(node_id, None)
                if old is not None and (lost := self._member_leases.pop(node_id, 0)):
                    self._live_leases.discard(lost)
                return
            m = parse_member(value, node_id=node_id, lease=lease)
            if lease not in self._live_leases:
                raise BadRecord(f"its lease {lease:x} is not alive")
            self._members[node_id] = m
            self._member_leases[node_id] = lease
        elif key.startswith(TASKS):
            tid = key[len(TASKS):]
            t = parse_task(value, task_id=tid, checked=self._tasks.get(tid)) if value is not None else None
            if t is None:
                self._tasks.pop(tid, None)
            else:
                self._tasks[tid] = t
            if t is not None and (not t.state.finished or t.may_run_orphaned):
                self._active[tid] = t
            else:
                self._active.pop(tid, None)
        elif key == LEADER:
            before, self._leader = self._leader, decode_leader(value) if value is not None else None
            self._leader_record = value if self._leader is not None and value is not None else b""
            if value is not None and self._leader is None:
                raise BadRecord("not a leader record")
            if self._leader != before:
                self.on_leader_change(self._leader)
        elif key.startswith(CRON):
            self._apply_cron(key, value)

    def _apply_cron(self, key: str, value: bytes | None) -> None:
        if key == DOC:
            self._cron_generation = decode_doc(value) if value is not None else ""
        elif key.startswith(SCHEDULES):
            generation, _, sid = key[len(SCHEDULES):].partition("/")
            s = decode_schedule(value) if value is not None else None
            if s is None or s.id != sid:
                self._schedules.get(generation, {}).pop(sid, None)
                if not self._schedules.get(generation, True):
                    del self._schedules[generation]
                if value is not None:
                    raise BadRecord("not a cron schedule record" if s is None else f"id {s.id!r} is not the key's")
            else:
                self._schedules.setdefault(generation, {})[sid] = s
        elif key.startswith(STATES):
            st = decode_state(value) if value is not None else None
            if st is None:
                self._cron_states.pop(key[len(STATES):], None)
                if value is not None:
                    raise BadRecord("not a cron state record")
            else:
                self._cron_states[key[len(STATES):]] = st

    async def _check_leases(self, leases: set[int]) -> None:
        """Ask the store which of ``leases`` (of member keys not yet admitted) are alive: a member key on a
        lease that is not is no member (etcd refuses to bind a key to a dead lease, but the check costs one
        call per new member, and a member is who the cluster token is sent to)."""
        unknown = sorted(leases - self._live_leases)
        alive = await asyncio.gather(*(self._store.lease_alive(lease) for lease in unknown))
        self._live_leases.update(lease for lease, ok in zip(unknown, alive, strict=True) if ok)

    def _load(self, kvs: list[KeyValue], revision: int) -> None:
        self._skipped.relisting()
        self._members.clear()
        self._member_leases.clear()
        self._tasks.clear()
        self._active.clear()
        self._leader = None
        self._leader_record = b""
        self._cron_generation = ""
        self._schedules.clear()
        self._cron_states.clear()
        for kv in kvs:
            self._apply(kv.key, kv.value, kv.lease)
        self._skipped.relisted()
        self._revision = revision

    async def _run(self) -> None:
        while True:
            try:
                kvs, revision = await self._store.get_prefix("")
                self._live_leases.clear()
                await self._check_leases({kv.lease for kv in kvs if kv.key.startswith(MEMBERS) and kv.lease})
                self._load(kvs, revision)
                self._stale = False
                self._publish()
                self._synced.set()
                async for ev in self._store.watch("", from_revision=revision + 1):
                    put = ev.type is WatchEventType.PUT
                    if put and ev.lease and ev.key.startswith(MEMBERS) and ev.lease not in self._live_leases:
                        await self._check_leases({ev.lease})
                    self._apply(ev.key, ev.value if put else None, ev.lease)
                    self._revision = ev.revision
                    self._publish()
            except WatchGap as gap:
                logger.info("cluster watch gap (%s); listing again", gap)
            except CoordinatorUnavailable as exc:
                logger.debug("cluster store unreachable: %s", exc)
                self.mark_stale(True)
                await asyncio.sleep(RETRY_S)
