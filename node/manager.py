"""TaskManager: the node's service layer. Every surface (gRPC, REST, RESP, CLI) calls this.

It owns the in-memory task table and keeps it in step with SQLite: each transition builds one
transaction, commits it, and only then publishes the matching event. Reads are answered from memory.
Test-API operations live in ``taskward.scylla_test_api``; TTL and retention sweeps in ``taskward.retention``.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import math
import time
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

from taskward.config import ManagerConfig
from taskward.context import TaskContext
from taskward.cron import iso
from taskward.errors import (
    IdempotencyConflict,
    InvalidArgument,
    NotAbortable,
    TaskNotFound,
    UnknownModule,
    WaitTimeout,
)
from taskward.events import EVENTS_EPOCH, Event, EventLog, EventType, new_epoch
from taskward.executor import Executor, Run
from taskward.limits import MAX_TREE_DEPTH, check_progress
from taskward.logs import task_extra, task_logger
from taskward.metrics import NodeMetrics
from taskward.middleware import (
    ErrorInput,
    EtaMiddleware,
    FinishInput,
    MiddlewareChain,
    ProgressInput,
    RetryMiddleware,
    RunInput,
    TaskMetricsMiddleware,
    TimeLimitMiddleware,
    TypeStatsMiddleware,
)
from taskward.model import (
    MAX_LABEL_LEN,
    ChildRef,
    Progress,
    TaskRecord,
    TaskState,
    TaskView,
    TtlSettings,
    TypeStats,
    check_labels,
    check_task_id,
    descendants,
    expiry,
    fold_drops,
    matches,
    new_task_id,
    rolled_up_progress,
)
from taskward.registry import BodyExecutor, Registry, TaskType
from taskward.retention import Retention
from taskward.store import Store, Tx
from taskward.task_table import TaskTable

logger = logging.getLogger(__name__)

TEST_MODULE = "test"
BUILTIN_MODULE = "builtin"
MAX_TTL = 2**32 - 1  # ScyllaDB's task_ttl_in_seconds: an unsigned 32-bit integer


def utcnow() -> datetime:
    return datetime.now(UTC)


class TaskManager:
    """Modules, trees, states, TTL, folding and abort for the tasks of one node.

    ``start()`` loads the store and recovers interrupted work; ``stop()`` drains the executor. All
    public coroutines raise only ``TaskwardError`` subclasses for client mistakes.
    """

    def __init__(
        self,
        config: ManagerConfig,
        store: Store,
        registry: Registry,
        *,
        clock: Callable[[], datetime] = utcnow,
        metrics: NodeMetrics | None = None,
    ) -> None:
        self.config = config
        self.metrics = metrics or NodeMetrics()
        self.node_id = config.node_id
        self.registry = registry
        self._store = store
        self._now = clock
        self.table = TaskTable()
        self.events: EventLog = EventLog(store, 0, metrics=self.metrics)
        self.executor = Executor(
            self, concurrency=config.concurrency, sync_threads=config.sync_threads,
            process_workers=config.process_workers,
            process_sources=sorted({t.import_source for t in registry.all() if t.executor is BodyExecutor.PROCESS}),
        )
        self.metrics.queue_depth = self.executor.queue_depth
        self.retention = Retention(self, config)
        self.ttl = TtlSettings(config.initial_task_ttl, config.initial_user_task_ttl)
        self.test_module_registered = False
        self._seq: dict[tuple[str, int], int] = {}
        self._waiters: dict[str, list[asyncio.Future[TaskView]]] = {}
        self.type_stats = TypeStatsMiddleware()
        self._eta_clocks = EtaMiddleware()
        self.middleware = MiddlewareChain([
            TaskMetricsMiddleware(self.metrics), self.type_stats, self._eta_clocks, TimeLimitMiddleware(),
            RetryMiddleware(),
            *(cls() for cls in registry.middleware),
        ])
        self._runs: set[str] = set()  # tasks whose run began in this process (before_run was called)
        self._finishing: set[str] = set()  # tasks whose completion is being committed
        self._retrying: set[str] = set()  # tasks whose pending retry is being committed
        self._starting: dict[str, asyncio.Future[None]] = {}  # idempotency key -> its first start's commit
        self._starting_ids: set[str] = set()  # tasks whose start is being committed (not in the table yet)
        self._events_pruned_to = 0

    # ---------------------------------------------------------------- lifecycle

    async def start(self) -> None:
        loaded = await self._store.open()
        s = loaded.settings
        self.events = EventLog(self._store, loaded.last_event_seq, epoch=s.get(EVENTS_EPOCH) or new_epoch(),
                               metrics=self.metrics)
        self.ttl = TtlSettings(
            int(s.get("task_ttl", self.config.initial_task_ttl)),
            int(s.get("user_task_ttl", self.config.initial_user_task_ttl)),
        )
        for key, value in s.items():
            if key.startswith("seq:"):
                module, _, shard = key[4:].rpartition(":")
                if module != TEST_MODULE:
                    self._seq[(module, int(shard))] = int(value)
        self.type_stats.load(s)
        for module in self.list_modules():
            self.metrics.known_module(module)
        for rec in loaded.tasks:
            self.table.put(rec)
        await self._recover()
        self.executor.start()
        self.retention.start()
        logger.info("task manager ready: %d tasks loaded", len(self.table))

    async def _recover(self) -> None:
        """Re-queue or fail work that a crash or shutdown interrupted (architecture: Execution and durability)."""
        tx = Tx().setting("task_ttl", str(self.ttl.task_ttl)).setting("user_task_ttl", str(self.ttl.user_task_ttl))
        tx.setting(EVENTS_EPOCH, self.events.epoch)  # durable before the first event of this epoch is published
        now = self._now()
        requeue: list[tuple[TaskRecord, TaskType]] = []
        retries: list[tuple[TaskRecord, TaskType]] = []
        stale_test = [r.id for r in self.table.records.values() if r.module == TEST_MODULE]
        for tid in stale_test:  # the test module does not outlive the process that registered it
            self.table.remove(tid)
        tx.delete(stale_test)
        for rec in list(self.table.records.values()):
            if rec.state.finished:
                if rec.is_root and rec.expires_at is not None:
                    self.retention.track_finished(rec)
                continue
            spec = self.registry.find(rec.module, rec.type)
            if spec is not None and rec.is_root and rec.retry_pending:  # between attempts: nothing was running
                retries.append((rec, spec))
                continue
            retry = spec is not None and rec.is_root and (rec.state is TaskState.CREATED or spec.retryable)
            if retry and spec is not None:
                rec = replace(rec, state=TaskState.CREATED, start_time=None, progress_completed=0.0, children=())
                requeue.append((rec, spec))
            else:
                rec = rec.finished(now, error="node restarted")
                if not rec.is_root:
                    rec = replace(rec, folded=True)
                else:
                    rec = replace(rec, expires_at=expiry(rec, self.ttl))
                    self.retention.track_finished(rec)
            self.table.put(rec)
            tx.put(rec)
        await self._store.commit(tx)
        for rec, spec in requeue:
            self.executor.enqueue(Run(rec.id, spec, spec.parse_args(rec.args)))
        for rec, spec in retries:
            assert rec.next_attempt_at is not None
            delay = max(0.0, (rec.next_attempt_at - now).total_seconds())
            self.executor.retry_later(Run(rec.id, spec, spec.parse_args(rec.args)), delay, child=False)
        if requeue:
            logger.info("re-queued %d interrupted task(s)", len(requeue))
        if retries:
            logger.info("rescheduled %d pending retr%s", len(retries), "y" if len(retries) == 1 else "ies")

    async def stop(self) -> None:
        await self.retention.stop()
        await self.executor.stop(self.config.shutdown_grace_s)
        self.events.close()
        await self._store.close()

    # ---------------------------------------------------------------- helpers

    def now(self) -> datetime:
        return self._now()

    def record(self, task_id: str) -> TaskRecord | None:
        return self.table.get(task_id)

    async def prune_events(self, keep: int) -> None:
        """Drop persisted events older than the newest ``keep``."""
        cutoff = self.events.last_sequence - keep
        if cutoff > self._events_pruned_to:
            self._events_pruned_to = cutoff
            await self._store.commit(Tx().prune_events(cutoff))

    def _event(self, tx: Tx, etype: EventType, rec: TaskRecord, **extra: Any) -> Event:
        ev = Event(
            sequence=self.events.next_sequence(), type=etype, task_id=rec.id, module=rec.module,
            task_type=rec.type, time=time.time(), cluster_parent=self.table.cluster_parent_of(rec),
            **extra,
        )
        tx.event(ev.sequence, ev.at, ev)
        return ev

    def _submit(self, tx: Tx, *events: Event, deferred: bool = False) -> asyncio.Future[None]:
        """Queue ``tx``; its events are published right after it commits, in sequence order. ``deferred``:
        nobody waits for it (``Store.submit``)."""
        for ev in events:
            tx.on_commit.append(functools.partial(self.events.publish, ev))
        return self._store.submit(tx, deferred=deferred)

    async def _commit(self, tx: Tx, *events: Event) -> None:
        await self._submit(tx, *events)

    def _addressable(self, task_id: str) -> TaskRecord:
        rec = self.table.get(check_task_id(task_id))
        if rec is None or rec.folded:
            raise TaskNotFound(task_id)
        return rec

    def view(self, task_id: str) -> TaskView:
        rec = self.table.records[task_id]
        if not rec.children:  # a leaf: its own progress (most statuses read are of leaves)
            return TaskView(rec, Progress(rec.progress_completed, rec.progress_total, self._eta_of(rec)))
        if any(c.task_id not in self.table for c in rec.children):  # a child whose start is not durable yet
            rec = replace(rec, children=tuple(c for c in rec.children if c.task_id in self.table))
        progress = rolled_up_progress(task_id, self.table.records, self._eta)
        return TaskView(rec, progress)

    def _eta(self, task_id: str) -> int | None:
        return self._eta_of(self.table.records[task_id])

    def _eta_of(self, rec: TaskRecord) -> int | None:
        if rec.state.finished:
            return 0 if rec.state is TaskState.DONE and rec.own_progress else None
        return self._eta_clocks.eta_ms(rec.id, rec.progress_completed, rec.progress_total)

    def new_id(self) -> str:
        return new_task_id()

    async def commit_tx(self, tx: Tx) -> None:
        await self._store.commit(tx)

    def forget_sequences(self, module: str) -> None:
        for key in [k for k in self._seq if k[0] == module]:
            del self._seq[key]

    def next_sequence(self, tx: Tx, module: str, shard: int) -> int:
        n = self._seq.get((module, shard), 0) + 1
        self._seq[(module, shard)] = n
        tx.setting(f"seq:{module}:{shard}", str(n))
        return n

    # ---------------------------------------------------------------- queries

    def list_modules(self) -> list[str]:
        mods = self.registry.modules() | {BUILTIN_MODULE}
        if self.test_module_registered:
            mods.add(TEST_MODULE)
        return sorted(mods)

    def check_module(self, module: str) -> None:
        if module not in self.list_modules():
            raise UnknownModule(module)

    def list_tasks(
        self, module: str, *, internal: bool = False, keyspace: str = "", table: str = "",
        page_size: int = 0, page_token: str = "",
    ) -> tuple[list[TaskRecord], str]:
        """Tasks of ``module`` in registration order; ``page_size`` 0 returns them all."""
        self.check_module(module)
        try:
            after = int(page_token) if page_token else 0
        except ValueError:
            raise InvalidArgument(f"malformed page token {page_token!r}") from None
        out: list[TaskRecord] = []
        for order, rec in self.table.module_records(module, after):
            if matches(rec, internal=internal, keyspace=keyspace, table=table):
                out.append(rec)
                if page_size and len(out) >= page_size:
                    return out, str(order)
        return out, ""

    async def status(self, task_id: str, *, keep: bool = False) -> TaskView:
        """A task's status; a finished root node task is unregistered by being read (ScyllaDB),
        unless ``keep`` (or the node's ``--keep-finished-on-read``), or it is the child of a cluster task:
        like cluster tasks, those are never unregistered by API calls, so the cluster leader can always
        read how they ended."""
        view, unregister = self.read(task_id, keep=keep)
        if unregister is not None:
            await self.unregister_tree(unregister)
        return view

    def read(self, task_id: str, *, keep: bool = False) -> tuple[TaskView, str | None]:
        """What ``status`` answers, and the root it unregisters before answering (None: nothing), for a
        caller that reads many at once and waits only for the reads that unregister."""
        rec = self._addressable(task_id)
        return self.view(rec.id), rec.id if self._unregistered_by_read(rec, keep) else None

    async def status_recursive(self, task_id: str, *, keep: bool = False) -> list[TaskView]:
        rec = self._addressable(task_id)
        views = [self.view(tid) for tid in descendants(rec.id, self.table.records, include_self=True)]
        if self._unregistered_by_read(rec, keep):
            await self.unregister_tree(rec.id)
        return views

    def _unregistered_by_read(self, rec: TaskRecord, keep: bool) -> bool:
        return (rec.is_root and rec.state.finished and not rec.cluster_parent and not keep
                and not self.config.keep_finished_on_read)

    async def wait(self, task_id: str, timeout_s: float | None = None) -> TaskView:
        """The final status once the task finishes; never unregisters it."""
        if timeout_s is not None and not (math.isfinite(timeout_s) and timeout_s >= 0):  # NaN breaks the loop's timers
            raise InvalidArgument(f"timeout must be a finite number >= 0, got {timeout_s!r}")
        rec = self._addressable(task_id)
        if rec.state.finished:
            return self.view(rec.id)
        fut: asyncio.Future[TaskView] = asyncio.get_running_loop().create_future()
        self._waiters.setdefault(rec.id, []).append(fut)
        try:
            async with asyncio.timeout(timeout_s):
                return await asyncio.shield(fut)
        except TimeoutError:
            raise WaitTimeout(task_id, timeout_s or 0) from None
        finally:
            waiters = self._waiters.get(rec.id)
            if waiters and fut in waiters:
                waiters.remove(fut)
                if not waiters:
                    del self._waiters[rec.id]

    async def wait_child(self, task_id: str) -> TaskView:
        rec = self.table.get(task_id)
        if rec is None:
            raise TaskNotFound(task_id)
        if rec.state.finished:
            return self.view(task_id)
        fut: asyncio.Future[TaskView] = asyncio.get_running_loop().create_future()
        self._waiters.setdefault(task_id, []).append(fut)
        return await fut

    @property
    def type_stats_version(self) -> int:
        """Changes whenever ``list_task_types()`` may (RESP caches its reply on it)."""
        return self.type_stats.version

    def list_task_types(self) -> list[TypeStats]:
        running = {f"{r.module}:{r.type}" for r in self.table.records.values() if r.state is TaskState.RUNNING}
        return [replace(self.type_stats.get(spec.qualified_name), running=spec.qualified_name in running)
                for spec in self.registry.all()]

    # ---------------------------------------------------------------- settings

    async def set_ttl(self, *, user: bool, value: int) -> int:
        """Set task_ttl or user_task_ttl (persisted); returns the previous value."""
        if type(value) is not int or value < 0:  # a bool is an int to Python, not a ttl
            raise InvalidArgument(f"ttl must be a non-negative integer, got {value!r}")
        if value > MAX_TTL:
            raise InvalidArgument(f"ttl must be at most {MAX_TTL} (ScyllaDB's task_ttl_in_seconds range), got {value}")
        previous = self.ttl.user_task_ttl if user else self.ttl.task_ttl
        new = replace(self.ttl, **{"user_task_ttl" if user else "task_ttl": value})
        await self._store.commit(Tx().setting("user_task_ttl" if user else "task_ttl", str(value)))
        self.ttl = new
        return previous

    # ---------------------------------------------------------------- starting

    async def start_task(
        self, module: str, type_name: str, args_json: str = "", *, idempotency_key: str = "",
        keyspace: str = "", table: str = "", entity: str = "", user_task: bool = True,
        internal: bool = False, cluster_parent: str = "", task_id: str = "",
    ) -> str:
        """Validate, durably record and queue a root task; returns its id.

        Idempotent per key: the same key with the same request returns the first id; with a
        different request it raises ``IdempotencyConflict`` and changes nothing.

        Nothing is answered from a start that is not durable yet: the task enters the table (readers see
        it, the executor runs it) only once its record has committed, and a repeat of a key whose first
        start is still committing waits for that commit. If it fails, the repeat starts anew: an id is
        answered only once a crash can no longer take it back.
        """
        spec = self.registry.get(module, type_name)
        check_labels(keyspace=keyspace, table=table, entity=entity, idempotency_key=idempotency_key)
        args = spec.parse_args(args_json)
        canon = json.dumps(args, sort_keys=True, separators=(",", ":"))
        if idempotency_key:
            while (first := self._starting.get(idempotency_key)) is not None and not first.done():
                await asyncio.wait((first,))  # its outcome, not its error: a failed first start is started anew
            existing_id = self.table.by_idempotency_key.get(idempotency_key)
            if existing_id is not None:
                old = self.table.records[existing_id]
                if (old.module, old.type, old.args, old.keyspace, old.table, old.entity) != (
                    module, type_name, canon, keyspace, table, entity,
                ):
                    raise IdempotencyConflict(idempotency_key)
                return existing_id
        tx = Tx()
        rec = TaskRecord(
            id=self._fresh_id(task_id), module=module, type=type_name, created_at=self._now(),
            sequence_number=self.next_sequence(tx, module, 0), keyspace=keyspace, table=table,
            entity=entity, is_abortable=spec.abortable, progress_units=spec.progress_units,
            user_task=user_task, internal=internal or bool(cluster_parent), args=canon,
            idempotency_key=idempotency_key, cluster_parent=cluster_parent, max_attempts=spec.max_attempts,
        )
        run = Run(rec.id, spec, args)
        begun: RunInput | None = None
        events: list[Event] = []
        if spec.executor is not BodyExecutor.PROCESS and self.executor.claim_slot():  # no wait: running at once
            rec = rec.started(rec.created_at)
            begun, started = self._running_tx(tx, rec, spec)
            events.append(started)
        else:
            tx.put(rec)
        tx.on_commit.append(functools.partial(self._start_committed, rec, run, begun))
        written = self._submit(tx, *events)
        self._starting_ids.add(rec.id)
        if idempotency_key:
            self._starting[idempotency_key] = written
        written.add_done_callback(functools.partial(self._start_settled, rec, begun))
        await asyncio.shield(written)  # a caller that goes away does not stop the commit, nor what follows it
        return rec.id

    def _start_committed(self, rec: TaskRecord, run: Run, begun: RunInput | None) -> None:
        """Runs as the start's commit completes (whether or not its caller still waits): now it may be seen
        and run."""
        self.table.put(rec)
        if begun is None:
            self.executor.enqueue(run)
        else:
            self.executor.run_claimed(run, begun)

    def _start_settled(self, rec: TaskRecord, begun: RunInput | None, written: asyncio.Future[None]) -> None:
        failed = written.cancelled() or written.exception() is not None  # the caller has the error if it waits
        if failed and begun is not None:  # the task never existed: its claimed slot and run go back
            self._runs.discard(rec.id)
            self.executor.release_slot()
        self._starting_ids.discard(rec.id)
        if rec.idempotency_key and self._starting.get(rec.idempotency_key) is written:
            del self._starting[rec.idempotency_key]

    def _fresh_id(self, task_id: str) -> str:
        """``task_id`` when the caller chose one (a canonical UUID not in use, nor being started), else a new
        one."""
        if not task_id:
            return new_task_id()
        if check_task_id(task_id) in self.table or task_id in self._starting_ids:
            raise InvalidArgument(f"task id {task_id} is already in use")
        return task_id

    def load(self) -> tuple[int, int]:
        """(running, queued) root tasks: what the cron leader compares to pick a node."""
        running = queued = 0
        for rec in self.table.records.values():
            if rec.is_root:
                if rec.state is TaskState.RUNNING:
                    running += 1
                elif rec.state is TaskState.CREATED:
                    queued += 1
        return running, queued

    def publish_cron_fired(self, *, schedule_id: str, slot: int, task_id: str, module: str, task_type: str,
                           node: str, run_now: bool) -> None:
        """Record and publish ``cron.fired`` (this node fired it, as the cluster leader); like progress, the
        event is published once durable without holding up the caller."""
        where = f"on node {node}" if node else "as a cluster task"
        message = f"schedule {schedule_id} {'run now' if run_now else 'slot ' + iso(slot)} fired {where}"
        tx = Tx()
        ev = Event(sequence=self.events.next_sequence(), type=EventType.CRON_FIRED, task_id=task_id, module=module,
                   task_type=task_type, time=time.time(), message=message, schedule_id=schedule_id, slot=slot)
        tx.event(ev.sequence, ev.at, ev)
        self._submit(tx, ev).add_done_callback(self._progress_written)

    async def spawn_child(self, parent_id: str, module: str, type_name: str, args: dict[str, Any]) -> str:
        """Record a child of a running task and run it; its id once that is durable. ``InvalidArgument``
        for arguments its type refuses (JSON they cannot become included) or a tree that would grow
        deeper than ``MAX_TREE_DEPTH``."""
        parent = self.table.records[parent_id]
        spec = self.registry.get(module, type_name)
        self.check_child_depth(parent)
        try:
            args_json = json.dumps(args, allow_nan=False)
        except (TypeError, ValueError, RecursionError) as exc:
            raise InvalidArgument(f"args of a {module}:{type_name} child are not JSON: {exc}") from None
        parsed = spec.parse_args(args_json)
        child = TaskRecord(
            id=new_task_id(), module=module, type=type_name, created_at=self._now(),
            sequence_number=parent.sequence_number, keyspace=parent.keyspace, table=parent.table,
            shard=parent.shard, is_abortable=spec.abortable, progress_units=spec.progress_units,
            parent_id=parent_id, internal=True, args=json.dumps(parsed, sort_keys=True),
            abort_requested=parent.abort_requested, max_attempts=spec.max_attempts,
        )
        written = self.add_child(Tx(), parent, child, on_commit=lambda: self.executor.start_child(
            Run(child.id, spec, parsed)))
        await asyncio.shield(written)
        return child.id

    def check_child_depth(self, parent: TaskRecord) -> None:
        """``InvalidArgument`` when a child of ``parent`` would lie more than ``MAX_TREE_DEPTH`` levels below
        its root (trees are walked by every status read; the walk up stops at the limit)."""
        depth, rec = 0, parent
        while rec.parent_id is not None and depth <= MAX_TREE_DEPTH:
            up = self.table.get(rec.parent_id)
            if up is None:
                break
            depth, rec = depth + 1, up
        if depth + 1 > MAX_TREE_DEPTH:
            raise InvalidArgument(f"task tree too deep: a child of task {parent.id} would be {depth + 1} levels "
                                  f"below its root, the limit is {MAX_TREE_DEPTH}")

    def add_child(self, tx: Tx, parent: TaskRecord, child: TaskRecord,
                  *, on_commit: Callable[[], None] | None = None) -> asyncio.Future[None]:
        """Commit ``child`` with its parent's reference to it (plus whatever ``tx`` holds); the commit's future.

        The parent's new reference enters the table at once, so a write of the parent queued behind this one
        keeps it; the child itself only once committed (readers skip a reference whose record is not in
        the table, see ``view``), and then with the parent's abort flag as it is by then."""
        parent = parent.with_child(ChildRef(child.id, self.node_id))
        self.table.put(parent)

        def committed() -> None:
            now_parent = self.table.get(parent.id)
            aborted = child.abort_requested or (now_parent is not None and now_parent.abort_requested)
            self.table.put(replace(child, abort_requested=aborted))
            if on_commit is not None:
                on_commit()

        def settled(written: asyncio.Future[None]) -> None:
            never_written = written.cancelled() or written.exception() is not None
            if never_written and (now_parent := self.table.get(parent.id)) is not None:  # forget the reference
                self.table.put(now_parent.without_children({child.id}))

        tx.put(child).put(parent).on_commit.append(committed)
        written = self._store.submit(tx)
        written.add_done_callback(settled)
        return written

    # ---------------------------------------------------------------- running (executor host)

    def make_context(self, task_id: str, spec: TaskType) -> TaskContext:
        return TaskContext(
            task_id=task_id, module=spec.module, type_name=spec.name, host=self,
            loop=asyncio.get_running_loop(), logger=task_logger(task_id, spec.module, spec.name, self.node_id),
        )

    async def begin(self, task_id: str, spec: TaskType) -> RunInput | None:
        """Make the task running, durably, with the middleware's ``before_run`` in the same transaction;
        None when it must not run (finished, unregistered or aborted meanwhile)."""
        rec = self.table.get(task_id)
        if rec is None or not (rec.state is TaskState.CREATED or rec.retry_pending):
            return None
        if rec.abort_requested:
            await self.complete(task_id, aborted=True)
            return None
        before, rec = rec, rec.started(self._now())
        tx = Tx()
        run, started = self._running_tx(tx, rec, spec)
        await self._commit(tx, started)
        # Readers see `running` only once it is durable: a crash before this point re-queues the task.
        cur = self.table.get(task_id)
        if cur is not before:  # changed while the start was being committed (aborted, unregistered)
            if cur is None or cur.state.finished:
                return None
            rec = replace(rec, abort_requested=cur.abort_requested)
        self.table.put(rec)
        return run

    def _running_tx(self, tx: Tx, rec: TaskRecord, spec: TaskType) -> tuple[RunInput, Event]:
        """Put the running ``rec`` into ``tx`` with its ``task.started`` event and the middleware's
        ``before_run``: what the executor runs it with, and the event to publish once ``tx`` commits."""
        tx.put(rec)
        ev = self._event(tx, EventType.STARTED, rec)
        run = RunInput(record=rec, spec=spec, tx=tx)
        self.middleware.before_run(run)
        self._runs.add(rec.id)
        return run, ev

    def report_progress(self, task_id: str, done: float, total: float, message: str) -> None:
        rec = self.table.get(task_id)
        if rec is None or rec.state.finished or task_id in self._finishing or task_id in self._retrying:
            return
        try:
            check_progress(done, total)  # the context refuses these in the body; this is the last line
        except InvalidArgument as exc:
            logger.warning("progress not recorded: %s", exc.message, extra=task_extra(task_id, rec.module, rec.type))
            return
        rec = rec.with_progress(done, total, message[:MAX_LABEL_LEN])
        self.table.put(rec)
        tx = Tx().put(rec)
        self.middleware.on_progress(ProgressInput(record=rec, spec=self.registry.find(rec.module, rec.type), tx=tx,
                                                  done=done, total=total, monotonic=time.monotonic()))
        ev = self._event(tx, EventType.PROGRESS, rec, progress_completed=done, progress_total=total,
                         message=rec.progress_message)
        # Nobody waits for a progress report: it is written with the task's next transition (its end, for
        # a short body) or within ``DEFERRED_S``. Readers of the node see it at once (the table has it).
        self._submit(tx, ev, deferred=True).add_done_callback(self._progress_written)

    def _progress_written(self, fut: asyncio.Future[None]) -> None:
        if not fut.cancelled() and fut.exception() is not None:
            logger.error("cannot persist progress", exc_info=fut.exception())

    def abort_requested(self, task_id: str) -> bool:
        rec = self.table.get(task_id)
        return rec is not None and rec.abort_requested

    async def attempt_failed(self, task_id: str, exc: BaseException, error: str) -> float | None:
        """The body raised. The middleware's ``on_error`` decides whether it runs again; if so, the pending
        retry (attempt + 1, its time) and ``task.retrying`` commit together and the delay is returned (the
        executor re-runs it then; a restart reschedules it from the record). Otherwise the task fails."""
        rec = self.table.get(task_id)
        spec = self.registry.find(rec.module, rec.type) if rec is not None else None
        if rec is None or spec is None or rec.state.finished or task_id in self._finishing or rec.abort_requested:
            # aborted (its failure is the abort's) or not retryable by anyone: it ends here
            await self.complete(task_id, error=error)
            return None
        decision = ErrorInput(record=rec, spec=spec, exception=exc, error=error)
        self.middleware.on_error(decision)
        delay = decision.decision.delay_s
        if delay is None or rec.attempt >= rec.max_attempts:
            await self.complete(task_id, error=error)
            return None
        at = self._now() + timedelta(seconds=delay)
        pending = rec.retrying(at)
        tx = Tx().put(pending)
        ev = self._event(tx, EventType.RETRYING, pending, error=error[:4096], attempt=pending.attempt,
                         next_attempt_at=at.timestamp())
        self._runs.discard(task_id)
        self.middleware.after_run(FinishInput(record=pending, spec=spec, tx=tx, ran=True))
        self._retrying.add(task_id)  # like a completion: nothing writes the old record over this one
        try:
            await self._commit(tx, ev)
        finally:
            self._retrying.discard(task_id)
        cur = self.table.get(task_id)
        if cur is None or cur.state.finished:
            return None
        pending = replace(pending, abort_requested=cur.abort_requested)
        self.table.put(pending)
        if pending.abort_requested:  # aborted while the retry was being committed
            await self.complete(task_id, aborted=True)
            return None
        logger.info("attempt %d of %d failed: %s; next attempt in %.3gs", rec.attempt, rec.max_attempts, error, delay,
                    extra=task_extra(task_id, rec.module, rec.type))
        return delay

    async def complete(self, task_id: str, *, error: str = "", aborted: bool = False, result: str = "") -> None:
        """Finish a task: fold it, apply TTL, notify waiters, emit the event, prune retention.

        Readers see the task finished only once that is durable: until the commit returns, status,
        wait and list still show it running (a crash before then re-queues or fails it on restart)."""
        rec = self.table.get(task_id)
        if rec is None or rec.state.finished or task_id in self._finishing:
            return
        self._finishing.add(task_id)
        try:
            if error and rec.abort_requested:  # a body that fails once aborted (its children were) was aborted
                error, aborted = "", True
            rec = rec.finished(self._now(), error=error[:4096], aborted=aborted, result=result)
            rec = rec.evolve(expires_at=expiry(rec, self.ttl)) if rec.is_root else rec.evolve(folded=True)
            tx = Tx().put(rec)
            drops = self._fold(rec.id, tx)
            etype = EventType.ABORTED if aborted else EventType.FAILED if rec.error else EventType.COMPLETED
            ev = self._event(tx, etype, rec, error=rec.error, progress_completed=rec.progress_completed,
                             progress_total=rec.progress_total)
            ran = task_id in self._runs
            self._runs.discard(task_id)
            self.middleware.on_finish(FinishInput(record=rec, spec=self.registry.find(rec.module, rec.type), tx=tx,
                                                  ran=ran))
            await self._commit(tx, ev)
            self.table.put(rec)
            self._drop_folded(drops)
        finally:
            self._finishing.discard(task_id)
        # What waiters get: the task as it finished, before an expiry or the cap unregisters it. Only
        # waiters registered by now can exist (from here on, a wait finds the task finished and returns).
        view = self.view(rec.id) if rec.id in self._waiters else None
        expired = rec.is_root and (rec.expires_at is None or rec.expires_at <= self._now())
        try:
            if expired:  # gone for good before a waiter hears of the end: a read after the wait finds no task
                await self.unregister_tree(rec.id)
            elif rec.is_root:  # and the per-module cap holds again before then (its deletes are durable)
                self.retention.track_finished(rec)
                await self.retention.prune_module(rec.module)
        except BaseException:
            if expired:
                self.retention.track_finished(rec)  # still registered: the ttl sweep unregisters it later
            raise
        finally:
            for fut in self._waiters.pop(rec.id, ()):
                if not fut.done():
                    fut.set_result(view or TaskView(rec, rolled_up_progress(rec.id, {rec.id: rec}, self._eta)))

    def _fold(self, task_id: str, tx: Tx) -> set[str]:
        """Write into ``tx`` what folding drops when ``task_id`` finishes (the table is left as it is until
        the commit); the dropped ids."""
        drops = fold_drops(task_id, self.table.records)
        if drops:
            for pid in self._parents_of(drops):
                tx.put(self.table.records[pid].without_children(drops))
            tx.delete(sorted(drops))
        return drops

    def _parents_of(self, drops: set[str]) -> set[str]:
        return {p for d in drops if (p := self.table.records[d].parent_id) is not None} - drops

    def _drop_folded(self, drops: set[str]) -> None:
        """Apply a committed fold to the table."""
        present = {d for d in drops if d in self.table}
        for pid in self._parents_of(present):
            if (parent := self.table.get(pid)) is not None:
                self.table.put(parent.without_children(drops))
        for d in present:
            self.table.remove(d)

    async def unregister_tree(self, root_id: str) -> int:
        """Forget a root and its finished descendants (running ones stay until they finish); readers see
        them gone once that is durable."""
        ids = [t for t in descendants(root_id, self.table.records, include_self=True)
               if self.table.records[t].state.finished or t == root_id]

        def committed() -> None:
            for tid in ids:
                rec = self.table.remove(tid)
                if rec is not None:
                    self.retention.forget(rec.module, tid)

        tx = Tx().delete(ids)
        tx.on_commit.append(committed)
        await self._commit(tx)
        return len(ids)

    # ---------------------------------------------------------------- steering

    async def abort(self, task_id: str) -> None:
        """Request a cooperative abort of the task and all its descendants."""
        rec = self._addressable(task_id)
        if not rec.is_abortable:
            raise NotAbortable(task_id)
        if rec.state.finished:
            return
        tx = Tx()
        queued: list[str] = []
        running: list[str] = []
        for tid in descendants(rec.id, self.table.records, include_self=True):
            r = self.table.records[tid]
            if r.state.finished or r.abort_requested or tid in self._finishing:
                continue  # a completion being committed is not undone by a later write of the old record
            if tid in self._retrying:  # the retry's commit is in flight: it ends the task once committed
                self.table.put(replace(r, abort_requested=True))
                continue
            r = replace(r, abort_requested=True)
            self.table.put(r)
            tx.put(r)
            if r.state is TaskState.CREATED or r.retry_pending:
                queued.append(tid)
            else:
                running.append(tid)
        await self._commit(tx)
        for tid in running:  # a body in a worker process learns it now (one in the node reads the flag)
            self.executor.abort_requested(tid)
        for tid in reversed(queued):  # not running (queued, or between attempts): nothing will check the flag
            self.executor.cancel_retry(tid)
            await self.complete(tid, aborted=True)

    async def drain(self, module: str) -> int:
        """Unregister every finished task of ``module``; running ones stay, and so do the children of cluster
        tasks, which leave by expiry only (as on a status read): the leader polls a finished child for its
        outcome, and one drained before that looks lost to it, so it would run the child again."""
        self.check_module(module)
        roots = [r.id for _, r in self.table.module_records(module)
                 if r.is_root and r.state.finished and not r.cluster_parent]
        n = 0
        for rid in roots:
            n += await self.unregister_tree(rid)
        return n
