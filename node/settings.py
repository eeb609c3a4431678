"""Every setting of ``taskward node`` and ``taskward gateway``, described once.

A ``Setting`` names its flag, its environment variable, its default, its help and its parser; the
argparse flags, the environment reading, the ``--config`` file's keys and the README's tables all come
from these lists, so a setting cannot exist on one path and be missing on another. ``resolve`` applies
the precedence CLI > ``TASKWARD_*`` environment > ``--config`` file (TOML) > default, and every value,
from whichever source, goes through the same parser, so a bad value is refused with the same words.

The config objects (``taskward.config``) are built from the resolved values; nothing else in the code
base reads the environment.
"""

from __future__ import annotations

import argparse
import tomllib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from taskward.errors import ConfigError
from taskward.resource_limits import (
    DEFAULT_GRPC_MAX_CONNECTIONS,
    DEFAULT_GRPC_MAX_RPCS,
    DEFAULT_GRPC_MAX_STREAMS,
    DEFAULT_RESP_AUTH_TIMEOUT_S,
    DEFAULT_RESP_IDLE_TIMEOUT_S,
    DEFAULT_RESP_MAX_CLIENTS,
    DEFAULT_REST_HEADER_TIMEOUT_S,
    DEFAULT_REST_MAX_CONNECTIONS,
    DEFAULT_REST_MAX_REQUESTS,
    RESP_MAX_UNAUTHENTICATED,
)

DEFAULT_LISTEN = "127.0.0.1:7100"
DEFAULT_GATEWAY_LISTEN = "127.0.0.1:10000"
MAX_TTL = 2**32 - 1  # ScyllaDB's task_ttl_in_seconds is an unsigned 32-bit integer
_TRUE = frozenset({"true", "1", "yes"})
_FALSE = frozenset({"false", "0", "no"})


# ---------------------------------------------------------------------- parsers (str -> value)


def text(raw: str) -> str:
    return raw


def boolean(raw: str) -> bool:
    """``true/false/1/0/yes/no``, any case."""
    word = raw.strip().lower()
    if word in _TRUE:
        return True
    if word in _FALSE:
        return False
    raise ValueError("expected true/false/1/0/yes/no")


def integer(lo: int = 0, hi: int = 2**63 - 1) -> Callable[[str], int]:
    def parse(raw: str) -> int:
        try:
            value = int(raw.strip(), 10)
        except ValueError:
            raise ValueError("expected an integer") from None
        if not lo <= value <= hi:
            raise ValueError(f"expected an integer from {lo} to {hi}")
        return value

    return parse


def number(lo: float = 0.0) -> Callable[[str], float]:
    def parse(raw: str) -> float:
        try:
            value = float(raw.strip())
        except ValueError:
            raise ValueError("expected a number") from None
        if not value >= lo or value == float("inf"):
            raise ValueError(f"expected a finite number >= {lo:g}")
        return value

    return parse


def lower_choice(*choices: str) -> Callable[[str], str]:
    def parse(raw: str) -> str:
        if raw.strip().lower() not in choices:
            raise ValueError(f"expected one of {', '.join(choices)}")
        return raw.strip().lower()

    return parse


def comma_list(raw: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in raw.split(",") if part.strip())


def one_of(*choices: str) -> Callable[[str], str]:
    def parse(raw: str) -> str:
        if raw.upper() not in choices:
            raise ValueError(f"expected one of {', '.join(choices)}")
        return raw.upper()

    return parse


# ---------------------------------------------------------------------- the description


@dataclass(frozen=True, slots=True, kw_only=True)
class Setting:
    """One setting. ``name`` is the long flag without ``--`` and the key in a config file (``_`` is
    accepted for ``-`` there). ``flag=False``: environment and file only (a secret kept out of argv).
    ``switch``: a flag that takes no value. ``repeatable``: the flag may be given again, each adding
    one value; the environment and the file give a comma-separated list (or a TOML array)."""

    name: str
    help: str
    parse: Callable[[str], Any] = text
    default: Any = None
    dest: str = ""
    env: str = ""
    metavar: str = ""
    flag: bool = True
    switch: bool = False
    repeatable: bool = False

    @property
    def key(self) -> str:
        return self.dest or self.name.replace("-", "_")

    @property
    def env_name(self) -> str:
        return self.env or "TASKWARD_" + self.name.replace("-", "_").upper()

    def read(self, raw: str, source: str) -> Any:
        """``raw`` through the parser; a bad value is a ``ConfigError`` naming where it came from."""
        try:
            if self.repeatable:
                return tuple(self.parse(part) for part in comma_list(raw))
            return self.parse(raw)
        except ValueError as exc:
            raise ConfigError(f"invalid {source} {raw!r}: {exc}") from None


