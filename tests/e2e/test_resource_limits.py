"""Resource bounds before authentication, on every surface of a real node (``taskward.resource_limits``).

One node with auth on, REST, RESP and short limits, started with a low soft open-file limit. Each test
floods one surface the way the issue did — endless headers, huge URLs, half-sent requests, partial
bulks, idle anonymous sockets, streams that never end — and checks the exact answer, that the node's
memory stays put, and that the other surfaces answer meanwhile. Every flood is bounded in count and time.
"""

from __future__ import annotations

import asyncio
import json
import re
import select
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from taskward.pb.taskward.v1 import tasks_pb2 as pb
from taskward.pb.taskward.v1 import tasks_pb2_grpc as pb_grpc
from taskward.processes import grpc_serving
from tests.conftest import NODE_ARGS
from tests.support.procs import TIMEOUT_MULT, NodeProc, free_port, poll
from tests.support.resp_client import RespConn, RespError, cmd, needs_redis_cli
from tests.support.rest import GatewayProc, wait_http

TOKEN = "limits-test-token-0123456789"
AUTH = (("authorization", f"Bearer {TOKEN}"),)
SOFT_NOFILE = 512
HEADER_TIMEOUT_S = 1.0
AUTH_TIMEOUT_S = 1.5
IDLE_TIMEOUT_S = 3.0
REST_MAX_REQUESTS = 4
RESP_MAX_CLIENTS = 100
RESP_MAX_UNAUTHENTICATED = 64
GRPC_MAX_STREAMS = 20
RSS_SLACK_KIB = 4 * 1024
# Starts the node with a low soft open-file limit (the hard one unchanged), as a login shell would.
LOW_NOFILE = ("import os, resource, sys; _, hard = resource.getrlimit(resource.RLIMIT_NOFILE); "
              f"resource.setrlimit(resource.RLIMIT_NOFILE, ({SOFT_NOFILE}, hard)); "
              "os.execv(sys.executable, [sys.executable, '-m', 'taskward', *sys.argv[1:]])")


class Limited:
    """The node under test and its three ports."""

    def __init__(self, base: Path) -> None:
        self.token_file = token_file = base / "token"
        token_file.write_text(TOKEN)
        token_file.chmod(0o600)
        self.rest_port, self.admin_port = free_port(), free_port()
        self.node = NodeProc(base / "n1", command=[sys.executable, "-c", LOW_NOFILE], extra=[
            *NODE_ARGS, "--token-file", str(token_file),
            "--rest", f"127.0.0.1:{self.rest_port}", "--admin", f"127.0.0.1:{self.admin_port}",
            "--rest-header-timeout", str(HEADER_TIMEOUT_S),
            "--rest-max-requests", str(REST_MAX_REQUESTS), "--admin-auth-timeout", str(AUTH_TIMEOUT_S),
            "--admin-idle-timeout", str(IDLE_TIMEOUT_S), "--admin-max-clients", str(RESP_MAX_CLIENTS),
            "--grpc-max-streams", str(GRPC_MAX_STREAMS), "--grpc-max-rpcs", "64"])

    @property
    def pid(self) -> int:
        assert self.node.proc is not None
        return self.node.proc.pid

    def rss_kib(self) -> int:
        status = Path(f"/proc/{self.pid}/status").read_text()
        return int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmRSS:")))

    def rest(self) -> socket.socket:
        return socket.create_connection(("127.0.0.1", self.rest_port), timeout=10 * TIMEOUT_MULT)

    def resp(self) -> RespConn:
        return RespConn(self.admin_port)

    def start_task(self) -> str:
        """A gRPC StartTask with the token: the short call every flood must leave answering."""
        stub = self.node.stub()
        return str(stub.StartTask(pb.StartTaskRequest(module="builtin", type="sleep", args_json='{"duration": 0}'),
                                  metadata=AUTH, timeout=5 * TIMEOUT_MULT).task_id)

    def resp_ping(self) -> Any:
        with self.resp() as c:
            assert c.call("AUTH", TOKEN) == "OK"
            return c.call("PING")

    def rest_ok(self) -> bool:
        """An authenticated REST request answers 200."""
        with self.rest() as s:
            s.sendall(b"GET /task_manager/list_modules HTTP/1.1\r\nHost: n1\r\nAuthorization: Bearer "
                      + TOKEN.encode() + b"\r\nConnection: close\r\n\r\n")
            return read_response(s)[0] == 200


