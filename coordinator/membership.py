"""Membership: ``members/<node_id>`` bound to the node's lease; liveness is lease expiry."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from taskward.coordinator.record_checks import BadRecord
from taskward.coordinator.records import MEMBERS, Member, decode_member, encode_member, parse_member
from taskward.coordinator.store.base import ClusterStore, Compare, KeyValue, Put
from taskward.errors import ConfigError

logger = logging.getLogger(__name__)


class DuplicateNode(ConfigError):
    def __init__(self, node_id: str, address: str) -> None:
        super().__init__(f"node id {node_id} is already live at {address} (another data dir); refusing to start")


async def live_members(store: ClusterStore, kvs: list[KeyValue]) -> list[Member]:
    """The members among ``kvs`` (a listing of ``members/``) that may be called: good records bound to a
    live lease (the replica admits the same ones, ``cache.py``); others are left out, at debug level (the
    replica logs them)."""
    found: list[Member] = []
    for kv in kvs:
        try:
            m = parse_member(kv.value, node_id=kv.key[len(MEMBERS):], lease=kv.lease)
        except BadRecord as exc:
            logger.debug("not a member: %s: %s", ascii(kv.key), exc)
            continue
        if await store.lease_alive(kv.lease):
            found.append(m)
    return found


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
        data dir before its lease expired): we take it over at once. Any other live owner refuses us. A
        key that is no live member (bound to no lease, or to one that has expired, or not a member record)
        is nobody's: we replace it.
        """
        self.lease = await self.store.grant_lease(self.lease_ttl_s)
        value = encode_member(self.me)
        while not await self.store.create_if_absent(self.key, value, lease=self.lease):
            cur = await self.store.get(self.key)
            if cur is None:
                continue
            old = decode_member(cur.value)
            live = bool(cur.lease) and await self.store.lease_alive(cur.lease)
            if old is not None and old.instance != self.me.instance and live:
                await self.store.revoke_lease(self.lease)
                raise DuplicateNode(self.me.id, old.address)
            if not live:
                logger.warning("replacing member key %s, which is bound to no live lease", self.key)
            if live and old is not None and old.instance == self.me.instance:
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

