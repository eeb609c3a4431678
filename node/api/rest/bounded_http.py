"""uvicorn's httptools protocol with the REST surface's bounds, enforced before any request reaches the app.

uvicorn on its own leaves a connection that sent no request, or half of one, open for ever; lets httptools
buffer a header or a URL of any length (a 40 MiB URL is 40 MiB held); and counts no connections. Every
answer here is given before authentication, costs no task, and is the surface's usual JSON error:

- more than ``max_connections`` open: the new connection is answered 503 and closed at once;
- request line and headers over ``max_header_bytes``: 431; a URL over ``max_url_bytes``: 414;
- complete headers not received ``header_timeout_s`` after the connection opened (or after the first
  byte of a later request): 408, or a silent close when nothing at all was sent;
- more than ``max_requests`` requests in progress: 503 with ``Retry-After``, the app not called;
- a request httptools cannot parse: 400.

Each of these is logged through a throttle (``taskward.log_throttle``), never once per client. httptools
is kept (rather than h11, which has a size bound of its own) because it parses several times faster;
``bench/rest_vs_grpc.py`` measures the cost of these checks.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, ClassVar

import httptools
import orjson
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol, RequestResponseCycle

from taskward.log_throttle import LogThrottle
from taskward.resource_limits import RestLimits

logger = logging.getLogger(__name__)

RETRY_AFTER_S = 1
LINGER_S = 1.0
"""How long a refused connection's further bytes are read and dropped after its answer (see ``_answer_and_close``)."""


