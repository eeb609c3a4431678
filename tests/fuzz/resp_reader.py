"""A strict decoder of one RESP2/RESP3 reply held in memory, written apart from the server's encoder.

The fuzz tests decode every reply with it: a reply that is not exactly one well-formed value (a
length that does not match, a missing CRLF, a type byte the server never sends, trailing bytes)
fails the test, whatever redis-cli would have tolerated.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class SimpleText:
    text: str


@dataclass(frozen=True, slots=True)
class ErrorText:
    text: str


class Malformed(AssertionError):
    """The bytes are not one complete, well-formed reply."""


def decode_reply(data: bytes) -> Any:
    """The one reply ``data`` holds; ``Malformed`` when it holds anything else."""
    value, end = _read(data, 0)
    if end != len(data):
        raise Malformed(f"{len(data) - end} bytes after the reply: {data[end:end + 40]!r}")
    return value


def _line(data: bytes, pos: int) -> tuple[bytes, int]:
    idx = data.find(b"\r\n", pos)
    if idx < 0:
        raise Malformed(f"no CRLF after {data[pos:pos + 40]!r}")
    line = data[pos:idx]
    if b"\r" in line or b"\n" in line:
        raise Malformed(f"bare CR or LF in a line: {line!r}")
    return line, idx + 2


def _count(raw: bytes) -> int:
    if not raw or not (raw.isdigit() or (raw[:1] == b"-" and raw[1:].isdigit())):
        raise Malformed(f"not an integer: {raw!r}")
    return int(raw)


def _read(data: bytes, pos: int) -> tuple[Any, int]:
    line, pos = _line(data, pos)
    kind, rest = line[:1], line[1:]
    if kind == b"+":
        return SimpleText(rest.decode("utf-8")), pos
    if kind == b"-":
        if not rest:
            raise Malformed("empty error reply")
        return ErrorText(rest.decode("utf-8")), pos
    if kind == b":":
        return _count(rest), pos
    if kind == b"#":
        if rest not in (b"t", b"f"):
            raise Malformed(f"bad boolean {rest!r}")
        return rest == b"t", pos
    if kind == b"_":
        if rest:
            raise Malformed(f"null with a payload {rest!r}")
        return None, pos
    if kind == b"$":
        n = _count(rest)
        if n == -1:
            return None, pos
        if n < 0 or len(data) < pos + n + 2 or data[pos + n:pos + n + 2] != b"\r\n":
            raise Malformed(f"bulk of {n} bytes does not match its data")
        return data[pos:pos + n], pos + n + 2
    if kind == b"*":
        n = _count(rest)
        if n < 0:
            raise Malformed(f"array of {n} items")
        items = []
        for _ in range(n):
            item, pos = _read(data, pos)
            items.append(item)
        return items, pos
    if kind == b"%":
        n = _count(rest)
        if n < 0:
            raise Malformed(f"map of {n} entries")
        entries: dict[Any, Any] = {}
        for _ in range(n):
            key, pos = _read(data, pos)
            value, pos = _read(data, pos)
            if key in entries:
                raise Malformed(f"duplicate map key {key!r}")
            entries[key] = value
        return entries, pos
    raise Malformed(f"unexpected reply line {line[:40]!r}")
