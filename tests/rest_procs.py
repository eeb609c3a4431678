"""Real ``taskward gateway`` processes and HTTP helpers for the REST tests."""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import httpx

from tests.procs import REPO, TIMEOUT_MULT, NodeProc, free_port, taskward_cmd, terminate


class GatewayProc:
    """One ``taskward gateway`` in front of the given nodes; ready once it answers HTTP."""

    def __init__(self, log_dir: Path, nodes: Sequence[NodeProc | str], *, extra: Sequence[str] = (),
                 env: dict[str, str] | None = None) -> None:
        self.nodes = [n.address if isinstance(n, NodeProc) else n for n in nodes]
        self.port = free_port()
        self.extra = list(extra)
        self.env = env or {}
        self.log_path = log_dir / f"gateway-{self.port}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"http://{self.address}"

    def start(self, timeout: float = 15.0) -> GatewayProc:
        cmd = [*taskward_cmd(), "gateway", "--listen", self.address, "--node", ",".join(self.nodes), *self.extra]
        log = open(self.log_path, "ab")  # noqa: SIM115 - handed to the child
        self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=REPO,
                                     env={**os.environ, "PYTHONUNBUFFERED": "1", **self.env})
        log.close()
        wait_http(self.url, self.proc, timeout, self.log)
        return self

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self, grace_s: float = 10.0) -> int | None:
        return terminate(self.proc, grace_s)


def wait_http(url: str, proc: subprocess.Popen[bytes] | None, timeout: float, log: Any = str) -> None:
    """Poll ``/health`` until the server answers at all (200 or 503: it is up either way)."""
    deadline = time.monotonic() + timeout * TIMEOUT_MULT
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode}:\n{log()}")
        try:
            httpx.get(f"{url}/health", timeout=0.5)
            return
        except httpx.TransportError:
            time.sleep(0.05)
    raise TimeoutError(f"{url} not answering in {timeout}s:\n{log()}")


def rest_url(node: NodeProc) -> str:
    """The ``--rest`` URL of a node started with ``extra=[..., "--rest", address]``."""
    return f"http://{node.extra[node.extra.index('--rest') + 1]}"


def client(base_url: str, token: str | None = None, timeout: float = 30.0) -> httpx.Client:
    headers = {"authorization": f"Bearer {token}"} if token else {}
    return httpx.Client(base_url=base_url, headers=headers, timeout=timeout * TIMEOUT_MULT)


def expect_error(resp: httpx.Response, status: int, message: str | None = None) -> str:
    """Asserts DESIGN's error body ``{"message", "code"}`` with the given status; returns the message."""
    assert resp.status_code == status, (resp.status_code, resp.text)
    assert resp.headers["content-type"].startswith("application/json"), resp.headers
    body = resp.json()
    assert set(body) == {"message", "code"} and body["code"] == status, body
    assert isinstance(body["message"], str) and body["message"], body
    if message is not None:
        assert body["message"] == message, body
    return str(body["message"])