@pytest.fixture(scope="module")
def limited(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Limited]:
    lim = Limited(tmp_path_factory.mktemp("limits"))
    lim.node.start()
    try:
        wait_http(f"http://127.0.0.1:{lim.rest_port}", lim.node.proc, 15, lim.node.log)
        yield lim
    finally:
        code = lim.node.stop()
        assert code == 0, f"node did not stop cleanly ({code}):\n{lim.node.log()}"


# ------------------------------------------------------------------------------------------ helpers


def read_all(sock: socket.socket, timeout: float = 10.0) -> bytes:
    """Everything the server sends until it closes (a reset after its answer counts as a close)."""
    sock.settimeout(timeout * TIMEOUT_MULT)
    data = bytearray()
    try:
        while chunk := sock.recv(65536):
            data += chunk
    except (ConnectionResetError, BrokenPipeError):
        pass
    return bytes(data)


def parse_response(raw: bytes) -> tuple[int, dict[str, str], Any]:
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    return status, headers, json.loads(body) if body else None


def read_response(sock: socket.socket) -> tuple[int, dict[str, str], Any]:
    """One complete response on a connection the server closes after it."""
    return parse_response(read_all(sock))


def send_until_answered(lim: Limited, head: bytes, filler: bytes, max_bytes: int) -> tuple[bytes, int]:
    """Send ``head``, then ``filler`` again and again (at most ``max_bytes``) until the server answers or
    closes; returns (the answer, bytes sent after ``head``)."""
    with lim.rest() as s:
        s.sendall(head)
        sent = 0
        while sent < max_bytes:
            readable, _, _ = select.select([s], [], [], 0)
            if readable:
                break
            try:
                s.sendall(filler)
            except (BrokenPipeError, ConnectionResetError):
                break
            sent += len(filler)
        return read_all(s), sent


def closed(sock: socket.socket) -> bool:
    """Whether the server has closed ``sock`` (EOF or reset; any answer before it is dropped)."""
    readable, _, _ = select.select([sock], [], [], 0)
    if not readable:
        return False
    sock.setblocking(False)
    try:
        while sock.recv(65536):
            pass
    except BlockingIOError:
        return False
    except (ConnectionResetError, BrokenPipeError):
        return True
    return True


def wait_all_closed(socks: list[socket.socket], timeout: float, what: str) -> None:
    open_socks = list(socks)

    def done() -> bool:
        open_socks[:] = [s for s in open_socks if not closed(s)]
        return not open_socks

    poll(done, timeout, f"{what} ({len(open_socks)} of {len(socks)} still open)")


# ------------------------------------------------------------------------------------------ process


def test_open_file_limit_is_raised_to_the_hard_limit(limited: Limited) -> None:
    limits = Path(f"/proc/{limited.pid}/limits").read_text()
    soft, hard = re.search(r"Max open files\s+(\d+)\s+(\d+)", limits).groups()  # type: ignore[union-attr]
    assert int(hard) > SOFT_NOFILE, "the test needs a hard limit above the soft one it starts the node with"
    assert soft == hard, limits


# A listener that runs out of descriptors, with the node's accept-failure log; it stops when stdin closes.
OUT_OF_DESCRIPTORS = """
import asyncio, logging, os, resource, sys
from taskward.descriptors import AcceptErrorLog
logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s", stream=sys.stdout)

async def main() -> None:
    loop = asyncio.get_running_loop()
    AcceptErrorLog(loop).install()
    server = await loop.create_server(asyncio.Protocol, "127.0.0.1", 0, backlog=512)
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (len(os.listdir("/proc/self/fd")) + 8, hard))
    print(server.sockets[0].getsockname()[1], flush=True)
    await loop.run_in_executor(None, sys.stdin.read)
    server.close()

asyncio.run(main())
"""


