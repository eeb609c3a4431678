"""etcd v3 backend, over the etcd API stubs shipped by the maintained ``aetcd`` package.

We drive the stubs on our own ``grpc.aio`` channel rather than through aetcd's client, because the
client connects to one endpoint only: the channel here lists every endpoint and fails over between
them. Every call carries a deadline; any gRPC failure becomes ``CoordinatorUnavailable`` here, so
nothing above this module ever sees an etcd exception.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import ipaddress
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

import grpc
from aetcd import rpc

from taskward.config import EtcdConfig
from taskward.coordinator.store.base import (
    ClusterStore,
    Compare,
    KeyValue,
    Op,
    Put,
    TxnResult,
    WatchEvent,
    WatchEventType,
    WatchGap,
)
from taskward.errors import ConfigError, CoordinatorUnavailable
from taskward.metrics import NodeMetrics

logger = logging.getLogger(__name__)


def channel_target(endpoints: Sequence[str]) -> str:
    """One gRPC target for all endpoints: ``ipv4:a:p,b:p`` lets pick_first fail over between them."""
    hosts = [e.split("://", 1)[-1].rstrip("/") for e in endpoints]
    try:
        for h in hosts:
            ipaddress.IPv4Address(h.rpartition(":")[0])
    except ValueError:
        if len(hosts) > 1:
            logger.warning("etcd endpoints are not all IPv4 addresses; using %s only", hosts[0])
        return hosts[0]
    return "ipv4:" + ",".join(hosts)


def _read_tls(cacert: str, key: str, cert: str) -> tuple[bytes | None, bytes | None, bytes | None]:
    """Read once at start-up (before the loop serves anything); no CA file means the system's roots."""
    return (Path(cacert).read_bytes() if cacert else None, Path(key).read_bytes() if key else None,
            Path(cert).read_bytes() if cert else None)


def _prefix_end(prefix: bytes) -> bytes:
    return prefix[:-1] + bytes([prefix[-1] + 1])


@functools.cache
def _op_name(request_type: str) -> str:
    """The metrics label of an etcd request type: ``RangeRequest`` → ``range``, ``LeaseGrantRequest`` →
    ``lease_grant``."""
    name = request_type.removesuffix("Request")
    return "".join("_" + c.lower() if c.isupper() and i else c.lower() for i, c in enumerate(name))