LOG_SETTINGS: tuple[Setting, ...] = (
    Setting(name="log-level", parse=lower_choice("debug", "info", "warning", "error"), default="info",
            metavar="LEVEL", help="debug, info, warning or error"),
    Setting(name="log-format", parse=lower_choice("text", "json"), default="text", metavar="FORMAT",
            help="text, or json (one object per line: time, level, logger, message, node; task_id, module, type "
                 "on lines about a task)"),
)

TLS_SETTINGS: tuple[Setting, ...] = (
    Setting(name="tls-cert", default="", metavar="FILE",
            help="PEM certificate (chain): TLS on every listener, and this process's client certificate on its "
                 "own calls; reloaded on SIGHUP"),
    Setting(name="tls-key", default="", metavar="FILE", help="PEM private key of --tls-cert (unencrypted)"),
    Setting(name="tls-client-ca", default="", metavar="FILE",
            help="require client certificates signed by this PEM CA on every listener (mTLS)"),
    Setting(name="tls-ca", default="", metavar="FILE",
            help="PEM CA bundle that verifies the nodes this process calls (TLS on those calls; default with "
                 "--tls-cert: the system's roots)"),
)

AUTH_LIMIT_SETTINGS: tuple[Setting, ...] = (
    Setting(name="auth-failure-limit", parse=integer(0, 1_000_000), default=10, metavar="N",
            help="wrong tokens from one address within --auth-failure-window after which its attempts are refused "
                 "unchecked until the window ends (0: no limit)"),
    Setting(name="auth-failure-window", parse=number(1.0), default=60.0, metavar="S",
            help="the window of --auth-failure-limit, in seconds"),
)

# Resource bounds applied before authentication (taskward.resource_limits says why each default is what it is).
REST_LIMIT_SETTINGS: tuple[Setting, ...] = (
    Setting(name="rest-header-timeout", parse=number(0.05), default=DEFAULT_REST_HEADER_TIMEOUT_S, metavar="S",
            help="REST: close a connection that has not sent complete request headers within S seconds (408)"),
    Setting(name="rest-max-connections", parse=integer(1), default=DEFAULT_REST_MAX_CONNECTIONS, metavar="N",
            help="REST: open connections; one more is answered 503 and closed"),
    Setting(name="rest-max-requests", parse=integer(1), default=DEFAULT_REST_MAX_REQUESTS, metavar="N",
            help="REST: requests in progress (waits and event streams included); one more is answered 503"),
)

NODE_LIMIT_SETTINGS: tuple[Setting, ...] = (
    *REST_LIMIT_SETTINGS,
    Setting(name="admin-max-clients", parse=integer(1), default=DEFAULT_RESP_MAX_CLIENTS, metavar="N",
            help=f"RESP: open connections (unauthenticated ones evict each other beyond {RESP_MAX_UNAUTHENTICATED})"),
    Setting(name="admin-auth-timeout", parse=number(0.05), default=DEFAULT_RESP_AUTH_TIMEOUT_S, metavar="S",
            help="RESP: with a token, close a connection not authenticated within S seconds"),
    Setting(name="admin-idle-timeout", parse=number(), default=DEFAULT_RESP_IDLE_TIMEOUT_S, metavar="S",
            help="RESP: close a connection that sent nothing for S seconds (0: never)"),
    Setting(name="grpc-max-connections", parse=integer(1), default=DEFAULT_GRPC_MAX_CONNECTIONS, metavar="N",
            help="gRPC: open connections; more are closed at once"),
    Setting(name="grpc-max-rpcs", parse=integer(2), default=DEFAULT_GRPC_MAX_RPCS, metavar="N",
            help="gRPC: calls in progress; one more is answered RESOURCE_EXHAUSTED"),
    Setting(name="grpc-max-streams", parse=integer(1), default=DEFAULT_GRPC_MAX_STREAMS, metavar="N",
            help="gRPC: event streams and waits in progress, below --grpc-max-rpcs so short calls always get through"),
)

CONFIG = Setting(name="config", metavar="FILE",
                 help="read settings from this TOML file (keys are the long flag names); CLI and environment win")