def test_accept_failures_are_a_line_per_interval_not_a_flood(tmp_path: Path) -> None:
    log = tmp_path / "listener.log"
    with log.open("wb") as out:
        proc = subprocess.Popen([sys.executable, "-c", OUT_OF_DESCRIPTORS], stdin=subprocess.PIPE, stdout=out,
                                stderr=subprocess.STDOUT)
    socks: list[socket.socket] = []
    try:
        port = int(poll(lambda: log.read_text().split("\n", 1)[0].strip() or None, 15, "the listener's port"))
        for _ in range(300):  # the kernel completes these handshakes; the listener cannot accept them all
            socks.append(socket.create_connection(("127.0.0.1", port), timeout=5))
        poll(lambda: "cannot accept connections" in log.read_text(), 10, "the accept failure logged")
        started = time.monotonic()
        while time.monotonic() - started < 1.5:  # asyncio retries the accept loop every second
            socks.append(socket.create_connection(("127.0.0.1", port), timeout=5))
            time.sleep(0.01)
    finally:
        assert proc.stdin is not None
        proc.stdin.close()
        assert proc.wait(15 * TIMEOUT_MULT) == 0, log.read_text()[-3000:]
        for s in socks:
            s.close()
    lines = log.read_text().splitlines()[1:]
    assert lines == ["ERROR taskward.descriptors: cannot accept connections: Too many open files"], lines[:20]


# ------------------------------------------------------------------------------------------ REST


def test_endless_header_is_431_and_memory_stays_put(limited: Limited) -> None:
    head = b"GET /task_manager/list_modules HTTP/1.1\r\nHost: n1\r\nX-Endless: "
    send_until_answered(limited, head, b"a" * 65536, 1 << 20)  # warm-up: the first refusal allocates a little
    before = limited.rss_kib()
    answer, sent = send_until_answered(limited, head, b"a" * 65536, 100 << 20)
    status, headers, body = parse_response(answer)
    assert (status, body) == (431, {"message": "request headers larger than 32768 bytes", "code": 431})
    assert headers["connection"] == "close" and headers["content-type"] == "application/json"
    assert sent < 8 << 20, "the server must refuse long before the client runs out of header"
    # Many headers, each small, add up the same way.
    answer, _ = send_until_answered(limited, head + b"x\r\n", b"X-Many: " + b"b" * 100 + b"\r\n", 100 << 20)
    assert parse_response(answer)[0] == 431
    assert limited.rss_kib() - before < RSS_SLACK_KIB
    assert limited.rest_ok()


def test_huge_url_is_414_and_memory_stays_put(limited: Limited) -> None:
    send_until_answered(limited, b"GET /", b"a" * 65536, 1 << 20)
    before = limited.rss_kib()
    for _ in range(3):
        answer, _ = send_until_answered(limited, b"GET /task_manager/list_modules?k=", b"v" * 65536, 40 << 20)
        assert parse_response(answer)[::2] == (414, {"message": "request URL longer than 8192 bytes", "code": 414})
    assert limited.rss_kib() - before < RSS_SLACK_KIB
    assert limited.rest_ok()


@pytest.mark.parametrize(("request_bytes", "message"), [
    (b"\x00\x01garbage\r\n\r\n", "invalid HTTP request: Invalid method encountered"),
    (b"GET / HTTP/1.1\r\nBad Header\r\n\r\n", "invalid HTTP request: Invalid header token"),
])
def test_unparsable_requests_are_400(limited: Limited, request_bytes: bytes, message: str) -> None:
    with limited.rest() as s:
        s.sendall(request_bytes)
        assert read_response(s)[::2] == (400, {"message": message, "code": 400})


