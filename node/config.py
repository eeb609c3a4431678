"""Node configuration: frozen sections, validated once, built from CLI > ``TASKWARD_*`` env > defaults.

Nothing else in the code base reads the environment; each component receives only its own section.
"""

from __future__ import annotations

import argparse
import ipaddress
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from taskward.coordinator.config import CoordinatorConfig
from taskward.errors import ConfigError
from taskward.model import NODE_ID_RE

DEFAULT_LISTEN = "127.0.0.1:7100"


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
    shutdown_grace_s: float = 5.0
    enable_test_api: bool = False

    def __post_init__(self) -> None:
        if self.initial_task_ttl < 0 or self.initial_user_task_ttl < 0:
            raise ConfigError("task ttl values must be >= 0")
        if self.retention_max_per_module < 1 or self.retention_max_age_s <= 0:
            raise ConfigError("retention must keep at least one task for a positive time")
        if self.shutdown_grace_s < 0:
            raise ConfigError("shutdown grace must be >= 0")
        if self.concurrency < 1 or self.sync_threads < 1:
            raise ConfigError("concurrency and sync threads must be >= 1")


@dataclass(frozen=True, slots=True, kw_only=True)
class NodeConfig:
    node_id: str
    listen: str = DEFAULT_LISTEN
    advertise: str = ""
    data_dir: Path
    rest: str = ""
    admin: str = ""
    insecure_bind: bool = False
    token: str | None = None
    task_modules: tuple[str, ...] = ()
    sqlite_synchronous: str = "FULL"
    manager: ManagerConfig = field(default_factory=lambda: ManagerConfig(node_id="invalid"))
    coordinator: CoordinatorConfig = field(default_factory=CoordinatorConfig)

    def __post_init__(self) -> None:
        if not NODE_ID_RE.fullmatch(self.node_id):
            raise ConfigError(f"invalid node id {self.node_id!r}: must match {NODE_ID_RE.pattern}")
        for flag, address in (("--listen", self.listen), ("--rest", self.rest), ("--admin", self.admin)):
            if not address:
                continue
            host = check_address(flag, address)
            if self.token is None and not self.insecure_bind and not is_loopback(host):
                raise ConfigError(
                    f"refusing to bind {flag} {address} without a token: use --token-file or --insecure-bind"
                )
        if self.sqlite_synchronous.upper() not in ("OFF", "NORMAL", "FULL", "EXTRA"):
            raise ConfigError("sqlite synchronous must be OFF, NORMAL, FULL or EXTRA")

    @property
    def advertise_address(self) -> str:
        return self.advertise or self.listen

    @property
    def db_path(self) -> Path:
        return self.data_dir / "taskward.sqlite3"


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


def add_node_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--id", dest="node_id", help="node id (env TASKWARD_NODE_ID)")
    p.add_argument("--listen", help=f"gRPC HOST:PORT (default {DEFAULT_LISTEN})")
    p.add_argument("--advertise", help="gRPC HOST:PORT other nodes use (default: --listen)")
    p.add_argument("--data-dir", help="data directory (default ./taskward-data/ID)")
    p.add_argument("--rest", help="serve the ScyllaDB-compatible REST API on HOST:PORT")
    p.add_argument("--admin", help="serve the RESP3 admin protocol (redis-cli -3) on HOST:PORT")
    p.add_argument("--insecure-bind", action="store_true", default=None,
                   help="allow non-loopback addresses without a token")
    p.add_argument("--enable-test-api", action="store_true", default=None)
    p.add_argument("--task-ttl", type=int, help="task_ttl on first start of a data dir (default 0)")
    p.add_argument("--user-task-ttl", type=int, help="user_task_ttl on first start (default 3600)")
    p.add_argument("--token-file", help="file holding the bearer token (env TASKWARD_TOKEN)")
    p.add_argument("--tasks", action="append", default=[], metavar="MODULE", help="import task types")
    p.add_argument("--concurrency", type=int, help="root operations run at once (default 16)")
    p.add_argument("--retention-max-age", type=float, help="seconds finished tasks are kept (86400)")
    p.add_argument("--retention-max-per-module", type=int, help="finished tasks kept per module (100)")
    p.add_argument("--sqlite-synchronous", help="SQLite synchronous setting (default FULL)")
    p.add_argument("--etcd", help="etcd endpoints URL[,URL...]: join the cluster kept there (default: run alone)")
    p.add_argument("--cluster", help="cluster name inside etcd (default 'default')")
    p.add_argument("--dead-node-grace", type=float, help="seconds before children on a dead node fail (60)")
    p.add_argument("--lease-ttl", type=int, help="membership/leader lease TTL in seconds (6)")
    p.add_argument("--etcd-cacert", help="CA bundle for etcd TLS")
    p.add_argument("--etcd-cert", help="client certificate for etcd TLS")
    p.add_argument("--etcd-key", help="client key for etcd TLS")
    p.add_argument("--etcd-user", help="etcd user (password from TASKWARD_ETCD_PASSWORD)")
    p.add_argument("--shutdown-grace", type=float, help="seconds running tasks get to finish on shutdown (5)")


def _pick(cli: object, env: Mapping[str, str], name: str, default: object, conv: type = str) -> object:
    if cli is not None:
        return cli
    raw = env.get(f"TASKWARD_{name.upper()}")
    if raw is None:
        return default
    try:
        return conv(raw)
    except ValueError:
        raise ConfigError(f"TASKWARD_{name.upper()}={raw!r} is not a valid {conv.__name__}") from None


