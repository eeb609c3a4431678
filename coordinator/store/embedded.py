"""Embedded single-node cluster store, for ``taskward node`` without ``--etcd``.

Same semantics as etcd for one member: revisions, compare-and-swap transactions, leases and
watches, persisted in SQLite next to the node's data. Leases live in memory: they belong to the
running process, so keys bound to a lease are removed when the store opens (their owner is gone).
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import time
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

from taskward.coordinator.store.base import (
    ClusterStore,
    Compare,
    Delete,
    KeyValue,
    Op,
    Put,
    TxnResult,
    WatchEvent,
    WatchEventType,
    WatchGap,
)
from taskward.errors import CoordinatorUnavailable, DataDirError

HISTORY = 10_000


def _check_distinct(ops: Sequence[Op]) -> None:
    """etcd refuses a transaction that touches a key twice; so does this store, so code that works here
    works there."""
    keys = [op.key for op in ops if not (isinstance(op, Delete) and op.prefix)]
    prefixes = [op.key for op in ops if isinstance(op, Delete) and op.prefix]
    if len(set(keys)) != len(keys) or any(k.startswith(p) for k in keys for p in prefixes):
        raise CoordinatorUnavailable("duplicate key given in txn request")


class EmbeddedStore(ClusterStore):
    def __init__(self, path: Path) -> None:
        self._path = path
        self._conn: sqlite3.Connection | None = None
        self._data: dict[str, KeyValue] = {}
        self._revision = 0
        self._leases: dict[int, tuple[float, float]] = {}  # id -> (ttl, deadline)
        self._next_lease = int(time.time() * 1000) & 0xFFFFFFFF
        self._history: list[WatchEvent] = []
        self._watchers: set[asyncio.Queue[WatchEvent]] = set()
        self._lock = asyncio.Lock()
        self._reaper: asyncio.Task[None] | None = None

    async def start(self) -> None:
        try:
            self._open()
        except sqlite3.DatabaseError as exc:
            raise DataDirError(f"{self._path} is not a usable cluster store ({exc}): restore it from a backup "
                               "or move the data dir away; the node does not start with it") from None
        self._reaper = asyncio.get_running_loop().create_task(self._reap_leases(), name="embedded-lease-reaper")

    def _open(self) -> None:
        self._path.parent.mkdir(parents=True, exist_ok=True)
        self._conn = sqlite3.connect(self._path, isolation_level=None)
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute("PRAGMA synchronous=FULL")
        self._conn.execute(
            "CREATE TABLE IF NOT EXISTS kv (key TEXT PRIMARY KEY, value BLOB, rev INTEGER, lease INTEGER)")
        self._conn.execute("CREATE TABLE IF NOT EXISTS meta (k TEXT PRIMARY KEY, v INTEGER)")
        self._conn.execute("DELETE FROM kv WHERE lease != 0")
        row = self._conn.execute("SELECT v FROM meta WHERE k = 'revision'").fetchone()
        self._revision = row[0] if row else 0
        for key, value, rev, lease in self._conn.execute("SELECT key, value, rev, lease FROM kv"):
            self._data[key] = KeyValue(key, bytes(value), rev, lease)

    async def close(self) -> None:
        if self._reaper is not None:
            self._reaper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reaper
            self._reaper = None
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    async def get_prefix(self, prefix: str) -> tuple[list[KeyValue], int]:
        return [kv for k, kv in sorted(self._data.items()) if k.startswith(prefix)], self._revision

    async def get(self, key: str) -> KeyValue | None:
        return self._data.get(key)

    async def txn(self, compares: Sequence[Compare], ops: Sequence[Op]) -> TxnResult:
        async with self._lock:
            current = {c.key: kv.value if (kv := self._data.get(c.key)) else None for c in compares}
            if any(current[c.key] != c.value for c in compares):
                return TxnResult(False, current)
            _check_distinct(ops)
            for op in ops:
                if isinstance(op, Put) and op.lease and op.lease not in self._leases:
                    raise CoordinatorUnavailable(f"lease {op.lease} not found")  # as etcd refuses it
            self._apply(ops)
            return TxnResult(True)

    def _apply(self, ops: Sequence[Op]) -> None:
        if not ops:
            return
        assert self._conn is not None
        self._revision += 1
        rev = self._revision
        events = []
        self._conn.execute("BEGIN")
        for op in ops:
            if isinstance(op, Put):
                self._data[op.key] = KeyValue(op.key, op.value, rev, op.lease)
                self._conn.execute("INSERT OR REPLACE INTO kv VALUES (?,?,?,?)", (op.key, op.value, rev, op.lease))
                events.append(WatchEvent(WatchEventType.PUT, op.key, op.value, rev, op.lease))
            else:
                keys = [k for k in self._data if k.startswith(op.key)] if op.prefix else [op.key]
                for key in keys:
                    if self._data.pop(key, None) is not None:
                        self._conn.execute("DELETE FROM kv WHERE key = ?", (key,))
                        events.append(WatchEvent(WatchEventType.DELETE, key, b"", rev))
        self._conn.execute("INSERT OR REPLACE INTO meta VALUES ('revision', ?)", (rev,))
        self._conn.execute("COMMIT")
        self._history.extend(events)
        del self._history[:-HISTORY]
        for q in self._watchers:
            for ev in events:
                q.put_nowait(ev)

    async def grant_lease(self, ttl_s: int) -> int:
        self._next_lease += 1
        self._leases[self._next_lease] = (ttl_s, time.monotonic() + ttl_s)
        return self._next_lease

    async def keep_alive(self, lease: int) -> bool:
        entry = self._leases.get(lease)
        if entry is None:
            return False
        self._leases[lease] = (entry[0], time.monotonic() + entry[0])
        return True

    async def lease_alive(self, lease: int) -> bool:
        entry = self._leases.get(lease)
        return entry is not None and entry[1] >= time.monotonic()

    async def revoke_lease(self, lease: int) -> None:
        async with self._lock:
            self._expire(lease)

    def _expire(self, lease: int) -> None:
        self._leases.pop(lease, None)
        self._apply([Delete(k) for k, kv in self._data.items() if kv.lease == lease])

    async def _reap_leases(self) -> None:
        while True:
            await asyncio.sleep(0.2)
            now = time.monotonic()
            for lease, (_, deadline) in list(self._leases.items()):
                if deadline < now:
                    async with self._lock:
                        self._expire(lease)

    async def watch(self, prefix: str, *, from_revision: int) -> AsyncIterator[WatchEvent]:
        q: asyncio.Queue[WatchEvent] = asyncio.Queue()
        self._watchers.add(q)
        try:
            if from_revision <= self._revision:
                oldest = self._history[0].revision if self._history else self._revision + 1
                if from_revision < oldest and from_revision <= self._revision:
                    raise WatchGap(f"revision {from_revision} is no longer in history")
                for ev in self._history:
                    if ev.revision >= from_revision and ev.key.startswith(prefix):
                        yield ev
                last = self._revision
            else:
                last = from_revision - 1
            while True:
                ev = await q.get()
                if ev.revision > last and ev.key.startswith(prefix):
                    yield ev
        finally:
            self._watchers.discard(q)