def test_half_sent_requests_are_closed_after_the_header_timeout(limited: Limited) -> None:
    partial = b"GET /task_manager/list_modules HTTP/1.1\r\nHost: n1\r\nX-Slow: "
    socks: list[socket.socket] = []
    try:
        for _ in range(280):  # each sends part of its headers as soon as it is connected
            socks.append(limited.rest())
            socks[-1].sendall(partial)
        sent_at = time.monotonic()
        silent = [limited.rest() for _ in range(20)]  # connect and send nothing: closed without an answer
        socks += silent
        # Meanwhile the other surfaces (and REST itself) answer.
        assert limited.start_task()
        assert limited.resp_ping() == "PONG"
        assert limited.rest_ok()
        for s in socks[:280]:
            status, _, body = read_response(s)
            assert (status, body) == (408, {"message": f"request headers not complete within {HEADER_TIMEOUT_S:g} s",
                                            "code": 408})
        assert time.monotonic() - sent_at >= HEADER_TIMEOUT_S * 0.9
        for s in silent:
            assert read_all(s) == b""
    finally:
        for s in socks:
            s.close()
    # A flood of refusals is a few log lines, not one per connection.
    log = limited.node.log()
    assert log.count("taskward.api.rest.bounded_http") < 10, log[-3000:]


def test_gateway_connections_over_the_cap_are_refused_with_503(limited: Limited, tmp_path: Path) -> None:
    """The gateway serves REST with the same bounds; here a connection cap of its own (and a header
    timeout long enough that no socket of the test is closed by it)."""
    cap = 20
    gateway = GatewayProc(tmp_path, [limited.node], extra=["--token-file", str(limited.token_file),
                                                          "--rest-max-connections", str(cap),
                                                          "--rest-header-timeout", "60"]).start()
    socks: list[socket.socket] = []
    try:
        socks = [socket.create_connection(("127.0.0.1", gateway.port), timeout=10 * TIMEOUT_MULT)
                 for _ in range(cap + 5)]
        status, headers, body = read_response(socks[-1])
        assert (status, body) == (503, {"message": f"too many open connections (limit {cap}); try again later",
                                        "code": 503})
        assert headers["retry-after"] == "1"
        assert limited.start_task()  # the node behind it is not concerned
        with socket.create_connection(("127.0.0.1", gateway.port), timeout=10 * TIMEOUT_MULT) as s:
            s.sendall(b"GET /" + b"u" * 10_000 + b" HTTP/1.1\r\n\r\n")
            assert read_response(s)[0] == 503  # still full: refused before its request is read
        for s in socks:
            s.close()
        socks = []

        def url_refused() -> bool:
            with socket.create_connection(("127.0.0.1", gateway.port), timeout=10 * TIMEOUT_MULT) as s:
                s.sendall(b"GET /" + b"u" * 10_000 + b" HTTP/1.1\r\n\r\n")
                answer = read_response(s)
            return answer[::2] == (414, {"message": "request URL longer than 8192 bytes", "code": 414})

        poll(url_refused, 10, "the gateway taking connections again once the others closed")
    finally:
        for s in socks:
            s.close()
        assert gateway.stop() == 0


def test_requests_over_the_cap_are_503_before_authentication(limited: Limited) -> None:
    stub = limited.node.test_stub()
    stub.RegisterTestModule(pb.Empty(), metadata=AUTH)
    task_id = stub.CreateTestTask(pb.CreateTestTaskRequest(), metadata=AUTH).task_id
    waits = [limited.rest() for _ in range(REST_MAX_REQUESTS)]
    try:
        for s in waits:  # each holds a request in progress until the test task finishes
            s.sendall(f"GET /task_manager/wait_task/{task_id}?timeout=30 HTTP/1.1\r\nHost: n1\r\n"
                      f"Authorization: Bearer {TOKEN}\r\nConnection: close\r\n\r\n".encode())

        def refused() -> tuple[int, dict[str, str], Any] | None:
            with limited.rest() as s:  # no token: the bound applies before authentication
                s.sendall(b"GET /task_manager/list_modules HTTP/1.1\r\nHost: n1\r\n\r\n")
                answer = read_response(s)
            return answer if answer[0] == 503 else None

        _, headers, body = poll(refused, 10, "a request refused while the waits are in progress")
        assert body == {"message": f"too many requests in progress (limit {REST_MAX_REQUESTS}); try again later",
                        "code": 503}
        assert headers["retry-after"] == "1"
        stub.FinishTestTask(pb.FinishTestTaskRequest(task_id=task_id), metadata=AUTH)
        for s in waits:
            assert read_all(s, 10).startswith(b"HTTP/1.1 200 ")
    finally:
        for s in waits:
            s.close()
        stub.UnregisterTestModule(pb.Empty(), metadata=AUTH)
    poll(limited.rest_ok, 10, "REST answering again once the waits ended")


