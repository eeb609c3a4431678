"""Durable node state in SQLite (WAL).

One writer thread owns the write connection. Callers hand it small transactions and await them; the
writer commits whatever has queued up while the previous commit was in flight as one SQLite
transaction (group commit), so a burst of state transitions costs one fsync, not one each. Each
caller's statements are still applied together or not at all: if a group fails, its members are
retried one transaction each, so a bad statement fails only its own caller.

A task's row is encoded when its group is written, not when the transition is made: a task that
starts, reports and finishes within one group has only its last row encoded and written (the group
commits as a whole, so the rows in between were never visible to anyone).
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from taskward.errors import DataDirError, StoreUnavailable
from taskward.metrics import NodeMetrics
from taskward.model import ChildRef, TaskKind, TaskRecord, TaskState

logger = logging.getLogger(__name__)

SCHEMA = """
CREATE TABLE IF NOT EXISTS tasks (
    id TEXT PRIMARY KEY,
    module TEXT NOT NULL,
    state TEXT NOT NULL,
    idempotency_key TEXT,
    body TEXT NOT NULL
);
CREATE UNIQUE INDEX IF NOT EXISTS tasks_idem ON tasks(idempotency_key) WHERE idempotency_key IS NOT NULL;
CREATE TABLE IF NOT EXISTS events (
    seq INTEGER PRIMARY KEY,
    at REAL NOT NULL,
    body TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS settings (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
"""

Statement = tuple[str, tuple[Any, ...]]

PUT_TASK = "INSERT OR REPLACE INTO tasks(id, module, state, idempotency_key, body) VALUES (?,?,?,?,?)"
PUT_SETTING = "INSERT OR REPLACE INTO settings(key, value) VALUES (?,?)"
MAX_SQLITE_INTEGER = 2**63 - 1
DEFERRED_S = 0.025
"""How long a deferred transaction (a progress report) may wait for a commit to go with: well under what a
person watching progress notices, and longer than a short body takes from its first report to its end."""


def _ts(value: datetime | None) -> float | None:
    return None if value is None else value.timestamp()


def _dt(value: float | None) -> datetime | None:
    return None if value is None else datetime.fromtimestamp(value, UTC)


def record_to_json(rec: TaskRecord) -> str:
    body = {
        "id": rec.id, "module": rec.module, "type": rec.type, "kind": rec.kind.value,
        "scope": rec.scope, "state": rec.state.value, "seq": rec.sequence_number,
        "keyspace": rec.keyspace, "table": rec.table, "entity": rec.entity, "shard": rec.shard,
        "created_at": _ts(rec.created_at), "start_time": _ts(rec.start_time),
        "end_time": _ts(rec.end_time), "abortable": rec.is_abortable, "error": rec.error,
        "aborted": rec.aborted, "abort_requested": rec.abort_requested, "parent_id": rec.parent_id,
        "cluster_parent": rec.cluster_parent,
        "children": [[c.task_id, c.node] for c in rec.children], "units": rec.progress_units,
        "total": rec.progress_total, "done": rec.progress_completed, "message": rec.progress_message,
        "own_progress": rec.own_progress, "internal": rec.internal, "user_task": rec.user_task,
        "folded": rec.folded, "args": rec.args, "idem": rec.idempotency_key,
        "expires_at": _ts(rec.expires_at), "result": rec.result, "attempt": rec.attempt,
        "max_attempts": rec.max_attempts, "next_attempt_at": _ts(rec.next_attempt_at),
    }
    return orjson.dumps(body).decode()


def record_from_json(text: str) -> TaskRecord:
    b = orjson.loads(text)
    return TaskRecord(
        id=b["id"], module=b["module"], type=b["type"], kind=TaskKind(b["kind"]), scope=b["scope"],
        state=TaskState(b["state"]), sequence_number=b["seq"], keyspace=b["keyspace"],
        table=b["table"], entity=b["entity"], shard=b["shard"],
        created_at=_dt(b["created_at"]) or datetime.now(UTC), start_time=_dt(b["start_time"]),
        end_time=_dt(b["end_time"]), is_abortable=b["abortable"], error=b["error"],
        aborted=b["aborted"], abort_requested=b["abort_requested"], parent_id=b["parent_id"],
        cluster_parent=b.get("cluster_parent", ""),
        children=tuple(ChildRef(t, n) for t, n in b["children"]), progress_units=b["units"],
        progress_total=b["total"], progress_completed=b["done"], progress_message=b["message"],
        own_progress=b["own_progress"], internal=b["internal"], user_task=b["user_task"],
        folded=b["folded"], args=b["args"], idempotency_key=b["idem"],
        expires_at=_dt(b["expires_at"]), result=b.get("result", ""), attempt=b.get("attempt", 1),
        max_attempts=b.get("max_attempts", 1), next_attempt_at=_dt(b.get("next_attempt_at")),
    )


@dataclass(slots=True)
class Tx:
    """The statements of one state transition, applied atomically.

    ``on_commit`` callbacks run on the event loop after the commit, in commit order across
    transactions; the event log publishes through them so subscribers see events in sequence order.
    """

    statements: list[Statement] = field(default_factory=list)
    """In order; a task's row is ``(PUT_TASK, (record,))`` until it is written (``sql()``)."""
    on_commit: list[Callable[[], None]] = field(default_factory=list)

    def put(self, rec: TaskRecord) -> Tx:
        self.statements.append((PUT_TASK, (rec,)))
        return self

    def delete(self, task_ids: list[str]) -> Tx:
        self.statements.extend(("DELETE FROM tasks WHERE id = ?", (tid,)) for tid in task_ids)
        return self

    def event(self, seq: int, at: datetime, body: object) -> Tx:
        """``body``: what orjson encodes, a dict or an ``Event`` (a dataclass: field by field, in order)."""
        self.statements.append((
            "INSERT INTO events(seq, at, body) VALUES (?,?,?)",
            (seq, at.timestamp(), orjson.dumps(body).decode()),
        ))
        return self

    def setting(self, key: str, value: str) -> Tx:
        self.statements.append((PUT_SETTING, (key, value)))
        return self

    def prune_events(self, keep_after_seq: int) -> Tx:
        self.statements.append(("DELETE FROM events WHERE seq <= ?", (keep_after_seq,)))
        return self

    def sql(self) -> list[Statement]:
        """The statements as SQLite runs them (each task row encoded)."""
        return [_encoded(sql, params) for sql, params in self.statements]


def _encoded(sql: str, params: tuple[Any, ...]) -> Statement:
    if sql is not PUT_TASK:
        return sql, params
    rec: TaskRecord = params[0]
    return sql, (rec.id, rec.module, rec.state.value, rec.idempotency_key or None, record_to_json(rec))


def group_sql(txs: list[Tx]) -> list[Statement]:
    """The statements of a group committed as one SQLite transaction, a task's row and a setting only at
    their last put: INSERT OR REPLACE leaves the row as the last put wrote it whatever came between (a
    task keeps its idempotency key, so an earlier put could not have replaced a row the last one does
    not), and nothing in a group reads. A burst of starts then writes its module's sequence and each
    type's run history once, not once per task."""
    flat = [st for tx in txs for st in tx.statements]
    keys = [_replaced_row(sql, params) for sql, params in flat]
    last = {key: i for i, key in enumerate(keys) if key is not None}
    return [_encoded(sql, params) for i, ((sql, params), key) in enumerate(zip(flat, keys, strict=True))
            if key is None or last[key] == i]


def _replaced_row(sql: str, params: tuple[Any, ...]) -> tuple[str, str] | None:
    """The row an INSERT OR REPLACE statement writes whole (a task by id, a setting by key); None for the
    others, which all stay."""
    if sql is PUT_TASK:
        return sql, params[0].id
    if sql is PUT_SETTING:
        return sql, params[0]
    return None


@dataclass(frozen=True, slots=True)
class Loaded:
    tasks: list[TaskRecord]
    settings: dict[str, str]
    last_event_seq: int
    first_event_seq: int
    corrupt: list[str]


class Store:
    """SQLite under the node's data dir. Async API; all writes go through one thread."""

    def __init__(self, path: Path, *, synchronous: str = "FULL", busy_timeout_ms: int = 5000,
                 metrics: NodeMetrics | None = None) -> None:
        self._path = path
        self._commit_seconds = (metrics or NodeMetrics()).store_commit_seconds
        self._synchronous = synchronous
        self._busy_timeout_ms = busy_timeout_ms
        self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sqlite-writer")
        self._reader = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sqlite-reader")
        self._wconn: sqlite3.Connection | None = None
        self._rconn: sqlite3.Connection | None = None
        self._pending: list[tuple[Tx, asyncio.Future[None]]] = []
        self._urgent = False  # a transaction in ``_pending`` that someone waits for
        self._deferred_due = False  # the oldest deferred transaction has waited ``DEFERRED_S``
        self._deferred_timer: asyncio.TimerHandle | None = None
        self._flushing = False
        self._flusher: asyncio.Task[None] | None = None
        self._idle = asyncio.Event()
        self._idle.set()

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self._path, isolation_level=None, check_same_thread=False)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute(f"PRAGMA synchronous={self._synchronous}")
        conn.execute(f"PRAGMA busy_timeout={int(self._busy_timeout_ms)}")
        return conn

    async def open(self) -> Loaded:
        """Open (creating) the database and load it; ``DataDirError`` when the file is not one we can use."""
        self._path.parent.mkdir(parents=True, exist_ok=True)
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._writer, self._open_sync)
        except sqlite3.DatabaseError as exc:
            raise DataDirError(f"{self._path} is not a usable taskward database ({exc}): restore it from a backup "
                               "or move the data dir away; the node does not start with it") from None

    def _open_sync(self) -> Loaded:
        # Owner-only (0600) whatever the umask, before SQLite writes anything: its -wal and -shm files take
        # the database's permissions. A database from an older version is tightened too.
        self._path.touch(mode=0o600)
        self._path.chmod(0o600)
        self._wconn = self._connect()
        self._wconn.executescript(SCHEMA)
        self._rconn = self._connect()
        tasks, corrupt = [], []
        for tid, body in self._wconn.execute("SELECT id, body FROM tasks ORDER BY rowid"):
            try:
                tasks.append(record_from_json(body))
            except (ValueError, KeyError, TypeError):
                logger.error("skipping corrupt task record %s", tid)
                corrupt.append(tid)
        settings = dict(self._wconn.execute("SELECT key, value FROM settings").fetchall())
        lo, hi = self._wconn.execute("SELECT min(seq), max(seq) FROM events").fetchone()
        return Loaded(tasks, settings, hi or 0, lo or 0, corrupt)

    def submit(self, tx: Tx, *, deferred: bool = False) -> asyncio.Future[None]:
        """Queue ``tx`` now (so commit order is submission order); the future resolves once durable.

        ``deferred``: nobody waits for it (a progress report), so it need not cost a commit of its own: it
        goes with the next transaction someone waits for, or after ``DEFERRED_S`` when none comes. A body
        that reports progress and finishes within that time writes both in one commit (one fsync, one
        batch of events for subscribers), and one that reports progress in a tight loop writes it every
        ``DEFERRED_S`` instead of in back-to-back commits."""
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[None] = loop.create_future()
        self._pending.append((tx, fut))
        self._idle.clear()
        if not deferred:
            self._urgent = True
        if self._flushing:
            return fut
        if self._urgent:
            self._flush(loop)
        elif self._deferred_timer is None:
            self._deferred_timer = loop.call_later(DEFERRED_S, self._deferred_expired)
        return fut

    def _deferred_expired(self) -> None:
        self._deferred_timer = None
        self._deferred_due = True
        if not self._flushing:
            self._flush(asyncio.get_running_loop())

    def _flush(self, loop: asyncio.AbstractEventLoop) -> None:
        self._flushing = True
        self._flusher = loop.create_task(self._flush_loop(), name="sqlite-group-commit")

    async def commit(self, tx: Tx) -> None:
        """Apply ``tx`` atomically and durably (per the synchronous setting); group-committed."""
        await self.submit(tx)

    async def _flush_loop(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            while self._pending and (self._urgent or self._deferred_due):
                batch, self._pending = self._pending, []
                self._urgent = self._deferred_due = False
                if self._deferred_timer is not None:  # whatever was deferred goes in this group
                    self._deferred_timer.cancel()
                    self._deferred_timer = None
                started = time.perf_counter()
                try:
                    results = await loop.run_in_executor(self._writer, self._write_batch, [t for t, _ in batch])
                except sqlite3.Error as exc:  # the whole group failed (e.g. BEGIN: locked past the timeout)
                    logger.error("store write failed: %s", exc)
                    results = [StoreUnavailable(str(exc))] * len(batch)
                self._commit_seconds.observe(time.perf_counter() - started)  # one group commit, as a caller waits
                for (tx, fut), err in zip(batch, results, strict=True):
                    if err is None:
                        for callback in tx.on_commit:
                            try:
                                callback()
                            except Exception:  # a bug in one must not leave this batch's callers waiting
                                logger.exception("an after-commit step failed; please report it as a bug")
                    if fut.done():
                        continue
                    if err is None:
                        fut.set_result(None)
                    else:
                        fut.set_exception(err if isinstance(err, StoreUnavailable) else StoreUnavailable(str(err)))
        finally:
            self._flushing = False
            if self._pending and not self._urgent:  # deferred ones only: they wait their time
                if self._deferred_timer is None:
                    self._deferred_timer = loop.call_later(DEFERRED_S, self._deferred_expired)
            else:
                self._idle.set()

    def _write_batch(self, txs: list[Tx]) -> list[Exception | None]:
        conn = self._wconn
        assert conn is not None
        conn.execute("BEGIN IMMEDIATE")  # refused (locked past the busy timeout): nothing was tried, all fail
        try:
            for sql, params in group_sql(txs) if len(txs) > 1 else txs[0].sql():
                conn.execute(sql, params)
            conn.execute("COMMIT")
            return [None] * len(txs)
        except sqlite3.Error:
            if conn.in_transaction:  # a COMMIT that failed may have ended it already
                conn.execute("ROLLBACK")
            if len(txs) == 1:
                raise
        results: list[Exception | None] = []
        for tx in txs:  # isolate the failing transition
            try:
                self._write_batch([tx])
                results.append(None)
            except sqlite3.Error as exc:
                logger.error("store write failed: %s", exc)
                results.append(exc)
        return results

    async def read_events(self, after_seq: int, limit: int) -> list[tuple[int, str]]:
        """Events with a sequence above ``after_seq``. A subscriber may name any uint64 (gRPC's type of
        it); one past SQLite's largest integer is past every event, so it is asked as that integer."""
        loop = asyncio.get_running_loop()
        after = min(after_seq, MAX_SQLITE_INTEGER)
        return await loop.run_in_executor(self._reader, self._read_events_sync, after, limit)

    def _read_events_sync(self, after_seq: int, limit: int) -> list[tuple[int, str]]:
        assert self._rconn is not None
        cur = self._rconn.execute(
            "SELECT seq, body FROM events WHERE seq > ? ORDER BY seq LIMIT ?", (after_seq, limit)
        )
        return cur.fetchall()

    async def close(self) -> None:
        """Wait for queued writes (deferred ones are written at once), checkpoint the WAL, close both
        connections. Idempotent."""
        if self._deferred_timer is not None:
            self._deferred_timer.cancel()
            self._deferred_expired()
        await self._idle.wait()
        loop = asyncio.get_running_loop()
        if self._wconn is not None:
            await loop.run_in_executor(self._writer, self._close_sync)
        self._writer.shutdown(wait=True)
        self._reader.shutdown(wait=True)

    def _close_sync(self) -> None:
        assert self._wconn is not None
        self._wconn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        self._wconn.close()
        self._wconn = None
        if self._rconn is not None:
            self._rconn.close()
            self._rconn = None
