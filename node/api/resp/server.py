"""RESP3 admin surface on ``--admin HOST:PORT`` (Kronotop-compatible; ``redis-cli -3 -p PORT``).

A plain ``asyncio.Protocol`` rather than streams: every read is parsed at once, all the commands it
completes are answered, and their replies leave together in one ``transport.write`` (one per
``FLUSH_BYTES`` for large replies) — pipelined clients get one syscall per batch, not per command.
Memory per connection is bounded on both sides: the parser holds at most one unfinished command (see
``resp_protocol``), and when the client stops reading its replies, the connection stops reading its
requests (``pause_writing`` pauses reading).

What a client may hold is bounded before it authenticates (``taskward.resource_limits``): Redis 7's
argument limits in the parser, a small reply buffer, a deadline to authenticate, and a pool of at most
``max_unauthenticated`` such connections in which a newcomer evicts the oldest — so anonymous sockets,
however many, neither grow the node nor lock an operator's ``redis-cli`` out. Any connection that sends
nothing for ``idle_timeout_s`` is closed, as Redis's ``timeout`` does.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import itertools
import logging
import ssl

from taskward import __version__
from taskward.api.resp.commands import AdminCommands, Session, TypeStatsSource
from taskward.api.resp.protocol import Command, RequestParser, error
from taskward.config import NodeConfig, check_address
from taskward.resource_limits import RESP_UNAUTH_WRITE_BUFFER_BYTES, RespLimits
from taskward.security.access import AccessControl, peer_text

logger = logging.getLogger(__name__)

FLUSH_BYTES = 256 * 1024  # write out a batch's replies once they grow past this
WRITE_HIGH_WATER = 1024 * 1024  # transport buffer above which the client counts as not reading
STOP_GRACE_S = 1.0


class _Connection(asyncio.Protocol):
    """One client. All methods run on the event loop; none of them awaits."""

    def __init__(self, server: RespServer) -> None:
        self._server = server
        self._session = Session(id=next(server.ids), authenticated=not server.commands.auth_required)
        self._parser = RequestParser(authenticated=self._session.authenticated)
        self._pending: collections.deque[Command] = collections.deque()
        self._transport: asyncio.Transport | None = None
        self._write_paused = False
        self._closing = False
        self._loop = asyncio.get_running_loop()
        self._opened_at = self._last_active = self._loop.time()
        self._timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport
        if not self._server.admit(self, authenticated=self._session.authenticated):
            transport.write(error("ERR max number of clients reached"))
            self._close()
            return
        transport.set_write_buffer_limits(
            high=WRITE_HIGH_WATER if self._session.authenticated else RESP_UNAUTH_WRITE_BUFFER_BYTES)
        self._arm_timer()
        peer = transport.get_extra_info("peername")
        if isinstance(peer, tuple):  # who the failed-auth limit counts and the audit log names
            self._session.host = str(peer[0])
            self._session.peer = peer_text(str(peer[0]), peer[1])

    def connection_lost(self, exc: Exception | None) -> None:
        self._server.forget(self)
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._pending.clear()
        self._closing = True
        self._transport = None

    def data_received(self, data: bytes) -> None:
        if self._closing:
            return
        self._last_active = self._loop.time()
        self._parser.authenticated = self._session.authenticated
        self._pending.extend(self._parser.feed(data))
        self._serve()

    def pause_writing(self) -> None:
        self._write_paused = True
        if self._transport is not None:
            self._transport.pause_reading()

    def resume_writing(self) -> None:
        self._write_paused = False
        self._serve()
        if not self._write_paused and not self._closing and self._transport is not None:
            self._transport.resume_reading()

    def _serve(self) -> None:
        """Answer pending commands until done, told to close, or the client stops reading replies."""
        transport = self._transport
        if transport is None:
            return
        out: list[bytes] = []
        size = 0
        commands, session, parser = self._server.commands, self._session, self._parser
        while not self._write_paused:
            if not self._pending:
                if not parser.has_input:
                    break
                # Before AUTH the parser hands out one command at a time: the next is parsed under the
                # limits that the outcome of this one decides.
                parser.authenticated = session.authenticated
                self._pending.extend(parser.feed(b""))
                if not self._pending:
                    break
            args = self._pending.popleft()
            was_authenticated = session.authenticated
            try:
                reply = commands.execute(session, args)
            except Exception:
                logger.exception("RESP command %r failed", args[0][:64])
                reply = error("ERR internal error")
            if session.authenticated and not was_authenticated:
                self._authenticated(transport)
            out.append(reply)
            size += len(reply)
            if session.close_after_reply:
                self._pending.clear()
                break
            if size >= FLUSH_BYTES:
                transport.write(b"".join(out))  # may call pause_writing(), which ends this loop
                out, size = [], 0
        if self._parser.error is not None and not self._pending:
            out.append(error(f"ERR Protocol error: {self._parser.error}"))
            logger.debug("RESP client %s: protocol error: %s", self._peer(), self._parser.error)
            session.close_after_reply = True
        if out:
            transport.write(b"".join(out))
        if session.close_after_reply:
            self._close()

    def _authenticated(self, transport: asyncio.Transport) -> None:
        """The session has just authenticated: out of the unauthenticated pool, full reply buffer."""
        self._server.authenticated(self)
        transport.set_write_buffer_limits(high=WRITE_HIGH_WATER)
        self._arm_timer()

    def _arm_timer(self) -> None:
        """One timer per connection for both deadlines: authenticate by ``auth_timeout_s`` after opening,
        and send something at least every ``idle_timeout_s``. Activity only moves a timestamp; the timer,
        when it fires early, sets itself again for what is left (no timer churn per command)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        deadline = self._deadline()
        if deadline is not None and not self._closing:
            self._timer = self._loop.call_at(deadline, self._on_timer)

    def _deadline(self) -> float | None:
        limits = self._server.limits
        deadlines = []
        if not self._session.authenticated:
            deadlines.append(self._opened_at + limits.auth_timeout_s)
        if limits.idle_timeout_s > 0:
            deadlines.append(self._last_active + limits.idle_timeout_s)
        return min(deadlines) if deadlines else None

    def _on_timer(self) -> None:
        self._timer = None
        if self._closing or self._transport is None:
            return
        now, limits = self._loop.time(), self._server.limits
        if not self._session.authenticated and now >= self._opened_at + limits.auth_timeout_s:
            logger.debug("RESP client %s: not authenticated within %g s, closed", self._peer(), limits.auth_timeout_s)
            self.abort()
        elif limits.idle_timeout_s > 0 and now >= self._last_active + limits.idle_timeout_s:
            logger.debug("RESP client %s: idle for %g s, closed", self._peer(), limits.idle_timeout_s)
            self.abort()
        else:
            self._arm_timer()

    def _close(self) -> None:
        """Close after flushing what is queued (transport.close() sends buffered replies first)."""
        self._closing = True
        if self._transport is not None:
            self._transport.close()

    def abort(self) -> None:
        """Close at once, dropping unsent replies (a timed-out or evicted client may not be reading)."""
        self._closing = True
        if self._transport is not None:
            self._transport.abort()

    def _peer(self) -> str:
        peer = self._transport.get_extra_info("peername") if self._transport is not None else None
        return f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else "?"

    def close(self) -> None:
        self._close()