class EtcdStore(ClusterStore):
    """Every unary call and lease keep-alive is timed into ``taskward_etcd_request_seconds{op}``, and each
    one that fails counted in ``taskward_etcd_request_errors_total{op}`` (a re-login after a forgotten token
    is one more call)."""

    def __init__(self, config: EtcdConfig, *, prefix: str, metrics: NodeMetrics | None = None) -> None:
        self._o = config
        self._metrics = metrics or NodeMetrics()
        self._prefix = prefix.encode()
        self._channel: grpc.aio.Channel | None = None
        self._metadata: tuple[tuple[str, str], ...] = ()

    def _unk(self, raw: bytes) -> str:
        return raw[len(self._prefix):].decode("utf-8", "surrogateescape")  # a bad key is refused above, not here

    def _k(self, key: str) -> bytes:
        return self._prefix + key.encode("utf-8", "surrogateescape")

    async def start(self) -> None:
        target = channel_target(self._o.endpoints)
        options = [("grpc.lb_policy_name", "pick_first"), ("grpc.enable_retries", 1),
                   ("grpc.keepalive_time_ms", 5000), ("grpc.keepalive_timeout_ms", 2000)]
        if self._o.cacert or self._o.cert or any(e.startswith("https://") for e in self._o.endpoints):
            try:
                creds = grpc.ssl_channel_credentials(*_read_tls(self._o.cacert, self._o.key, self._o.cert))
            except OSError as exc:
                raise ConfigError(f"cannot read the etcd TLS files: {exc}") from None
            self._channel = grpc.aio.secure_channel(target, creds, options=options)
        else:
            self._channel = grpc.aio.insecure_channel(target, options=options)
        self._kv = rpc.KVStub(self._channel)
        self._lease = rpc.LeaseStub(self._channel)
        self._watch = rpc.WatchStub(self._channel)
        await self._authenticate()
        await self.get("members/")  # fail fast when unreachable

    async def _authenticate(self) -> None:
        """Get a token for ``user`` (when set). etcd forgets its simple tokens when it restarts or after
        a while unused, so this runs again whenever a call is refused as unauthenticated."""
        if not self._o.user:
            return
        try:
            resp = await rpc.AuthStub(self._channel).Authenticate(
                rpc.AuthenticateRequest(name=self._o.user, password=self._o.password), timeout=self._o.timeout_s
            )
        except grpc.aio.AioRpcError as exc:
            raise CoordinatorUnavailable(f"etcd authentication failed: {exc.details()}") from None
        self._metadata = (("token", resp.token),)

    async def close(self) -> None:
        if self._channel is not None:
            await self._channel.close(grace=None)
            self._channel = None

    async def _call(self, method: Callable[..., Awaitable[Any]], request: object) -> Any:
        """One etcd call with its deadline (and a new login once if etcd forgot our token); aetcd's stubs
        are untyped, so the answer is ``Any``, read right here."""
        op = _op_name(type(request).__name__)
        for attempt in (1, 2):
            started = time.perf_counter()
            try:
                answer = await method(request, timeout=self._o.timeout_s, metadata=self._metadata)
            except grpc.aio.AioRpcError as exc:
                self._metrics.etcd_request(op, time.perf_counter() - started, failed=True)
                if attempt == 1 and self._token_refused(exc):
                    await self._authenticate()
                    continue
                raise CoordinatorUnavailable(f"etcd: {exc.code().name} {exc.details()}") from None
            self._metrics.etcd_request(op, time.perf_counter() - started, failed=False)
            return answer
        raise AssertionError("unreachable")

    def _token_refused(self, exc: grpc.aio.AioRpcError) -> bool:
        return bool(self._o.user) and exc.code() == grpc.StatusCode.UNAUTHENTICATED

    async def _renew_if_refused(self, exc: grpc.aio.AioRpcError) -> None:
        """A stream refused for its token: get a new one, so the caller's retry goes through."""
        if self._token_refused(exc):
            with contextlib.suppress(CoordinatorUnavailable):
                await self._authenticate()

    async def get_prefix(self, prefix: str) -> tuple[list[KeyValue], int]:
        key = self._k(prefix)
        resp = await self._call(self._kv.Range, rpc.RangeRequest(key=key, range_end=_prefix_end(key)))
        kvs = [KeyValue(self._unk(kv.key), kv.value, kv.mod_revision, kv.lease) for kv in resp.kvs]
        return kvs, resp.header.revision

    async def get(self, key: str) -> KeyValue | None:
        resp = await self._call(self._kv.Range, rpc.RangeRequest(key=self._k(key)))
        for kv in resp.kvs:
            return KeyValue(key, kv.value, kv.mod_revision, kv.lease)
        return None

    async def txn(self, compares: Sequence[Compare], ops: Sequence[Op]) -> TxnResult:
        cmp = []
        for c in compares:
            if c.value is None:
                cmp.append(rpc.Compare(key=self._k(c.key), target=rpc.Compare.CREATE,
                                       result=rpc.Compare.EQUAL, create_revision=0))
            else:
                cmp.append(rpc.Compare(key=self._k(c.key), target=rpc.Compare.VALUE,
                                       result=rpc.Compare.EQUAL, value=c.value))
        success = []
        for op in ops:
            if isinstance(op, Put):
                success.append(rpc.RequestOp(request_put=rpc.PutRequest(key=self._k(op.key), value=op.value,
                                                                         lease=op.lease)))
            else:
                key = self._k(op.key)
                success.append(rpc.RequestOp(request_delete_range=rpc.DeleteRangeRequest(
                    key=key, range_end=_prefix_end(key) if op.prefix else b"")))
        # On failure, read the compared keys in the same transaction: the caller learns which guard failed
        # from values of one revision, not from a second read that may see a later one.
        failure = [rpc.RequestOp(request_range=rpc.RangeRequest(key=self._k(c.key))) for c in compares]
        resp = await self._call(self._kv.Txn, rpc.TxnRequest(compare=cmp, success=success, failure=failure))
        if resp.succeeded:
            return TxnResult(True)
        current = {c.key: next((kv.value for kv in r.response_range.kvs), None)
                   for c, r in zip(compares, resp.responses, strict=True)}
        return TxnResult(False, current)

    async def grant_lease(self, ttl_s: int) -> int:
        resp = await self._call(self._lease.LeaseGrant, rpc.LeaseGrantRequest(TTL=ttl_s))
        return int(resp.ID)

    async def keep_alive(self, lease: int) -> bool:
        async def one() -> AsyncIterator[rpc.LeaseKeepAliveRequest]:
            yield rpc.LeaseKeepAliveRequest(ID=lease)

        call = self._lease.LeaseKeepAlive(one(), timeout=self._o.timeout_s, metadata=self._metadata)
        started = time.perf_counter()
        try:
            async for resp in call:
                self._metrics.etcd_request("lease_keep_alive", time.perf_counter() - started, failed=False)
                return bool(resp.TTL > 0)
        except grpc.aio.AioRpcError as exc:
            self._metrics.etcd_request("lease_keep_alive", time.perf_counter() - started, failed=True)
            await self._renew_if_refused(exc)
            raise CoordinatorUnavailable(f"etcd: {exc.code().name} {exc.details()}") from None
        finally:
            call.cancel()
        raise CoordinatorUnavailable("etcd closed the keep-alive stream")

    async def lease_alive(self, lease: int) -> bool:
        resp = await self._call(self._lease.LeaseTimeToLive, rpc.LeaseTimeToLiveRequest(ID=lease))
        return bool(resp.TTL > 0)  # -1: expired or never granted

    async def revoke_lease(self, lease: int) -> None:
        try:
            await self._call(self._lease.LeaseRevoke, rpc.LeaseRevokeRequest(ID=lease))
        except CoordinatorUnavailable as exc:
            if "not found" not in str(exc):
                raise

    async def watch(self, prefix: str, *, from_revision: int) -> AsyncIterator[WatchEvent]:
        key = self._k(prefix)
        create = rpc.WatchCreateRequest(key=key, range_end=_prefix_end(key), start_revision=from_revision,
                                        progress_notify=True)
        stop = asyncio.Event()

        async def requests() -> AsyncIterator[rpc.WatchRequest]:
            yield rpc.WatchRequest(create_request=create)
            await stop.wait()

        call = self._watch.Watch(requests(), metadata=self._metadata)
        try:
            async for resp in call:
                if resp.compact_revision:
                    raise WatchGap(f"compacted at {resp.compact_revision}")
                if resp.canceled:
                    raise WatchGap(resp.cancel_reason or "watch canceled")
                for ev in resp.events:
                    etype = WatchEventType.DELETE if ev.type == rpc.Event.DELETE else WatchEventType.PUT
                    yield WatchEvent(etype, self._unk(ev.kv.key), ev.kv.value, ev.kv.mod_revision, ev.kv.lease)
        except grpc.aio.AioRpcError as exc:
            await self._renew_if_refused(exc)
            raise CoordinatorUnavailable(f"etcd watch: {exc.code().name} {exc.details()}") from None
        finally:
            stop.set()
            call.cancel()
        raise WatchGap("watch stream ended")
