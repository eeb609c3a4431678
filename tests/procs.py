"""Real node processes for tests: free loopback ports, temp data dirs, logs, health polling."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from taskward.pb.taskward.v1 import tasks_pb2 as pb
from taskward.pb.taskward.v1 import tasks_pb2_grpc as pb_grpc

TIMEOUT_MULT = float(os.environ.get("TASKWARD_TEST_TIMEOUT_MULT", "1"))
T = TypeVar("T")
REPO = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def deadline_after(seconds: float) -> float:
    return time.monotonic() + seconds * TIMEOUT_MULT


def poll(fn: Callable[[], T | None], timeout: float, what: str, interval: float = 0.05) -> T:
    """Call ``fn`` until it returns something other than None/False; TimeoutError after ``timeout``."""
    end = deadline_after(timeout)
    last_exc: Exception | None = None
    while True:
        try:
            value = fn()
            if value is not None and value is not False:
                return value
        except grpc.RpcError as exc:  # a node restarting: try again until the deadline
            last_exc = exc
        if time.monotonic() > end:
            raise TimeoutError(f"timed out after {timeout}s waiting for {what} (last error: {last_exc})")
        time.sleep(interval)


def taskward_cmd() -> list[str]:
    return [sys.executable, "-m", "taskward"]


class NodeProc:
    """One ``taskward node`` process, restartable from its data dir on the same port."""

    def __init__(self, data_dir: Path, *, node_id: str = "n1", extra: Sequence[str] = (),
                 env: dict[str, str] | None = None) -> None:
        self.data_dir = data_dir
        self.node_id = node_id
        self.port = free_port()
        self.extra = list(extra)
        self.env = env or {}
        self.log_path = data_dir.parent / f"{data_dir.name}.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self._channel: grpc.Channel | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self, timeout: float = 15.0) -> NodeProc:
        cmd = [*taskward_cmd(), "node", "--id", self.node_id, "--listen", self.address,
               "--data-dir", str(self.data_dir), "--shutdown-grace", "0.5", *self.extra]
        env = {**os.environ, "PYTHONUNBUFFERED": "1", **self.env}
        log = open(self.log_path, "ab")  # noqa: SIM115 - handed to the child
        self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=REPO, env=env)
        log.close()
        self.wait_ready(timeout)
        return self

    def wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout * TIMEOUT_MULT
        with grpc.insecure_channel(self.address) as ch:
            stub = health_pb2_grpc.HealthStub(ch)
            while time.monotonic() < deadline:
                assert self.proc is not None
                if self.proc.poll() is not None:
                    raise RuntimeError(f"node exited with {self.proc.returncode}:\n{self.log()}")
                try:
                    resp = stub.Check(health_pb2.HealthCheckRequest(), timeout=0.5)
                    if resp.status == health_pb2.HealthCheckResponse.SERVING:
                        return
                except grpc.RpcError:
                    pass
                time.sleep(0.05)
        raise TimeoutError(f"node {self.node_id} not ready in {timeout}s:\n{self.log()}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def channel(self) -> grpc.Channel:
        if self._channel is None:
            self._channel = grpc.insecure_channel(self.address)
        return self._channel

    def stub(self) -> pb_grpc.TaskManagerStub:
        return pb_grpc.TaskManagerStub(self.channel())

    def test_stub(self) -> pb_grpc.TestApiStub:
        return pb_grpc.TestApiStub(self.channel())

    def kill(self) -> None:
        """SIGKILL: a crash, nothing flushed by the node itself."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)
        self._close_channel()

    def stop(self, grace_s: float = 10.0) -> int | None:
        """SIGTERM, then SIGKILL after ``grace_s``; returns the exit code."""
        self._close_channel()
        return terminate(self.proc, grace_s)

    def _close_channel(self) -> None:
        if self._channel is not None:
            self._channel.close()
            self._channel = None


def terminate(proc: subprocess.Popen[bytes] | None, grace_s: float) -> int | None:
    """SIGTERM, then SIGKILL after ``grace_s`` (scaled); returns the exit code."""
    if proc is None:
        return None
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(grace_s * TIMEOUT_MULT)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
    return proc.returncode


def run_cli(node: NodeProc, *args: str, timeout: float = 60.0,
            env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run ``taskward tasks -p PORT ARGS`` as a real process."""
    cmd = [*taskward_cmd(), "tasks", "-h", "127.0.0.1", "-p", str(node.port), *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout * TIMEOUT_MULT, cwd=REPO,
                          env={**os.environ, **(env or {})}, check=False)


@contextmanager
def new_test_module(node: NodeProc) -> Iterator[pb_grpc.TestApiStub]:
    """Module ``test`` registered for the duration of the block."""
    t = node.test_stub()
    t.RegisterTestModule(pb.Empty())
    try:
        yield t
    finally:
        t.UnregisterTestModule(pb.Empty())