# ------------------------------------------------------------------------------------------ RESP


@pytest.mark.parametrize(("frame", "error"), [
    (b"*11\r\n", "ERR Protocol error: unauthenticated multibulk length"),
    (b"*1\r\n$16385\r\n", "ERR Protocol error: unauthenticated bulk length"),
    (b"*2\r\n$4\r\nAUTH\r\n$1048576\r\n" + b"t" * 65536, "ERR Protocol error: unauthenticated bulk length"),
])
def test_unauthenticated_frames_over_redis_limits_are_refused(limited: Limited, frame: bytes, error: str) -> None:
    with limited.resp() as c:
        c.send(frame)
        assert c.read() == RespError(error)
        assert c.closed_by_server()
    assert limited.resp_ping() == "PONG"


def test_limits_end_with_authentication_in_the_same_pipeline(limited: Limited) -> None:
    with limited.resp() as c:
        # Within the limits before AUTH: ten arguments, a 16 KiB argument.
        assert c.call("NOSUCH", *["x"] * 9) == RespError(
            "ERR unknown command 'NOSUCH', with args beginning with: 'x' 'x' 'x' 'x' 'x' 'x' 'x' 'x' 'x' ")
        assert c.call("PING", b"p" * 16384) == RespError("NOAUTH Authentication required.")
        big = b"q" * 100_000
        c.send(cmd("AUTH", TOKEN) + cmd("PING", big) + cmd("NOSUCH", *["y"] * 20))
        assert c.read() == "OK"
        assert c.read() == big
        assert isinstance(reply := c.read(), RespError) and reply.text.startswith("ERR unknown command 'NOSUCH'")


def test_partial_bulks_from_many_connections_do_not_grow_the_node(limited: Limited) -> None:
    partial = b"*2\r\n$4\r\nAUTH\r\n$16000\r\n" + b"t" * 15000
    warm = [limited.resp() for _ in range(RESP_MAX_UNAUTHENTICATED)]
    for c in warm:
        c.send(partial)
    for c in warm:
        c.close()
    before = limited.rss_kib()
    conns = [limited.resp() for _ in range(200)]
    try:
        for c in conns:
            c.send(partial)
        # Only the newest 64 unauthenticated connections are kept; older ones are evicted at once.
        wait_all_closed([c.sock for c in conns[:200 - RESP_MAX_UNAUTHENTICATED]], 10, "evicted connections")
        assert limited.resp_ping() == "PONG"  # also a barrier: the node has read what was sent before
        assert limited.rss_kib() - before < RSS_SLACK_KIB
    finally:
        for c in conns:
            c.close()


@needs_redis_cli
def test_idle_unauthenticated_sockets_time_out_and_redis_cli_gets_in(limited: Limited) -> None:
    idle = [socket.create_connection(("127.0.0.1", limited.admin_port)) for _ in range(300)]  # > max clients
    try:
        opened = time.monotonic()
        out = subprocess.run(["redis-cli", "-3", "-h", "127.0.0.1", "-p", str(limited.admin_port), "--pass", TOKEN,
                              "--no-auth-warning", "PING"], capture_output=True, text=True, timeout=10 * TIMEOUT_MULT,
                             check=False)
        assert (out.returncode, out.stdout.strip(), out.stderr) == (0, "PONG", "")
        wait_all_closed(idle, AUTH_TIMEOUT_S + 5, "idle unauthenticated sockets")
        assert time.monotonic() - opened >= AUTH_TIMEOUT_S * 0.9  # the last 64 waited for the auth timeout
    finally:
        for s in idle:
            s.close()


