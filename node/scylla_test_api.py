"""The ScyllaDB-compatible test API: a ``test`` module whose tasks run until told to finish.

Only reachable when the node runs with ``--enable-test-api``. Test tasks have no body, are not
abortable, and exist so that compatibility tests can build trees and drive states by hand.
"""

from __future__ import annotations

import asyncio
import functools
from dataclasses import replace

from taskward.errors import InvalidArgument, TaskNotFound, TestApiDisabled, UnknownModule
from taskward.manager import TEST_MODULE, TaskManager
from taskward.model import TaskRecord, TaskState, check_labels, check_task_id
from taskward.store import Tx


class ScyllaTestApi:
    __test__ = False  # not a pytest class

    def __init__(self, manager: TaskManager) -> None:
        self._m = manager
        self._creating: set[str] = set()  # ids of test tasks being committed (not in the table yet)

    def _check_enabled(self) -> None:
        if not self._m.config.enable_test_api:
            raise TestApiDisabled()

    def _check_registered(self) -> None:
        self._check_enabled()
        if not self._m.test_module_registered:
            raise UnknownModule(TEST_MODULE)

    async def register(self) -> None:
        self._check_enabled()
        self._m.test_module_registered = True

    async def unregister(self) -> None:
        """Drop the module with all its tasks; its sequence numbers start again at 1."""
        self._check_enabled()
        self._m.test_module_registered = False
        ids = [r.id for _, r in self._m.table.module_records(TEST_MODULE)]
        for tid in ids:
            self._m.table.remove(tid)
        self._m.forget_sequences(TEST_MODULE)
        await self._m.commit_tx(Tx().delete(ids))

    async def create_task(
        self, *, task_id: str = "", shard: int = 0, parent_id: str = "", keyspace: str = "",
        table: str = "", entity: str = "", user_task: bool = False,
    ) -> str:
        """A running test task (a child of ``parent_id`` when given); its id once it is durable."""
        self._check_registered()
        if shard < 0 or shard > 1 << 16:
            raise InvalidArgument(f"shard must be between 0 and {1 << 16}")
        check_labels(keyspace=keyspace, table=table, entity=entity)
        tid = check_task_id(task_id) if task_id else None
        if tid is not None and (tid in self._m.table or tid in self._creating):
            raise InvalidArgument(f"task with id {tid} already exists")
        parent: TaskRecord | None = None
        if parent_id:
            parent = self._m.table.get(check_task_id(parent_id))
            if parent is None or parent.folded:
                raise TaskNotFound(parent_id)
            self._m.check_child_depth(parent)
        tx = Tx()
        seq = parent.sequence_number if parent else self._m.next_sequence(tx, TEST_MODULE, shard)
        rec = TaskRecord(
            id=tid or self._m.new_id(), module=TEST_MODULE, type="test", created_at=self._m.now(),
            sequence_number=seq, keyspace=keyspace, table=table, entity=entity, shard=shard,
            parent_id=parent.id if parent else None, internal=parent is not None, user_task=user_task,
        )
        rec = rec.started(self._m.now())
        self._creating.add(rec.id)
        try:
            if parent is not None:
                await asyncio.shield(self._m.add_child(tx, parent, rec))
            else:  # seen once durable, like any start
                tx.put(rec).on_commit.append(functools.partial(self._m.table.put, rec))
                await self._m.commit_tx(tx)
        finally:
            self._creating.discard(rec.id)
        return rec.id

    async def unregister_task(self, task_id: str) -> None:
        """A root leaves with its tree; a child stays visible only through its parent (folded)."""
        self._check_registered()
        rec = self._m.table.get(check_task_id(task_id))
        if rec is None or rec.folded or rec.module != TEST_MODULE:
            raise TaskNotFound(task_id)
        if rec.is_root:
            await self._m.unregister_tree(rec.id)
            return
        rec = replace(rec, folded=True)
        tx = Tx().put(rec)
        tx.on_commit.append(functools.partial(self._m.table.put, rec))
        await self._m.commit_tx(tx)

    async def finish_task(self, task_id: str, error: str = "") -> None:
        self._check_registered()
        rec = self._m.table.get(check_task_id(task_id))
        if rec is None or rec.folded or rec.module != TEST_MODULE:
            raise TaskNotFound(task_id)
        if rec.state is not TaskState.RUNNING:
            raise InvalidArgument(f"task {task_id} is already finished")
        await self._m.complete(rec.id, error=error)
