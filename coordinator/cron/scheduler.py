"""The leader's cron loop: each due slot of each enabled schedule decided exactly once.

While this node leads, ``run`` sleeps until the next slot any schedule has (woken early by changes to
the schedules or states, and by ``kick``), then decides every due slot:

- a slot more than ``misfire_grace_s`` late (no leader was there to fire it) is **missed**;
- a slot whose concurrency policy says no is **skipped** (``forbid``: a task of the same type and
  arguments, fired by cron, is still created or running; ``replace`` aborts it first; ``allow`` always
  fires);
- otherwise it is **fired**: a cluster task, or a node task on the least loaded live node.

Exactly once: a slot is decided by one fenced transaction that compares the schedule's state record
(``cron/state/<id>``) with what the decision was based on, advances its ``last_slot``, creates the
marker ``cron/fired/<id>/<slot>`` (only if absent), and, for a cluster task, creates the task record
itself. A second leader, or this one repeating itself after a lost compare, finds the slot decided. A
node task's id is chosen before the commit; the start that follows carries that id and an idempotency
key derived from it, so a new leader that repeats a start whose confirmation it never saw gets the same
task, never a second one. While such a start is unconfirmed, no later slot of that schedule is decided.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Protocol

import grpc

from taskward.coordinator.cache import ClusterCache, ClusterSnapshot
from taskward.coordinator.cron.clock import Clock
from taskward.coordinator.cron.records import FIRED, STATES, decode_state, encode_state, fired_key
from taskward.coordinator.election import Election
from taskward.coordinator.node_client import NodeClients, StartRequest
from taskward.coordinator.records import TASKS, ClusterTask, Member, encode_task
from taskward.coordinator.store.base import Compare, Delete, Op, Put
from taskward.cron import (
    Concurrency,
    CronSchedule,
    CronState,
    HistoryEntry,
    Outcome,
    iso,
    slots_between,
)
from taskward.errors import CoordinatorUnavailable, TaskwardError
from taskward.model import TaskState

logger = logging.getLogger(__name__)

MAX_SLEEP_S = 30.0  # a bound on every wait: a lost wake-up costs at most this
CATCH_UP = 1000  # slots looked at per schedule per cycle
UNFINISHED = frozenset({TaskState.CREATED, TaskState.RUNNING})


@dataclass(frozen=True, slots=True, kw_only=True)
class Fired:
    """A slot that started a task (published as ``cron.fired``)."""

    schedule_id: str
    slot: int
    task_id: str
    module: str
    task_type: str
    node: str  # empty for a cluster task
    run_now: bool = False
    delay_s: float = 0.0
    """Real seconds from the slot's time to its firing (0 for a run-now, which has no slot)."""


class SchedulerHost(Protocol):
    """What the scheduler needs of the coordinator it runs in."""

    def new_cluster_task(self, module: str, type_name: str, args_json: str, *, entity: str,
                         task_id: str) -> ClusterTask:
        """A validated record of a cluster task on every live node (not committed)."""
        ...

    async def abort_cluster_task(self, task_id: str) -> None: ...

    def cluster_task_committed(self) -> None:
        """A cluster task record was committed: drive it soon."""
        ...

    def fired(self, event: Fired) -> None: ...


class StateChanged(Exception):
    """A decision's compare failed: the state moved on (``current``: as committed, None: absent). The
    decision is made again from it; a slot it shows decided is never decided twice."""

    def __init__(self, schedule_id: str, current: CronState | None) -> None:
        super().__init__(f"state of schedule {schedule_id} changed meanwhile")
        self.current = current