class RespServer:
    """The listening socket and its live connections; ``stop()`` is idempotent."""

    def __init__(self, commands: AdminCommands, address: str, *, ssl_context: ssl.SSLContext | None = None,
                 limits: RespLimits | None = None) -> None:
        self.commands = commands
        self.address = address
        self.ssl_context = ssl_context
        self.limits = limits or RespLimits()
        self.connections: set[_Connection] = set()
        self.unauthenticated: dict[_Connection, None] = {}  # oldest first (dicts keep insertion order)
        self.ids = itertools.count(1)
        self._server: asyncio.Server | None = None
        self._all_closed = asyncio.Event()

    def admit(self, conn: _Connection, *, authenticated: bool) -> bool:
        """Take a new connection in, or refuse it (the client cap is reached by authenticated ones). An
        unauthenticated newcomer beyond ``max_unauthenticated`` evicts the oldest unauthenticated one: a
        real client authenticates in its first round trip, so the one evicted is a socket that waited."""
        if not authenticated:
            while len(self.unauthenticated) >= self.limits.max_unauthenticated:
                oldest = next(iter(self.unauthenticated))
                self.forget(oldest)
                oldest.abort()
                logger.debug("RESP: %d unauthenticated connections, the oldest evicted",
                             self.limits.max_unauthenticated)
        if len(self.connections) >= self.limits.max_clients:
            return False
        self.connections.add(conn)
        if not authenticated:
            self.unauthenticated[conn] = None
        return True

    def authenticated(self, conn: _Connection) -> None:
        self.unauthenticated.pop(conn, None)

    def forget(self, conn: _Connection) -> None:
        self.connections.discard(conn)
        self.unauthenticated.pop(conn, None)
        if not self.connections:
            self._all_closed.set()

    async def start(self) -> None:
        host = check_address("--admin", self.address)
        port = int(self.address.rpartition(":")[2])
        loop = asyncio.get_running_loop()
        # A TLS handshake happens before the connection is counted or timed: bound it by the auth timeout.
        handshake_s = self.limits.auth_timeout_s if self.ssl_context is not None else None
        self._server = await loop.create_server(lambda: _Connection(self), host, port, backlog=512,
                                                ssl=self.ssl_context, ssl_handshake_timeout=handshake_s)

    @property
    def port(self) -> int:
        assert self._server is not None and self._server.sockets
        return int(self._server.sockets[0].getsockname()[1])

    async def stop(self) -> None:
        """Stop accepting, let connections flush their replies for ``STOP_GRACE_S``, then abort them."""
        server, self._server = self._server, None
        if server is None:
            return
        server.close()
        self._all_closed.clear()
        for conn in list(self.connections):
            conn.close()
        if self.connections:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(STOP_GRACE_S):
                    await self._all_closed.wait()
        for conn in list(self.connections):
            conn.abort()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(STOP_GRACE_S):
                await server.wait_closed()
        logger.info("RESP3 admin on %s stopped", self.address)


async def start_resp_server(config: NodeConfig, manager: TypeStatsSource, *,
                            ssl_context: ssl.SSLContext | None = None,
                            access: AccessControl | None = None) -> RespServer:
    """Called by ``NodeApp._start_surfaces`` when ``--admin`` is given; TLS with ``ssl_context``
    (``redis-cli --tls``)."""
    commands = AdminCommands(manager, token=config.token, access=access, server_version=__version__)
    server = RespServer(commands, config.admin, ssl_context=ssl_context, limits=config.resp_limits)
    await server.start()
    logger.info("RESP3 admin (redis-cli -3) serving on %s (auth %s, TLS %s)", config.admin,
                "on" if commands.auth_required else "off", "on" if ssl_context else "off")
    return server
