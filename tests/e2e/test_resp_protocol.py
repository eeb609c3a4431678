"""RESP3 admin wire robustness against a real node, with a raw-socket client.

Pipelining, byte-by-byte input, inline commands, RESP2/RESP3, many clients, back-pressure, and
malformed frames: each bad frame gets ``-ERR Protocol error`` and a closed connection, while the
server, other connections and the node's gRPC carry on.
"""

from __future__ import annotations

import asyncio
import select
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from taskward.pb.taskward.v1 import tasks_pb2 as pb
from tests.support.resp_client import AdminNode, RespConn, RespError, admin_node, cmd

LIST = cmd("TASK.ADMIN", "LIST")


@pytest.fixture(scope="module")
def admin(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AdminNode]:
    with admin_node(tmp_path_factory.mktemp("resp-proto") / "n1") as a:
        yield a


def assert_alive(admin: AdminNode) -> None:
    """A fresh RESP connection works and the node's gRPC still answers."""
    with admin.conn() as c:
        assert c.call("PING") == "PONG"
        assert c.call("HELLO", "3")["proto"] == 3
        assert "builtin:sleep" in c.call("TASK.ADMIN", "LIST")
    health = health_pb2_grpc.HealthStub(admin.node.channel()).Check(health_pb2.HealthCheckRequest(), timeout=5)
    assert health.status == health_pb2.HealthCheckResponse.SERVING
    assert "builtin" in admin.node.stub().ListModules(pb.ListModulesRequest(), timeout=5).modules


def rss_kib(admin: AdminNode) -> int:
    assert admin.node.proc is not None
    status = open(f"/proc/{admin.node.proc.pid}/status").read()  # noqa: SIM115
    return int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmRSS:")))


def test_pipelined_commands_in_one_send(admin: AdminNode) -> None:
    with admin.conn() as c:
        batch = [cmd("PING"), LIST, cmd("PING", "x"), cmd("NOSUCH"), cmd("HELLO", "3"), LIST] * 50
        c.send(b"".join(batch))
        replies = [c.read() for _ in batch]
        assert replies[0] == "PONG" and replies[2] == b"x"
        assert isinstance(replies[1], list) and "builtin:sleep" in replies[1]  # RESP2: a flat array
        assert isinstance(replies[3], RespError)
        assert isinstance(replies[5], dict) and replies[5]["builtin:sleep"]["running"] in (True, False)
        assert replies[6] == "PONG" and replies[-1] == replies[5]


def test_command_dribbled_one_byte_at_a_time(admin: AdminNode) -> None:
    with admin.conn() as c:
        for byte in cmd("HELLO", "3") + LIST + b"PING\r\n":
            c.send(bytes([byte]))
            time.sleep(0.001)
        assert c.read()["proto"] == 3
        assert set(c.read()["builtin:fail"]) == {"running", "completed", "started_at", "last_run"}
        assert c.read() == "PONG"


def test_inline_commands(admin: AdminNode) -> None:
    with admin.conn() as c:
        c.send(b"PING\r\nping hello\n\r\n  task.admin   list \r\nHELLO 3\r\nTASK.ADMIN LIST\r\nQUIT\r\n")
        assert c.read() == "PONG"
        assert c.read() == b"hello"
        assert "builtin:sleep" in c.read()
        assert c.read()["proto"] == 3
        assert "builtin:sleep" in c.read()
        assert c.read() == "OK"
        assert c.closed_by_server()


def test_resp2_and_resp3_replies(admin: AdminNode) -> None:
    with admin.conn() as c:
        flat = c.call("TASK.ADMIN", "LIST")
        entry = flat[flat.index("builtin:sleep") + 1]
        assert entry[0::2] == ["running", "completed", "started_at", "last_run"]
        assert all(isinstance(v, int) and not isinstance(v, bool) for v in entry[1::2])
        assert c.call("HELLO", "3")["proto"] == 3
        typed = c.call("TASK.ADMIN", "LIST")
        assert isinstance(typed["builtin:sleep"]["running"], bool)
        assert c.call("HELLO")["proto"] == 3  # HELLO without a version keeps the current one
        hello2 = c.call("HELLO", "2")  # answered in the new protocol: a flat array
        assert hello2[hello2.index(b"proto") + 1] == 2
        assert isinstance(c.call("TASK.ADMIN", "LIST"), list)
        assert c.call("HELLO", "4") == RespError("NOPROTO unsupported protocol version")
        assert c.call("HELLO", "x") == RespError("ERR Protocol version is not an integer or out of range")
        assert c.call("COMMAND", "DOCS") == []  # RESP2 map → empty flat array
        assert c.call("COMMAND") == [] and c.call("COMMAND", "COUNT") == 0


async def test_fifty_concurrent_connections(admin: AdminNode) -> None:
    async def client(i: int) -> int:
        reader, writer = await asyncio.open_connection("127.0.0.1", admin.admin_port)
        try:
            writer.write(cmd("HELLO", "3") + LIST * 20 + cmd("PING", f"client-{i}"))
            await writer.drain()
            data = b""
            tail = f"client-{i}\r\n".encode()
            while not data.endswith(tail):
                async with asyncio.timeout(10):
                    chunk = await reader.read(65536)
                assert chunk, "connection closed early"
                data += chunk
            return data.count(b"builtin:sleep")
        finally:
            writer.close()
            await writer.wait_closed()

    counts = await asyncio.gather(*(client(i) for i in range(50)))
    assert counts == [20] * 50


