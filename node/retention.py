"""When finished tasks leave: TTL expiry, maximum age and maximum count per module.

ScyllaDB's TTL decides when a finished root is unregistered; AeorDB's retention (24 h, 100 per
module, pruned after each completion) caps what a long TTL may keep. Expiry times are stored in the
records, so the clocks survive a restart.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import logging
from collections import OrderedDict
from datetime import datetime, timedelta
from typing import Protocol

from taskward.config import ManagerConfig
from taskward.model import TaskRecord

logger = logging.getLogger(__name__)

MAX_SWEEP_SLEEP_S = 1.0


class RetentionHost(Protocol):
    """What retention needs of the task manager (which implements it and owns the Retention)."""

    def now(self) -> datetime: ...

    def record(self, task_id: str) -> TaskRecord | None:
        """The registered task, or None once it is gone."""
        ...

    async def unregister_tree(self, root_id: str) -> int: ...

    async def prune_events(self, keep: int) -> None: ...


class Retention:
    def __init__(self, manager: RetentionHost, config: ManagerConfig) -> None:
        self._manager = manager
        self._max_age = timedelta(seconds=config.retention_max_age_s)
        self._max_per_module = config.retention_max_per_module
        self._event_retention = config.event_retention
        self._expiries: list[tuple[datetime, str]] = []
        self._finished: dict[str, OrderedDict[str, datetime]] = {}
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def track_finished(self, rec: TaskRecord) -> None:
        """Called for each finished root that stays registered."""
        assert rec.end_time is not None
        if not rec.cluster_parent:  # cluster children leave by expiry only, never by the count cap
            self._finished.setdefault(rec.module, OrderedDict())[rec.id] = rec.end_time
        if rec.expires_at is not None:
            heapq.heappush(self._expiries, (rec.expires_at, rec.id))
            if self._expiries[0][1] == rec.id:
                self._wake.set()

    def forget(self, module: str, task_id: str) -> None:
        ids = self._finished.get(module)
        if ids is not None:
            ids.pop(task_id, None)

    async def prune_module(self, module: str) -> None:
        ids = self._finished.get(module)
        while ids and len(ids) > self._max_per_module:
            oldest = next(iter(ids))
            ids.pop(oldest)
            if self._manager.record(oldest) is not None:
                await self._manager.unregister_tree(oldest)

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._sweep_loop(), name="retention-sweeper")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    async def _sweep_loop(self) -> None:
        while True:
            try:
                await self.sweep()
            except Exception:
                logger.exception("retention sweep failed; retrying")
            delay = MAX_SWEEP_SLEEP_S
            if self._expiries:
                delay = min(delay, max(0.0, (self._expiries[0][0] - self._manager.now()).total_seconds()))
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay):  # not wait_for: on 3.11 it can swallow a cancel (stop hangs)
                    await self._wake.wait()

    async def sweep(self) -> None:
        now = self._manager.now()
        while self._expiries and self._expiries[0][0] <= now:
            _, tid = heapq.heappop(self._expiries)
            rec = self._manager.record(tid)
            if rec is not None and rec.expires_at is not None and rec.expires_at <= now:
                await self._manager.unregister_tree(tid)
        cutoff = now - self._max_age
        for ids in list(self._finished.values()):
            while ids:
                tid, end = next(iter(ids.items()))
                if end > cutoff:
                    break
                ids.pop(tid)
                if self._manager.record(tid) is not None:
                    await self._manager.unregister_tree(tid)
        await self._manager.prune_events(self._event_retention)
