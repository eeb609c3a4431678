"""The REST surface: one FastAPI app served by ``taskward node --rest`` and ``taskward gateway``.

The app is a thin adapter over gRPC (architecture: Layering): it holds a ``NodePool`` of gRPC channels (the client
library's routing layer, ``taskward.client.node_pool``) — the node's
own listen address for ``node --rest``, the ``--node`` list for a gateway — and never a TaskManager,
so a gateway in front of a cluster and a node's own REST port answer with the same code.

uvicorn runs inside the caller's event loop (the node's, or the gateway's), on a socket we bind
ourselves: a bind error is then an ordinary ``OSError`` for the caller, not uvicorn's ``sys.exit``,
and uvicorn's own signal handling is switched off because the process owner handles SIGTERM/SIGINT.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import ssl
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import grpc
import uvicorn
from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from prometheus_client import CollectorRegistry

from taskward import __version__
from taskward.api.rest.aeordb_routes import router as aeordb_router
from taskward.api.rest.auth import AccessMiddleware, route_table
from taskward.api.rest.bounded_http import bounded_protocol
from taskward.api.rest.common import EXCEPTION_HANDLERS, JsonResponse
from taskward.api.rest.cron_routes import router as cron_router
from taskward.api.rest.dashboard_routes import router as dashboard_router
from taskward.api.rest.docs_routes import router as docs_router
from taskward.api.rest.middleware import (
    OPEN_PATHS,
    BodyLimitMiddleware,
    MetricsMiddleware,
    RestMetrics,
)
from taskward.api.rest.scylla_routes import router as task_manager_router
from taskward.api.rest.scylla_routes import test_router
from taskward.api.rest.taskward_routes import EventStreams
from taskward.api.rest.taskward_routes import router as extra_router
from taskward.api.rest.ui_routes import router as ui_router
from taskward.client.node_pool import NodePool
from taskward.config import NodeConfig, check_address
from taskward.resource_limits import REST_KEEP_ALIVE_S, REST_MAX_BODY_BYTES, RestLimits
from taskward.security.access import AUDITED_KEY, AccessControl
from taskward.security.tls import Certificates
from taskward.security.tokens import TokenTable

logger = logging.getLogger(__name__)

BODY_LIMIT = REST_MAX_BODY_BYTES
SHUTDOWN_GRACE_S = 2  # seconds in-flight requests (e.g. a wait_task) get on stop
WILDCARDS = frozenset({"0.0.0.0", "", "*"})
REST_ALPN = ("http/1.1",)  # uvicorn's HTTP/1.1 protocols; named in the TLS handshake for clients that ask
DESCRIPTION = """ScyllaDB-compatible task manager REST API (`/task_manager/*`, `/task_manager_test/*`) plus
taskward's own endpoints. Errors are `{"message": ..., "code": N}`. With tokens configured, every path but
`/health`, `/docs`, `/openapi.json` and the dashboard's files needs `Authorization: Bearer TOKEN` (401
without; 429 from an address with too many failed attempts), and the token's role must allow the call
(`read`, `operate`, `admin`, `node`; 403 `permission denied: ...` otherwise). Bodies over 1 MiB are refused
with 413."""


ROUTERS = (task_manager_router, test_router, extra_router, cron_router, aeordb_router, docs_router, dashboard_router,
           ui_router)


@dataclass(frozen=True, slots=True, kw_only=True)
class RestSettings:
    """What one REST app needs: where to listen, which nodes to call, and the shared secret."""

    listen: str
    nodes: tuple[str, ...]
    token: str | None = None
    credentials: grpc.ChannelCredentials | None = None
    """TLS to the nodes (``taskward.security.tls``), plaintext when None."""
    server_name: str = ""
    """The name the nodes' certificates must carry, when not the host REST dials (a node's own loopback hop)."""
    body_limit: int = BODY_LIMIT
    locate_timeout_s: float = 2.0
    merged_events: bool = False
    """``/events`` merges every listed node's stream (a gateway) instead of serving the first node's."""
    access: AccessControl | None = None
    """Who may call, the audit log, the failed-auth limit (``taskward.security.access``); None: ``token``
    alone, with role node."""
    own_hop: bool = False
    """The app runs in the node it calls (``node --rest``, with the node's ``access``): its calls carry the
    node's ``hop_secret`` (see ``AccessControl``)."""


def create_app(settings: RestSettings, pool: NodePool | None = None, *,
               node_metrics: CollectorRegistry | None = None) -> FastAPI:
    """``node_metrics``: the registry of the node this app runs in (``node --rest``), shown on ``/metrics``."""
    app = FastAPI(
        title="taskward", version=__version__, description=DESCRIPTION, redoc_url=None, docs_url=None,
        default_response_class=JsonResponse, exception_handlers=EXCEPTION_HANDLERS,
        # No redirect to the path without (or with) a trailing slash: a 307 makes a client send its POST
        # again to another route (``/admin/tasks/%2F`` is ``/admin/tasks//``, which would land on
        # ``/admin/tasks/``). A path that names no route is a 404 that says so.
        redirect_slashes=False,
    )
    for router in ROUTERS:
        # The routes themselves, not ``include_router``: FastAPI (0.165) resolves an included router on every
        # request (a walk of each router's version, then a match inside the router it matched), ~25 of the
        # ~140 µs a task_status costs in the app. Ours have no prefix or dependencies of their own (each route
        # already carries its router's tags and schema flag), so their routes are the same routes here.
        app.router.routes.extend(router.routes)
    app.state.pool = pool or NodePool(settings.nodes, settings.token, credentials=settings.credentials,
                                      server_name=settings.server_name, locate_timeout=settings.locate_timeout_s)
    app.state.metrics = RestMetrics()
    app.state.node_metrics = node_metrics
    app.state.merged_events = settings.merged_events
    app.state.event_streams = EventStreams()
    access = settings.access or AccessControl(TokenTable.build(shared_token=settings.token))
    if settings.own_hop:
        for node in app.state.pool.nodes:
            node.metadata = (*node.metadata, (AUDITED_KEY, access.hop_secret))
    # Added innermost first: metrics see every answer, auth runs before any body is read.
    app.add_middleware(BodyLimitMiddleware, limit=settings.body_limit)
    if access.enabled or access.audit_log is not None:
        routes, unlisted = route_table(app)  # after every router is in
        if unlisted:
            logger.warning("routes without a role in taskward.security.roles (admins only): %s", ", ".join(unlisted))
        app.add_middleware(AccessMiddleware, access=access, routes=routes)
    app.add_middleware(MetricsMiddleware, metrics=app.state.metrics)

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = get_openapi(title=app.title, version=app.version, description=app.description,
                                 routes=app.routes)
            if access.enabled:
                schema.setdefault("components", {})["securitySchemes"] = {
                    "bearer": {"type": "http", "scheme": "bearer"}}
                for path, ops in schema.get("paths", {}).items():
                    if path not in OPEN_PATHS:
                        for op in ops.values():
                            op["security"] = [{"bearer": []}]
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]  # FastAPI's documented way to extend the schema
    return app


