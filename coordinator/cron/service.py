"""Managing schedules: validated writes of the document in the cluster store, from any node.

Schedules are user configuration, not leader state: any node validates and writes them (no
forwarding). A whole-document PUT writes the new schedules under a new generation in batches, then
switches ``cron/doc`` to it in one transaction guarded by the generation it read, so readers (and the
scheduler) see the old document or the new one, never a mix, and a failed or concurrent PUT changes
nothing. Single-schedule writes compare ``cron/doc`` too, so they never land in a generation that has
just been replaced. Every write waits (bounded) until this node's replica shows it: read-your-writes.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Sequence
from dataclasses import replace

from taskward.coordinator.cache import ClusterCache, ClusterSnapshot
from taskward.coordinator.catalog import TaskCatalog
from taskward.coordinator.cron.clock import Clock
from taskward.coordinator.cron.records import (
    DOC,
    SCHEDULES,
    decode_doc,
    decode_schedule,
    encode_doc,
    encode_schedule,
    schedule_key,
)
from taskward.coordinator.store.base import ClusterStore, Compare, Delete, Op, Put
from taskward.cron import (
    MAX_SCHEDULES,
    CronSchedule,
    ScheduleInput,
    check_fields,
    entry_error,
)
from taskward.errors import CoordinatorUnavailable, InvalidArgument, ScheduleNotFound

logger = logging.getLogger(__name__)

BATCH = 100  # puts per transaction (etcd allows 128 operations in one)
ATTEMPTS = 5


class CronService:
    def __init__(self, store: ClusterStore, cache: ClusterCache, catalog: TaskCatalog, clock: Clock, *,
                 replicate_timeout_s: float) -> None:
        self._store = store
        self._cache = cache
        self._catalog = catalog
        self._clock = clock
        self._timeout = replicate_timeout_s

    # ------------------------------------------------------------------ validation

    def validate(self, index: int, s: ScheduleInput) -> CronSchedule:
        """One entry, checked completely; ``InvalidArgument`` naming the entry and why."""
        try:
            expr, timezone, concurrency, grace, raw_args = check_fields(s)
            module = s.module or self._resolve_module(s.task_type)
            args = self._catalog.check(module, s.task_type, raw_args).args_json
        except InvalidArgument as exc:
            raise entry_error(index, s.id, exc.message) from None
        return CronSchedule(id=s.id, module=module, task_type=s.task_type, schedule=expr, args_json=args,
                            enabled=True if s.enabled is None else s.enabled, timezone=timezone, cluster=s.cluster,
                            concurrency=concurrency, misfire_grace_s=grace)

    def _resolve_module(self, type_name: str) -> str:
        modules = self._catalog.modules_with(type_name)
        if len(modules) == 1:
            return modules[0]
        if not modules:
            raise InvalidArgument(f"task type {type_name!r} not found in any module")
        raise InvalidArgument(f"task type {type_name!r} is in several modules ({', '.join(sorted(modules))}): "
                              "name the module")

    def _since(self, new: CronSchedule, old: CronSchedule | None) -> CronSchedule:
        """A new, re-enabled or re-timed schedule starts from now; an unchanged one keeps its start."""
        if old is not None and old.enabled == new.enabled and old.timing == new.timing:
            return replace(new, since=old.since)
        return replace(new, since=self._clock.now())

    # ------------------------------------------------------------------ writes

    async def put_document(self, inputs: Sequence[ScheduleInput]) -> None:
        """Replace every schedule with ``inputs``, atomically; one bad entry changes nothing."""
        if len(inputs) > MAX_SCHEDULES:
            raise InvalidArgument(f"too many schedules: {len(inputs)} > {MAX_SCHEDULES}")
        seen: set[str] = set()
        for i, s in enumerate(inputs):
            if s.id in seen:
                raise entry_error(i, s.id, "duplicate id in the document")
            seen.add(s.id)
        schedules = [self.validate(i, s) for i, s in enumerate(inputs)]
        for _ in range(ATTEMPTS):
            doc = await self._store.get(DOC)
            old_gen = decode_doc(doc.value) if doc else ""
            old = await self._generation(old_gen)
            gen = uuid.uuid4().hex
            final = [self._since(s, old.get(s.id)) for s in schedules]
            for start in range(0, len(final), BATCH):
                await self._store.txn((), [Put(schedule_key(gen, s.id), encode_schedule(s))
                                           for s in final[start:start + BATCH]])
            flipped = await self._store.txn((Compare(DOC, doc.value if doc else None),), (Put(DOC, encode_doc(gen)),))
            if flipped.succeeded:
                if old_gen:
                    await self._store.txn((), (Delete(f"{SCHEDULES}{old_gen}/", prefix=True),))
                logger.info("cron document replaced: %d schedule(s)", len(final))
                await self._until(_generation_is(gen))
                return
            await self._store.txn((), (Delete(f"{SCHEDULES}{gen}/", prefix=True),))  # lost the race: drop ours
        raise CoordinatorUnavailable("the cron document kept changing; retry")

    async def put(self, s: ScheduleInput) -> CronSchedule:
        """Create or replace one schedule."""
        new = self.validate(0, s)

        def change(gen: str, old: CronSchedule | None) -> tuple[list[Op], CronSchedule]:
            final = self._since(new, old)
            return [Put(schedule_key(gen, new.id), encode_schedule(final))], final

        return await self._write_one(new.id, change, must_exist=False)

    async def set_enabled(self, schedule_id: str, enabled: bool) -> CronSchedule:
        def change(gen: str, old: CronSchedule | None) -> tuple[list[Op], CronSchedule]:
            assert old is not None
            final = self._since(replace(old, enabled=enabled), old)
            return [Put(schedule_key(gen, schedule_id), encode_schedule(final))], final

        return await self._write_one(schedule_id, change, must_exist=True)

    async def delete(self, schedule_id: str) -> None:
        def change(gen: str, old: CronSchedule | None) -> tuple[list[Op], CronSchedule]:
            assert old is not None
            return [Delete(schedule_key(gen, schedule_id))], old

        await self._write_one(schedule_id, change, must_exist=True, gone=True)

    async def _write_one(self, schedule_id: str,
                         change: Callable[[str, CronSchedule | None], tuple[list[Op], CronSchedule]], *,
                         must_exist: bool, gone: bool = False) -> CronSchedule:
        for _ in range(ATTEMPTS):
            doc = await self._store.get(DOC)
            gen = decode_doc(doc.value) if doc else ""
            ops: list[Op] = []
            if not gen:  # the first schedule ever: create the document's first generation with it
                gen = uuid.uuid4().hex
                ops.append(Put(DOC, encode_doc(gen)))
            kv = await self._store.get(schedule_key(gen, schedule_id))
            old = decode_schedule(kv.value) if kv else None
            if must_exist and old is None:
                raise ScheduleNotFound(schedule_id)
            more, final = change(gen, old)
            compares = [Compare(DOC, doc.value if doc else None),
                        Compare(schedule_key(gen, schedule_id), kv.value if kv else None)]
            if (await self._store.txn(compares, [*ops, *more])).succeeded:
                await self._until(_shows(schedule_id, None if gone else final))
                return final
        raise CoordinatorUnavailable(f"schedule {schedule_id} kept changing; retry")

    async def _generation(self, gen: str) -> dict[str, CronSchedule]:
        if not gen:
            return {}
        kvs, _ = await self._store.get_prefix(f"{SCHEDULES}{gen}/")
        return {s.id: s for kv in kvs if (s := decode_schedule(kv.value)) is not None}

    async def _until(self, done: Callable[[ClusterSnapshot], bool]) -> None:
        """Read-your-writes, bounded: an answer is never withheld long because this replica lags."""
        await self._cache.wait_until(done, self._timeout)

    # ------------------------------------------------------------------ reads

    def get(self, schedule_id: str) -> CronSchedule:
        s = self._cache.snapshot.schedules.get(schedule_id)
        if s is None:
            raise ScheduleNotFound(schedule_id)
        return s


def _generation_is(gen: str) -> Callable[[ClusterSnapshot], bool]:
    return lambda snap: snap.cron_generation == gen


def _shows(schedule_id: str, schedule: CronSchedule | None) -> Callable[[ClusterSnapshot], bool]:
    """The replica holds ``schedule`` under ``schedule_id`` (None: no such schedule)."""
    return lambda snap: snap.schedules.get(schedule_id) == schedule
