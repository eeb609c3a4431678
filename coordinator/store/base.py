"""The one narrow interface to cluster state (Patroni's DCS idea).

Two backends implement it: etcd (``store/etcd.py``) and an embedded single-node store
(``store/embedded.py``) for a node run without ``--etcd``. Everything above this package sees only
this interface and ``CoordinatorUnavailable``; backend exceptions never leak out.

Keys are strings relative to the cluster's prefix (``/taskward/<cluster>/``); values are bytes. A key
that is not UTF-8 (anyone with write access to the store may write one) arrives with its bad bytes as
lone surrogates (``surrogateescape``): readers refuse it as they refuse any malformed key, and it still
names the same key if written back.
"""

from __future__ import annotations

import abc
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum


class WatchEventType(Enum):
    PUT = "put"
    DELETE = "delete"


@dataclass(frozen=True, slots=True)
class KeyValue:
    key: str
    value: bytes
    mod_revision: int
    lease: int = 0


@dataclass(frozen=True, slots=True)
class WatchEvent:
    type: WatchEventType
    key: str
    value: bytes
    revision: int
    lease: int = 0
    """The lease a put bound the key to (0: none)."""


class WatchGap(Exception):
    """The watch cannot continue from the requested revision (compacted, or the stream broke).

    The reader re-lists the prefix and watches again from the listing's revision.
    """


@dataclass(frozen=True, slots=True)
class Compare:
    """A transaction guard: ``key``'s value equals ``value`` (``None``: the key is absent)."""

    key: str
    value: bytes | None


@dataclass(frozen=True, slots=True)
class Put:
    key: str
    value: bytes
    lease: int = 0


@dataclass(frozen=True, slots=True)
class Delete:
    """Delete ``key``, or with ``prefix`` every key that starts with it."""

    key: str
    prefix: bool = False


Op = Put | Delete


@dataclass(frozen=True, slots=True)
class TxnResult:
    """What a transaction did. When a compare failed, ``current`` holds every compared key's value as the
    same transaction saw it (``None``: absent), so the caller can tell which guard failed and retry on
    what is committed, without a second read that could see yet another value."""

    succeeded: bool
    current: Mapping[str, bytes | None] = field(default_factory=dict)


class ClusterStore(abc.ABC):
    """put/get/txn/watch/lease. Every call raises ``CoordinatorUnavailable`` when the store cannot
    answer within its timeout (no quorum, unreachable); nothing else escapes.

    Atomicity: ``txn`` applies all its operations or none, and only if every compare holds.
    Idempotency: ``put``/``delete`` are idempotent; ``create_if_absent`` is not (its answer tells).
    """

    @abc.abstractmethod
    async def start(self) -> None:
        """Connect; raises ``CoordinatorUnavailable`` if the store is unreachable."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Release connections. Idempotent."""

    @abc.abstractmethod
    async def get_prefix(self, prefix: str) -> tuple[list[KeyValue], int]:
        """Every key under ``prefix`` and the store revision the listing reflects (linearizable)."""

    @abc.abstractmethod
    async def get(self, key: str) -> KeyValue | None: ...

    @abc.abstractmethod
    async def txn(self, compares: Sequence[Compare], ops: Sequence[Op]) -> TxnResult:
        """Apply ``ops`` atomically iff every compare holds; on failure, the compared keys' values.

        A key may be touched by one operation of a transaction only (etcd's rule, which the embedded
        store enforces too): a prefix delete must not cover a key another operation writes."""

    async def put(self, key: str, value: bytes, *, lease: int = 0) -> None:
        await self.txn((), (Put(key, value, lease),))

    async def delete(self, key: str) -> None:
        await self.txn((), (Delete(key),))

    async def create_if_absent(self, key: str, value: bytes, *, lease: int = 0) -> bool:
        """Create ``key`` only if it does not exist (exactly-once markers, the leader key)."""
        return (await self.txn((Compare(key, None),), (Put(key, value, lease),))).succeeded

    @abc.abstractmethod
    async def grant_lease(self, ttl_s: int) -> int:
        """A new lease id; keys bound to it vanish when it is revoked or not kept alive."""

    @abc.abstractmethod
    async def keep_alive(self, lease: int) -> bool:
        """Refresh the lease; False when it already expired (its keys are gone)."""

    @abc.abstractmethod
    async def revoke_lease(self, lease: int) -> None: ...

    @abc.abstractmethod
    async def lease_alive(self, lease: int) -> bool:
        """Whether ``lease`` exists and has not expired (the replica admits a member only on such a lease)."""

    @abc.abstractmethod
    def watch(self, prefix: str, *, from_revision: int) -> AsyncIterator[WatchEvent]:
        """Changes under ``prefix`` from ``from_revision`` on, in revision order.

        Raises ``WatchGap`` when it cannot continue without missing changes, and
        ``CoordinatorUnavailable`` when the store is unreachable.
        """
