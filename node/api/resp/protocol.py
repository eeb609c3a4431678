"""RESP2/RESP3 wire format: an incremental request parser and a reply encoder, with no I/O.

Kept apart from the server so both can be unit-tested byte by byte. The parser is a state machine
that never re-scans bytes it has already consumed: a bulk split across reads at any byte, or a
command dribbled one byte at a time, costs O(bytes). Every length is checked against a limit
*before* any data is awaited, so an absurd header such as ``*99999999999`` or ``$2147483647`` is
refused at once instead of making the connection buffer grow toward it.

Before a client has authenticated, the parser applies Redis 7's tighter limits (see
``taskward.resource_limits``) and hands out one command at a time, so an ``AUTH`` lifts them for the very
next command of the same pipeline, as in Redis.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from taskward.resource_limits import RESP_UNAUTH_MAX_ARGS, RESP_UNAUTH_MAX_BULK_BYTES

# Redis allows 512 MiB bulks and 1M arguments; an admin surface needs far less, and a smaller bound
# keeps one connection's worst-case memory small.
MAX_BULK_BYTES = 1024 * 1024
MAX_ARGS = 1024
MAX_REQUEST_BYTES = 1024 * 1024  # sum of one command's argument bytes
MAX_INLINE_BYTES = 64 * 1024  # Redis's PROTO_INLINE_MAX_SIZE
MAX_HEADER_BYTES = 32  # "*<count>\r\n" / "$<len>\r\n": 20 digits and a sign fit easily

_INT_RE = re.compile(rb"-?[0-9]{1,19}")
# A request starts with '*' (multibulk) or is an inline command; a reply type byte instead means the
# peer is not speaking the request protocol at all.
_REPLY_TYPE_BYTES = frozenset(b"$:+-%~_#,(!=>|\x00")

Command = list[bytes]


class ProtocolError(Exception):
    """The byte stream is not valid RESP; the connection cannot be resynchronised and must close."""


class RequestParser:
    """Turns a stream of request bytes into commands (lists of argument bytes).

    ``feed()`` returns every command completed by the new bytes. On malformed input it returns the
    commands completed before the bad frame and records the failure in ``error``; the caller answers
    those commands, then ``-ERR Protocol error: ...``, then closes the connection (as Redis does).
    The buffer holds at most one unfinished command, itself bounded by ``MAX_REQUEST_BYTES``.

    While ``authenticated`` is False (the server sets it from the session before each call), a command
    may have at most ``RESP_UNAUTH_MAX_ARGS`` arguments of ``RESP_UNAUTH_MAX_BULK_BYTES`` each, and
    ``feed()`` stops after the first complete command: the caller runs it, updates ``authenticated``
    and calls ``feed(b"")`` while ``has_input`` says unparsed bytes remain.
    """

    __slots__ = ("_args", "_buf", "_bulk_len", "_offset", "_remaining", "_request_bytes", "_stopped_early",
                 "authenticated", "error")

    def __init__(self, *, authenticated: bool = True) -> None:
        self._buf = bytearray()
        self._offset = 0  # bytes of _buf already parsed, kept only while stopped early (see feed)
        self._args: Command | None = None  # arguments of the multibulk being read, None between commands
        self._remaining = 0  # arguments still to read for _args
        self._bulk_len = -1  # length of the bulk being read, -1 while waiting for its "$" header
        self._request_bytes = 0
        self._stopped_early = False  # the last feed() left complete commands, maybe, in the buffer
        self.authenticated = authenticated
        self.error: ProtocolError | None = None

    @property
    def buffered(self) -> int:
        """Bytes received but not yet part of a complete command."""
        return len(self._buf) - self._offset

    @property
    def has_input(self) -> bool:
        """Whether ``feed(b"")`` may find another command: the last feed stopped after one command (not
        authenticated) with bytes left after it."""
        return self._stopped_early and self.buffered > 0 and self.error is None

    def feed(self, data: bytes) -> list[Command]:
        if self.error is not None:
            return []
        buf = self._buf
        buf += data
        out: list[Command] = []
        self._stopped_early = False
        try:
            pos = self._parse(buf, out, self._offset)
        except ProtocolError as exc:
            self.error = exc
            buf.clear()
            self._offset = 0
            return out
        if self._stopped_early:
            # One command at a time: remember where we are instead of moving the rest of the buffer to
            # its front after every command (a pipeline of tiny commands would cost O(n^2) bytes moved).
            self._offset = pos
        else:
            del buf[:pos]
            self._offset = 0
        return out

    def _parse(self, buf: bytearray, out: list[Command], pos: int) -> int:
        end = len(buf)
        while pos < end:
            if self._args is None:
                if buf[pos] == 0x2A:  # '*'
                    line_end = _header_end(buf, pos, "multibulk count")
                    if line_end < 0:
                        break
                    count = _header_int(buf, pos + 1, line_end, "invalid multibulk length")
                    if count > RESP_UNAUTH_MAX_ARGS and not self.authenticated:
                        raise ProtocolError("unauthenticated multibulk length")
                    if count > MAX_ARGS:
                        raise ProtocolError(f"invalid multibulk length (more than {MAX_ARGS} arguments)")
                    pos = line_end + 2
                    if count > 0:  # "*0" is an empty command, skipped as Redis does
                        self._args, self._remaining, self._bulk_len, self._request_bytes = [], count, -1, 0
                    continue
                if buf[pos] in _REPLY_TYPE_BYTES:
                    raise ProtocolError(f"unexpected {chr(buf[pos])!r} at the start of a request")
                nl = buf.find(b"\n", pos)
                if nl < 0:
                    if end - pos > MAX_INLINE_BYTES:
                        raise ProtocolError("too big inline request")
                    break
                if nl - pos > MAX_INLINE_BYTES:
                    raise ProtocolError("too big inline request")
                args = bytes(buf[pos:nl]).split()
                pos = nl + 1
                if args:
                    out.append(args)
                    if not self.authenticated:
                        self._stopped_early = True
                        break
                continue
            if self._bulk_len < 0:
                if buf[pos] != 0x24:  # '$'
                    raise ProtocolError(f"expected '$', got {chr(buf[pos])!r}")
                line_end = _header_end(buf, pos, "bulk length")
                if line_end < 0:
                    break
                size = _header_int(buf, pos + 1, line_end, "invalid bulk length")
                if size > RESP_UNAUTH_MAX_BULK_BYTES and not self.authenticated:
                    raise ProtocolError("unauthenticated bulk length")
                if size > MAX_BULK_BYTES or self._request_bytes + size > MAX_REQUEST_BYTES:
                    raise ProtocolError(f"invalid bulk length (a request may carry at most {MAX_REQUEST_BYTES} bytes)")
                self._bulk_len = size
                self._request_bytes += size
                pos = line_end + 2
                continue
            stop = pos + self._bulk_len
            if end < stop + 2:
                break
            if buf[stop] != 0x0D or buf[stop + 1] != 0x0A:
                raise ProtocolError("expected CRLF after bulk data")
            assert self._args is not None
            self._args.append(bytes(buf[pos:stop]))
            pos = stop + 2
            self._bulk_len = -1
            self._remaining -= 1
            if self._remaining == 0:
                out.append(self._args)
                self._args = None
                if not self.authenticated:
                    self._stopped_early = True
                    break  # AUTH may be next: parse the rest under the limits its outcome decides
        return pos


def _header_end(buf: bytearray, pos: int, what: str) -> int:
    """Index of the CRLF ending the header at ``pos``, -1 if it has not arrived yet."""
    idx = buf.find(b"\r\n", pos, pos + MAX_HEADER_BYTES)
    if idx < 0 and len(buf) - pos >= MAX_HEADER_BYTES:
        raise ProtocolError(f"{what} line too long or missing CRLF")
    return idx


def _header_int(buf: bytearray, start: int, stop: int, what: str) -> int:
    raw = bytes(buf[start:stop])
    if not _INT_RE.fullmatch(raw):
        raise ProtocolError(f"{what} ({raw[:20]!r} is not an integer)")
    value = int(raw)
    if value < 0:
        raise ProtocolError(f"{what} (negative)")
    return value


# ---------------------------------------------------------------------------------- replies


@dataclass(frozen=True, slots=True)
class Simple:
    """A simple string reply (``+OK``); plain ``str`` values are sent as bulk strings."""

    text: str


@dataclass(frozen=True, slots=True)
class Error:
    """An error reply; ``text`` starts with its code (``ERR``, ``NOAUTH``, ``WRONGPASS`` ...)."""

    text: str


Reply = None | bool | int | str | bytes | Simple | Error | Sequence["Reply"] | Mapping["str | Simple", "Reply"]

OK = b"+OK\r\n"
PONG = b"+PONG\r\n"


def _line(text: str) -> bytes:
    """Simple strings and errors cannot carry CR/LF; Redis replaces them with spaces."""
    return text.replace("\r", " ").replace("\n", " ").encode("utf-8", "replace")


def encode(value: Reply, resp: int) -> bytes:
    """Encode ``value`` for a RESP2 or RESP3 client.

    RESP2 has no map, boolean or null type: maps become flat key/value arrays, booleans the integers
    1/0 and null the null bulk string, exactly as Redis degrades them, so redis-cli without ``-3``
    still gets something it can print.
    """
    parts: list[bytes] = []
    _encode_into(parts, value, resp)
    return b"".join(parts)


def _encode_into(parts: list[bytes], value: Reply, resp: int) -> None:
    if value is None:
        parts.append(b"_\r\n" if resp >= 3 else b"$-1\r\n")
    elif value is True or value is False:
        if resp >= 3:
            parts.append(b"#t\r\n" if value else b"#f\r\n")
        else:
            parts.append(b":1\r\n" if value else b":0\r\n")
    elif isinstance(value, int):
        parts.append(b":%d\r\n" % value)
    elif isinstance(value, str | bytes):
        data = value.encode() if isinstance(value, str) else value
        parts.append(b"$%d\r\n%s\r\n" % (len(data), data))
    elif isinstance(value, Simple):
        parts.append(b"+" + _line(value.text) + b"\r\n")
    elif isinstance(value, Error):
        parts.append(b"-" + _line(value.text) + b"\r\n")
    elif isinstance(value, Mapping):
        parts.append((b"%%%d\r\n" if resp >= 3 else b"*%d\r\n") % (len(value) * (1 if resp >= 3 else 2)))
        for key, item in value.items():
            _encode_into(parts, key, resp)
            _encode_into(parts, item, resp)
    else:
        parts.append(b"*%d\r\n" % len(value))
        for item in value:
            _encode_into(parts, item, resp)


def error(text: str) -> bytes:
    return b"-" + _line(text) + b"\r\n"


def simple(text: str) -> bytes:
    return b"+" + _line(text) + b"\r\n"
