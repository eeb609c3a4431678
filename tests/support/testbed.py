"""The docker-compose testbed for tests: a Docker engine (started here when none runs), the taskward
image (built offline when no registry is reachable, cached by a hash of the sources), and the compose
project (up, healthy, down). Everything listens on 127.0.0.1 through host networking."""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc

from tests.support.procs import REPO, TIMEOUT_MULT

PROJECT = "taskward-testbed"
IMAGE = "taskward:latest"
BASE_IMAGE = "python:3.11-slim-bookworm"
HASH_LABEL = "org.taskward.source-hash"
CACHE = Path(os.environ.get("TASKWARD_TESTBED_CACHE", "/var/tmp/taskward-testbed"))
TOKEN = next(line.split("=", 1)[1].strip() for line in (REPO / "docker/testbed.env").read_text().splitlines()
             if line.startswith("TASKWARD_TOKEN="))
NODES = {"node1": "127.0.0.1:7201", "node2": "127.0.0.1:7202", "node3": "127.0.0.1:7203"}
ETCD = "http://127.0.0.1:2379,http://127.0.0.1:2479,http://127.0.0.1:2579"
SERVICES = ("etcd1", "etcd2", "etcd3", "node1", "node2", "node3", "gateway")
METADATA = (("authorization", f"Bearer {TOKEN}"),)


def docker_available() -> str:
    """Why the testbed cannot run here ('' when it can)."""
    missing = [b for b in ("dockerd", "docker-compose", "debootstrap") if shutil.which(b) is None]
    if missing:
        return f"{', '.join(missing)} not installed (scripts/setup.sh installs docker.io, docker-compose, debootstrap)"
    if os.geteuid() != 0 and not os.environ.get("DOCKER_HOST"):
        return "the testbed starts its own dockerd, which needs root (or set DOCKER_HOST)"
    return ""


class Engine:
    """A Docker engine: the one ``DOCKER_HOST`` names, else one started here with its own socket,
    exec-root and (cached between runs) data-root, no bridge and no iptables: containers use the host's
    network only."""

    def __init__(self, run_dir: Path) -> None:
        self.run_dir = run_dir
        self.host = os.environ.get("DOCKER_HOST", "")
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Engine:
        import docker

        if self.host and self._ping(docker):
            return self
        self.run_dir.mkdir(parents=True, exist_ok=True)
        sock = self.run_dir / "docker.sock"
        self.host = f"unix://{sock}"
        (CACHE / "docker").mkdir(parents=True, exist_ok=True)
        with (self.run_dir / "dockerd.log").open("ab") as log:
            self.proc = subprocess.Popen(
                ["dockerd", "--host", self.host, "--data-root", str(CACHE / "docker"),
                 "--exec-root", str(self.run_dir / "exec"), "--pidfile", str(self.run_dir / "docker.pid"),
                 "--bridge=none", "--iptables=false", "--ip6tables=false"],
                stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + 30 * TIMEOUT_MULT
        while not self._ping(docker):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("dockerd did not start:\n" + (self.run_dir / "dockerd.log").read_text()[-3000:])
            time.sleep(0.1)
        return self

    def _ping(self, docker: Any) -> bool:
        try:
            return bool(docker.DockerClient(base_url=self.host, timeout=5).ping())
        except Exception:
            return False

    def client(self) -> Any:
        import docker

        return docker.DockerClient(base_url=self.host, timeout=120)

    def env(self) -> dict[str, str]:
        return {**os.environ, "DOCKER_HOST": self.host, "DOCKER_BUILDKIT": "0", "COMPOSE_DOCKER_CLI_BUILD": "0",
                "DOCKER": "/usr/bin/docker"}

    def stop(self) -> None:
        """Stop a dockerd started here: SIGTERM, wait for it, then release its network namespaces."""
        if self.proc is None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
        netns = self.run_dir / "exec" / "netns"
        if netns.exists():
            for ns in netns.iterdir():
                subprocess.run(["umount", str(ns)], capture_output=True, check=False)
        shutil.rmtree(self.run_dir / "exec", ignore_errors=True)


def source_hash() -> str:
    h = hashlib.sha256()
    for path in sorted([REPO / "Dockerfile", REPO / "pyproject.toml", REPO / "README.md",
                        *REPO.joinpath("proto").rglob("*.proto"), *REPO.joinpath("node").rglob("*.py"),
                        *REPO.joinpath("coordinator").rglob("*.py")]):
        h.update(str(path.relative_to(REPO)).encode())
        h.update(path.read_bytes())
    return h.hexdigest()[:16]


def build_image(engine: Engine) -> tuple[Any, bool]:
    """The taskward image for the current sources: reused when it was built from them, else built
    (the base image and wheels come from scripts/offline-images.sh where no registry is reachable)."""
    client = engine.client()
    want = source_hash()
    with contextlib.suppress(Exception):
        image = client.images.get(IMAGE)
        if image.labels.get(HASH_LABEL) == want:
            return image, False
    subprocess.run([str(REPO / "scripts/offline-images.sh")], cwd=REPO, env={**engine.env(), "PYTHON": _python()},
                   check=True, timeout=900)
    image, _ = client.images.build(path=str(REPO), tag=IMAGE, labels={HASH_LABEL: want}, network_mode="host",
                                   rm=True, forcerm=True)
    return image, True


def _python() -> str:
    venv = REPO / ".venv/bin/python"
    return str(venv) if venv.exists() else "python3"


def compose(engine: Engine, *args: str, timeout: float = 180.0) -> subprocess.CompletedProcess[str]:
    """docker-compose (the v1 tool) on the repository's file, as a user runs it."""
    return subprocess.run(["docker-compose", "-p", PROJECT, "-f", str(REPO / "docker-compose.yml"), *args],
                          cwd=REPO, env=engine.env(), capture_output=True, text=True, timeout=timeout * TIMEOUT_MULT,
                          check=True)


def containers(client: Any) -> dict[str, Any]:
    """The project's containers by service name (the docker SDK, as the tests drive them)."""
    found = client.containers.list(all=True, filters={"label": f"com.docker.compose.project={PROJECT}"})
    return {c.labels["com.docker.compose.service"]: c for c in found}


def wait_healthy(client: Any, services: tuple[str, ...] = SERVICES, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout * TIMEOUT_MULT
    while True:
        states = {}
        for name, c in containers(client).items():
            if name in services:
                c.reload()
                states[name] = c.attrs["State"].get("Health", {}).get("Status", c.status)
        if len(states) == len(services) and all(s == "healthy" for s in states.values()):
            return
        if time.monotonic() > deadline:
            logs = {n: c.logs(tail=30).decode(errors="replace") for n, c in containers(client).items()}
            raise TimeoutError(f"testbed not healthy: {states}\n{logs}")
        time.sleep(0.5)


@contextlib.contextmanager
def channel(service: str) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(NODES[service]) as ch:
        yield ch