NODE_SETTINGS: tuple[Setting, ...] = (
    Setting(name="id", dest="node_id", env="TASKWARD_NODE_ID", metavar="ID",
            help="node id, [A-Za-z0-9][A-Za-z0-9._-]{0,62} (required)"),
    Setting(name="listen", default=DEFAULT_LISTEN, metavar="HOST:PORT", help="gRPC address"),
    Setting(name="advertise", default="", metavar="HOST:PORT",
            help="address other nodes and gateways use (default: the listen address)"),
    Setting(name="data-dir", default="", metavar="DIR",
            help="SQLite database and node state (default ./taskward-data/ID)"),
    Setting(name="rest", default="", metavar="HOST:PORT", help="serve the ScyllaDB-compatible REST API"),
    Setting(name="admin", default="", metavar="HOST:PORT", help="serve the RESP3 admin protocol for redis-cli -3"),
    Setting(name="metrics", default="", metavar="HOST:PORT",
            help="serve Prometheus metrics at /metrics on this address (--rest serves them too)"),
    Setting(name="insecure-bind", parse=boolean, default=False, switch=True,
            help="allow non-loopback --listen/--rest/--admin/--metrics addresses without a token and TLS (logged "
                 "as a warning)"),
    *TLS_SETTINGS,
    Setting(name="enable-test-api", parse=boolean, default=False, switch=True,
            help="serve ScyllaDB's test API (module test)"),
    Setting(name="task-ttl", parse=integer(0, MAX_TTL), default=0, metavar="S",
            help="task_ttl on the first start of a data dir"),
    Setting(name="user-task-ttl", parse=integer(0, MAX_TTL), default=3600, metavar="S",
            help="user_task_ttl on the first start of a data dir"),
    Setting(name="keep-finished-on-read", parse=boolean, default=False, switch=True,
            help="status reads do not unregister finished roots (they stay until their TTL)"),
    Setting(name="token-file", default="", metavar="FILE",
            help="file holding the bearer token (or the token itself in TASKWARD_TOKEN): one token with role node, "
                 "also sent on this node's own calls"),
    Setting(name="token", flag=False, default="", help="the bearer token itself"),
    Setting(name="tokens-file", default="", metavar="FILE",
            help="TOML file of named tokens with roles read, operate, admin or node ([[token]] name, role, token or "
                 "sha256)"),
    Setting(name="audit-log", default="", metavar="FILE",
            help="append-only JSON-lines log of every mutating call and failed authentication (default "
                 "DATA_DIR/audit.jsonl; off: none)"),
    *AUTH_LIMIT_SETTINGS,
    Setting(name="tasks", repeatable=True, default=(), metavar="MODULE",
            help="import task types (and middleware) from a Python module (repeatable)"),
    Setting(name="concurrency", parse=integer(1), default=16, metavar="N", help="root operations running at once"),
    Setting(name="process-workers", parse=integer(0, 1024), default=0, metavar="N",
            help="worker processes running the bodies of executor=\"process\" task types at once (0: one per core)"),
    Setting(name="retention-max-age", parse=number(0.001), default=86400.0, metavar="S",
            help="finished tasks are kept at most this long"),
    Setting(name="retention-max-per-module", parse=integer(1), default=100, metavar="N",
            help="finished tasks kept per module"),
    Setting(name="shutdown-grace", parse=number(), default=5.0, metavar="S",
            help="on SIGTERM, seconds running bodies get before they are cancelled"),
    Setting(name="sqlite-synchronous", parse=one_of("OFF", "NORMAL", "FULL", "EXTRA"), default="FULL", metavar="MODE",
            help="SQLite synchronous (FULL survives power loss; NORMAL survives process crashes)"),
    Setting(name="etcd", parse=comma_list, default=(), metavar="URL[,URL...]",
            help="etcd endpoints: join the cluster kept there (default: run alone on an embedded store)"),
    Setting(name="cluster", default="default", metavar="NAME", help="keys live under /taskward/NAME/ in etcd"),
    Setting(name="lease-ttl", parse=integer(2, 3600), default=6, metavar="S",
            help="membership and leader lease: a dead node or leader is noticed after this"),
    Setting(name="dead-node-grace", parse=number(), default=60.0, metavar="S",
            help="a child whose node stays down longer fails with 'node ID unavailable'"),
    Setting(name="etcd-cacert", default="", metavar="FILE", help="CA bundle for etcd TLS"),
    Setting(name="etcd-cert", default="", metavar="FILE", help="client certificate for etcd TLS"),
    Setting(name="etcd-key", default="", metavar="FILE", help="client key for etcd TLS"),
    Setting(name="etcd-user", default="", metavar="USER", help="etcd user (password in TASKWARD_ETCD_PASSWORD)"),
    Setting(name="etcd-password", flag=False, default="", help="the etcd user's password"),
    Setting(name="cron-test-clock", default="", metavar="EPOCH:SPEED",
            help="tests only: run the cron scheduler on a clock SPEED times faster than the wall clock from EPOCH "
                 "(Unix seconds), the same on every node"),
    *NODE_LIMIT_SETTINGS,
    *LOG_SETTINGS,
)

