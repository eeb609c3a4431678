"""Configuration sections, frozen and validated once, built from the resolved settings.

``taskward.settings`` describes every setting and resolves CLI > ``TASKWARD_*`` env > ``--config`` file
> defaults; this module turns the resolved values into the sections each component receives: the
manager its ``ManagerConfig``, the coordinator its ``ClusterConfig`` (with the ``EtcdConfig`` its etcd
store gets), the REST and RESP surfaces what they need from ``NodeConfig``.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from taskward.errors import ConfigError
from taskward.model import NODE_ID_RE
from taskward.resource_limits import GrpcLimits, RespLimits, RestLimits
from taskward.security.failed_auth import DEFAULT_LIMIT, DEFAULT_WINDOW_S
from taskward.security.tokens import TokenTable
from taskward.settings import DEFAULT_GATEWAY_LISTEN, DEFAULT_LISTEN

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True, kw_only=True)
class ManagerConfig:
    node_id: str
    initial_task_ttl: int = 0
    initial_user_task_ttl: int = 3600
    retention_max_age_s: float = 24 * 3600
    retention_max_per_module: int = 100
    event_retention: int = 100_000
    concurrency: int = 16
    sync_threads: int = 16
    process_workers: int = 0
    """Worker processes for ``executor="process"`` task types (0: one per core)."""
    shutdown_grace_s: float = 5.0
    enable_test_api: bool = False
    keep_finished_on_read: bool = False  # status reads leave finished roots to their TTL

    def __post_init__(self) -> None:
        if self.initial_task_ttl < 0 or self.initial_user_task_ttl < 0:
            raise ConfigError("task ttl values must be >= 0")
        if self.retention_max_per_module < 1 or self.retention_max_age_s <= 0:
            raise ConfigError("retention must keep at least one task for a positive time")
        if self.shutdown_grace_s < 0:
            raise ConfigError("shutdown grace must be >= 0")
        if self.concurrency < 1 or self.sync_threads < 1:
            raise ConfigError("concurrency and sync threads must be >= 1")
        if self.process_workers < 0:
            raise ConfigError("process workers must be >= 0 (0: one per core)")


@dataclass(frozen=True, slots=True, kw_only=True)
class TlsConfig:
    """The PEM files of a node or gateway (``taskward.security.tls`` reads them). ``cert`` + ``key`` turn on
    TLS on every listener and are the client certificate of the process's own calls; ``client_ca`` then
    requires client certificates it signed; ``ca`` verifies the servers this process calls."""

    cert: str = ""
    key: str = ""
    client_ca: str = ""
    ca: str = ""

    def __post_init__(self) -> None:
        if bool(self.cert) != bool(self.key):
            raise ConfigError("--tls-cert and --tls-key go together")
        if self.client_ca and not self.cert:
            raise ConfigError("--tls-client-ca needs --tls-cert and --tls-key: client certificates are asked for "
                              "on TLS listeners only")

    @property
    def serves(self) -> bool:
        """Whether the listeners speak TLS."""
        return bool(self.cert)

    @property
    def dials(self) -> bool:
        """Whether this process's own calls (to nodes) use TLS."""
        return bool(self.cert or self.ca)


def check_exposure(flag: str, address: str, *, token: bool, tls: bool, insecure_bind: bool) -> None:
    """Off loopback, a listener needs a token (who may call) and TLS (so the token and the tasks' data do not
    cross the network in clear text); ``--insecure-bind`` is the explicit way out, warned about at start."""
    host = check_address(flag, address)
    if insecure_bind or is_loopback(host) or (token and tls):
        return
    missing = "a token and TLS" if not token and not tls else "a token" if not token else "TLS"
    raise ConfigError(f"refusing to bind {flag} {address} without {missing}: off loopback a listener needs "
                      "--token-file and --tls-cert/--tls-key (or --insecure-bind)")


def insecure_bind_warnings(listeners: Mapping[str, str], *, token: bool, tls: bool, insecure_bind: bool) -> list[str]:
    """What ``--insecure-bind`` let through, one line per gap of each non-loopback listener (flag → address),
    for the process to log as warnings at start; none without ``--insecure-bind``."""
    if not insecure_bind:
        return []
    lines = []
    for flag, address in listeners.items():
        if not address or is_loopback(check_address(flag, address)):
            continue
        if not tls:
            lines.append(f"INSECURE (--insecure-bind): {flag} {address} is reachable from other hosts without TLS; "
                         f"{'the bearer token and ' if token else ''}task data cross the network in clear text")
        if not token:
            lines.append(f"INSECURE (--insecure-bind): {flag} {address} is reachable from other hosts without a "
                         "token; anyone who can reach it may call it")
    return lines or ["--insecure-bind given, but every listener is on loopback or has a token and TLS"]


