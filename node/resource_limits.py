"""What each surface may hold for its clients — connections, requests in flight, bytes and seconds before
a client has authenticated — in one place, with the reason for every value.

A client that has not authenticated may cost the node only a small, fixed amount: the bounds below are
applied before any token is looked at, on every surface, so an anonymous flood on one port can neither
grow the node's memory nor use up the file descriptors that the other surfaces, SQLite and the cluster
need. Values an operator may have to tune (timeouts, caps that depend on the machine) are settings
(``taskward.settings``) whose defaults are the ``DEFAULT_*`` constants here; the rest are fixed.

The sections (``RestLimits``, ``RespLimits``, ``GrpcLimits``) are what each surface receives from its
``NodeConfig`` / ``GatewayConfig``. README's "Resource limits" table describes each value.
"""

from __future__ import annotations

from dataclasses import dataclass

from taskward.errors import ConfigError

# ------------------------------------------------------------------------------------------- REST

REST_MAX_HEADER_BYTES = 32 * 1024
"""Request line plus headers of one request (nginx's default buffers hold 4 buffers of 8 KiB). A taskward request
is a path, a few query parameters and an ``Authorization`` header: a few hundred bytes. Above it the
answer is 431 and the connection closes, so an endless header costs at most this much."""
REST_MAX_URL_BYTES = 8 * 1024
"""Path plus query of one request (Apache's ``LimitRequestLine`` is 8190). The longest legitimate URL,
a cluster start naming its nodes, is far shorter. Above it the answer is 414."""
DEFAULT_REST_HEADER_TIMEOUT_S = 10.0
"""A connection that has not sent complete request headers this long after it opened (or after the
first byte of its next request) is closed: 408 when it sent part of them, silently when it sent
nothing. Without it, half-sent requests stay open for ever (slowloris)."""
DEFAULT_REST_MAX_CONNECTIONS = 1024
"""Open REST connections. One more is answered 503 and closed at once, so a flood of connections can
never take the descriptors gRPC, RESP and SQLite need. Idle keep-alive connections close after
``REST_KEEP_ALIVE_S``, so the cap is reached only by clients that hold connections open on purpose."""
DEFAULT_REST_MAX_REQUESTS = 512
"""Requests being answered at once (``wait_task`` and ``/events`` streams included). One more is
answered 503 with ``Retry-After``, before authentication and before the app runs. It stays below
``GRPC_MAX_STREAMS_PER_CONNECTION``: REST reaches a node over one gRPC connection, so a REST request
is never left waiting for a stream slot the node will not give."""
REST_KEEP_ALIVE_S = 5
"""Idle time after which a keep-alive connection closes (uvicorn's default, stated here)."""
REST_MAX_BODY_BYTES = 1024 * 1024
"""Body of one request (413 above it); the REST app enforces it (``BodyLimitMiddleware``)."""

# ------------------------------------------------------------------------------------------- RESP

RESP_UNAUTH_MAX_ARGS = 10
"""Arguments of one command before ``AUTH`` (Redis 7's limit; ``HELLO 3 AUTH default T SETNAME N`` has
6). More is ``-ERR Protocol error: unauthenticated multibulk length`` and the connection closes."""
RESP_UNAUTH_MAX_BULK_BYTES = 16 * 1024
"""Bytes of one argument before ``AUTH`` (Redis 7's limit; a token is far shorter). More is
``-ERR Protocol error: unauthenticated bulk length`` and the connection closes. With
``RESP_UNAUTH_MAX_ARGS`` it bounds what an anonymous connection makes the node hold to ~160 KiB."""
RESP_UNAUTH_WRITE_BUFFER_BYTES = 64 * 1024
"""Replies queued for an unauthenticated client that does not read them (its reading is paused above
this); an authenticated one may have 1 MiB queued (``taskward.api.resp.server``)."""
RESP_MAX_UNAUTHENTICATED = 64
"""Connections that have not authenticated yet (with a token configured). A new one beyond it evicts
the oldest, so idle anonymous sockets can never lock out a real ``redis-cli``, which authenticates in
its first round trip; an operator's client is never the oldest for long."""
DEFAULT_RESP_MAX_CLIENTS = 1024
"""Open RESP connections (Redis's ``maxclients``); one more gets ``-ERR max number of clients reached``.
Unauthenticated ones are at most ``RESP_MAX_UNAUTHENTICATED`` of them."""
DEFAULT_RESP_AUTH_TIMEOUT_S = 10.0
"""With a token configured, a connection that has not authenticated this long after it opened is
closed, whatever it sends meanwhile."""
DEFAULT_RESP_IDLE_TIMEOUT_S = 300.0
"""A connection that has sent nothing for this long is closed (Redis's ``timeout``; 0: never).
``redis-cli`` reconnects by itself on its next command."""

# ------------------------------------------------------------------------------------------- gRPC

