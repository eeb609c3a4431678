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
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import uvicorn
from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from taskward import __version__
from taskward.api.rest.aeordb_routes import router as aeordb_router
from taskward.api.rest.common import EXCEPTION_HANDLERS, JsonResponse
from taskward.api.rest.cron_routes import router as cron_router
from taskward.api.rest.docs_routes import router as docs_router
from taskward.api.rest.middleware import (
    OPEN_PATHS,
    BearerAuthMiddleware,
    BodyLimitMiddleware,
    MetricsMiddleware,
    RestMetrics,
)
from taskward.api.rest.scylla_routes import router as task_manager_router
from taskward.api.rest.scylla_routes import test_router
from taskward.api.rest.taskward_routes import EventStreams
from taskward.api.rest.taskward_routes import router as extra_router
from taskward.client.node_pool import NodePool
from taskward.config import NodeConfig, check_address

logger = logging.getLogger(__name__)

BODY_LIMIT = 1024 * 1024
SHUTDOWN_GRACE_S = 2  # seconds in-flight requests (e.g. a wait_task) get on stop
DESCRIPTION = """ScyllaDB-compatible task manager REST API (`/task_manager/*`, `/task_manager_test/*`) plus
taskward's own endpoints. Errors are `{"message": ..., "code": N}`. With a token configured, every path but
`/health`, `/metrics`, `/docs` and `/openapi.json` needs `Authorization: Bearer TOKEN`. Bodies over 1 MiB
are refused with 413."""


@dataclass(frozen=True, slots=True, kw_only=True)
class RestSettings:
    """What one REST app needs: where to listen, which nodes to call, and the shared secret."""

    listen: str
    nodes: tuple[str, ...]
    token: str | None = None
    body_limit: int = BODY_LIMIT
    locate_timeout_s: float = 2.0


def create_app(settings: RestSettings, pool: NodePool | None = None) -> FastAPI:
    app = FastAPI(
        title="taskward", version=__version__, description=DESCRIPTION, redoc_url=None, docs_url=None,
        default_response_class=JsonResponse, exception_handlers=EXCEPTION_HANDLERS,
    )
    app.include_router(task_manager_router)
    app.include_router(test_router)
    app.include_router(extra_router)
    app.include_router(cron_router)
    app.include_router(aeordb_router)
    app.include_router(docs_router)
    app.state.pool = pool or NodePool(settings.nodes, settings.token, locate_timeout=settings.locate_timeout_s)
    app.state.metrics = RestMetrics()
    app.state.event_streams = EventStreams()
    # Added innermost first: metrics see every answer, auth runs before any body is read.
    app.add_middleware(BodyLimitMiddleware, limit=settings.body_limit)
    if settings.token:
        app.add_middleware(BearerAuthMiddleware, token=settings.token)
    app.add_middleware(MetricsMiddleware, metrics=app.state.metrics)

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = get_openapi(title=app.title, version=app.version, description=app.description,
                                 routes=app.routes)
            if settings.token:
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

    def __init__(self, app: FastAPI, listen: str) -> None:
        self.app = app
        self.listen = listen
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
        )
        self._server = _EmbeddedServer(config)
        self._task = asyncio.create_task(self._server.serve(sockets=[sock]), name=f"rest-{self.listen}")
        while not self._server.started:
            if self._task.done():
                sock.close()
                self._task.result()
                raise RuntimeError(f"REST server on {self.listen} stopped during start-up")
            await asyncio.sleep(0.005)
        logger.info("REST API on http://%s (nodes: %s; OpenAPI at /docs)", self.listen, ", ".join(self.pool.addresses))
        return self

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
    if host in ("0.0.0.0", "", "*"):
        return f"127.0.0.1:{port}"
    if host in ("::", "[::]"):
        return f"[::1]:{port}"
    return listen


async def start_rest_server(config: NodeConfig) -> RestServer:
    """``taskward node --rest``: the REST app in front of this node's own gRPC listener."""
    settings = RestSettings(listen=config.rest, nodes=(local_target(config.listen),), token=config.token)
    return await RestServer(create_app(settings), settings.listen).start()
