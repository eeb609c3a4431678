"""Fuzzing the RESP3 admin surface in-process: the request parser, the reply encoder and the commands.

Every byte stream either parses into the commands it holds or stops at the first bad frame with a
Redis-worded protocol error, whatever way it is cut into reads; the commands before a bad frame
always survive; every reply the commands give is exactly one well-formed RESP value with a Redis
error code, and only the configured token authenticates a connection.
"""

from __future__ import annotations

import random
import re
from pathlib import Path

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from taskward.api.resp.commands import AdminCommands, Session, type_stats_reply
from taskward.api.resp.protocol import (
    MAX_ARGS,
    MAX_BULK_BYTES,
    MAX_INLINE_BYTES,
    MAX_REQUEST_BYTES,
    Command,
    Error,
    Reply,
    RequestParser,
    Simple,
    encode,
)
from tests.fuzz.cases import CaseCount
from tests.fuzz.resp_reader import ErrorText, SimpleText, decode_reply
from tests.support import sample_tasks
from tests.support.managers import in_process_manager

# The parser's messages keep Redis's wording (networking.c), plus the few checks Redis does not make.
PROTOCOL_ERROR = re.compile(
    r"(invalid multibulk length|invalid bulk length|unauthenticated multibulk length|unauthenticated bulk length"
    r"|too big inline request|expected '\$', got .+|unexpected .+ at the start of a request"
    r"|(multibulk count|bulk length) line too long or missing CRLF|expected CRLF after bulk data)( .*)?"
)
ERROR_CODES = ("ERR", "NOAUTH", "WRONGPASS", "NOPROTO", "NOPERM")
TOKEN = b"fuzz-token"
# A shared two-core machine can run a few times slower than an idle one; the case counts are what CI bounds.
pytestmark = pytest.mark.timeout(600)

# ---------------------------------------------------------------------------------- frames


def multibulk(command: Command) -> bytes:
    return b"*%d\r\n" % len(command) + b"".join(b"$%d\r\n%s\r\n" % (len(a), a) for a in command)


# Hypothesis spends most of a case's time per draw, so a frame is drawn in a few large draws (one blob
# cut into arguments) rather than one draw per argument: more cases in the same CI time.


def split_args(blob: bytes, n: int) -> Command:
    """``n`` arguments cut from one blob."""
    size = len(blob) // n
    return [blob[i * size:(i + 1) * size if i < n - 1 else len(blob)] for i in range(n)]


_INLINE_TEXT = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E) | st.just("\t"), max_size=40)
_NOT_INLINE = b"*$:+-%~_#,(!=>|"  # a line starting with one of these is a multibulk or not a request


@st.composite
def valid_frame(draw: st.DrawFn) -> tuple[bytes, list[Command]]:
    """One well-formed request frame and the commands it holds (none for ``*0`` or a blank line)."""
    kind = draw(st.sampled_from(["multibulk", "multibulk", "inline", "empty"]))
    if kind == "multibulk":
        command = split_args(draw(st.binary(max_size=120)), draw(st.integers(1, 6)))
        return multibulk(command), [command]
    if kind == "inline":
        line = draw(_INLINE_TEXT).encode()
        if line[:1] and line[:1] in _NOT_INLINE:
            line = b"x" + line
        words = line.split()
        return line + draw(st.sampled_from([b"\r\n", b"\n"])), [words] if words else []
    return b"*0\r\n", []


_NUMBERS = [b"-1", b"-0", b"0", b"1", b"2", b"%d" % MAX_ARGS, b"%d" % (MAX_ARGS + 1), b"%d" % MAX_BULK_BYTES,
            b"%d" % (MAX_BULK_BYTES + 1), b"9" * 19, b"9" * 25, b"+1", b" 1", b"1 ", b"0x10", b"1e3", b"", b"\xff"]
_TOKENS = [b"*", b"$", b"\r\n", b"\n", b"\r", b"\x00", b"PING", b"%", b"+OK", b":1", *_NUMBERS]


@st.composite
def bad_frame(draw: st.DrawFn) -> bytes:
    """A frame gone wrong: a valid one with one byte changed, lost or added, a bad header, or noise."""
    kind = draw(st.sampled_from(["mutated", "mutated", "header", "noise", "reply-type"]))
    if kind == "noise":
        picks = draw(st.binary(min_size=1, max_size=12))  # each byte picks a token or stands for itself
        return b"".join(_TOKENS[b] if b < len(_TOKENS) else bytes([b]) for b in picks)
    if kind == "reply-type":
        return draw(st.binary(min_size=1, max_size=20).map(lambda b: bytes([_NOT_INLINE[b[0] % 14]]) + b[1:]))
    if kind == "header":
        count, bulk = draw(st.sampled_from(_NUMBERS)), draw(st.sampled_from(_NUMBERS))
        return b"*" + count + b"\r\n$" + bulk + b"\r\n" + draw(st.binary(max_size=20)) + b"\r\n"
    frame = multibulk(split_args(draw(st.binary(max_size=60)), draw(st.integers(1, 4))))
    at, edit, byte = draw(st.integers(0, len(frame) - 1)), draw(st.integers(0, 2)), draw(st.binary(min_size=1,
                                                                                                     max_size=8))
    if edit == 0:
        return frame[:at] + byte[:1] + frame[at + 1:]
    if edit == 1:
        return frame[:at] + frame[at + 1:]
    return frame[:at] + byte + frame[at:]


