"""Running taskward's processes as children: one harness for the demo, the tests and the benchmarks.

A ``ChildProcess`` starts a command with its output in a log file, tells whether it is still alive,
and stops it the way an operator would: SIGTERM, then SIGKILL after a grace period. ``NodeProcess``,
``GatewayProcess`` and ``EtcdProcess`` add what each one needs to be called ready. Only loopback
addresses are used; every wait has a deadline.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from taskward.channels import sync_channel

LOOPBACK = "127.0.0.1"
POLL_S = 0.05


# Ports handed out for children to listen on come from below the kernel's ephemeral range. A port the
# kernel picks (bind to 0) is an ephemeral one: between handing it out and the child binding it, any
# outgoing connection on the machine (a gRPC channel, an etcd client) may take it as its source port,
# and the child then fails with EADDRINUSE. Nothing takes a port below that range unless asked to.
_PORT_FLOOR = 20000
_next_port: int | None = None


def _listen_range() -> tuple[int, int]:
    """The ports to hand out, [low, high): below the ephemeral range, or above it if it starts too low."""
    try:
        low, high = map(int, Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split())
    except (OSError, ValueError):
        low, high = 32768, 60999  # Linux's default
    if low - _PORT_FLOOR >= 1000:
        return _PORT_FLOOR, low
    if 65535 - high >= 1000:
        return high + 1, 65536
    return 0, 0  # no room outside it: let the kernel choose


def free_port() -> int:
    """A loopback port nobody listens on right now, outside the ephemeral range, and not one this process
    handed out recently (each process starts at a random place in the range, then walks it)."""
    global _next_port
    low, high = _listen_range()
    if high - low == 0:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind((LOOPBACK, 0))
            return int(s.getsockname()[1])
    if _next_port is None or not low <= _next_port < high:
        _next_port = low + int.from_bytes(os.urandom(4), "big") % (high - low)
    for _ in range(high - low):
        port, _next_port = _next_port, low + (_next_port + 1 - low) % (high - low)
        if port_free(f"{LOOPBACK}:{port}"):
            return port
    raise OSError("no free loopback port to listen on")


def port_free(address: str) -> bool:
    """Whether ``HOST:PORT`` can be bound, as the servers bind it (a port in TIME-WAIT is free)."""
    host, _, port = address.rpartition(":")
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, int(port)))
        except OSError:
            return False
    return True


def taskward_command() -> list[str]:
    """How to run the ``taskward`` console script with this interpreter."""
    return [sys.executable, "-m", "taskward"]


class ChildProcess:
    """One child process with its output in ``log_path``. Start it with ``spawn``; ``stop`` is safe to
    call at any time, also before it started or after it died."""

    def __init__(self, name: str, log_path: Path) -> None:
        self.name = name
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None

    def spawn(self, cmd: Sequence[str], *, env: dict[str, str] | None = None, cwd: Path | None = None,
              own_session: bool = False) -> None:
        """Start ``cmd``; its output is appended to the log. ``own_session``: Ctrl-C at a terminal does
        not reach it (its owner stops it, in order)."""
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(list(cmd), stdout=log, stderr=subprocess.STDOUT, cwd=cwd,
                                         env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
                                         start_new_session=own_session)

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    def log(self, tail: int = 0) -> str:
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return text[-tail:] if tail else text

    def check_alive(self) -> None:
        """Raise ``ChildExited`` (with the end of its log) if the process has exited."""
        if self.proc is not None and self.proc.poll() is not None:
            raise ChildExited(self.name, self.proc.returncode, self.log(tail=4000))

    def wait_until(self, ready: Callable[[], bool], timeout_s: float, what: str) -> None:
        """Until ``ready()`` holds; ``ChildExited`` if the process dies first, ``TimeoutError`` after the deadline."""
        deadline = time.monotonic() + timeout_s
        while True:
            self.check_alive()
            if ready():
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self.name}: {what} not within {timeout_s:g}s:\n{self.log(tail=4000)}")
            time.sleep(POLL_S)

    def stop(self, grace_s: float = 10.0) -> int | None:
        """SIGTERM, then SIGKILL after ``grace_s``; the exit code (None if it never started)."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(signal.SIGCONT)  # a paused process must be able to exit
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(grace_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        return self.proc.returncode

    def kill(self) -> None:
        """SIGKILL: a crash, nothing flushed by the process itself."""
        if self.running:
            assert self.proc is not None
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def pause(self) -> None:
        """SIGSTOP: alive but silent, as a process cut off or stuck."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGCONT)


class ChildExited(RuntimeError):
    def __init__(self, name: str, code: int | None, log_tail: str) -> None:
        super().__init__(f"{name} exited with code {code}:\n{log_tail}")
        self.name = name
        self.code = code


def grpc_serving(address: str, credentials: grpc.ChannelCredentials | None = None) -> bool:
    """Whether the gRPC health service at ``address`` answers SERVING (over TLS with ``credentials``)."""
    with sync_channel(address, credentials) as ch:
        try:
            resp = health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(), timeout=0.5)
        except grpc.RpcError:
            return False
    return bool(resp.status == health_pb2.HealthCheckResponse.SERVING)


def tcp_open(address: str) -> bool:
    host, _, port = address.rpartition(":")
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex((host, int(port))) == 0


class NodeProcess(ChildProcess):
    """``taskward node`` with its data dir; restartable from it on the same port. Ready once its gRPC
    health check answers SERVING (the node registers as healthy only when it can take work); a node
    started with ``--tls-*`` flags is asked over TLS with ``credentials``."""

    def __init__(self, data_dir: Path, *, node_id: str = "n1", port: int | None = None, extra: Sequence[str] = (),
                 env: dict[str, str] | None = None, command: Sequence[str] | None = None,
                 log_path: Path | None = None, credentials: grpc.ChannelCredentials | None = None) -> None:
        super().__init__(node_id, log_path or data_dir.parent / f"{data_dir.name}.log")
        self.data_dir = data_dir
        self.node_id = node_id
        self.port = port or free_port()
        self.extra = list(extra)
        self.env = dict(env or {})
        self.command = list(command or taskward_command())
        self.credentials = credentials
        self.base_flags: list[str] = []  # before ``extra``, which may override them

    @property
    def address(self) -> str:
        return f"{LOOPBACK}:{self.port}"

    def launch(self, *, cwd: Path | None = None, own_session: bool = False) -> NodeProcess:
        """Start the process without waiting (start several, then ``wait_ready`` each)."""
        self.spawn([*self.command, "node", "--id", self.node_id, "--listen", self.address,
                    "--data-dir", str(self.data_dir), *self.base_flags, *self.extra], env=self.env, cwd=cwd,
                   own_session=own_session)
        return self

    def wait_ready(self, timeout_s: float = 15.0) -> NodeProcess:
        self.wait_until(lambda: grpc_serving(self.address, self.credentials), timeout_s, "gRPC health SERVING")
        return self

    def start(self, timeout_s: float = 15.0, *, cwd: Path | None = None) -> NodeProcess:
        return self.launch(cwd=cwd).wait_ready(timeout_s)


class GatewayProcess(ChildProcess):
    """``taskward gateway`` in front of the given node addresses; ready once its port accepts."""

    def __init__(self, log_dir: Path, nodes: Sequence[str], *, port: int | None = None, extra: Sequence[str] = (),
                 env: dict[str, str] | None = None) -> None:
        self.port = port or free_port()
        super().__init__(f"gateway-{self.port}", log_dir / f"gateway-{self.port}.log")
        self.nodes = list(nodes)
        self.extra = list(extra)
        self.env = dict(env or {})

    @property
    def address(self) -> str:
        return f"{LOOPBACK}:{self.port}"

    def launch(self, *, cwd: Path | None = None, own_session: bool = False) -> GatewayProcess:
        self.spawn([*taskward_command(), "gateway", "--listen", self.address, "--node", ",".join(self.nodes),
                    *self.extra], env=self.env, cwd=cwd, own_session=own_session)
        return self

    def wait_ready(self, timeout_s: float = 15.0) -> GatewayProcess:
        self.wait_until(lambda: tcp_open(self.address), timeout_s, "REST port open")
        return self

    def start(self, timeout_s: float = 15.0, *, cwd: Path | None = None) -> GatewayProcess:
        return self.launch(cwd=cwd).wait_ready(timeout_s)


class EtcdProcess(ChildProcess):
    """One etcd member on loopback ports (the ``etcd`` binary from the OS). ``initial_cluster`` lists
    every member's peer URL; ``tls`` = (server cert, server key, CA): clients must then present a
    certificate signed by that CA."""

    def __init__(self, name: str, data_dir: Path, *, client_port: int | None = None, peer_port: int | None = None,
                 initial_cluster: str = "", tls: tuple[Path, Path, Path] | None = None, fast: bool = True) -> None:
        super().__init__(name, data_dir.parent / f"{name}.log")
        self.data_dir = data_dir
        self.client_port = client_port or free_port()
        self.peer_port = peer_port or free_port()
        self.initial_cluster = initial_cluster or f"{name}=http://{LOOPBACK}:{self.peer_port}"
        self.tls = tls
        self.fast = fast

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://{LOOPBACK}:{self.client_port}"

    def start(self, *, new: bool = True, own_session: bool = False) -> EtcdProcess:
        """Start the member (``new=False``: rejoin with its data dir); wait for readiness elsewhere (a
        member alone has no quorum)."""
        peer = f"http://{LOOPBACK}:{self.peer_port}"
        cmd = ["etcd", "--name", self.name, "--data-dir", str(self.data_dir),
               "--listen-client-urls", self.url, "--advertise-client-urls", self.url,
               "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
               "--initial-cluster", self.initial_cluster, "--initial-cluster-token", "taskward",
               "--initial-cluster-state", "new" if new else "existing"]
        if self.fast:  # loopback: notice a dead member within a second
            cmd += ["--heartbeat-interval", "100", "--election-timeout", "1000"]
        if self.tls:
            cert, key, ca = self.tls
            cmd += ["--cert-file", str(cert), "--key-file", str(key), "--trusted-ca-file", str(ca),
                    "--client-cert-auth"]
        self.spawn(cmd, own_session=own_session)
        return self

    def wait_ready(self, timeout_s: float = 15.0) -> EtcdProcess:
        """Until the client port accepts connections (a lone member then elects itself at once; a member
        of a larger cluster still needs its quorum, which the caller checks with a write)."""
        self.wait_until(lambda: tcp_open(f"{LOOPBACK}:{self.client_port}"), timeout_s, "etcd client port open")
        return self
