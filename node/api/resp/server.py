"""RESP3 admin surface on ``--admin HOST:PORT`` (Kronotop-compatible; ``redis-cli -3 -p PORT``).

A plain ``asyncio.Protocol`` rather than streams: every read is parsed at once, all the commands it
completes are answered, and their replies leave together in one ``transport.write`` (one per
``FLUSH_BYTES`` for large replies) — pipelined clients get one syscall per batch, not per command.
Memory per connection is bounded on both sides: the parser holds at most one unfinished command (see
``resp_protocol``), and when the client stops reading its replies, the connection stops reading its
requests (``pause_writing`` pauses reading).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import itertools
import logging

from taskward import __version__
from taskward.api.resp.commands import AdminCommands, Session, TypeStatsSource
from taskward.api.resp.protocol import Command, RequestParser, error
from taskward.config import NodeConfig, check_address

logger = logging.getLogger(__name__)

MAX_CONNECTIONS = 1024
FLUSH_BYTES = 256 * 1024  # write out a batch's replies once they grow past this
WRITE_HIGH_WATER = 1024 * 1024  # transport buffer above which the client counts as not reading
STOP_GRACE_S = 1.0


class _Connection(asyncio.Protocol):
    """One client. All methods run on the event loop; none of them awaits."""

    def __init__(self, server: RespServer) -> None:
        self._server = server
        self._parser = RequestParser()
        self._pending: collections.deque[Command] = collections.deque()
        self._session = Session(id=next(server.ids), authenticated=not server.commands.auth_required)
        self._transport: asyncio.Transport | None = None
        self._write_paused = False
        self._closing = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport
        if len(self._server.connections) >= MAX_CONNECTIONS:
            transport.write(error("ERR max number of clients reached"))
            self._close()
            return
        self._server.connections.add(self)
        transport.set_write_buffer_limits(high=WRITE_HIGH_WATER)

    def connection_lost(self, exc: Exception | None) -> None:
        self._server.forget(self)
        self._pending.clear()
        self._closing = True
        self._transport = None

    def data_received(self, data: bytes) -> None:
        if self._closing:
            return
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
        commands, session = self._server.commands, self._session
        while self._pending and not self._write_paused:
            args = self._pending.popleft()
            try:
                reply = commands.execute(session, args)
            except Exception:
                logger.exception("RESP command %r failed", args[0][:64])
                reply = error("ERR internal error")
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

    def _close(self) -> None:
        """Close after flushing what is queued (transport.close() sends buffered replies first)."""
        self._closing = True
        if self._transport is not None:
            self._transport.close()

    def abort(self) -> None:
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

    def __init__(self, commands: AdminCommands, address: str) -> None:
        self.commands = commands
        self.address = address
        self.connections: set[_Connection] = set()
        self.ids = itertools.count(1)
        self._server: asyncio.Server | None = None
        self._all_closed = asyncio.Event()

    def forget(self, conn: _Connection) -> None:
        self.connections.discard(conn)
        if not self.connections:
            self._all_closed.set()

    async def start(self) -> None:
        host = check_address("--admin", self.address)
        port = int(self.address.rpartition(":")[2])
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(lambda: _Connection(self), host, port, backlog=512)

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


async def start_resp_server(config: NodeConfig, manager: TypeStatsSource) -> RespServer:
    """Called by ``NodeApp._start_surfaces`` when ``--admin`` is given."""
    commands = AdminCommands(manager, token=config.token, server_version=__version__)
    server = RespServer(commands, config.admin)
    await server.start()
    logger.info("RESP3 admin (redis-cli -3) serving on %s (auth %s)", config.admin,
                "on" if config.token else "off")
    return server
