"""A small blocking RESP2/RESP3 client for tests, written apart from the server's own codec.

Using an independent reader means a bug in ``node/api/resp_protocol.py`` cannot hide itself by
being symmetrical. Replies decode to: simple string → ``str``, bulk → ``bytes``, error →
:class:`RespError` (returned, not raised), integer → ``int``, boolean → ``bool``, null → ``None``,
array/set/push → ``list``, map → ``dict``.
"""

from __future__ import annotations

import shutil
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.support.procs import TIMEOUT_MULT, NodeProc, free_port

needs_redis_cli = pytest.mark.skipif(shutil.which("redis-cli") is None,
                                     reason="redis-cli not installed (apt-get install redis-tools)")


@dataclass(frozen=True)
class RespError:
    text: str


def cmd(*args: str | bytes) -> bytes:
    """Encode one request as a RESP multibulk."""
    out = [b"*%d\r\n" % len(args)]
    for a in args:
        data = a.encode() if isinstance(a, str) else a
        out.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(out)


class RespConn:
    def __init__(self, port: int, timeout: float = 10.0, *, source: str | None = None) -> None:
        """``source``: the loopback address to connect from (e.g. 127.0.0.2: another client address)."""
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout * TIMEOUT_MULT,
                                             source_address=(source, 0) if source else None)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._buf = bytearray()

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> RespConn:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def call(self, *args: str | bytes) -> Any:
        self.send(cmd(*args))
        return self.read()

    def _fill(self) -> None:
        chunk = self.sock.recv(1 << 20)
        if not chunk:
            raise ConnectionError("server closed the connection")
        self._buf += chunk

    def _line(self) -> bytes:
        while (idx := self._buf.find(b"\r\n")) < 0:
            self._fill()
        line = bytes(self._buf[:idx])
        del self._buf[:idx + 2]
        return line

    def _exact(self, n: int) -> bytes:
        while len(self._buf) < n + 2:
            self._fill()
        assert self._buf[n:n + 2] == b"\r\n", "bulk not followed by CRLF"
        data = bytes(self._buf[:n])
        del self._buf[:n + 2]
        return data

    def read(self) -> Any:
        line = self._line()
        kind, rest = line[:1], line[1:]
        if kind == b"+":
            return rest.decode()
        if kind == b"-":
            return RespError(rest.decode())
        if kind == b":":
            return int(rest)
        if kind == b"#":
            assert rest in (b"t", b"f")
            return rest == b"t"
        if kind == b"_":
            return None
        if kind in (b"$", b"="):
            n = int(rest)
            return None if n < 0 else self._exact(n)
        if kind in (b"*", b"~", b">"):
            n = int(rest)
            return None if n < 0 else [self.read() for _ in range(n)]
        if kind == b"%":
            return {_key(self.read()): self.read() for _ in range(int(rest))}
        raise AssertionError(f"unexpected reply line {line!r}")

    def closed_by_server(self) -> bool:
        """True when the server has closed the connection (EOF with nothing left to read)."""
        try:
            while True:
                chunk = self.sock.recv(65536)
                if not chunk:
                    return True
                self._buf += chunk
        except (ConnectionResetError, BrokenPipeError):
            return True
        except TimeoutError:
            return False


def _key(value: Any) -> Any:
    return value.decode() if isinstance(value, bytes) else value


@dataclass
class AdminNode:
    node: NodeProc
    admin_port: int
    token: str | None = None

    def conn(self) -> RespConn:
        return RespConn(self.admin_port)


@contextmanager
def admin_node(data_dir: Path, *, token: str | None = None, extra: tuple[str, ...] = (),
               env: dict[str, str] | None = None) -> Iterator[AdminNode]:
    """A real node with ``--admin 127.0.0.1:PORT`` (and ``--token-file`` when ``token`` is given)."""
    port = free_port()
    args = ["--admin", f"127.0.0.1:{port}", *extra]
    if token is not None:
        data_dir.parent.mkdir(parents=True, exist_ok=True)
        token_file = data_dir.parent / f"{data_dir.name}.token"
        token_file.write_text(token)
        args += ["--token-file", str(token_file)]
    node = NodeProc(data_dir, extra=args, env=env)
    node.start()
    try:
        yield AdminNode(node, port, token)
    finally:
        code = node.stop()
        assert code == 0, f"node did not stop cleanly ({code}):\n{node.log()}"
