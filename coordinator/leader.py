"""The leader's cycle: drive every unfinished cluster task from a snapshot, with fenced writes.

Each cycle reads the watched snapshot, brings each unfinished task one step forward (start missing
children, follow running ones through their nodes' event streams and poll them only when the events
cannot be trusted, fail children of nodes dead past the grace period, roll up the state) and writes
a changed record in a transaction guarded by the leader key *and* the record's previous value, so a
deposed leader cannot write and a concurrent abort is never overwritten.

A write that loses the record's compare is not dropped: the cycle's snapshot may simply not show the
leader's own previous write yet (the replica is fed by a watch), or an abort came in between. The
task is driven again from the record as committed, and what the children's events told is applied
again, since it is taken from the streams afresh on every drive and never counted as written before
the write that carries it is committed. Children are
started with an idempotency key derived from the task id and attempt, so a new leader that repeats
a start gets the child the old leader already started instead of running it twice.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace

import grpc

from taskward.coordinator.cache import ClusterSnapshot
from taskward.coordinator.child_events import ChildEvents
from taskward.coordinator.election import Election, NotLeader
from taskward.coordinator.node_client import NodeClients, StartRequest
from taskward.coordinator.record_checks import BadRecord
from taskward.coordinator.records import (
    TASKS,
    ClusterChild,
    ClusterTask,
    Member,
    check_child,
    decode_task,
    encode_task,
)
from taskward.coordinator.store.base import Compare, Delete, Put
from taskward.model import TaskState

logger = logging.getLogger(__name__)

PARALLEL_DRIVES = 32
RETAIN_FINISHED = 1000
RETAIN_S = 7 * 24 * 3600
RETAIN_CHECK_S = 60.0
MAX_LOST_WRITES = 5  # a record changing under every retry is left to the next cycle


@dataclass(frozen=True, slots=True)
class Lost:
    """A fenced write whose record compare failed: ``current`` is the record as committed now (None: gone)."""

    current: ClusterTask | None


def child_key(task_id: str, attempt: int) -> str:
    return f"cluster:{task_id}:{attempt}"


def roll_up(t: ClusterTask, now: float) -> ClusterTask:
    """The task's state from its children's (pure): running until every child has finished."""
    if t.state is TaskState.CREATED:
        t = replace(t, state=TaskState.RUNNING, start_time=now)
    if len(t.children) < len(t.target_nodes) or not all(c.state.finished for c in t.children):
        return t
    if t.abort_requested:
        return replace(t, state=TaskState.FAILED, error="aborted", aborted=True, end_time=now)
    failed = [c for c in t.children if c.state is TaskState.FAILED]
    if failed:
        detail = "; ".join(f"{c.node}: {c.error}" for c in failed)
        names = ", ".join(c.node for c in failed)
        return replace(t, state=TaskState.FAILED, error=f"failed on node(s) {names} ({detail})", end_time=now)
    return replace(t, state=TaskState.DONE, end_time=now)


def expired(tasks: Iterable[ClusterTask], now: float) -> list[ClusterTask]:
    """Finished tasks past retention: older than ``RETAIN_S``, then the oldest beyond ``RETAIN_FINISHED``.
    Cluster tasks are never unregistered by API calls; this is how they go."""
    finished = sorted((t for t in tasks if t.state.finished), key=lambda t: t.end_time)
    drop = [t for t in finished if t.end_time < now - RETAIN_S]
    excess = len(finished) - len(drop) - RETAIN_FINISHED
    return drop + finished[len(drop):len(drop) + excess] if excess > 0 else drop


def orphan_suspect(c: ClusterChild, members: Mapping[str, Member]) -> bool:
    """A child failed while its node was away, whose node is back: it must be stopped there."""
    return c.failed_while_away and c.node in members


def mark_down(c: ClusterChild, node: str, now: float, grace_s: float) -> ClusterChild:
    """A child whose node is not a live member: failed once the node stays down past the grace."""
    if not c.down_since:
        return replace(c, down_since=now)
    if now - c.down_since > grace_s:
        return replace(c, state=TaskState.FAILED, error=f"node {node} unavailable", end_time=now)
    return c


def recordable(c: ClusterChild, was: ClusterChild, now: float) -> ClusterChild:
    """``c`` as a node's answer or events made it, if the record can hold it; else the child as it was,
    failed, saying why. The replicas check every record they read and skip a bad one whole, so a value out
    of range from one node (nodes refuse such values at the source: a bug, or a rogue peer) would otherwise
    make the cluster task vanish from every node, the leader's own cycle included."""
    if c is was:
        return c
    try:
        check_child(c)
    except BadRecord as exc:
        logger.error("node %s reported a child the record cannot hold (%s); failing that child", c.node, exc)
        return replace(was, state=TaskState.FAILED, end_time=now, down_since=0.0,
                       error=f"node {c.node} reported what cannot be recorded: {exc}")
    return c