@st.composite
def request_stream(draw: st.DrawFn) -> tuple[bytes, list[Command], bool, int]:
    """Valid frames, then (usually) a tail of bad frames and more valid ones.

    Returns the bytes, the commands of the valid prefix, whether the whole stream is valid, and how
    many frames it holds (each frame is one case).
    """
    prefix = draw(st.lists(valid_frame(), max_size=10))
    tail = draw(st.lists(st.one_of(bad_frame(), valid_frame().map(lambda f: f[0])), max_size=4))
    data = b"".join(f for f, _ in prefix) + b"".join(tail)
    expected = [c for _, cs in prefix for c in cs]
    return data, expected, not tail, len(prefix) + len(tail)


def parse(data: bytes, cut_seed: int) -> tuple[list[Command], RequestParser]:
    """Feed ``data`` in reads cut at points drawn from ``cut_seed`` (0: one read)."""
    cuts = sorted(random.Random(cut_seed).sample(range(len(data) + 1), min(cut_seed % 9, len(data) + 1)))
    parser = RequestParser()
    commands: list[Command] = []
    start = 0
    for cut in [*cuts, len(data)]:
        commands.extend(parser.feed(data[start:cut]))
        assert parser.buffered <= max(MAX_BULK_BYTES + 2, MAX_INLINE_BYTES + 1) + cut - start
        start = cut
    return commands, parser


def test_request_parser() -> None:
    count = CaseCount("resp parser")

    @settings(max_examples=2_000)
    @given(stream=request_stream(), cut_seed=st.integers(0, 2**32))
    @example(stream=(b"PING\r\n*1\r\n$4\r\nPING\n\n", [[b"PING"]], False, 2), cut_seed=0)
    @example(stream=(b"*1\r\n" + b"$" + b"9" * 40 + b"\r\n", [], False, 1), cut_seed=5)
    def cut_anywhere(stream: tuple[bytes, list[Command], bool, int], cut_seed: int) -> None:
        data, valid_prefix, all_valid, frames = stream
        count.add(frames)
        whole, whole_parser = parse(data, 0)
        chunked, parser = parse(data, cut_seed)
        # The same bytes cut into different reads mean the same commands and the same verdict.
        assert chunked == whole
        assert str(parser.error) == str(whole_parser.error)
        # Commands before the first bad frame are answered before the error.
        assert chunked[:len(valid_prefix)] == valid_prefix
        for command in chunked:
            assert command and all(isinstance(a, bytes) for a in command)
            assert len(command) <= MAX_ARGS and sum(map(len, command)) <= MAX_REQUEST_BYTES
        if all_valid:
            assert parser.error is None and chunked == valid_prefix and parser.buffered == 0
        if parser.error is not None:
            message = str(parser.error)
            assert PROTOCOL_ERROR.fullmatch(message), message
            assert "\r" not in message and "\n" not in message and len(message) < 200
            assert parser.buffered == 0 and parser.feed(b"PING\r\n") == [] and str(parser.error) == message

    cut_anywhere()
    count.check()


# ---------------------------------------------------------------------------------- replies


def _flat_text(text: str) -> str:
    return text.replace("\r", " ").replace("\n", " ")


def expected_reply(value: Reply, resp: int) -> object:
    """What a client decodes from ``encode(value, resp)``: RESP2 has no map, boolean or null."""
    if value is None or (isinstance(value, bool) and resp >= 3):
        return value
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        return value.encode()
    if isinstance(value, bytes):
        return value
    if isinstance(value, Simple):
        return SimpleText(_flat_text(value.text))
    if isinstance(value, Error):
        return ErrorText(_flat_text(value.text))
    if isinstance(value, dict):
        if resp >= 3:
            return {expected_reply(k, resp): expected_reply(v, resp) for k, v in value.items()}
        return [x for k, v in value.items() for x in (expected_reply(k, resp), expected_reply(v, resp))]
    assert isinstance(value, list)
    return [expected_reply(v, resp) for v in value]