class _EmbeddedServer(uvicorn.Server):
    """uvicorn without its signal handlers: the process that embeds it owns SIGTERM/SIGINT."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def bind_socket(address: str) -> socket.socket:
    host = check_address("--rest", address)
    port = int(address.rpartition(":")[2])
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # proto IPPROTO_TCP (not 0): asyncio sets TCP_NODELAY on accepted sockets only then; without it every
    # small answer waits ~40 ms for delayed ACKs (Nagle).
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    return sock


class RestServer:
    """One REST app on one socket; ``start()`` returns once it accepts, ``stop()`` ends streams and closes."""

    def __init__(self, app: FastAPI, listen: str, *, ssl_context: ssl.SSLContext | None = None,
                 limits: RestLimits | None = None) -> None:
        self.app = app
        self.listen = listen
        self.ssl_context = ssl_context
        self.limits = limits or RestLimits()
        self._server: _EmbeddedServer | None = None
        self._task: asyncio.Task[None] | None = None

    @property
    def pool(self) -> NodePool:
        pool: NodePool = self.app.state.pool
        return pool

    async def start(self) -> RestServer:
        sock = bind_socket(self.listen)
        config = uvicorn.Config(
            self.app, log_config=None, access_log=False, lifespan="off", server_header=False,
            timeout_graceful_shutdown=SHUTDOWN_GRACE_S, backlog=2048,
            # The peer is the TCP peer: uvicorn would otherwise take X-Forwarded-For from any loopback
            # client, letting it pick the address the audit log names and the failed-auth limit counts.
            proxy_headers=False,
            http=bounded_protocol(self.limits), ws="none", timeout_keep_alive=REST_KEEP_ALIVE_S,
            ssl_context_factory=self._ssl_context if self.ssl_context is not None else None,
        )
        self._server = _EmbeddedServer(config)
        self._task = asyncio.create_task(self._server.serve(sockets=[sock]), name=f"rest-{self.listen}")
        while not self._server.started:
            if self._task.done():
                sock.close()
                self._task.result()
                raise RuntimeError(f"REST server on {self.listen} stopped during start-up")
            await asyncio.sleep(0.005)
        logger.info("REST API on %s://%s (nodes: %s; OpenAPI at /docs)", "https" if self.ssl_context else "http",
                    self.listen, ", ".join(self.pool.addresses))
        return self

    def _ssl_context(self, config: uvicorn.Config, default: Callable[[], ssl.SSLContext]) -> ssl.SSLContext:
        """uvicorn's hook for its TLS context: ours, which ``Certificates.reload`` loads again in place."""
        assert self.ssl_context is not None
        return self.ssl_context

    async def stop(self) -> None:
        if self._server is not None and self._task is not None:
            self.app.state.event_streams.close_all()
            self._server.should_exit = True
            try:
                await self._task
            except Exception:
                logger.exception("REST server on %s failed", self.listen)
            self._server = self._task = None
        await self.pool.close()


def local_target(listen: str) -> str:
    """The address a process uses to reach its own gRPC listener (a wildcard bind → loopback)."""
    host, _, port = listen.rpartition(":")
    if host in WILDCARDS:
        return f"127.0.0.1:{port}"
    if host in ("::", "[::]"):
        return f"[::1]:{port}"
    return listen


async def start_rest_server(config: NodeConfig, certificates: Certificates | None = None, *,
                            node_metrics: CollectorRegistry | None = None,
                            access: AccessControl | None = None) -> RestServer:
    """``taskward node --rest``: the REST app in front of this node's own gRPC listener. With TLS, REST is
    HTTPS and its hop to gRPC is TLS too, checked against the name the node advertises to its peers."""
    credentials = certificates.channel_credentials if certificates is not None else None
    advertised = config.advertise_address.rpartition(":")[0].strip("[]")
    settings = RestSettings(listen=config.rest, nodes=(local_target(config.listen),), token=config.token,
                            credentials=credentials, server_name="" if advertised in WILDCARDS | {"::"} else advertised,
                            access=access, own_hop=access is not None)
    ssl_context = certificates.server_context(alpn=REST_ALPN) if certificates and certificates.serving else None
    server = RestServer(create_app(settings, node_metrics=node_metrics), settings.listen, ssl_context=ssl_context,
                        limits=config.rest_limits)
    if certificates is not None:
        certificates.on_reload(server.pool.use_credentials)
    return await server.start()