GATEWAY_SETTINGS: tuple[Setting, ...] = (
    Setting(name="listen", env="TASKWARD_GATEWAY_LISTEN", default=DEFAULT_GATEWAY_LISTEN, metavar="HOST:PORT",
            help="REST address"),
    Setting(name="node", env="TASKWARD_GATEWAY_NODES", parse=comma_list, default=(DEFAULT_LISTEN,),
            metavar="HOST:PORT[,HOST:PORT...]", help="gRPC addresses of the nodes, in failover order"),
    Setting(name="token-file", default="", metavar="FILE",
            help="bearer token file (or TASKWARD_TOKEN): one token with role node on REST, and sent to the nodes"),
    Setting(name="token", flag=False, default="", help="the bearer token itself"),
    Setting(name="tokens-file", default="", metavar="FILE",
            help="TOML file of named tokens with roles (as on a node); the first node entry with a plain-text "
                 "token is sent to the nodes unless --token-file is given"),
    Setting(name="audit-log", default="", metavar="FILE",
            help="append-only JSON-lines log of every mutating call and failed authentication (default: none)"),
    *AUTH_LIMIT_SETTINGS,
    Setting(name="insecure-bind", parse=boolean, default=False, switch=True,
            help="allow a non-loopback --listen without a token and TLS (logged as a warning)"),
    *TLS_SETTINGS,
    *REST_LIMIT_SETTINGS,
    *LOG_SETTINGS,
)


# ---------------------------------------------------------------------- resolution


def add_arguments(parser: argparse.ArgumentParser, settings: Sequence[Setting]) -> None:
    """One flag per setting (``--config`` too); every default is None, so ``resolve`` sees what was given."""
    for s in (CONFIG, *settings):
        if not s.flag:
            continue
        help_text = f"{s.help} (env {s.env_name})"
        if s.switch:
            parser.add_argument(f"--{s.name}", dest=s.key, action="store_const", const="true", default=None,
                                help=help_text)
        elif s.repeatable:
            parser.add_argument(f"--{s.name}", dest=s.key, action="append", default=None, metavar=s.metavar,
                                help=help_text)
        else:
            parser.add_argument(f"--{s.name}", dest=s.key, default=None, metavar=s.metavar or None, help=help_text)


def read_config_file(path: str, settings: Sequence[Setting]) -> dict[str, str]:
    """A TOML file's settings as raw strings, keyed by setting; an unknown key is an error."""
    try:
        with Path(path).open("rb") as f:
            data = tomllib.load(f)
    except OSError as exc:
        raise ConfigError(f"cannot read --config {path}: {exc.strerror or exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"--config {path} is not valid TOML: {exc}") from None
    by_name = {s.name: s for s in settings}
    out: dict[str, str] = {}
    for key, value in data.items():
        s = by_name.get(key.replace("_", "-"))
        if s is None:
            raise ConfigError(f"unknown setting {key!r} in {path}")
        out[s.key] = _toml_text(value, s, path)
    return out


def _toml_text(value: object, s: Setting, path: str) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float | str):
        return str(value)
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return ",".join(value)
    raise ConfigError(f"invalid {s.name} in {path}: expected a string, number, boolean or list of strings")


def resolve(settings: Sequence[Setting], args: argparse.Namespace, env: Mapping[str, str]) -> dict[str, Any]:
    """Each setting's value: CLI > environment > ``--config`` file > default, parsed alike."""
    config_path = getattr(args, CONFIG.key, None) or env.get(CONFIG.env_name)
    from_file = read_config_file(config_path, settings) if config_path else {}
    values: dict[str, Any] = {}
    for s in settings:
        given = getattr(args, s.key, None) if s.flag else None
        if given is not None:
            raw = ",".join(given) if isinstance(given, list) else str(given)
            values[s.key] = s.read(raw, f"--{s.name}")
        elif s.env_name in env:
            values[s.key] = s.read(env[s.env_name], s.env_name)
        elif s.key in from_file:
            values[s.key] = s.read(from_file[s.key], f"{s.name} in {config_path}")
        else:
            values[s.key] = s.default
    return values


def markdown_table(settings: Sequence[Setting]) -> str:
    """The settings as README shows them (a unit test keeps README equal to this)."""
    rows = ["| flag | environment | meaning | default |", "|---|---|---|---|"]
    for s in settings:
        flag = f"`--{s.name}{' ' + s.metavar if s.metavar and not s.switch else ''}`" if s.flag else "(none)"
        default = s.default
        if isinstance(default, tuple):
            default = ",".join(default)
        elif isinstance(default, float) and default.is_integer():
            default = int(default)
        shown = "off" if default is False else "—" if default in ("", None) else f"`{default}`"
        rows.append(f"| {flag} | `{s.env_name}` | {s.help.replace('|', chr(92) + '|')} | {shown} |")
    return "\n".join(rows)