class Leader:
    def __init__(self, election: Election, clients: NodeClients, events: ChildEvents, *, dead_node_grace_s: float,
                 rpc_timeout_s: float) -> None:
        self._election = election
        self._clients = clients
        self._events = events
        self._grace = dead_node_grace_s
        self._timeout = rpc_timeout_s
        self._sem = asyncio.Semaphore(PARALLEL_DRIVES)
        self._next_retain = 0.0

    async def drive_all(self, snap: ClusterSnapshot, *, new_only: bool = False) -> int:
        """One cycle over the snapshot's active tasks (never the whole retained history), then retention
        when it is due. ``new_only``: just start the children of tasks never driven yet."""
        members = snap.members
        unfinished = [t for t in snap.active.values() if not t.state.finished]
        if new_only:
            fresh = [t for t in unfinished if t.state is TaskState.CREATED]
            await asyncio.gather(*(self._drive_guarded(t, members) for t in fresh))
            return len(unfinished)
        orphans = [t for t in snap.active.values()
                   if t.state.finished and any(orphan_suspect(c, members) for c in t.children)]
        await asyncio.gather(*(self._drive_guarded(t, members) for t in [*unfinished, *orphans]))
        self._events.retain({(t.id, c.node, c.task_id) for t in unfinished for c in t.children if c.task_id})
        finished = len(snap.tasks) - len(unfinished)
        if finished > RETAIN_FINISHED or time.monotonic() >= self._next_retain:
            self._next_retain = time.monotonic() + RETAIN_CHECK_S
            for t in expired(snap.tasks.values(), time.time()):
                await self._election.leader_txn((Delete(TASKS + t.id),))
        return len(unfinished)

    async def _drive_guarded(self, t: ClusterTask, members: Mapping[str, Member]) -> None:
        async with self._sem:
            for _ in range(MAX_LOST_WRITES):
                try:
                    new = await self._drive(t, members)
                except NotLeader:
                    raise
                except Exception:
                    logger.exception("driving cluster task %s failed; retrying next cycle", t.id)
                    return
                if new == t:
                    return
                lost = await self.write(new, previous=t)
                if lost is None or lost.current is None:
                    return
                logger.debug("cluster task %s changed since the snapshot; driving it from the committed record", t.id)
                t = lost.current
            logger.warning("cluster task %s kept changing under %d writes; next cycle", t.id, MAX_LOST_WRITES)

    async def write(self, new: ClusterTask, *, previous: ClusterTask | None) -> Lost | None:
        """Fenced compare-and-swap of one record: None once ``new`` is committed, else the record as it is.
        Raises ``NotLeader`` when deposed."""
        key = TASKS + new.id
        result = await self._election.leader_txn(
            (Put(key, encode_task(new)),), (Compare(key, encode_task(previous) if previous else None),))
        if result.succeeded:
            return None
        raw = result.current.get(key)
        return Lost(decode_task(raw) if raw is not None else None)

    async def _drive(self, t: ClusterTask, members: Mapping[str, Member]) -> ClusterTask:
        now = time.time()
        for c in t.children:
            if orphan_suspect(c, members):
                t = t.with_child(await self._stop_orphan(t, c, members[c.node]))
        if t.state.finished:
            return t
        kids = {c.node: c for c in t.children}
        pending = [c for c in (kids.get(node) or ClusterChild(node=node) for node in t.target_nodes)
                   if not c.state.finished]
        driven = [recordable(c, was, now) for c, was in
                  zip(await self._drive_children(t, pending, members, now), pending, strict=True)]
        started = [c for c, was in zip(driven, pending, strict=True) if c.task_id and c.task_id != was.task_id]
        if started:  # one line per cluster task, not one per node
            logger.info("started %d child(ren) of cluster task %s: %s", len(started), t.id,
                        ", ".join(f"{c.node}={c.task_id}" for c in started))
        return roll_up(t.with_children(driven), now)

    async def _drive_children(self, t: ClusterTask, pending: list[ClusterChild], members: Mapping[str, Member],
                              now: float) -> list[ClusterChild]:
        """Each child one step on: from what is known here when that is enough, else by asking its node.

        The nodes are independent, so they are all asked at once: starting on N nodes takes one round
        trip. But each call goes out in its own turn of the event loop. Sent in one turn, N calls (about
        0.2 ms of CPU each) held everything else this node serves behind them, a status read of this very
        task included: on 20 nodes sharing two cores, the leader answered that read last of all the nodes,
        at twice the others' median."""
        driven: list[ClusterChild | asyncio.Task[ClusterChild]] = []
        try:
            for c in pending:
                member = members.get(c.node)
                if (settled := self._settled(t, c, member, now)) is not None:
                    driven.append(settled)
                    continue
                assert member is not None
                driven.append(asyncio.ensure_future(self._ask_node(t, replace(c, down_since=0.0), member)))
                await asyncio.sleep(0)
            await asyncio.gather(*(d for d in driven if isinstance(d, asyncio.Task)))
        except asyncio.CancelledError:
            for d in driven:
                if isinstance(d, asyncio.Task):
                    d.cancel()
            raise
        return [d if isinstance(d, ClusterChild) else d.result() for d in driven]

    def _settled(self, t: ClusterTask, c: ClusterChild, member: Member | None, now: float) -> ClusterChild | None:
        """The child moved on without asking its node (the node is away, or the child's events tell), or
        None when its node must be asked."""
        if member is None:
            return mark_down(c, c.node, now, self._grace)
        if c.task_id and not t.abort_requested:
            # An abort-requested task is never followed: AbortTask then poll, every cycle, until it ends.
            return self._events.follow(t.id, replace(c, down_since=0.0) if c.down_since else c)
        return None

    async def _ask_node(self, t: ClusterTask, c: ClusterChild, member: Member) -> ClusterChild:
        if c.task_id:
            return await self._poll_child(t, c, member)
        # Even when aborted, ask (same idempotency key): the child may exist already, started by a drive
        # whose record write lost to the abort's, or by a leader that died before writing.
        c = await self._start_child(t, c, member)
        if t.abort_requested and c.task_id:
            c = await self._poll_child(t, c, member)
        return c

    async def _start_child(self, t: ClusterTask, c: ClusterChild, member: Member) -> ClusterChild:
        # The id is drawn here: coming back, it proves this start created the child (the idempotency key
        # answers an older start's child with that child's id), so its events can be followed at once.
        drawn = str(uuid.uuid4())
        req = StartRequest(module=t.module, type=t.type, args_json=t.args_json,
                           idempotency_key=child_key(t.id, c.attempt), keyspace=t.keyspace, table=t.table,
                           entity=t.entity, cluster_parent_id=t.id, task_id=drawn)
        mark = self._events.mark(c.node)  # before the start: the child's events all come after it
        try:
            task_id = await self._clients.start(member.address, req, timeout_s=self._timeout)
        except grpc.aio.AioRpcError as exc:
            if exc.code() in (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND):
                return replace(c, state=TaskState.FAILED, error=f"cannot start on {c.node}: {exc.details()}",
                               end_time=time.time())
            logger.info("cannot reach %s to start a child of %s: %s", c.node, t.id, exc.code().name)
            return c
        c = replace(c, task_id=task_id, state=TaskState.RUNNING, start_time=time.time())
        if task_id == drawn:
            self._events.started(c, mark)
        return c

    async def _stop_orphan(self, t: ClusterTask, c: ClusterChild, member: Member) -> ClusterChild:
        """Abort a child already failed as ``node X unavailable`` on its returned node; clear the mark once
        the node has it stopped (or never had it, or it cannot be aborted)."""
        try:
            await self._clients.abort(member.address, c.task_id, timeout_s=self._timeout)
        except grpc.aio.AioRpcError as exc:
            if exc.code() not in (grpc.StatusCode.NOT_FOUND, grpc.StatusCode.FAILED_PRECONDITION):
                return c  # unreachable again: retry next cycle
        logger.info("stopped orphan child %s of cluster task %s on %s", c.task_id, t.id, c.node)
        return replace(c, down_since=0.0)

    async def _poll_child(self, t: ClusterTask, c: ClusterChild, member: Member) -> ClusterChild:
        mark = self._events.mark(c.node)  # before asking: events after it are newer than the answer
        try:
            if t.abort_requested:
                await self._clients.abort(member.address, c.task_id, timeout_s=self._timeout)
            rec = (await self._clients.status(member.address, c.task_id, timeout_s=self._timeout)).record
        except grpc.aio.AioRpcError as exc:
            if exc.code() == grpc.StatusCode.NOT_FOUND:
                logger.warning("node %s lost child %s of %s; starting it again", c.node, c.task_id, t.id)
                return ClusterChild(node=c.node, attempt=c.attempt + 1)
            return c  # unreachable, or not abortable (FAILED_PRECONDITION): let it finish
        c = replace(
            c, state=rec.state, error=rec.error, progress_completed=rec.progress_completed,
            progress_total=rec.progress_total, result_json=rec.result,
            end_time=rec.end_time.timestamp() if rec.state.finished and rec.end_time else 0.0,
        )
        self._events.polled(c, mark)
        return c
