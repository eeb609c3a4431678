"""A node's watch-fed replica of the cluster state (Patroni's KVCache idea).

List the prefix, then watch from the listing's revision; after a gap, list again. Readers get an
immutable ``ClusterSnapshot`` at once, from memory. When the store is unreachable the replica keeps
serving its last state, marked ``stale``.
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
from taskward.coordinator.records import (
    LEADER,
    MEMBERS,
    TASKS,
    ClusterTask,
    Member,
    decode_leader,
    decode_member,
    decode_task,
)
from taskward.coordinator.store.base import ClusterStore, KeyValue, WatchEventType, WatchGap
from taskward.cron import CronSchedule, CronState
from taskward.errors import CoordinatorUnavailable

logger = logging.getLogger(__name__)

RETRY_S = 0.5


@dataclass(frozen=True, slots=True)
class ClusterSnapshot:
    revision: int = 0
    leader: str | None = None
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


class ClusterCache:
    def __init__(self, store: ClusterStore) -> None:
        self._store = store
        self._members: dict[str, Member] = {}
        self._tasks: dict[str, ClusterTask] = {}
        self._active: dict[str, ClusterTask] = {}
        self._leader: str | None = None
        self._cron_generation = ""
        self._schedules: dict[str, dict[str, CronSchedule]] = {}  # generation -> id -> schedule
        self._cron_states: dict[str, CronState] = {}
        self._revision = 0
        self._stale = True
        self._snapshot = ClusterSnapshot()
        self._dirty = False
        self._change = asyncio.Event()
        self._synced = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    @property
    def snapshot(self) -> ClusterSnapshot:
        """An immutable copy, built on the first read after a change: a burst of watch events costs
        one copy, not one per event."""
        if self._dirty:
            self._snapshot = ClusterSnapshot(
                revision=self._revision, leader=self._leader, members=MappingProxyType(dict(self._members)),
                tasks=MappingProxyType(dict(self._tasks)), active=MappingProxyType(dict(self._active)),
                stale=self._stale, cron_generation=self._cron_generation,
                schedules=MappingProxyType(dict(self._schedules.get(self._cron_generation, {}))),
                cron_states=MappingProxyType(dict(self._cron_states)),
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

    def _apply(self, key: str, value: bytes | None) -> None:
        if key.startswith(MEMBERS):
            node_id = key[len(MEMBERS):]
            m = decode_member(value) if value else None
            if m is None:
                self._members.pop(node_id, None)
            else:
                self._members[node_id] = m
        elif key.startswith(TASKS):
            tid = key[len(TASKS):]
            t = decode_task(value) if value else None
            if t is None:
                self._tasks.pop(tid, None)
            else:
                self._tasks[tid] = t
            if t is not None and (not t.state.finished or t.may_run_orphaned):
                self._active[tid] = t
            else:
                self._active.pop(tid, None)
        elif key == LEADER:
            self._leader = decode_leader(value) if value else None
        elif key.startswith(CRON):
            self._apply_cron(key, value)

    def _apply_cron(self, key: str, value: bytes | None) -> None:
        if key == DOC:
            self._cron_generation = decode_doc(value) if value else ""
        elif key.startswith(SCHEDULES):
            generation, _, sid = key[len(SCHEDULES):].partition("/")
            s = decode_schedule(value) if value else None
            if s is None:
                self._schedules.get(generation, {}).pop(sid, None)
                if not self._schedules.get(generation, True):
                    del self._schedules[generation]
            else:
                self._schedules.setdefault(generation, {})[sid] = s
        elif key.startswith(STATES):
            st = decode_state(value) if value else None
            if st is None:
                self._cron_states.pop(key[len(STATES):], None)
            else:
                self._cron_states[key[len(STATES):]] = st

    def _load(self, kvs: list[KeyValue], revision: int) -> None:
        self._members.clear()
        self._tasks.clear()
        self._active.clear()
        self._leader = None
        self._cron_generation = ""
        self._schedules.clear()
        self._cron_states.clear()
        for kv in kvs:
            self._apply(kv.key, kv.value)
        self._revision = revision

    async def _run(self) -> None:
        while True:
            try:
                kvs, revision = await self._store.get_prefix("")
                self._load(kvs, revision)
                self._stale = False
                self._publish()
                self._synced.set()
                async for ev in self._store.watch("", from_revision=revision + 1):
                    self._apply(ev.key, ev.value if ev.type is WatchEventType.PUT else None)
                    self._revision = ev.revision
                    self._publish()
            except WatchGap as gap:
                logger.info("cluster watch gap (%s); listing again", gap)
            except CoordinatorUnavailable as exc:
                logger.debug("cluster store unreachable: %s", exc)
                self.mark_stale(True)
                await asyncio.sleep(RETRY_S)
