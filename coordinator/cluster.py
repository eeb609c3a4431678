"""The coordinator of one node: membership, election, the leader loop and cluster-task requests.

It implements ``node.cluster_view.ClusterView``. Reads come from the watched replica at once; writes
go to the leader (forwarded over gRPC when this node is not it), which commits them with fenced
transactions before anything runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime

import grpc

from taskward.cluster_view import ChildStatus, UnreachableChild
from taskward.config import ClusterConfig
from taskward.coordinator.cache import ClusterCache, ClusterSnapshot
from taskward.coordinator.catalog import TaskCatalog
from taskward.coordinator.child_events import ChildEvents
from taskward.coordinator.cron.clock import clock_from
from taskward.coordinator.cron.front import CronFront
from taskward.coordinator.cron.scheduler import Fired, Scheduler
from taskward.coordinator.cron.service import CronService
from taskward.coordinator.election import Election, NotLeader
from taskward.coordinator.forwarding import Forwarder
from taskward.coordinator.leader import Leader
from taskward.coordinator.membership import Membership, live_members
from taskward.coordinator.node_client import NodeClients, StartRequest
from taskward.coordinator.records import (
    IDEMPOTENCY,
    MEMBERS,
    TASKS,
    ClusterChild,
    ClusterTask,
    Member,
    decode_task,
    encode_task,
)
from taskward.coordinator.store.base import ClusterStore, Compare, Put
from taskward.errors import (
    CoordinatorUnavailable,
    IdempotencyConflict,
    InvalidArgument,
    NotAbortable,
    TaskNotFound,
    TaskwardError,
    TokenRefused,
    UnknownNode,
    WaitTimeout,
)
from taskward.model import NodeInfo, TaskRecord, check_labels, check_task_id

logger = logging.getLogger(__name__)

START_BATCH_S = 0.005


def role(status: str) -> str:
    """The part of a cycle's status that names the node's role: ``leading: 3 unfinished cluster task(s)``
    and ``leading: idle`` are both ``leading``."""
    return status.split(":", 1)[0]


def _dt(ts: float) -> datetime | None:
    return datetime.fromtimestamp(ts, UTC) if ts else None


class Coordinator:
    def __init__(self, config: ClusterConfig, store: ClusterStore, *, node_id: str, address: str,
                 version: str, instance: str, token: str | None, catalog: TaskCatalog,
                 credentials: grpc.ChannelCredentials | None = None) -> None:
        self.config = config
        self.node_id = node_id
        self._store = store
        self._catalog = catalog
        self.cache = ClusterCache(store)
        self.cache.on_leader_change = lambda leader: self._request_full_cycle()
        self.membership = Membership(store, Member(id=node_id, address=address, version=version,
                                                   started_at=time.time(), instance=instance), config.lease_ttl_s)
        self._election = Election(store, node_id, instance)
        self._clients = NodeClients(token, credentials)
        self._to_leader = Forwarder(self._clients, self.cache, timeout_s=config.etcd.timeout_s)
        self._child_events = ChildEvents(self._clients, self._full_cycle_after_batch,
                                         reconcile_s=config.reconcile_interval_s)
        self._leader = Leader(self._election, self._clients, self._child_events,
                              dead_node_grace_s=config.dead_node_grace_s, rpc_timeout_s=config.child_rpc_timeout_s)
        clock = clock_from(config.cron_test_clock)
        self._scheduler = Scheduler(election=self._election, cache=self.cache, clients=self._clients, clock=clock,
                                    host=self, rpc_timeout_s=config.child_rpc_timeout_s,
                                    dead_node_grace_s=config.dead_node_grace_s)
        self.cron = CronFront(CronService(store, self.cache, catalog, clock, replicate_timeout_s=config.etcd.timeout_s),
                              self._scheduler, self.cache, self._clients, clock,
                              leader_address=self._leader_address, node_id=node_id)
        self._cron_task: asyncio.Task[None] | None = None
        self.on_cron_fired: Callable[[Fired], None] = lambda event: None
        self._tasks: list[asyncio.Task[None]] = []
        self._status = ""
        self._kick = asyncio.Event()
        self._full_cycle_wanted = True
        self._unheld_since: float | None = None  # since when the leader key has looked held by no live member
        self._batch: asyncio.TimerHandle | None = None
        self.on_fatal: Callable[[BaseException], None] = lambda exc: None

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        """Connect, check that the members accept our token, register (refusing a duplicate live id),
        sync the replica, start the loops."""
        await self._store.start()
        await self._check_token()
        await self.membership.register()
        self.cache.start()
        await self.cache.wait_synced(self.config.lease_ttl_s * 2)
        loop = asyncio.get_running_loop()
        self._tasks = [
            loop.create_task(self._keep_alive_loop(), name=f"membership[{self.node_id}]"),
            loop.create_task(self._cycle_loop(), name=f"leader-loop[{self.node_id}]"),
        ]

    async def _check_token(self) -> None:
        """Join only if the live members accept our bearer token: a node with the wrong one would register,
        then fail every call it makes or takes. Members that cannot be reached are not asked."""
        kvs, _ = await self._store.get_prefix(MEMBERS)
        others = [m for m in await live_members(self._store, kvs) if m.id != self.node_id]
        for m in others:
            try:
                await self._clients.load(m.address, timeout_s=self.config.child_rpc_timeout_s)
                return
            except grpc.aio.AioRpcError as exc:
                if exc.code() == grpc.StatusCode.UNAUTHENTICATED:
                    raise TokenRefused(f"the cluster refuses this node's token: member {m.id} at {m.address} "
                                       "answered UNAUTHENTICATED (use the cluster's --token-file)") from None
                if exc.code() == grpc.StatusCode.PERMISSION_DENIED:  # a token, but not of role node there
                    raise TokenRefused(f"the cluster refuses this node's token: member {m.id} at {m.address} "
                                       f"answered PERMISSION_DENIED ({exc.details()}): nodes call each other "
                                       "with a token of role node") from None

    async def stop_leading(self) -> None:
        """Shutdown step 2: stop the loops and give up the leader key at once (fast failover).
        Membership stays: peers see us alive while the executor drains."""
        if self._batch is not None:
            self._batch.cancel()
            self._batch = None
        for t in self._tasks:
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []
        await self._stop_cron()
        await self._child_events.close()
        with contextlib.suppress(TaskwardError):
            if self.is_leader:
                await self._election.resign()

    async def stop(self) -> None:
        """Shutdown step 5, last: leave the cluster (revoke our lease) and close connections.
        Idempotent; also stops leading if that was not done yet."""
        await self.stop_leading()
        await self.cache.stop()
        with contextlib.suppress(TaskwardError):
            await self.membership.leave()
        await self._clients.close()
        await self._store.close()

    def use_credentials(self, credentials: grpc.ChannelCredentials | None) -> None:
        """TLS credentials for calls to other nodes from now on (the node's certificates were reloaded)."""
        self._clients.use_credentials(credentials)

    @property
    def child_events(self) -> ChildEvents:
        """What this node, while leading, follows of its children's event streams."""
        return self._child_events

    @property
    def is_leader(self) -> bool:
        snap = self.cache.snapshot
        return not snap.stale and snap.leader == self.node_id and self._election.holds(snap.leader_record)

    async def _keep_alive_loop(self) -> None:
        interval = self.config.lease_ttl_s / 3
        while True:
            try:
                await self.membership.keep_alive()
                self.cache.mark_stale(False)
            except CoordinatorUnavailable as exc:
                logger.warning("cannot renew membership lease: %s", exc)
                self.cache.mark_stale(True)
            except TaskwardError as exc:  # e.g. our id was taken while we were cut off
                logger.critical("membership lost for good: %s", exc.message)
                self.on_fatal(exc)
                return
            await asyncio.sleep(interval)

    async def _cycle_loop(self) -> None:
        """A full cycle every ``loop_interval_s`` (or at once after an abort); in between, a kick after
        new starts runs a cycle over the new tasks only, so a start never pays for polling the others."""
        next_full = 0.0
        while True:
            now = time.monotonic()
            full = self._full_cycle_wanted or now >= next_full
            self._full_cycle_wanted = False
            self._kick.clear()  # before the cycle: a kick arriving during it runs another
            if full:
                next_full = now + self.config.loop_interval_s
            try:
                status = await self.run_cycle(new_only=not full)
            except CoordinatorUnavailable as exc:
                status = f"cluster store unavailable: {exc}"
            except Exception:
                logger.exception("leader cycle failed; please report it as a bug")
                status = "cycle error"
            if status != self._status:
                # A new role (leading, following, electing, cut off) is news; a leader's count of unfinished
                # tasks changes with every start and would log two lines each.
                logger.log(logging.INFO if role(status) != role(self._status) else logging.DEBUG, "%s", status)
                self._status = status
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(max(0.0, next_full - time.monotonic())):
                    await self._kick.wait()

    def _request_full_cycle(self) -> None:
        self._full_cycle_wanted = True
        self._kick.set()

    def _full_cycle_after_batch(self) -> None:
        """A child finished (said its node's event stream): a full cycle soon, batched like starts."""
        self._full_cycle_wanted = True
        self._kick_after_batch()

    async def run_cycle(self, *, new_only: bool = False) -> str:
        snap = self.cache.snapshot
        if not snap.stale and snap.leader == self.node_id and self._election.holds(snap.leader_record):
            self._child_events.sync(snap)
            self._ensure_cron()
            try:
                n = await self._leader.drive_all(snap, new_only=new_only)
                self._unheld_since = None
                return f"leading: {n} unfinished cluster task(s)" if n else "leading: idle"
            except NotLeader:
                status = "deposed: no longer the leader"
                await self._unheld()  # a key naming this node that is not its own
        elif snap.stale:
            status = "cluster replica stale: not leading"
        elif snap.leader == self.node_id:  # named, but not with this node's own record: not ours to lead with
            await self._unheld()
            status = "leader key names this node but is not its own: not leading"
        elif snap.leader is None or snap.leader not in snap.members:
            if snap.leader is not None or not await self._election.campaign(self.membership.lease):
                await self._unheld()
            status = "leader election in progress"
        else:
            self._unheld_since = None
            status = f"following leader {snap.leader}"
        if self._child_events.active:
            await self._child_events.close()  # not (or no longer) the leader: stop following the nodes
        await self._stop_cron()
        return status

    async def _unheld(self) -> None:
        """The leader key is there, but no live member leads with it. Once that has lasted a lease TTL
        (longer than a dying leader's key outlives its node's membership), the key is cleared so that an
        election can take place (``Election.clear_unheld``)."""
        now = time.monotonic()
        if self._unheld_since is None:
            self._unheld_since = now
        elif now - self._unheld_since >= self.config.lease_ttl_s:
            self._unheld_since = None
            if await self._election.clear_unheld():
                self._request_full_cycle()

    def _ensure_cron(self) -> None:
        """The cron scheduler runs exactly while this node leads (it ends by itself when deposed)."""
        if self._cron_task is None or self._cron_task.done():
            if self._cron_task is not None and not self._cron_task.cancelled() and self._cron_task.exception():
                logger.warning("cron scheduler stopped: %r", self._cron_task.exception())
            self._cron_task = asyncio.get_running_loop().create_task(self._scheduler.run(),
                                                                     name=f"cron[{self.node_id}]")

    async def _stop_cron(self) -> None:
        if self._cron_task is not None:
            self._cron_task.cancel()
            await asyncio.gather(self._cron_task, return_exceptions=True)
            self._cron_task = None

    # ------------------------------------------------------------------ the scheduler's host

    def new_cluster_task(self, module: str, type_name: str, args_json: str, *, entity: str,
                         task_id: str) -> ClusterTask:
        snap = self.cache.snapshot
        if not snap.members:
            raise InvalidArgument("no live nodes")
        return self._new_task(task_id, module, type_name, args_json, sorted(snap.members), entity=entity)

    async def abort_cluster_task(self, task_id: str) -> None:
        await self.abort(task_id)

    def cluster_task_committed(self) -> None:
        self._kick_after_batch()

    def fired(self, event: Fired) -> None:
        self.on_cron_fired(event)

    def _new_task(self, task_id: str, module: str, type_name: str, args_json: str, targets: list[str], *,
                  idempotency_key: str = "", keyspace: str = "", table: str = "", entity: str = "") -> ClusterTask:
        checked = self._catalog.check(module, type_name, args_json)
        return ClusterTask(id=task_id, module=module, type=type_name, args_json=checked.args_json,
                           created_at=time.time(), target_nodes=tuple(targets), idempotency_key=idempotency_key,
                           keyspace=keyspace, table=table, entity=entity, is_abortable=checked.abortable,
                           progress_units=checked.progress_units)

    # ------------------------------------------------------------------ reads (ClusterView)

    @property
    def snapshot(self) -> ClusterSnapshot:
        return self.cache.snapshot

    def get(self, task_id: str) -> TaskRecord | None:
        t = self.cache.snapshot.tasks.get(task_id)
        return t.as_task_record() if t else None

    def list_module(self, module: str) -> list[TaskRecord]:
        tasks = sorted(self.cache.snapshot.tasks.values(), key=lambda t: (t.created_at, t.id))
        return [t.as_task_record() for t in tasks if t.module == module]

    @property
    def stale(self) -> bool:
        """Cut off from the store, or some record was bad and skipped (``ClusterSnapshot.reads_stale``)."""
        return self.cache.snapshot.reads_stale

    def nodes(self) -> list[NodeInfo]:
        snap = self.cache.snapshot
        return [
            NodeInfo(id=m.id, address=m.address, alive=True, leader=m.id == snap.leader, version=m.version,
                     started_at=datetime.fromtimestamp(m.started_at, UTC))
            for m in sorted(snap.members.values(), key=lambda m: m.id)
        ]

    async def wait_change(self, timeout_s: float) -> None:
        await self.cache.wait_change(timeout_s)

    def addresses(self) -> dict[str, str]:
        return {m.id: m.address for m in self.cache.snapshot.members.values()}

    async def wait(self, task_id: str, timeout_s: float | None) -> TaskRecord:
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while True:
            t = self.cache.snapshot.tasks.get(task_id)
            if t is None:
                raise TaskNotFound(task_id)
            if t.state.finished:
                return t.as_task_record()
            remaining = 3600.0 if deadline is None else deadline - time.monotonic()
            if remaining <= 0:
                raise WaitTimeout(task_id, timeout_s or 0)
            await self.cache.wait_change(min(remaining, 1.0))

    async def child_statuses(self, task_id: str) -> list[ChildStatus]:
        """Each child's subtree from the node that runs it; a node that cannot answer within the
        timeout yields one entry with an error naming it, never a failure of the whole call."""
        t = self.cache.snapshot.tasks.get(task_id)
        if t is None:
            return []
        addresses = self.addresses()

        async def one(c: ClusterChild) -> list[ChildStatus]:
            address = addresses.get(c.node)
            err = f"node {c.node} is down"
            if address is not None and c.task_id:
                try:
                    return list(await self._clients.status_recursive(address, c.task_id,
                                                                     timeout_s=self.config.child_rpc_timeout_s))
                except grpc.aio.AioRpcError as exc:
                    err = f"node {c.node} unreachable: {exc.code().name}"
            return [UnreachableChild(
                task_id=c.task_id, parent_id=t.id, module=t.module, type=t.type,
                state=c.state.value if c.state.finished else "unknown", error=c.error or err, keyspace=t.keyspace,
                table=t.table, entity=t.entity, start_time=_dt(c.start_time), end_time=_dt(c.end_time),
                progress_completed=c.progress_completed, progress_total=c.progress_total, is_abortable=t.is_abortable,
            )]

        results = await asyncio.gather(*(one(c) for c in t.children if c.task_id or c.state.finished))
        return [s for r in results for s in r]

    # ------------------------------------------------------------------ writes

    def _leader_address(self) -> tuple[str, str]:
        """The leader's node id and address; ``CoordinatorUnavailable`` while there is none we can trust."""
        snap = self.cache.snapshot
        if snap.stale:
            raise CoordinatorUnavailable("this node has lost the cluster store")
        if snap.leader is None or snap.leader not in snap.members:
            raise CoordinatorUnavailable("no cluster leader at the moment; retry shortly")
        return snap.leader, snap.members[snap.leader].address

    async def start_task(self, module: str, type_name: str, args_json: str, *, nodes: list[str],
                         idempotency_key: str = "", keyspace: str = "", table: str = "", entity: str = "",
                         task_id: str = "") -> str:
        """Commit a new cluster task (on the leader) and return its id. ``task_id``: the id to give it,
        chosen by the node that forwarded the start; a new one when empty.

        The node path's limits apply here too, before anything is forwarded or replicated: labels and the
        idempotency key (``check_labels``), arguments (the catalog: size, depth, finite numbers)."""
        check_labels(keyspace=keyspace, table=table, entity=entity, idempotency_key=idempotency_key)
        leader, address = self._leader_address()
        if leader != self.node_id:
            req = StartRequest(module=module, type=type_name, args_json=args_json, cluster=True, nodes=tuple(nodes),
                               idempotency_key=idempotency_key, keyspace=keyspace, table=table, entity=entity,
                               cluster_task_id=task_id or str(uuid.uuid4()))
            # Only an id we just drew is proof by its mere appearance; a caller's id may name an old task.
            return await self._to_leader.start(address, req, early_ack=not task_id)
        self._catalog.check(module, type_name, args_json)  # bad arguments before a bad node list, as before
        snap = self.cache.snapshot
        targets = sorted(snap.members) if not nodes else list(dict.fromkeys(nodes))
        for n in targets:
            if n not in snap.members:
                raise UnknownNode(n)
        if not targets:
            raise InvalidArgument("no target nodes")
        t = self._new_task(task_id or str(uuid.uuid4()), module, type_name, args_json, targets,
                           idempotency_key=idempotency_key, keyspace=keyspace, table=table, entity=entity)
        ops = [Put(TASKS + t.id, encode_task(t))]
        extra = [Compare(TASKS + t.id, None)]  # create only: a forwarded id must not be in use
        if idempotency_key:
            ops.append(Put(IDEMPOTENCY + idempotency_key, t.id.encode()))
            extra.append(Compare(IDEMPOTENCY + idempotency_key, None))
        try:
            result = await self._election.leader_txn(ops, extra)
        except NotLeader:
            raise CoordinatorUnavailable("leadership changed; retry") from None
        if not result.succeeded:
            existing = result.current.get(IDEMPOTENCY + idempotency_key) if idempotency_key else None
            if existing is not None:
                return self._same_request(existing, t, idempotency_key)
            raise InvalidArgument(f"task id {t.id} is already in use")
        logger.info("cluster task %s (%s:%s) committed for nodes %s", t.id, module, type_name, ",".join(targets))
        self._kick_after_batch()
        await self._to_leader.until_replicated(t.id)
        return t.id

    def _kick_after_batch(self) -> None:
        """Drive new tasks after a short batching window rather than at once: a burst of starts costs
        one leader cycle, and the record's fan-out to the replicas does not compete with the children's
        start traffic."""
        if self._batch is None:
            self._batch = asyncio.get_running_loop().call_later(START_BATCH_S, self._end_batch)

    def _end_batch(self) -> None:
        self._batch = None
        self._kick.set()

    def _same_request(self, existing: bytes, t: ClusterTask, key: str) -> str:
        existing_id = existing.decode("utf-8", "replace")
        try:
            check_task_id(existing_id)
        except InvalidArgument:  # written by hand, or by something that is not taskward
            logger.error("idempotency key %s holds %s, not a task id", ascii(key[:80]), ascii(existing_id[:80]))
            raise InvalidArgument(f"idempotency key {key!r} is held by a bad record in the cluster store (not a "
                                  "task id); use another key") from None
        old = self.cache.snapshot.tasks.get(existing_id)
        if old is not None and (old.module, old.type, json.loads(old.args_json), old.keyspace, old.table, old.entity
                                ) != (t.module, t.type, json.loads(t.args_json), t.keyspace, t.table, t.entity):
            raise IdempotencyConflict(key)  # the same request as a node task's key: type, arguments and labels
        return existing_id

    async def abort(self, task_id: str) -> None:
        t = self.cache.snapshot.tasks.get(task_id)
        if t is None:
            raise TaskNotFound(task_id)
        if not t.is_abortable:
            raise NotAbortable(task_id)
        leader, address = self._leader_address()
        if leader != self.node_id:
            await self._to_leader.abort(address, task_id)
            return
        kv = await self._store.get(TASKS + task_id)
        cur = decode_task(kv.value) if kv else None
        for _ in range(20):
            if cur is None:
                raise TaskNotFound(task_id)
            if cur.state.finished or cur.abort_requested:
                return
            try:
                lost = await self._leader.write(replace(cur, abort_requested=True), previous=cur)
            except NotLeader:
                raise CoordinatorUnavailable("leadership changed; retry") from None
            if lost is None:
                self._request_full_cycle()
                return
            cur = lost.current  # the leader's cycle wrote in between: ask again on what it wrote
        raise CoordinatorUnavailable("could not record the abort; retry")
