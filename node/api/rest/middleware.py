"""Pure-ASGI middleware of the REST surface: bearer auth, the body-size limit, request metrics.

Pure ASGI (not ``BaseHTTPMiddleware``) because these run on every request including the SSE stream:
they must neither buffer a body nor wrap a streaming response in an extra task.
"""

from __future__ import annotations

import hmac
import time
from collections.abc import Sequence
from typing import Any

import orjson
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from taskward.api.rest.common import BodyTooLarge
from taskward.errors import Unauthenticated

# Reachable without a token: probes and scrapers rarely carry secrets, and none of these reveal or
# change task state (/metrics shows counts per module and state, no ids or arguments).
OPEN_PATHS = frozenset({"/health", "/metrics", "/docs", "/docs/oauth2-redirect", "/openapi.json", "/redoc"})
OPEN_PREFIXES = ("/docs/assets/",)  # the docs page's own files (Swagger UI), served by this process


async def send_error(send: Send, status: int, message: str,
                     extra_headers: Sequence[tuple[bytes, bytes]] = ()) -> None:
    body = orjson.dumps({"message": message, "code": status})
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()), *extra_headers]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class BearerAuthMiddleware:
    """``Authorization: Bearer T`` on every path but ``OPEN_PATHS``; constant-time comparison."""

    def __init__(self, app: ASGIApp, token: str) -> None:
        self.app = app
        self._expected = f"Bearer {token}".encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in OPEN_PATHS or scope["path"].startswith(OPEN_PREFIXES):
            await self.app(scope, receive, send)
            return
        given = b""
        for name, value in scope["headers"]:
            if name == b"authorization":
                given = value
                break
        if not hmac.compare_digest(given, self._expected):
            await send_error(send, 401, Unauthenticated().message, [(b"www-authenticate", b"Bearer")])
            return
        await self.app(scope, receive, send)


class BodyLimitMiddleware:
    """Refuses bodies over ``limit`` bytes with 413: at once by Content-Length, else while reading."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope["headers"]:
            if name == b"content-length":
                if not value.isdigit():
                    await send_error(send, 400, "malformed Content-Length header")
                    return
                if int(value) > self.limit:
                    await send_error(send, 413, BodyTooLarge(self.limit).message)
                    return
                break
        seen = 0

        async def limited_receive() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.limit:
                    raise BodyTooLarge(self.limit)  # mapped to 413 by the app's TaskwardError handler
            return message

        await self.app(scope, limited_receive, send)


class RestMetrics:
    """Prometheus metrics of one REST app, in its own registry (several apps may share a process)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter("taskward_rest_requests", "REST requests answered", ["method", "route", "status"],
                                registry=self.registry)
        self.latency = Histogram(
            "taskward_rest_request_duration_seconds", "REST request latency (SSE streams: their whole life)",
            ["method", "route"], registry=self.registry,
            buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
        )
        self.tasks = Gauge("taskward_tasks", "Registered tasks by node, module and state (internal included)",
                           ["node", "module", "state"], registry=self.registry)
        self.node_up = Gauge("taskward_node_up", "Whether the node answered the last scrape", ["node"],
                             registry=self.registry)


class MetricsMiddleware:
    """Counts and times every request by route template (never by raw path: ids would explode cardinality)."""

    def __init__(self, app: ASGIApp, metrics: RestMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = 500
        t0 = time.perf_counter()

        async def recording_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, recording_send)
        finally:
            route: Any = scope.get("route")
            label = (getattr(route, "path", None) or "unmatched").replace(":path}", "}")
            method = scope["method"]
            self.metrics.requests.labels(method, label, str(status)).inc()
            self.metrics.latency.labels(method, label).observe(time.perf_counter() - t0)