@dataclass(frozen=True, slots=True, kw_only=True)
class EtcdConfig:
    """Where etcd is and how to log in: what the etcd store needs, spelled once."""

    endpoints: tuple[str, ...] = ()
    timeout_s: float = 2.0
    cacert: str = ""
    cert: str = ""
    key: str = ""
    user: str = ""
    password: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class ClusterConfig:
    """The coordinator's section (Patroni's timing rule checked once: a cycle and two store calls fit
    in a lease)."""

    etcd: EtcdConfig = field(default_factory=EtcdConfig)
    cluster: str = "default"
    lease_ttl_s: int = 6
    loop_interval_s: float = 0.5
    dead_node_grace_s: float = 60.0
    child_rpc_timeout_s: float = 2.0
    reconcile_interval_s: float = 5.0
    """A child followed through its node's events is still polled this often (defence in depth)."""
    cron_test_clock: str = ""
    """Test only: ``EPOCH:SPEED`` runs the cron scheduler on an accelerated clock (see coordinator/cron/clock.py)."""

    def __post_init__(self) -> None:
        if self.loop_interval_s + 2 * self.etcd.timeout_s > self.lease_ttl_s:
            raise ConfigError("need loop_interval_s + 2*etcd timeout <= lease_ttl_s")
        if self.reconcile_interval_s <= 0:
            raise ConfigError("reconcile interval must be > 0")
        if self.dead_node_grace_s < 0:
            raise ConfigError("dead node grace must be >= 0")
        if not self.cluster or "/" in self.cluster:
            raise ConfigError("cluster name must be non-empty and contain no '/'")

    @property
    def prefix(self) -> str:
        return f"/taskward/{self.cluster}/"


def etcd_timeout_for(lease_ttl_s: int) -> float:
    """etcd calls time out well within the lease, so a short lease (tests use 3 s) stays consistent."""
    return min(2.0, max(0.5, (lease_ttl_s - 0.5) / 2.5))


def loop_interval_for(lease_ttl_s: int) -> float:
    """The leader's cycle runs at least six times per lease."""
    return min(0.5, lease_ttl_s / 6)


@dataclass(frozen=True, slots=True, kw_only=True)
class NodeConfig:
    node_id: str
    listen: str = DEFAULT_LISTEN
    advertise: str = ""
    data_dir: Path
    rest: str = ""
    admin: str = ""
    metrics: str = ""
    """``--metrics``: the Prometheus listener's address ("" for none)."""
    insecure_bind: bool = False
    token: str | None = None
    """The token this node sends on its own calls (to itself and other nodes); who may call it: ``auth``."""
    auth: AuthConfig = field(default_factory=lambda: AuthConfig())
    tls: TlsConfig = field(default_factory=TlsConfig)
    task_modules: tuple[str, ...] = ()
    sqlite_synchronous: str = "FULL"
    manager: ManagerConfig = field(default_factory=lambda: ManagerConfig(node_id="invalid"))
    cluster: ClusterConfig = field(default_factory=ClusterConfig)
    rest_limits: RestLimits = field(default_factory=RestLimits)
    resp_limits: RespLimits = field(default_factory=RespLimits)
    grpc_limits: GrpcLimits = field(default_factory=GrpcLimits)

    def __post_init__(self) -> None:
        if not NODE_ID_RE.fullmatch(self.node_id):
            raise ConfigError(f"invalid node id {self.node_id!r}: must match {NODE_ID_RE.pattern}")
        if self.token is not None and not self.auth.tokens.enabled:  # built in code with just the shared token
            object.__setattr__(self, "auth", replace(self.auth, tokens=TokenTable.build(shared_token=self.token)))
        if self.auth.tokens.enabled and self.token is None:
            raise ConfigError(f"--tokens-file {self.auth.tokens.source} has no node entry with a plain-text token, "
                              "and no --token-file is given: a node calls itself and the other nodes (cluster "
                              "tasks, cron, --rest) with one; add a [[token]] with role = \"node\" and token = "
                              "\"...\", or give --token-file")
        for flag, address in self.listeners.items():
            check_exposure(flag, address, token=self.auth.tokens.enabled, tls=self.tls.serves,
                           insecure_bind=self.insecure_bind)
        if self.sqlite_synchronous.upper() not in ("OFF", "NORMAL", "FULL", "EXTRA"):
            raise ConfigError("sqlite synchronous must be OFF, NORMAL, FULL or EXTRA")

    @property
    def advertise_address(self) -> str:
        return self.advertise or self.listen

    @property
    def listeners(self) -> dict[str, str]:
        """Flag → address of every listener this node opens."""
        return {flag: address for flag, address in (("--listen", self.listen), ("--rest", self.rest),
                                                    ("--admin", self.admin), ("--metrics", self.metrics)) if address}

    @property
    def db_path(self) -> Path:
        return self.data_dir / "taskward.sqlite3"


