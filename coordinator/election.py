"""Leader election on a lease-bound key, and fencing of every leader write."""

from __future__ import annotations

import logging
from collections.abc import Sequence

from taskward.coordinator.records import LEADER, MEMBERS, decode_leader, encode_leader
from taskward.coordinator.store.base import ClusterStore, Compare, Delete, KeyValue, Op, TxnResult

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

    def holds(self, record: bytes) -> bool:
        """Whether ``record`` (the leader key's value) is the one this node wrote when it won."""
        return record == self._value

    async def clear_unheld(self) -> bool:
        """Delete a leader key that no live member holds; whether it was deleted.

        ``campaign`` only creates the key, so a key that no live node holds blocks every election for as
        long as it stays: one that is not a leader record, names a node that is not a member, or is not
        bound to that member's live lease (a key without a lease never expires; one written by hand, or
        left by a restore). All of it is read from the store, not from this node's replica, which may lag
        a leader elected meanwhile; and the key is deleted only if it still holds the bytes that were
        judged. Callers ask only after the key has looked unheld for a lease TTL."""
        kv = await self._store.get(LEADER)
        if kv is None:
            return False
        holder = decode_leader(kv.value)
        member = await self._store.get(MEMBERS + holder) if holder is not None else None
        if member is not None and kv.lease and member.lease == kv.lease and await self._store.lease_alive(kv.lease):
            return False  # held: its node is a member on the live lease the key is bound to
        result = await self._store.txn((Compare(LEADER, kv.value),), (Delete(LEADER),))
        if result.succeeded:
            logger.warning("deleted a leader key that no live member holds (%s); electing a leader",
                           _unheld_because(holder, kv.lease, member))
        return result.succeeded

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


def _unheld_because(holder: str | None, lease: int, member: KeyValue | None) -> str:
    if holder is None:
        return "not a leader record"
    if member is None:
        return f"it names {holder}, which is not a member"
    if not lease:
        return f"it names {holder} but is bound to no lease"
    return f"it names {holder} but not on its live lease"