class Scheduler:
    def __init__(self, *, election: Election, cache: ClusterCache, clients: NodeClients, clock: Clock,
                 host: SchedulerHost, rpc_timeout_s: float, dead_node_grace_s: float) -> None:
        self._election = election
        self._cache = cache
        self._clients = clients
        self._clock = clock
        self._host = host
        self._timeout = rpc_timeout_s
        self._grace = dead_node_grace_s
        self._kick = asyncio.Event()
        self._deciding = asyncio.Lock()  # a cycle and a run-now never decide for the same state at once
        self._plan: dict[str, tuple[CronSchedule, CronState | None, float | None]] = {}
        self._pending_since: dict[str, float] = {}
        self._latest: dict[str, CronState] = {}  # states this leader committed that its replica may not show yet

    def kick(self) -> None:
        self._kick.set()

    # ------------------------------------------------------------------ the loop

    async def run(self) -> None:
        """Decide due slots until cancelled (leadership lost) or deposed (``NotLeader`` propagates)."""
        logger.info("cron scheduler running on the leader")
        self._latest.clear()
        self._plan.clear()
        while True:
            self._kick.clear()
            try:
                async with self._deciding:
                    delay = await self.cycle()
            except (CoordinatorUnavailable, StateChanged) as exc:
                logger.info("cron cycle interrupted: %s", exc)
                delay = 0.5
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(max(0.0, min(delay, MAX_SLEEP_S))):
                    waiters = [asyncio.ensure_future(self._kick.wait()),
                               asyncio.ensure_future(self._cache.wait_change(MAX_SLEEP_S))]
                    try:
                        await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
                    finally:
                        for w in waiters:
                            w.cancel()

    async def cycle(self) -> float:
        """Decide everything due now; the real seconds until the next slot of any schedule."""
        snap = self._cache.snapshot
        if snap.stale:
            raise CoordinatorUnavailable("cluster replica stale")
        now = self._clock.now()
        await self._forget_deleted(snap)
        next_due: float | None = None
        for sid, s in snap.schedules.items():
            for _ in range(3):
                try:
                    due_at = await self._schedule_cycle(sid, s, snap, now)
                    break
                except StateChanged as lost:  # decide again from what is committed (our replica may lag)
                    self._remember(sid, lost.current)
            else:
                due_at = now + 1.0
            if due_at is not None and (next_due is None or due_at < next_due):
                next_due = due_at
        for sid in [k for k in self._plan if k not in snap.schedules]:
            del self._plan[sid]
        return MAX_SLEEP_S if next_due is None else self._clock.real_seconds(next_due - self._clock.now())

    async def _schedule_cycle(self, sid: str, s: CronSchedule, snap: ClusterSnapshot, now: float) -> float | None:
        """Decide one schedule's due slots; when it is next due."""
        st = self._state(sid, snap)
        if st is not None and st.start_pending:
            st = await self._finish_start(s, st, snap)
            if st.start_pending:  # its node cannot be asked yet: no new slot before this one is settled
                return now + 1.0
        if not s.enabled:
            self._plan.pop(sid, None)
            return None
        planned = self._plan.get(sid)
        if planned is not None and planned[0] is s and planned[1] is st and planned[2] is not None \
                and planned[2] > now:
            return planned[2]  # unchanged and not due: nothing to compute
        st = await self._decide_due(s, st or CronState(), snap, now)
        due_at = s.next_slot(max(st.last_slot, now))
        self._plan[sid] = (s, self._state(sid, snap), due_at)
        return due_at

    async def _decide_due(self, s: CronSchedule, st: CronState, snap: ClusterSnapshot, now: float) -> CronState:
        while True:
            due = slots_between(s, max(float(st.last_slot), s.since), now, CATCH_UP)
            if not due:
                return st
            late = [x for x in due if now - x > s.misfire_grace_s]
            if late:
                reason = (f"{len(late)} slot(s) from {iso(late[0])} to {iso(late[-1])} passed more than "
                          f"{s.misfire_grace_s:g}s before a leader could fire them")
                entry = HistoryEntry(slot=int(late[-1]), outcome=Outcome.MISSED, reason=reason, at=now,
                                     count=len(late))
                logger.warning("cron schedule %s: %s", s.id, reason)
                st = await self._commit(s.id, st, replace(st, last_slot=int(late[-1]),
                                                          history=st.with_entry(entry)), slot=int(late[-1]))
                continue
            for slot in due:
                st = await self._decide(s, st, snap, int(slot), now)
            if len(due) < CATCH_UP:
                return st

    async def _decide(self, s: CronSchedule, st: CronState, snap: ClusterSnapshot, slot: int, now: float,
                      *, run_now: bool = False) -> CronState:
        """Apply the concurrency policy, then fire or skip ``slot`` (a run-now has no slot of its own)."""
        blocking = await self._unfinished_same_work(s, snap)
        if blocking and s.concurrency is Concurrency.FORBID:
            reason = f"forbid: task {blocking[0]} of the same type and arguments is still running"
            entry = HistoryEntry(slot=slot, outcome=Outcome.SKIPPED, reason=reason, at=now)
            new = replace(st, history=st.with_entry(entry)) if run_now else \
                replace(st, last_slot=slot, history=st.with_entry(entry))
            logger.info("cron schedule %s slot %s skipped: %s", s.id, iso(slot), reason)
            return await self._commit(s.id, st, new, slot=None if run_now else slot)
        if s.concurrency is Concurrency.REPLACE and st.last_task_id:
            await self._abort_previous(st, snap)
        return await self._fire(s, st, snap, slot, now, run_now=run_now)

    async def _fire(self, s: CronSchedule, st: CronState, snap: ClusterSnapshot, slot: int, now: float,
                    *, run_now: bool) -> CronState:
        task_id = str(uuid.uuid4())
        reason = "run now" if run_now else ""
        extra_ops: list[Op] = []
        extra_compares: list[Compare] = []
        node = ""
        if s.cluster:
            try:
                t = self._host.new_cluster_task(s.module, s.task_type, s.args_json, entity=s.id, task_id=task_id)
            except TaskwardError as exc:
                return await self._record_failure(s, st, slot, now, str(exc.message), run_now=run_now)
            extra_ops.append(Put(TASKS + task_id, encode_task(t)))
            extra_compares.append(Compare(TASKS + task_id, None))
        else:
            chosen = await self._least_loaded(snap)
            if chosen is None:
                return await self._record_failure(s, st, slot, now, "no live node answered", run_now=run_now)
            node = chosen
        entry = HistoryEntry(slot=slot, outcome=Outcome.FIRED, reason=reason, task_id=task_id, node=node, at=now)
        new = replace(st, last_task_id=task_id, last_node=node, last_cluster=s.cluster, start_pending=not s.cluster,
                      pending_args_json="" if s.cluster else s.args_json, history=st.with_entry(entry))
        if not run_now:
            new = replace(new, last_slot=slot)
        committed = await self._commit(s.id, st, new, slot=None if run_now else slot, ops=extra_ops,
                                       compares=extra_compares)
        logger.info("cron schedule %s fired %s%s: %s task %s%s", s.id, "now" if run_now else "slot ",
                    "" if run_now else iso(slot), "cluster" if s.cluster else "node", task_id,
                    f" on {node}" if node else "")
        if s.cluster:
            self._host.cluster_task_committed()
        delay = 0.0 if run_now else self._clock.real_seconds(max(0.0, self._clock.now() - slot))
        self._host.fired(Fired(schedule_id=s.id, slot=slot, task_id=task_id, module=s.module,
                               task_type=s.task_type, node=node, run_now=run_now, delay_s=delay))
        if not s.cluster:
            committed = await self._finish_start(s, committed, self._cache.snapshot)
        return committed

    async def run_now(self, s: CronSchedule) -> CronState:
        """Fire ``s`` now, outside its slots (its policy applies); the state as committed."""
        async with self._deciding:
            snap = self._cache.snapshot
            now = self._clock.now()
            st = self._state(s.id, snap) or CronState()
            try:
                return await self._decide(s, st, snap, int(now), now, run_now=True)
            except StateChanged:
                raise CoordinatorUnavailable("the schedule's state changed meanwhile; retry") from None

    # ------------------------------------------------------------------ node tasks

    async def _least_loaded(self, snap: ClusterSnapshot) -> str | None:
        """The live member with the fewest running and queued root tasks (ties: by id)."""
        async def load(m: Member) -> tuple[int, str] | None:
            try:
                running, queued = await self._clients.load(m.address, timeout_s=self._timeout)
            except grpc.aio.AioRpcError:
                return None
            return running + queued, m.id

        loads = [x for x in await asyncio.gather(*(load(m) for m in snap.members.values())) if x is not None]
        return min(loads)[1] if loads else None

    async def _finish_start(self, s: CronSchedule, st: CronState, snap: ClusterSnapshot) -> CronState:
        """Start the node task a committed slot names, with its id and an idempotency key of the slot, so
        a repeat (by this leader or the next) is the same task; then record that it started."""
        member = snap.members.get(st.last_node)
        req = StartRequest(module=s.module, type=s.task_type, args_json=st.pending_args_json or s.args_json,
                           idempotency_key=f"cron:{st.last_task_id}", entity=s.id, task_id=st.last_task_id)
        if member is None:
            since = self._pending_since.setdefault(st.last_task_id, self._clock.now())
            if self._clock.real_seconds(self._clock.now() - since) > self._grace:
                return await self._fail_pending(s, st, f"node {st.last_node} unavailable")
            return st
        try:
            await self._clients.start(member.address, req, timeout_s=self._timeout)
        except grpc.aio.AioRpcError as exc:
            if exc.code() in (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND):
                return await self._fail_pending(s, st, f"cannot start on {st.last_node}: {exc.details()}")
            logger.info("cannot reach %s to start cron task %s: %s", st.last_node, st.last_task_id, exc.code().name)
            return st
        self._pending_since.pop(st.last_task_id, None)
        return await self._commit(s.id, st, replace(st, start_pending=False, pending_args_json=""), slot=None)

    async def _fail_pending(self, s: CronSchedule, st: CronState, reason: str) -> CronState:
        self._pending_since.pop(st.last_task_id, None)
        head = st.history[0] if st.history else HistoryEntry(slot=st.last_slot, outcome=Outcome.FIRED)
        failed = replace(head, outcome=Outcome.FAILED, reason=reason)
        logger.warning("cron schedule %s: task %s failed to start: %s", s.id, st.last_task_id, reason)
        return await self._commit(s.id, st, replace(st, start_pending=False, pending_args_json="",
                                                    history=(failed, *st.history[1:])), slot=None)

    async def _record_failure(self, s: CronSchedule, st: CronState, slot: int, now: float, reason: str, *,
                              run_now: bool) -> CronState:
        entry = HistoryEntry(slot=slot, outcome=Outcome.FAILED, reason=reason, at=now)
        logger.warning("cron schedule %s slot %s failed: %s", s.id, iso(slot), reason)
        new = replace(st, history=st.with_entry(entry)) if run_now else \
            replace(st, last_slot=slot, history=st.with_entry(entry))
        return await self._commit(s.id, st, new, slot=None if run_now else slot)

    # ------------------------------------------------------------------ concurrency policies

    async def _unfinished_same_work(self, s: CronSchedule, snap: ClusterSnapshot) -> list[str]:
        """Tasks cron fired for the same module, type and arguments that are still created or running (or
        whose node is a live member that cannot say); cluster tasks of the same work in the replica too."""
        same = [(sid, st) for sid, st in snap.cron_states.items() if st.last_task_id
                and (o := snap.schedules.get(sid)) is not None
                and (o.module, o.task_type, o.args_json) == (s.module, s.task_type, s.args_json)]
        busy = [t.id for t in snap.active.values() if not t.state.finished
                and (t.module, t.type, t.args_json) == (s.module, s.task_type, s.args_json)]
        node_tasks = [st for _, st in same if not st.last_cluster]
        states = await asyncio.gather(*(self._node_task_state(st, snap.members) for st in node_tasks))
        busy += [st.last_task_id for st, state in zip(node_tasks, states, strict=True) if state is None
                 or state in UNFINISHED]
        return busy

    async def _node_task_state(self, st: CronState, members: Mapping[str, Member]) -> TaskState | None:
        """The task's state on its node; FAILED for a task whose node left the cluster or forgot it (it
        ended), None when a live node cannot answer."""
        if st.start_pending:
            return TaskState.CREATED
        member = members.get(st.last_node)
        if member is None:
            return TaskState.FAILED
        try:
            return (await self._clients.status(member.address, st.last_task_id, timeout_s=self._timeout)).record.state
        except grpc.aio.AioRpcError as exc:
            return TaskState.FAILED if exc.code() == grpc.StatusCode.NOT_FOUND else None

    async def _abort_previous(self, st: CronState, snap: ClusterSnapshot) -> None:
        try:
            if st.last_cluster:
                t = snap.tasks.get(st.last_task_id)
                if t is not None and not t.state.finished:
                    await self._host.abort_cluster_task(st.last_task_id)
            elif (member := snap.members.get(st.last_node)) is not None:
                await self._clients.abort(member.address, st.last_task_id, timeout_s=self._timeout)
        except (grpc.aio.AioRpcError, TaskwardError) as exc:
            logger.info("replace: could not abort %s: %s", st.last_task_id, exc)

    # ------------------------------------------------------------------ writes

    async def _commit(self, sid: str, old: CronState, new: CronState, *, slot: int | None,
                      ops: Sequence[Op] = (), compares: Sequence[Compare] = ()) -> CronState:
        """One fenced transaction: the state moves from ``old`` (as this leader read it) to ``new``; with a
        ``slot``, its marker is created and the previous one dropped. ``StateChanged`` on a lost compare."""
        key = STATES + sid
        known = self._state(sid, self._cache.snapshot)
        previous = encode_state(old) if (known is not None or old != CronState()) else None
        all_ops: list[Op] = []
        all_compares = [Compare(key, previous), *compares]
        if slot is not None:
            if old.last_slot and old.last_slot != slot:  # one marker per schedule: its newest decided slot
                all_ops.append(Delete(fired_key(sid, old.last_slot)))
            all_ops.append(Put(fired_key(sid, slot), b""))
            all_compares.append(Compare(fired_key(sid, slot), None))
        all_ops += [Put(key, encode_state(new)), *ops]
        result = await self._election.leader_txn(all_ops, all_compares)
        if not result.succeeded:
            raw = result.current.get(key)
            raise StateChanged(sid, decode_state(raw) if raw is not None else None)
        self._latest[sid] = new
        return new

    def _remember(self, sid: str, committed: CronState | None) -> None:
        if committed is None:
            self._latest.pop(sid, None)
        else:
            self._latest[sid] = committed

    def _state(self, sid: str, snap: ClusterSnapshot) -> CronState | None:
        """The schedule's state: what this leader last committed until the replica shows it too."""
        seen = snap.cron_states.get(sid)
        mine = self._latest.get(sid)
        if mine is None:
            return seen
        if seen == mine:
            del self._latest[sid]
            return seen
        return mine

    async def _forget_deleted(self, snap: ClusterSnapshot) -> None:
        """Drop the states and markers of schedules that no longer exist."""
        for sid in [s for s in snap.cron_states if s not in snap.schedules]:
            await self._election.leader_txn((Delete(STATES + sid), Delete(f"{FIRED}{sid}/", prefix=True)))
            self._plan.pop(sid, None)
            self._latest.pop(sid, None)