class ListenError(ConfigError):
    """An address this process was told to listen on cannot be bound (taken, not local, not allowed)."""


def check_can_listen(address: str) -> None:
    """Bind ``address`` for a moment, as the servers bind it, before anything is created: a port that is
    taken is one ``error:`` line and exit 2, and leaves no data dir behind."""
    host, _, port = address.rpartition(":")
    host = host.strip("[]")
    try:
        infos = socket.getaddrinfo(host, int(port), type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise ListenError(f"cannot listen on {address}: {exc.strerror}") from None
    family, _, _, _, sockaddr = infos[0]
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(sockaddr)
        except OSError as exc:
            reason = os.strerror(exc.errno).lower() if exc.errno else str(exc)
            raise ListenError(f"cannot listen on {address}: {reason}") from None


def check_address(flag: str, address: str) -> str:
    """Validate HOST:PORT and return the host."""
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit() or not 0 <= int(port) < 65536:
        raise ConfigError(f"invalid {flag} address {address!r}: expected HOST:PORT")
    return host.strip("[]")


def is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


MIN_TOKEN_LEN = 16


def read_token(token_file: str, token: str) -> str | None:
    """The bearer token: ``--token-file`` wins over ``TASKWARD_TOKEN``; None means auth is off."""
    if not token_file:
        return token or None
    try:
        token = Path(token_file).read_text().strip()
    except OSError as exc:
        raise ConfigError(f"cannot read --token-file: {exc}") from None
    if not token:
        raise ConfigError("--token-file is empty")
    if Path(token_file).stat().st_mode & 0o077:
        logger.warning("--token-file %s can be read by other users: chmod 600 it", token_file)
    if len(token) < MIN_TOKEN_LEN:
        logger.warning("the bearer token is shorter than %d characters: easy to guess", MIN_TOKEN_LEN)
    return token


@dataclass(frozen=True, slots=True, kw_only=True)
class AuthConfig:
    """Who may call a node or gateway (``tokens``; empty: auth off), where its audit log goes (None: no
    log), and the failed-authentication limit per address (``limit`` 0: none)."""

    tokens: TokenTable = field(default_factory=TokenTable)
    audit_log: Path | None = None
    failure_limit: int = DEFAULT_LIMIT
    failure_window_s: float = DEFAULT_WINDOW_S


AUDIT_OFF = "off"
"""``--audit-log off``: no audit log (a node's default is DATA_DIR/audit.jsonl)."""


def auth_config_from(values: Mapping[str, Any], shared_token: str | None, default_audit: Path | None) -> AuthConfig:
    """The ``--tokens-file``, ``--audit-log`` and ``--auth-failure-*`` settings of a node or gateway."""
    audit: str = values["audit_log"]
    return AuthConfig(tokens=TokenTable.build(tokens_file=values["tokens_file"], shared_token=shared_token),
                      audit_log=None if audit == AUDIT_OFF else Path(audit) if audit else default_audit,
                      failure_limit=values["auth_failure_limit"], failure_window_s=values["auth_failure_window"])


def node_config_from(values: Mapping[str, Any]) -> NodeConfig:
    """The node's sections from resolved settings (``taskward.settings.resolve`` over ``NODE_SETTINGS``)."""
    node_id: str = values["node_id"] or ""
    if not node_id:
        raise ConfigError("--id is required")
    manager = ManagerConfig(
        node_id=node_id, initial_task_ttl=values["task_ttl"], initial_user_task_ttl=values["user_task_ttl"],
        retention_max_age_s=values["retention_max_age"], retention_max_per_module=values["retention_max_per_module"],
        concurrency=values["concurrency"], process_workers=values["process_workers"],
        shutdown_grace_s=values["shutdown_grace"],
        enable_test_api=values["enable_test_api"], keep_finished_on_read=values["keep_finished_on_read"],
    )
    data_dir = Path(values["data_dir"] or f"./taskward-data/{node_id}")
    shared = read_token(values["token_file"], values["token"])
    auth = auth_config_from(values, shared, data_dir / "audit.jsonl")
    lease: int = values["lease_ttl"]
    etcd = EtcdConfig(endpoints=values["etcd"], timeout_s=etcd_timeout_for(lease), cacert=values["etcd_cacert"],
                      cert=values["etcd_cert"], key=values["etcd_key"], user=values["etcd_user"],
                      password=values["etcd_password"])
    cluster = ClusterConfig(etcd=etcd, cluster=values["cluster"], lease_ttl_s=lease,
                            loop_interval_s=loop_interval_for(lease), dead_node_grace_s=values["dead_node_grace"],
                            cron_test_clock=values["cron_test_clock"])
    return NodeConfig(
        node_id=node_id, listen=values["listen"], advertise=values["advertise"],
        data_dir=data_dir, rest=values["rest"], admin=values["admin"], metrics=values["metrics"],
        insecure_bind=values["insecure_bind"], token=auth.tokens.outgoing, auth=auth,
        tls=tls_config_from(values), task_modules=values["tasks"], sqlite_synchronous=values["sqlite_synchronous"],
        manager=manager, cluster=cluster, rest_limits=rest_limits_from(values),
        resp_limits=RespLimits(max_clients=values["admin_max_clients"], auth_timeout_s=values["admin_auth_timeout"],
                               idle_timeout_s=values["admin_idle_timeout"]),
        grpc_limits=GrpcLimits(max_connections=values["grpc_max_connections"], max_rpcs=values["grpc_max_rpcs"],
                               max_streams=values["grpc_max_streams"]),
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class GatewayConfig:
    """``taskward gateway``: REST in front of the listed nodes' gRPC, with the node's bind rules."""

    listen: str = DEFAULT_GATEWAY_LISTEN
    nodes: tuple[str, ...] = (DEFAULT_LISTEN,)
    token: str | None = None
    """The token the gateway sends to the nodes; who may call the gateway: ``auth``."""
    auth: AuthConfig = field(default_factory=lambda: AuthConfig())
    insecure_bind: bool = False
    tls: TlsConfig = field(default_factory=TlsConfig)
    rest_limits: RestLimits = field(default_factory=RestLimits)

    def __post_init__(self) -> None:
        if self.token is not None and not self.auth.tokens.enabled:  # built in code with just the shared token
            object.__setattr__(self, "auth", replace(self.auth, tokens=TokenTable.build(shared_token=self.token)))
        check_exposure("--listen", self.listen, token=self.auth.tokens.enabled, tls=self.tls.serves,
                       insecure_bind=self.insecure_bind)
        if not self.nodes:
            raise ConfigError("--node needs at least one HOST:PORT")
        for address in self.nodes:
            check_address("--node", address)


def gateway_config_from(values: Mapping[str, Any]) -> GatewayConfig:
    """The gateway's section from resolved settings (over ``GATEWAY_SETTINGS``)."""
    auth = auth_config_from(values, read_token(values["token_file"], values["token"]), None)
    return GatewayConfig(listen=values["listen"], nodes=values["node"], token=auth.tokens.outgoing, auth=auth,
                         insecure_bind=values["insecure_bind"], tls=tls_config_from(values),
                         rest_limits=rest_limits_from(values))


def rest_limits_from(values: Mapping[str, Any]) -> RestLimits:
    """The ``--rest-*`` bounds of a node's REST surface or a gateway (the same settings on both)."""
    return RestLimits(max_connections=values["rest_max_connections"], max_requests=values["rest_max_requests"],
                      header_timeout_s=values["rest_header_timeout"])


def tls_config_from(values: Mapping[str, Any]) -> TlsConfig:
    """The ``--tls-*`` files of a node or gateway (the same four settings on both)."""
    return TlsConfig(cert=values["tls_cert"], key=values["tls_key"], client_ca=values["tls_client_ca"],
                     ca=values["tls_ca"])
