"""Real ``taskward gateway`` processes and HTTP helpers for the REST tests."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import httpx

from taskward.processes import GatewayProcess
from tests.support.procs import REPO, TIMEOUT_MULT, NodeProc


class GatewayProc(GatewayProcess):
    """One ``taskward gateway`` in front of the given nodes; ready once it answers HTTP."""

    def __init__(self, log_dir: Path, nodes: Sequence[NodeProc | str], *, extra: Sequence[str] = (),
                 env: dict[str, str] | None = None) -> None:
        super().__init__(log_dir, [n.address if isinstance(n, NodeProc) else n for n in nodes], extra=extra,
                         env=env)

    @property
    def url(self) -> str:
        return f"http://{self.address}"

    def start(self, timeout: float = 15.0, *, cwd: Path | None = None) -> GatewayProc:
        self.launch(cwd=cwd or REPO)
        wait_http(self.url, self.proc, timeout, self.log)
        return self

    def stop(self, grace_s: float = 10.0) -> int | None:
        return super().stop(grace_s * TIMEOUT_MULT)


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
    """Asserts the REST error body ``{"message", "code"}`` with the given status; returns the message."""
    assert resp.status_code == status, (resp.status_code, resp.text)
    assert resp.headers["content-type"].startswith("application/json"), resp.headers
    body = resp.json()
    assert set(body) == {"message", "code"} and body["code"] == status, body
    assert isinstance(body["message"], str) and body["message"], body
    if message is not None:
        assert body["message"] == message, body
    return str(body["message"])