def test_authenticated_connections_stay_until_idle(limited: Limited) -> None:
    with limited.resp() as c:
        assert c.call("AUTH", TOKEN) == "OK"
        deadline = time.monotonic() + AUTH_TIMEOUT_S + 0.5
        while time.monotonic() < deadline:  # past the auth timeout, kept busy: it stays
            assert c.call("PING") == "PONG"
            time.sleep(0.25)
        last = time.monotonic()
        c.sock.settimeout((IDLE_TIMEOUT_S + 5) * TIMEOUT_MULT)
        assert c.closed_by_server()  # then idle: closed after the idle timeout
        assert time.monotonic() - last >= IDLE_TIMEOUT_S * 0.9


def test_clients_over_the_cap_are_refused(limited: Limited) -> None:
    conns: list[RespConn] = []
    try:
        while len(conns) < RESP_MAX_CLIENTS + 5:
            c = limited.resp()
            conns.append(c)
            reply = c.call("AUTH", TOKEN)
            if reply != "OK":
                break
        assert reply == RespError("ERR max number of clients reached")
        assert conns[-1].closed_by_server()
        assert len(conns) - 1 <= RESP_MAX_CLIENTS
    finally:
        for c in conns:
            c.close()
    poll(lambda: limited.resp_ping() == "PONG", 10, "RESP answering again once the clients left")


# ------------------------------------------------------------------------------------------ gRPC


async def open_streams(address: str, count: int, method: str = "WatchEvents") -> tuple[
        list[grpc.aio.UnaryStreamCall[Any, Any]], list[grpc.aio.UnaryStreamCall[Any, Any]]]:
    """``count`` event streams: (those the node took, those it refused)."""
    channel = grpc.aio.insecure_channel(address)
    stub = pb_grpc.TaskManagerStub(channel)
    taken, refused = [], []
    for _ in range(count):
        call = getattr(stub, method)(pb.WatchEventsRequest(live_only=True), metadata=AUTH)
        metadata = await call.initial_metadata()
        (taken if ("taskward-events", "subscribed") in tuple(metadata or ()) else refused).append(call)
    return taken, refused


def test_streams_never_starve_short_calls(limited: Limited) -> None:
    async def scenario() -> None:
        taken, refused = await open_streams(limited.node.address, GRPC_MAX_STREAMS + 10)
        try:
            assert GRPC_MAX_STREAMS - 2 <= len(taken) <= GRPC_MAX_STREAMS  # the leader may hold one of its own
            assert len(refused) >= 10
            _, batches = await open_streams(limited.node.address, 1, "WatchEventBatches")  # the same cap
            refused += batches
            for call in refused:
                assert await call.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
                assert await call.details() == (f"too many event streams and waits in progress (limit "
                                                f"{GRPC_MAX_STREAMS}); try again later")
            # Short calls go through while every stream slot is taken.
            started = await asyncio.to_thread(lambda: [limited.start_task() for _ in range(20)])
            assert len(set(started)) == 20
            taken.pop().cancel()
            more, _ = await open_streams(limited.node.address, 1)
            assert len(more) == 1, "a slot freed by a closed stream is free again"
            taken.extend(more)
        finally:
            for call in taken:
                call.cancel()

    asyncio.run(scenario())


def test_grpc_connections_over_the_cap_are_closed_at_once(tmp_path: Path) -> None:
    cap = 8
    node = NodeProc(tmp_path / "n1", extra=["--grpc-max-connections", str(cap)]).start()
    socks: list[socket.socket] = []
    try:
        socks = [socket.create_connection(("127.0.0.1", node.port), timeout=5) for _ in range(3 * cap)]

        def refused() -> int | None:
            count = sum(closed(s) for s in socks)
            return count if count >= 2 * cap else None  # the node's own channels may hold a few slots too

        assert poll(refused, 10, "connections over the cap closed") <= 3 * cap - cap // 2
    finally:
        for s in socks:
            s.close()
        poll(lambda: grpc_serving(node.address), 15, "gRPC answering again once the sockets closed")
        assert node.stop() == 0
