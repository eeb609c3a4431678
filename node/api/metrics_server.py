"""``taskward node --metrics HOST:PORT``: the node's Prometheus metrics on a listener of their own.

For nodes that serve no REST (``--rest`` shows the same families on its ``/metrics``). It answers
``GET /metrics`` (and ``HEAD``) and nothing else, with the node's registry (``taskward.api.prometheus``)
rendered at scrape time. With auth on, a scrape needs a token whose role may read metrics (``read`` and
up), sent as ``Authorization: Bearer TOKEN``, checked by the process's ``AccessControl`` exactly as on
REST: 401 without a known token, 403 for a role that may not, 429 for an address over the failed-auth
limit. Every refusal is ``{"message", "code"}`` JSON.

It runs on uvicorn inside the node's event loop (as REST does), so a scrape reads the metrics on the loop
that records them, and its HTTP parsing, keep-alive and concurrency limits are uvicorn's: h11, at most
``MAX_CONNECTIONS`` at once, idle connections closed after ``KEEP_ALIVE_S``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import ssl
from collections.abc import Callable, Iterator, Sequence

import orjson
import uvicorn
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from starlette.types import Receive, Scope, Send

from taskward.config import check_address
from taskward.errors import AuthRateLimited, PermissionDenied, Unauthenticated
from taskward.security.access import AccessControl, peer_text
from taskward.security.roles import METRICS

logger = logging.getLogger(__name__)

MAX_CONNECTIONS = 32
KEEP_ALIVE_S = 5
MAX_HEADER_BYTES = 16 * 1024
PATH = "/metrics"


async def _send(send: Send, status: int, body: bytes, headers: Sequence[tuple[bytes, bytes]], *,
                head: bool = False) -> None:
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-length", str(len(body)).encode()), *headers]})
    await send({"type": "http.response.body", "body": b"" if head else body})


async def _refuse(send: Send, status: int, message: str, headers: Sequence[tuple[bytes, bytes]] = ()) -> None:
    await _send(send, status, orjson.dumps({"message": message, "code": status}),
                [(b"content-type", b"application/json"), *headers])


class MetricsApp:
    """The ASGI app of the listener: ``/metrics`` for scrapers, an error body for anything else."""

    def __init__(self, registry: CollectorRegistry, access: AccessControl | None) -> None:
        self._registry = registry
        self._access = access

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        method = scope["method"]
        if scope["path"] != PATH:
            await _refuse(send, 404, f"not found: this listener serves {PATH} only")
            return
        if method not in ("GET", "HEAD"):
            await _refuse(send, 405, f"method {method[:16]} not allowed on {PATH}: use GET", [(b"allow", b"GET, HEAD")])
            return
        if not await self._authorized(scope, send):
            return
        await _send(send, 200, generate_latest(self._registry), [(b"content-type", CONTENT_TYPE_LATEST.encode())],
                    head=method == "HEAD")

    async def _authorized(self, scope: Scope, send: Send) -> bool:
        """The one auth decision of this listener: what REST asks of ``GET /metrics`` (a token allowed the
        ``metrics`` operation), through the same ``AccessControl``; answers the refusal itself."""
        access = self._access
        if access is None or not access.enabled:
            return True
        given: bytes | None = None
        for name, value in scope["headers"]:
            if name == b"authorization":
                given = value[7:] if value.startswith(b"Bearer ") else b""
                break
        client = scope.get("client")
        host = str(client[0]) if client else "unknown"
        peer = peer_text(host, client[1]) if client else "unknown"
        try:
            principal = access.authenticate(given, peer=peer, host=host, surface="rest", attempted=f"GET {PATH}")
            access.authorize(principal, METRICS, peer=peer, surface="rest", target=PATH)
        except AuthRateLimited as exc:
            await _refuse(send, 429, exc.message, [(b"retry-after", str(exc.retry_after_s).encode())])
            return False
        except Unauthenticated as exc:
            await _refuse(send, 401, exc.message, [(b"www-authenticate", b"Bearer")])
            return False
        except PermissionDenied as exc:
            await _refuse(send, 403, exc.message)
            return False
        return True


class _Server(uvicorn.Server):
    """uvicorn without its signal handlers: the node process owns SIGTERM/SIGINT."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def _bind(address: str) -> socket.socket:
    host = check_address("--metrics", address)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, int(address.rpartition(":")[2])))
    except OSError:
        sock.close()
        raise
    return sock


class MetricsServer:
    """The listener; ``start()`` returns once it accepts, ``stop()`` closes it (idempotent)."""

    def __init__(self, listen: str, registry: CollectorRegistry, *, access: AccessControl | None = None,
                 ssl_context: ssl.SSLContext | None = None) -> None:
        self.listen = listen
        self._app = MetricsApp(registry, access)
        self._ssl_context = ssl_context
        self._server: _Server | None = None
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> MetricsServer:
        sock = _bind(self.listen)
        factory: Callable[[uvicorn.Config, Callable[[], ssl.SSLContext]], ssl.SSLContext] | None = None
        if self._ssl_context is not None:
            context = self._ssl_context
            factory = lambda config, default: context  # noqa: E731 - uvicorn's hook; reloads happen in place
        config = uvicorn.Config(
            self._app, http="h11", lifespan="off", log_config=None, access_log=False, server_header=False,
            date_header=False, limit_concurrency=MAX_CONNECTIONS, timeout_keep_alive=KEEP_ALIVE_S,
            h11_max_incomplete_event_size=MAX_HEADER_BYTES, timeout_graceful_shutdown=1, backlog=128,
            ssl_context_factory=factory,
        )
        self._server = _Server(config)
        self._task = asyncio.create_task(self._server.serve(sockets=[sock]), name=f"metrics-{self.listen}")
        while not self._server.started:
            if self._task.done():
                sock.close()
                self._task.result()
                raise RuntimeError(f"metrics listener on {self.listen} stopped during start-up")
            await asyncio.sleep(0.005)
        logger.info("Prometheus metrics on %s://%s%s", "https" if self._ssl_context else "http", self.listen, PATH)
        return self

    async def stop(self) -> None:
        if self._server is not None and self._task is not None:
            self._server.should_exit = True
            try:
                await self._task
            except Exception:
                logger.exception("metrics listener on %s failed", self.listen)
            self._server = self._task = None