def read_token(token_file: str | None, env: Mapping[str, str]) -> str | None:
    """The bearer token: ``--token-file`` wins over ``TASKWARD_TOKEN``; None means auth is off."""
    if not token_file:
        return env.get("TASKWARD_TOKEN") or None
    try:
        token = Path(token_file).read_text().strip()
    except OSError as exc:
        raise ConfigError(f"cannot read --token-file: {exc}") from None
    if not token:
        raise ConfigError("--token-file is empty")
    return token


def node_config_from(args: argparse.Namespace, env: Mapping[str, str] | None = None) -> NodeConfig:
    """The only place that reads the environment."""
    env = os.environ if env is None else env
    node_id = str(_pick(args.node_id, env, "node_id", ""))
    if not node_id:
        raise ConfigError("--id is required")
    token = read_token(args.token_file, env)
    manager = ManagerConfig(
        node_id=node_id,
        initial_task_ttl=int(_pick(args.task_ttl, env, "task_ttl", 0, int)),  # type: ignore[call-overload]
        initial_user_task_ttl=int(_pick(args.user_task_ttl, env, "user_task_ttl", 3600, int)),  # type: ignore[call-overload]
        retention_max_age_s=float(_pick(args.retention_max_age, env, "retention_max_age", 86400.0, float)),  # type: ignore[arg-type]
        retention_max_per_module=int(
            _pick(args.retention_max_per_module, env, "retention_max_per_module", 100, int)  # type: ignore[call-overload]
        ),
        concurrency=int(_pick(args.concurrency, env, "concurrency", 16, int)),  # type: ignore[call-overload]
        shutdown_grace_s=float(_pick(args.shutdown_grace, env, "shutdown_grace", 5.0, float)),  # type: ignore[arg-type]
        enable_test_api=bool(args.enable_test_api or env.get("TASKWARD_ENABLE_TEST_API") == "1"),
    )
    lease_ttl = int(_pick(args.lease_ttl, env, "lease_ttl", 6, int))  # type: ignore[call-overload]
    coordinator = CoordinatorConfig(
        etcd_endpoints=tuple(e for e in str(_pick(args.etcd, env, "etcd", "")).split(",") if e),
        cluster=str(_pick(args.cluster, env, "cluster", "default")),
        lease_ttl_s=lease_ttl,
        etcd_timeout_s=min(2.0, max(0.5, (lease_ttl - 0.5) / 2.5)),
        loop_interval_s=min(0.5, lease_ttl / 6),
        dead_node_grace_s=float(_pick(args.dead_node_grace, env, "dead_node_grace", 60.0, float)),  # type: ignore[arg-type]
        etcd_cacert=args.etcd_cacert or "", etcd_cert=args.etcd_cert or "", etcd_key=args.etcd_key or "",
        etcd_user=args.etcd_user or "", etcd_password=env.get("TASKWARD_ETCD_PASSWORD", ""),
    )
    return NodeConfig(
        coordinator=coordinator,
        node_id=node_id,
        listen=str(_pick(args.listen, env, "listen", DEFAULT_LISTEN)),
        advertise=str(_pick(args.advertise, env, "advertise", "")),
        data_dir=Path(str(_pick(args.data_dir, env, "data_dir", f"./taskward-data/{node_id}"))),
        rest=str(_pick(args.rest, env, "rest", "")),
        admin=str(_pick(args.admin, env, "admin", "")),
        insecure_bind=bool(args.insecure_bind or env.get("TASKWARD_INSECURE_BIND") == "1"),
        token=token,
        task_modules=tuple(args.tasks),
        sqlite_synchronous=str(_pick(args.sqlite_synchronous, env, "sqlite_synchronous", "FULL")).upper(),
        manager=manager,
    )


DEFAULT_GATEWAY_LISTEN = "127.0.0.1:10000"


@dataclass(frozen=True, slots=True, kw_only=True)
class GatewayConfig:
    """``taskward gateway``: REST in front of the listed nodes' gRPC, with the node's bind rules."""

    listen: str = DEFAULT_GATEWAY_LISTEN
    nodes: tuple[str, ...] = (DEFAULT_LISTEN,)
    token: str | None = None
    insecure_bind: bool = False

    def __post_init__(self) -> None:
        host = check_address("--listen", self.listen)
        if self.token is None and not self.insecure_bind and not is_loopback(host):
            raise ConfigError(
                f"refusing to bind --listen {self.listen} without a token: use --token-file or --insecure-bind"
            )
        if not self.nodes:
            raise ConfigError("--node needs at least one HOST:PORT")
        for address in self.nodes:
            check_address("--node", address)


def add_gateway_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--listen", help=f"REST HOST:PORT (default {DEFAULT_GATEWAY_LISTEN})")
    p.add_argument("--node", help=f"gRPC HOST:PORT[,HOST:PORT...] of the nodes, in failover order "
                                  f"(default {DEFAULT_LISTEN})")
    p.add_argument("--token-file", help="bearer token file (env TASKWARD_TOKEN); required on REST and sent to nodes")
    p.add_argument("--insecure-bind", action="store_true", default=None,
                   help="allow a non-loopback --listen without a token")


def gateway_config_from(args: argparse.Namespace, env: Mapping[str, str] | None = None) -> GatewayConfig:
    env = os.environ if env is None else env
    token = read_token(args.token_file, env)
    nodes = str(_pick(args.node, env, "gateway_nodes", DEFAULT_LISTEN))
    return GatewayConfig(
        listen=str(_pick(args.listen, env, "gateway_listen", DEFAULT_GATEWAY_LISTEN)),
        nodes=tuple(n.strip() for n in nodes.split(",") if n.strip()),
        token=token,
        insecure_bind=bool(args.insecure_bind or env.get("TASKWARD_INSECURE_BIND") == "1"),
    )