def same(a: object, b: object) -> bool:
    """Equality that also compares types (and map order), so ``True`` is not ``1`` nor ``b"1"`` ``"1"``."""
    if type(a) is not type(b):
        return False
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict) and isinstance(b, dict):
        return same(list(a), list(b)) and all(same(a[k], b[k]) for k in a)
    return a == b


_TEXT = st.text(max_size=20)
_SCALAR: st.SearchStrategy[Reply] = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**63), 2**63 - 1), _TEXT, st.binary(max_size=20),
    _TEXT.filter(bool).map(Simple), _TEXT.filter(lambda t: t.strip() != "").map(Error),
)
REPLY: st.SearchStrategy[Reply] = st.recursive(
    _SCALAR,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.dictionaries(st.one_of(_TEXT, _TEXT.filter(bool).map(Simple)), inner, max_size=4).filter(
            # Simple("a\nb") and Simple("a b") are one key on the wire (a line cannot hold a newline)
            lambda d: len({expected_reply(k, 3) for k in d}) == len(d)),
    ),
    max_leaves=12,
)


def test_reply_encoding_round_trips() -> None:
    count = CaseCount("resp replies")

    @settings(max_examples=1_000)
    @given(values=st.lists(REPLY, min_size=1, max_size=6), resp=st.sampled_from([2, 3]))
    @example(values=[{Simple("a\r\nb"): [Error("E\nx"), None, True]}], resp=2)
    def round_trip(values: list[Reply], resp: int) -> None:
        for value in values:
            count.add()
            assert same(decode_reply(encode(value, resp)), expected_reply(value, resp))

    round_trip()
    count.check(minimum=3_000)  # the encoder is not an input surface: fewer cases than the parser


# ---------------------------------------------------------------------------------- commands

_NAMES = st.sampled_from([b"hello", b"auth", b"ping", b"command", b"task.admin", b"quit", b"get", b"client"])
_ARG = st.one_of(
    st.sampled_from([b"2", b"3", b"4", b"-1", b"99999999999999999999", b"AUTH", b"default", TOKEN, b"wrong",
                     b"SETNAME", b"LIST", b"HELP", b"docs", b"count", b"info", b"", b"a b", b"\r\n", b"\xff"]),
    st.binary(max_size=16),
)


_CASINGS = (bytes.lower, bytes.upper, bytes.title, bytes.swapcase)


@st.composite
def command(draw: st.DrawFn) -> Command:
    """A command name in any letter case (names are case-insensitive) with arguments that mean something
    to some command, or nothing at all."""
    name = draw(st.sampled_from(_CASINGS))(draw(st.one_of(_NAMES, st.binary(min_size=1, max_size=12))))
    return [name, *draw(st.lists(_ARG, max_size=5))]


def test_admin_commands(tmp_path: Path) -> None:
    count = CaseCount("resp commands")
    source = in_process_manager(tmp_path, sample_tasks)

    # ~4 commands an example, fewer after an early QUIT: 2,500 examples gave 9,754 commands run alone and
    # 10,156 after the rest of the suite (Hypothesis's generation is not independent of what ran before).
    @settings(max_examples=2_800)
    @given(token=st.sampled_from([None, TOKEN]), commands=st.lists(command(), min_size=1, max_size=8))
    @example(token=TOKEN, commands=[[b"HELLO", b"3", b"AUTH", b"default", TOKEN], [b"TASK.ADMIN", b"LIST"]])
    @example(token=None, commands=[[b"HELLO", b"2", b"SETNAME", b"\xff"], [b"AUTH", b"x"]])
    def every_reply_is_one_value(token: bytes | None, commands: list[Command]) -> None:
        admin = AdminCommands(source, token=token.decode() if token else None, server_version="fuzz")
        session = Session(id=1, authenticated=token is None)
        for args in commands:
            count.add()
            was_authenticated = session.authenticated
            reply = decode_reply(admin.execute(session, args))
            name = args[0].lower()
            assert session.resp in (2, 3)
            if isinstance(reply, ErrorText):
                assert reply.text.split(" ", 1)[0] in ERROR_CODES, reply
            if session.authenticated and not was_authenticated:
                assert name in (b"auth", b"hello") and TOKEN in args[1:], args
            if not was_authenticated and name not in (b"auth", b"hello", b"quit"):
                assert isinstance(reply, ErrorText), (args, reply)  # nothing is served before AUTH
            if session.authenticated and [a.lower() for a in args] == [b"task.admin", b"list"]:
                assert reply == decode_reply(encode(type_stats_reply(source.list_task_types()), session.resp))
            if session.authenticated and name == b"ping" and len(args) <= 2:
                assert reply == (SimpleText("PONG") if len(args) == 1 else args[1])
            if name == b"quit":
                assert reply == SimpleText("OK") and session.close_after_reply
                return  # the server closes the connection after QUIT's reply

    every_reply_is_one_value()
    count.check()
