"""Real node processes for tests, on the product's own process harness (``taskward.processes``):
free loopback ports, temp data dirs, logs, health polling, every wait scaled by
``TASKWARD_TEST_TIMEOUT_MULT``."""

from __future__ import annotations

import contextlib
import os
import subprocess
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

import grpc

from taskward.pb.taskward.v1 import tasks_pb2 as pb
from taskward.pb.taskward.v1 import tasks_pb2_grpc as pb_grpc
from taskward.processes import NodeProcess, free_port, taskward_command

TIMEOUT_MULT = float(os.environ.get("TASKWARD_TEST_TIMEOUT_MULT", "1"))
T = TypeVar("T")
REPO = Path(__file__).resolve().parent.parent.parent

__all__ = ["REPO", "TIMEOUT_MULT", "NodeProc", "deadline_after", "free_port", "new_test_module", "poll", "refused",
           "run_cli", "taskward_cmd", "terminate"]


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
    return taskward_command()


class NodeProc(NodeProcess):
    """A ``taskward node`` for tests: started from the repository root (so ``--tasks tests.support...``
    imports), with a short shutdown grace, and a cached channel for the tests' own calls."""

    def __init__(self, data_dir: Path, *, node_id: str = "n1", extra: Sequence[str] = (),
                 env: dict[str, str] | None = None, command: Sequence[str] | None = None,
                 credentials: grpc.ChannelCredentials | None = None) -> None:
        super().__init__(data_dir, node_id=node_id, extra=extra, env=env, command=command, credentials=credentials)
        self.base_flags = ["--shutdown-grace", "0.5"]
        self._channel: grpc.Channel | None = None

    def start(self, timeout: float = 15.0, *, cwd: Path | None = None) -> NodeProc:
        self.launch(cwd=cwd or REPO).wait_ready(timeout * TIMEOUT_MULT)
        return self

    def channel(self) -> grpc.Channel:
        if self._channel is None:
            self._channel = (grpc.secure_channel(self.address, self.credentials) if self.credentials
                             else grpc.insecure_channel(self.address))
        return self._channel

    def stub(self) -> pb_grpc.TaskManagerStub:
        return pb_grpc.TaskManagerStub(self.channel())

    def test_stub(self) -> pb_grpc.TestApiStub:
        return pb_grpc.TestApiStub(self.channel())

    def kill(self) -> None:
        super().kill()
        self._close_channel()

    def stop(self, grace_s: float = 10.0) -> int | None:
        self._close_channel()
        return super().stop(grace_s * TIMEOUT_MULT)

    def _close_channel(self) -> None:
        if self._channel is not None:
            self._channel.close()
            self._channel = None


def terminate(proc: subprocess.Popen[bytes] | None, grace_s: float) -> int | None:
    """SIGTERM, then SIGKILL after ``grace_s`` (scaled); returns the exit code."""
    if proc is None:
        return None
    if proc.poll() is None:
        proc.terminate()
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


def refused(n: NodeProc, code: int = 1) -> str:
    """Start a node that must not come up; its exit code must be ``code``; its log (which says why)."""
    try:
        with contextlib.suppress(RuntimeError, TimeoutError):  # it exits before it ever reports healthy
            n.start(timeout=20)
        assert n.proc is not None
        assert n.proc.wait(30 * TIMEOUT_MULT) == code, n.log()
        return n.log()
    finally:
        n.stop()
