"""Leader election on a lease-bound key, and fencing of every leader write."""

from __future__ import annotations

import logging
from collections.abc import Sequence

from taskward.coordinator.records import LEADER, encode_leader
from taskward.coordinator.store.base import ClusterStore, Compare, Delete, Op, TxnResult

logger = logging.getLogger(__name__)


class NotLeader(Exception):
    """A guarded write found that the leader key is no longer ours: we were deposed.

    Only the leader key's guard raises this. Any other guard that fails (a record changed since it was
    read) is an ordinary lost compare, answered as a ``TxnResult`` for the caller to retry: confusing
    the two once made a leader drop news it had already counted as written."""


class Election:
    def __init__(self, store: ClusterStore, node_id: str, instance: str) -> None:
        self._store = store
        self.node_id = node_id
        self._value = encode_leader(node_id, instance)

    async def campaign(self, lease: int) -> bool:
        """Try to become leader (only if nobody is); the key dies with our lease."""
        won = await self._store.create_if_absent(LEADER, self._value, lease=lease)
        if won:
            logger.info("node %s became the cluster leader", self.node_id)
        return won

    async def leader_txn(self, ops: Sequence[Op], extra: Sequence[Compare] = ()) -> TxnResult:
        """Apply ``ops`` only while the leader key is ours (fencing) and every ``extra`` guard holds.

        Raises ``NotLeader`` when the leader key is not ours. When only an ``extra`` guard failed, the
        result is unsucceeded and carries the guarded keys' current values."""
        result = await self._store.txn((Compare(LEADER, self._value), *extra), ops)
        if not result.succeeded and result.current.get(LEADER) != self._value:
            raise NotLeader(self.node_id)
        return result

    async def resign(self) -> None:
        try:
            await self._store.txn((Compare(LEADER, self._value),), (Delete(LEADER),))
        except Exception:  # best effort: the lease expiry frees the key anyway
            logger.debug("could not resign leadership", exc_info=True)