DEFAULT_GRPC_MAX_CONNECTIONS = 2048
"""Open gRPC connections (``grpc.max_allowed_incoming_connections``); more are closed at accept. Each
peer node, gateway, REST surface and client process holds one or a few."""
GRPC_HANDSHAKE_TIMEOUT_S = 10
"""A connection that has not finished its TLS and HTTP/2 handshake by then is closed (gRPC's default is
120 s), so sockets that never speak gRPC do not hold connection slots for long."""
GRPC_MAX_STREAMS_PER_CONNECTION = 1024
"""Concurrent calls on one connection (HTTP/2 ``MAX_CONCURRENT_STREAMS``; gRPC's own default has no
bound). A client past it waits for a free slot rather than failing, so it must stay above what one
client legitimately multiplexes: a REST surface sends up to ``DEFAULT_REST_MAX_REQUESTS`` requests over
one connection, plus the leader's streams."""
DEFAULT_GRPC_MAX_RPCS = 4096
"""Calls being served at once, every kind (``grpc.aio.server(maximum_concurrent_rpcs=...)``); one more
is answered ``RESOURCE_EXHAUSTED`` ("Concurrent RPC limit exceeded!") before authentication."""
DEFAULT_GRPC_MAX_STREAMS = 2048
"""Long-lived calls at once: event and member streams (``WatchEvents``, ``WatchNodes``) and
``WaitTask`` with a timeout. One more is answered ``RESOURCE_EXHAUSTED``. It is below
``DEFAULT_GRPC_MAX_RPCS``, so streams that never end (the leader keeps one to every node; clients follow
events) leave at least the difference to short calls such as ``StartTask`` and ``GetTaskStatus``."""

# --------------------------------------------------------------------------------- descriptors, logs

DESCRIPTOR_RESERVE = 256
"""Descriptors kept for everything but client connections: SQLite and its WAL, the log, etcd and peer
channels, the process pool, a client's listening sockets. The connection caps of the surfaces a process
serves are fitted below the open-file limit minus this reserve (``taskward.descriptors``)."""
ACCEPT_ERROR_LOG_INTERVAL_S = 10.0
"""A listener that cannot accept (descriptors or memory exhausted) fails thousands of times a second;
it is logged at most once per interval, with how often it happened."""


@dataclass(frozen=True, slots=True, kw_only=True)
class RestLimits:
    """A REST listener's bounds (``node --rest`` and ``gateway``)."""

    max_connections: int = DEFAULT_REST_MAX_CONNECTIONS
    max_requests: int = DEFAULT_REST_MAX_REQUESTS
    header_timeout_s: float = DEFAULT_REST_HEADER_TIMEOUT_S
    max_header_bytes: int = REST_MAX_HEADER_BYTES
    max_url_bytes: int = REST_MAX_URL_BYTES

    def __post_init__(self) -> None:
        _positive(rest_max_connections=self.max_connections, rest_max_requests=self.max_requests,
                  rest_header_timeout=self.header_timeout_s)
        if self.max_url_bytes > self.max_header_bytes:
            raise ConfigError("the REST URL limit must not exceed the header limit (the URL is part of it)")


@dataclass(frozen=True, slots=True, kw_only=True)
class RespLimits:
    """The RESP3 admin listener's bounds (``node --admin``)."""

    max_clients: int = DEFAULT_RESP_MAX_CLIENTS
    max_unauthenticated: int = RESP_MAX_UNAUTHENTICATED
    auth_timeout_s: float = DEFAULT_RESP_AUTH_TIMEOUT_S
    idle_timeout_s: float = DEFAULT_RESP_IDLE_TIMEOUT_S
    """0: idle connections are never closed."""

    def __post_init__(self) -> None:
        _positive(admin_max_clients=self.max_clients, admin_auth_timeout=self.auth_timeout_s)
        if self.max_unauthenticated < 1 or self.idle_timeout_s < 0:
            raise ConfigError("RESP limits: need at least one unauthenticated slot and an idle timeout >= 0")


@dataclass(frozen=True, slots=True, kw_only=True)
class GrpcLimits:
    """The gRPC listener's bounds."""

    max_connections: int = DEFAULT_GRPC_MAX_CONNECTIONS
    max_rpcs: int = DEFAULT_GRPC_MAX_RPCS
    max_streams: int = DEFAULT_GRPC_MAX_STREAMS
    max_streams_per_connection: int = GRPC_MAX_STREAMS_PER_CONNECTION
    handshake_timeout_s: float = GRPC_HANDSHAKE_TIMEOUT_S

    def __post_init__(self) -> None:
        _positive(grpc_max_connections=self.max_connections, grpc_max_rpcs=self.max_rpcs,
                  grpc_max_streams=self.max_streams)
        if self.max_streams >= self.max_rpcs:
            raise ConfigError(f"--grpc-max-streams ({self.max_streams}) must be below --grpc-max-rpcs "
                              f"({self.max_rpcs}): streams that never end would otherwise leave no room for "
                              "short calls")

    def server_options(self) -> list[tuple[str, int]]:
        """The ``grpc.aio.server`` channel arguments that enforce these bounds (the total is its
        ``maximum_concurrent_rpcs`` argument; the stream cap is ``taskward.api.grpc.limits``)."""
        return [
            ("grpc.max_allowed_incoming_connections", self.max_connections),
            ("grpc.max_concurrent_streams", self.max_streams_per_connection),
            ("grpc.server_handshake_timeout_ms", int(self.handshake_timeout_s * 1000)),
        ]


def _positive(**values: float) -> None:
    for name, value in values.items():
        if not value > 0:
            raise ConfigError(f"--{name.replace('_', '-')} must be greater than 0, got {value:g}")