def test_back_pressure_with_a_client_that_reads_late(admin: AdminNode) -> None:
    """20 MB of replies to a client that first only sends: the server pauses reading, nothing is lost."""
    payload = b"p" * 10_000
    n = 2000
    with admin.conn() as c:
        sender = threading.Thread(target=c.send, args=(cmd("PING", payload) * n,))
        sender.start()
        time.sleep(0.5)  # let both socket buffers fill up before reading anything
        assert all(c.read() == payload for _ in range(n))
        sender.join(10)
        assert c.call("PING") == "PONG"


def test_largest_bulk_is_accepted(admin: AdminNode) -> None:
    with admin.conn() as c:
        big = b"b" * (1024 * 1024 - 4)  # PING + the argument: exactly the 1 MiB request limit
        assert c.call("PING", big) == big


@pytest.mark.parametrize("frame", [
    pytest.param(b"*abc\r\n", id="non-numeric-count"),
    pytest.param(b"*-5\r\n", id="negative-count"),
    pytest.param(b"*99999999999\r\n", id="absurd-count"),
    pytest.param(b"*1\r\n$-3\r\n", id="negative-bulk"),
    pytest.param(b"*1\r\n$x\r\n", id="non-numeric-bulk"),
    pytest.param(b"*1\r\n$99999999999999\r\n", id="absurd-bulk"),
    pytest.param(b"*1\r\n$2000000\r\n", id="bulk-over-limit"),
    pytest.param(b"*1\r\n:5\r\n", id="bad-type-inside"),
    pytest.param(b"$4\r\nPING\r\n", id="bad-type-byte"),
    pytest.param(b"*1\r\n$4\r\nPINGxx\r\n", id="bulk-without-crlf"),
    pytest.param(b"*1\n$4\r\nPING\r\n", id="header-without-cr"),
    pytest.param(b"*" + b"1" * 40, id="endless-header"),
    pytest.param(b"x" * (64 * 1024 + 10), id="inline-too-long"),
])
def test_malformed_frame_closes_only_that_connection(admin: AdminNode, frame: bytes) -> None:
    with admin.conn() as bystander, admin.conn() as c:
        assert bystander.call("PING") == "PONG"
        c.send(cmd("PING") + frame)
        assert c.read() == "PONG"  # what came before the bad frame is still answered
        reply = c.read()
        assert isinstance(reply, RespError) and reply.text.startswith("ERR Protocol error: "), reply
        assert c.closed_by_server()
        assert bystander.call("PING") == "PONG"
    assert_alive(admin)


def test_absurd_lengths_are_refused_before_any_data(admin: AdminNode) -> None:
    rss_before = rss_kib(admin)
    over_total = b"*2\r\n$600000\r\n" + b"a" * 600_000 + b"\r\n$600000\r\n"  # 1.2 MB in one request
    for header in (b"*99999999999\r\n", b"*1\r\n$2147483647\r\n", over_total):
        with admin.conn() as c:
            c.send(header)  # and nothing else: the server must answer without waiting for the data
            reply = c.read()
            assert isinstance(reply, RespError) and "Protocol error" in reply.text
            assert c.closed_by_server()
    waiting = [RespConn(admin.admin_port) for _ in range(20)]
    try:
        for c in waiting:  # allowed lengths whose data never comes: nothing is reserved up front
            c.send(b"*1024\r\n$1048000\r\n")
        assert_alive(admin)
        assert rss_kib(admin) - rss_before < 20 * 1024
    finally:
        for c in waiting:
            c.close()
    assert_alive(admin)


def test_client_disconnecting_mid_frame(admin: AdminNode) -> None:
    for partial in (b"*2\r\n$10\r\nTASK.AD", b"*1\r\n$1000000\r\n" + b"z" * 500_000, b"*3\r\n", b"PIN"):
        sock = socket.create_connection(("127.0.0.1", admin.admin_port))
        sock.sendall(partial)
        sock.close()
    s = socket.create_connection(("127.0.0.1", admin.admin_port))
    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")  # RST on close
    s.sendall(b"*2\r\n$4\r\nPI")
    s.close()
    assert_alive(admin)
    assert "Traceback" not in admin.node.log()


def test_quit_replies_ok_then_closes(admin: AdminNode) -> None:
    with admin.conn() as c:
        c.send(cmd("QUIT") + cmd("PING"))
        assert c.read() == "OK"
        assert c.closed_by_server()


def test_node_stops_promptly_with_clients_connected(tmp_path: Path) -> None:
    """Shutdown closes idle, mid-frame and not-reading clients instead of waiting for them."""
    with admin_node(tmp_path / "n1") as a:
        idle, partial, stuck = a.conn(), a.conn(), a.conn()
        assert idle.call("PING") == "PONG"
        partial.send(b"*2\r\n$4\r\nPI")
        stuck.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        frame = cmd("PING", b"x" * 500_000)
        # Replies pile up: this client never reads, so the server stops reading it; send what it takes
        # until it takes no more (a blocking sendall would wait on that back-pressure).
        assert fill(stuck.sock, frame * 20) > 2 * len(frame)
        t0 = time.monotonic()
        assert a.node.stop() == 0
        assert time.monotonic() - t0 < 8
        assert idle.closed_by_server() and partial.closed_by_server()
        for c in (idle, partial, stuck):
            c.close()


def fill(sock: socket.socket, payload: bytes, idle_s: float = 0.5) -> int:
    """Send as much of ``payload`` as the peer takes, until it takes nothing for ``idle_s``; bytes sent."""
    sock.setblocking(False)
    sent, last = 0, time.monotonic()
    while sent < len(payload) and time.monotonic() - last < idle_s:
        try:
            sent += sock.send(payload[sent:sent + 65536])
            last = time.monotonic()
        except BlockingIOError:
            select.select([], [sock], [], 0.05)
    return sent
