"""Membership: ``members/<node_id>`` bound to the node's lease; liveness is lease expiry."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from taskward.coordinator.records import MEMBERS, Member, decode_member, encode_member
from taskward.coordinator.store.base import ClusterStore, Compare, Put
from taskward.errors import ConfigError

logger = logging.getLogger(__name__)


class DuplicateNode(ConfigError):
    def __init__(self, node_id: str, address: str) -> None:
        super().__init__(f"node id {node_id} is already live at {address} (another data dir); refusing to start")


@dataclass(slots=True)
class Membership:
    """Registers this node and keeps its lease alive. The caller runs ``keep_alive`` every ttl/3."""

    store: ClusterStore
    me: Member
    lease_ttl_s: int
    lease: int = 0

    @property
    def key(self) -> str:
        return MEMBERS + self.me.id

    async def register(self) -> None:
        """Create our member key on a fresh lease.

        A live key with our instance token is our own previous incarnation (restart from the same
        data dir before its lease expired): we take it over at once. Any other live owner refuses us.
        """
        self.lease = await self.store.grant_lease(self.lease_ttl_s)
        value = encode_member(self.me)
        while not await self.store.create_if_absent(self.key, value, lease=self.lease):
            cur = await self.store.get(self.key)
            if cur is None:
                continue
            old = decode_member(cur.value)
            if old is not None and old.instance != self.me.instance:
                await self.store.revoke_lease(self.lease)
                raise DuplicateNode(self.me.id, old.address)
            if cur.lease:
                await self.store.revoke_lease(cur.lease)  # drops our old leader key too, if any
            if (await self.store.txn((Compare(self.key, cur.value),), (Put(self.key, value, self.lease),))).succeeded:
                break
        logger.info("registered as member %s (%s) with lease %x", self.me.id, self.me.address, self.lease)

    async def keep_alive(self) -> bool:
        """Refresh the lease; re-register when it had expired. Returns False if it had expired."""
        if await self.store.keep_alive(self.lease):
            return True
        logger.warning("membership lease expired; registering again")
        await self.register()
        return False

    async def leave(self) -> None:
        await self.store.revoke_lease(self.lease)

