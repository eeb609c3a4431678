"""The RESP parser, encoder and admin commands without a server (fast, byte-exact checks)."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from taskward.api.resp.commands import AdminCommands, Session, TypeListCache, type_stats_reply
from taskward.api.resp.protocol import MAX_ARGS, MAX_BULK_BYTES, Error, Reply, RequestParser, Simple, encode
from taskward.model import TypeStats
from tests.support.resp_client import cmd

STREAM = (cmd("HELLO", "3") + b"PING\r\n" + cmd("TASK.ADMIN", "LIST") + b"*0\r\n" + cmd("SET", "k", b"a\r\nb")
          + cmd("EMPTY", b"") + b"  ping   two  words \r\n\r\n" + cmd("X" * 300))
EXPECTED = [[b"HELLO", b"3"], [b"PING"], [b"TASK.ADMIN", b"LIST"], [b"SET", b"k", b"a\r\nb"], [b"EMPTY", b""],
            [b"ping", b"two", b"words"], [b"X" * 300]]


def test_parser_whole_stream() -> None:
    p = RequestParser()
    assert p.feed(STREAM) == EXPECTED
    assert p.buffered == 0 and p.error is None


def test_parser_split_at_every_byte() -> None:
    for cut in range(len(STREAM) + 1):
        p = RequestParser()
        assert p.feed(STREAM[:cut]) + p.feed(STREAM[cut:]) == EXPECTED, cut


def test_parser_one_byte_at_a_time() -> None:
    p = RequestParser()
    got = [c for i in range(len(STREAM)) for c in p.feed(STREAM[i:i + 1])]
    assert got == EXPECTED


def test_parser_keeps_only_the_unfinished_command() -> None:
    p = RequestParser()
    assert p.feed(cmd("PING") * 1000 + b"*1\r\n$5\r\nPI") == [[b"PING"]] * 1000
    assert p.buffered == 2
    assert p.feed(b"NG!\r\n") == [[b"PING!"]]


@pytest.mark.parametrize(("data", "message"), [
    (b"*abc\r\n", "invalid multibulk length"),
    (b"*-1\r\n", "invalid multibulk length (negative)"),
    (b"*+1\r\n", "invalid multibulk length"),
    (b"*1_0\r\n", "invalid multibulk length"),
    (b"*%d\r\n" % (MAX_ARGS + 1), "more than 1024 arguments"),
    (b"*" + b"9" * 40 + b"\r\n", "line too long or missing CRLF"),
    (b"*99999999999999999999999\r\n", "invalid multibulk length"),
    (b"*1\r\n$-1\r\n", "invalid bulk length (negative)"),
    (b"*1\r\n$%d\r\n" % (MAX_BULK_BYTES + 1), "invalid bulk length"),
    (b"*1\r\n+PING\r\n", "expected '$', got '+'"),
    (b"%1\r\n", "unexpected '%' at the start of a request"),
    (b"*1\r\n$4\r\nPINGPONG", "expected CRLF after bulk data"),
    (b"*1\r\n$4\r\nPING\n\n", "expected CRLF after bulk data"),
])
def test_parser_errors(data: bytes, message: str) -> None:
    p = RequestParser()
    assert p.feed(b"PING\r\n" + data) == [[b"PING"]]  # commands before the bad frame survive
    assert p.error is not None and message in str(p.error)
    assert p.buffered == 0 and p.feed(b"PING\r\n") == []  # a failed parser takes nothing more


def test_request_byte_limit_counts_every_argument() -> None:
    half = MAX_BULK_BYTES // 2 + 1
    p = RequestParser()
    p.feed(b"*2\r\n$%d\r\n%s\r\n" % (half, b"a" * half))
    assert p.error is None
    p.feed(b"$%d\r\n" % half)
    assert p.error is not None and "at most" in str(p.error)


def test_encode_resp3_and_resp2() -> None:
    value: Reply = {Simple("t"): {"on": True, "off": False, "n": -7, "nil": None, "list": [b"x", "y"]},
                    "e": Error("E\r\nx")}
    assert encode(value, 3) == (b"%2\r\n+t\r\n%5\r\n$2\r\non\r\n#t\r\n$3\r\noff\r\n#f\r\n$1\r\nn\r\n:-7\r\n"
                                b"$3\r\nnil\r\n_\r\n$4\r\nlist\r\n*2\r\n$1\r\nx\r\n$1\r\ny\r\n$1\r\ne\r\n-E  x\r\n")
    assert encode(value, 2) == (b"*4\r\n+t\r\n*10\r\n$2\r\non\r\n:1\r\n$3\r\noff\r\n:0\r\n$1\r\nn\r\n:-7\r\n"
                                b"$3\r\nnil\r\n$-1\r\n$4\r\nlist\r\n*2\r\n$1\r\nx\r\n$1\r\ny\r\n$1\r\ne\r\n-E  x\r\n")


@dataclass
class FakeManager:
    stats: list[TypeStats] = field(default_factory=list)
    type_stats_version: int = 0
    calls: int = 0

    def list_task_types(self) -> list[TypeStats]:
        self.calls += 1
        return list(self.stats)


def test_task_admin_list_is_cached_until_the_version_changes() -> None:
    fake = FakeManager([TypeStats("m:a", started_at=5), TypeStats("m:b", running=True)])
    commands = AdminCommands(fake, token=None, server_version="t")
    s3, s2 = Session(id=1, authenticated=True, resp=3), Session(id=2, authenticated=True)
    first = commands.execute(s3, [b"TASK.ADMIN", b"LIST"])
    assert first.startswith(b"%2\r\n+m:a\r\n%4\r\n+running\r\n#f\r\n+completed\r\n#f\r\n+started_at\r\n:5\r\n")
    assert commands.execute(s2, [b"task.admin", b"list"]).startswith(b"*4\r\n+m:a\r\n*8\r\n")
    for _ in range(100):
        assert commands.execute(s3, [b"Task.Admin", b"List"]) == first
    assert fake.calls == 1
    fake.stats[0] = TypeStats("m:a", completed=True, started_at=5, last_run=9)
    fake.type_stats_version += 1
    assert b"+completed\r\n#t\r\n+started_at\r\n:5\r\n+last_run\r\n:9\r\n" in commands.execute(
        s3, [b"TASK.ADMIN", b"LIST"])
    assert fake.calls == 2


def test_cached_listing_is_rebuilt_after_a_second_even_without_a_version_bump() -> None:
    now = [0.0]
    fake = FakeManager([TypeStats("m:a")])
    cache = TypeListCache(fake, clock=lambda: now[0])
    first = cache.reply(3)
    fake.stats[0] = TypeStats("m:a", running=True)  # changed behind the version counter's back
    now[0] = 0.5
    assert cache.reply(3) == first
    now[0] = 1.6
    assert cache.reply(3) != first and fake.calls == 2


def test_hand_encoded_listing_matches_the_generic_encoder() -> None:
    fake = FakeManager([TypeStats(f"m{i}:t\r\n{i}", running=i % 2 == 0, completed=i % 3 == 0, started_at=i,
                                  last_run=i * 7) for i in range(50)])
    commands = AdminCommands(fake, token=None, server_version="t")
    for step in range(5):
        for resp in (2, 3):
            assert commands.types.reply(resp) == encode(type_stats_reply(fake.stats), resp)
        fake.stats[step] = TypeStats(fake.stats[step].name, running=True, started_at=1000 + step)
        fake.stats.append(TypeStats(f"new:{step}"))
        fake.type_stats_version += 1
    fake.stats.clear()
    fake.type_stats_version += 1
    assert commands.types.reply(3) == b"%0\r\n" and commands.types.reply(2) == b"*0\r\n"


def test_auth_flow_and_check_order() -> None:
    commands = AdminCommands(FakeManager(), token="tok", server_version="t")
    s = Session(id=7, authenticated=False)
    assert commands.execute(s, [b"nosuch"]).startswith(b"-ERR unknown command 'nosuch'")
    assert commands.execute(s, [b"TASK.ADMIN", b"LIST", b"x"]).startswith(b"-ERR wrong number")  # arity first
    assert commands.execute(s, [b"TASK.ADMIN", b"LIST"]) == b"-NOAUTH Authentication required.\r\n"
    assert commands.execute(s, [b"HELLO", b"3"]).startswith(b"-NOAUTH HELLO must be called")
    assert commands.execute(s, [b"AUTH", b"a", b"b", b"c"]) == b"-ERR syntax error\r\n"
    assert commands.execute(s, [b"AUTH", b"tok2"]).startswith(b"-WRONGPASS")
    assert commands.execute(s, [b"HELLO", b"3", b"AUTH", b"default"]).startswith(b"-ERR Syntax error in HELLO")
    hello = commands.execute(s, [b"HELLO", b"3", b"AUTH", b"default", b"tok", b"SETNAME", b"cli"])
    assert hello.startswith(b"%7\r\n") and b"$2\r\nid\r\n:7\r\n" in hello
    assert s.authenticated and s.resp == 3 and s.name == "cli"
    assert commands.execute(s, [b"PING", b"x"]) == b"$1\r\nx\r\n"
    assert commands.execute(s, [b"quit", b"extra"]) == b"+OK\r\n" and s.close_after_reply


def test_unknown_command_message_is_bounded_and_single_line() -> None:
    commands = AdminCommands(FakeManager(), token=None, server_version="t")
    reply = commands.execute(Session(id=1, authenticated=True), [b"bad\r\ncmd", b"a" * 500, b"b"])
    assert reply.count(b"\r\n") == 1 and len(reply) < 300
    assert reply.startswith(b"-ERR unknown command 'bad  cmd', with args beginning with: 'aaa")