class RequestRefused(Exception):
    """Raised inside an httptools callback to stop parsing a request the surface will not take."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def error_bytes(status: int, message: str, *, extra: bytes = b"") -> bytes:
    """A complete ``{"message", "code"}`` response that closes the connection."""
    body = orjson.dumps({"message": message, "code": status})
    return b"".join((STATUS_LINE[status], b"content-type: application/json\r\ncontent-length: ",
                     str(len(body)).encode(), b"\r\nconnection: close\r\n", extra, b"\r\n", body))


class _Throttles:
    """One log throttle per kind of refusal, shared by every connection of a server."""

    def __init__(self) -> None:
        self.connections = LogThrottle(logger)
        self.busy = LogThrottle(logger)
        self.too_large = LogThrottle(logger, logging.INFO)
        self.timeout = LogThrottle(logger, logging.INFO)
        self.invalid = LogThrottle(logger, logging.INFO)


class BoundedHttpProtocol(HttpToolsProtocol):
    """One HTTP/1.1 connection; ``limits`` and ``throttles`` are set per server by ``bounded_protocol``."""

    limits: ClassVar[RestLimits] = RestLimits()
    throttles: ClassVar[_Throttles] = _Throttles()

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._refused = False  # answered (or dropped) and closing: ignore whatever else arrives
        self._awaiting_headers = True  # between a request's end (or the connection's start) and its headers
        self._header_bytes = 0
        self._message_begun = False
        # The header deadline: when the awaited headers must be complete (None: none awaited). One timer per
        # connection checks it and sets itself again for a later deadline, so a request costs a clock read,
        # not a timer of its own.
        self._header_deadline: float | None = None
        self._header_timer: asyncio.TimerHandle | None = None

    # ------------------------------------------------------------------ connection

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        limit = self.limits.max_connections
        if len(self.connections) >= limit:
            self.transport = transport
            self._refused = True
            self.throttles.connections.log("REST: %d connections open (the limit); new ones are answered 503",
                                           limit)
            transport.write(error_bytes(503, f"too many open connections (limit {limit}); try again later",
                                        extra=b"retry-after: %d\r\n" % RETRY_AFTER_S))
            transport.close()
            return
        super().connection_made(transport)
        self._expect_headers()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_header_timer()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._refused:
            return
        if self._awaiting_headers:
            self._header_bytes += len(data)
        self._unset_keepalive_if_required()
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:  # served as plain HTTP: the REST surface has no WebSocket
            self.throttles.invalid.log("REST client %s: protocol upgrade asked for, not supported", self._client_text())
            return
        except httptools.HttpParserError as exc:
            refused = exc.__context__
            if isinstance(refused, RequestRefused):
                self.throttles.too_large.log("REST client %s: %s", self._client_text(), refused.message)
                self._answer_and_close(refused.status, refused.message)
            else:
                self.throttles.invalid.log("REST client %s: invalid HTTP request: %s", self._client_text(), exc)
                self._answer_and_close(400, f"invalid HTTP request: {exc}")
            return
        if self._awaiting_headers and self._header_bytes > self.limits.max_header_bytes:
            message = f"request headers larger than {self.limits.max_header_bytes} bytes"
            self.throttles.too_large.log("REST client %s: %s", self._client_text(), message)
            self._answer_and_close(431, message)

    # ------------------------------------------------------------------ parser callbacks

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._message_begun = True
        self._awaiting_headers = True
        if self._header_deadline is None:
            self._expect_headers()

    def on_url(self, url: bytes) -> None:
        if len(self.url) + len(url) > self.limits.max_url_bytes:
            raise RequestRefused(414, f"request URL longer than {self.limits.max_url_bytes} bytes")
        super().on_url(url)

    def on_headers_complete(self) -> None:
        self._header_deadline = None
        self._awaiting_headers = False
        self._header_bytes = 0
        self._message_begun = False
        limit = self.limits.max_requests
        if len(self.tasks) < limit:
            super().on_headers_complete()
            return
        self.throttles.busy.log("REST: %d requests in progress (the limit); new ones are answered 503", limit)
        app = self.app
        self.app = _busy_app(limit)  # uvicorn runs self.app for the request being started
        try:
            super().on_headers_complete()
        finally:
            self.app = app

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._awaiting_headers = True

    # ------------------------------------------------------------------ the header deadline

    def _expect_headers(self) -> None:
        """Complete headers are due ``header_timeout_s`` from now."""
        self._header_deadline = deadline = self.loop.time() + self.limits.header_timeout_s
        if self._header_timer is None:
            self._header_timer = self.loop.call_at(deadline, self._check_header_deadline)

    def _cancel_header_timer(self) -> None:
        self._header_deadline = None
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _check_header_deadline(self) -> None:
        self._header_timer = None
        deadline = self._header_deadline
        if deadline is None or self._refused or self.transport.is_closing():
            return  # no headers awaited now; the next request's first byte sets a deadline again
        if self.loop.time() < deadline:
            self._header_timer = self.loop.call_at(deadline, self._check_header_deadline)
            return
        if self._answering():
            self._expect_headers()  # still answering the previous request: the next one's clock restarts
            return
        seconds = self.limits.header_timeout_s
        if not self._message_begun:  # nothing sent at all: nobody to answer
            self.throttles.timeout.log("REST client %s: no request within %g s, closed", self._client_text(),
                                       seconds)
            self._refused = True
            self.transport.close()
            return
        message = f"request headers not complete within {seconds:g} s"
        self.throttles.timeout.log("REST client %s: %s", self._client_text(), message)
        self._answer_and_close(408, message)

    # ------------------------------------------------------------------ helpers

    def _answer_and_close(self, status: int, message: str) -> None:
        """Answer ``status`` and close; mid-way through another answer (pipelining), just close.

        The close lingers: the answer is followed by a FIN, and what the client still sends is read and
        dropped for up to ``LINGER_S`` (or until it closes too). Closing at once with its unread bytes in
        the buffer would send a reset, which can destroy the answer before the client reads it."""
        self._refused = True
        self._cancel_header_timer()
        transport = self.transport
        if self._answering():
            transport.close()
            return
        transport.write(error_bytes(status, message))
        if not transport.can_write_eof():  # TLS
            transport.close()
            return
        transport.write_eof()
        self.loop.call_later(LINGER_S, transport.close)

    def _answering(self) -> bool:
        """Whether a response is being written (uvicorn types ``cycle`` as always set; it is None at first)."""
        cycle: RequestResponseCycle | None = self.cycle
        return cycle is not None and not cycle.response_complete

    def _client_text(self) -> str:
        return f"{self.client[0]}:{self.client[1]}" if self.client else "?"


def _busy_app(limit: int) -> Any:
    body = orjson.dumps({"message": f"too many requests in progress (limit {limit}); try again later",
                         "code": 503})
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
               (b"retry-after", str(RETRY_AFTER_S).encode()), (b"connection", b"close")]

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 503, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    return app


def bounded_protocol(limits: RestLimits) -> type[BoundedHttpProtocol]:
    """The protocol class for one REST server (uvicorn instantiates it per connection)."""
    return type("BoundedHttpProtocol", (BoundedHttpProtocol,), {"limits": limits, "throttles": _Throttles()})
