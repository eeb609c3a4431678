"""Pure-ASGI middleware of the REST surface: the body-size limit, request metrics (access control: ``auth``).

Pure ASGI (not ``BaseHTTPMiddleware``) because these run on every request including the SSE stream:
they must neither buffer a body nor wrap a streaming response in an extra task.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import orjson
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from taskward.api.rest.common import BodyTooLarge
from taskward.security.access import peer_text

# Reachable without a token: probes rarely carry secrets, and none of these reveal or change task state.
# /metrics is not among them: it needs a token with role read (DESIGN §10), as scrapers can send one.
OPEN_PATHS = frozenset({"/health", "/docs", "/docs/oauth2-redirect", "/openapi.json", "/redoc", "/ui"})
# The docs page's and the dashboard's own files, served by this process (they hold no data: the dashboard
# asks for the token and sends it with every API call it makes).
OPEN_PREFIXES = ("/docs/assets/", "/ui/")


async def send_error(send: Send, status: int, message: str,
                     extra_headers: Sequence[tuple[bytes, bytes]] = ()) -> None:
    body = orjson.dumps({"message": message, "code": status})
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()), *extra_headers]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def scope_peer(scope: Scope) -> tuple[str, str]:
    """(``host:port``, host) of the HTTP client."""
    client = scope.get("client")
    if not client:
        return "unknown", "unknown"
    return peer_text(str(client[0]), client[1]), str(client[0])


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
        self.node_up = Gauge("taskward_node_up", "A gateway's listed node: whether its health check answered "
                             "SERVING at the last scrape", ["node"], registry=self.registry)


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
