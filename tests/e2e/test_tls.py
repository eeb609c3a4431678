"""TLS and mutual TLS on every listener and every hop, with real processes and real clients: the CLI and
the client library over gRPC, ``curl`` and httpx over REST, the real ``redis-cli --tls`` over RESP3, a
3-node etcd cluster whose nodes and leader streams talk mTLS, a gateway in front of TLS nodes, certificate
reload on SIGHUP, and the start-up refusals (bad files, an off-loopback bind without a token and TLS).

Certificates come from a test CA made with the ``openssl`` command (``tests.support.certs``); every
address is 127.0.0.1.
"""

from __future__ import annotations

import json
import os
import queue
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import grpc
import httpx
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from taskward.client import Client
from taskward.errors import NoNodeReachable
from taskward.pb.taskward.v1 import tasks_pb2 as pb
from taskward.processes import GatewayProcess
from tests.conftest import NODE_ARGS
from tests.support.certs import CertPair, TestCA
from tests.support.cluster import Cluster, unique_cluster_name
from tests.support.etcd import EtcdCluster
from tests.support.procs import REPO, TIMEOUT_MULT, NodeProc, free_port, poll, run_cli, taskward_cmd


@dataclass(frozen=True)
class Pki:
    ca: TestCA
    nodes: dict[str, CertPair]
    ops: CertPair
    """A client certificate of the cluster's CA (an operator's)."""
    rogue: CertPair
    """A client certificate of another CA: never accepted."""

    def node_flags(self, name: str, *, mtls: bool = True) -> list[str]:
        pair = self.nodes[name]
        flags = ["--tls-cert", str(pair.cert), "--tls-key", str(pair.key), "--tls-ca", str(self.ca.cert)]
        return [*flags, "--tls-client-ca", str(self.ca.cert)] if mtls else flags

    def client_flags(self, pair: CertPair | None = None) -> list[str]:
        flags = ["--tls-ca", str(self.ca.cert)]
        return [*flags, "--tls-cert", str(pair.cert), "--tls-key", str(pair.key)] if pair else flags

    def credentials(self, pair: CertPair | None = None) -> grpc.ChannelCredentials:
        return grpc.ssl_channel_credentials(self.ca.cert.read_bytes(), pair.key.read_bytes() if pair else None,
                                            pair.cert.read_bytes() if pair else None)

    def ssl_context(self, pair: CertPair | None = None, alpn: Sequence[str] = ()) -> ssl.SSLContext:
        ctx = ssl.create_default_context(cafile=str(self.ca.cert))
        if pair is not None:
            ctx.load_cert_chain(pair.cert, pair.key)
        if alpn:
            ctx.set_alpn_protocols(list(alpn))
        return ctx


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    ca = TestCA(tmp_path_factory.mktemp("ca"))
    rogue_ca = TestCA(tmp_path_factory.mktemp("rogue"), name="not-the-cluster-ca")
    return Pki(ca=ca, nodes={n: ca.issue(n) for n in ("n1", "n2", "n3", "gw")}, ops=ca.issue("ops"),
               rogue=rogue_ca.issue("rogue"))


def serve(node: NodeProc) -> Iterator[NodeProc]:
    node.start()
    try:
        yield node
    finally:
        assert node.stop() == 0, node.log()


@pytest.fixture
def tls_node(tmp_path: Path, pki: Pki) -> Iterator[NodeProc]:
    """A node serving TLS on gRPC (no client certificate asked)."""
    yield from serve(NodeProc(tmp_path / "n1", extra=[*NODE_ARGS, *pki.node_flags("n1", mtls=False)],
                              credentials=pki.credentials()))


@pytest.fixture
def mtls_node(tmp_path: Path, pki: Pki) -> Iterator[NodeProc]:
    """A node with TLS and mTLS on gRPC, REST and RESP3."""
    rest, admin = free_port(), free_port()
    node = NodeProc(tmp_path / "n1", extra=[*NODE_ARGS, *pki.node_flags("n1"), "--rest", f"127.0.0.1:{rest}",
                                            "--admin", f"127.0.0.1:{admin}"], credentials=pki.credentials(pki.ops))
    node.rest_port, node.admin_port = rest, admin  # type: ignore[attr-defined]
    yield from serve(node)


def one_error_line(done: subprocess.CompletedProcess[str]) -> str:
    """The CLI failed with exactly one ``error:`` line and no traceback; that line."""
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), done.stderr
    assert "Traceback" not in done.stderr + done.stdout
    return lines[0]


def run_cron(node: NodeProc, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*taskward_cmd(), "cron", "-h", "127.0.0.1", "-p", str(node.port), *args],
                          capture_output=True, text=True, timeout=60 * TIMEOUT_MULT, cwd=REPO, check=False)


def task_ids(node: NodeProc) -> list[str]:
    return sorted(t.task_id for t in node.stub().ListTasks(pb.ListTasksRequest(module="builtin")).tasks)


def served_serial(port: int, ctx: ssl.SSLContext) -> str:
    """The serial of the certificate a new TLS connection to ``port`` is served."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock, \
            ctx.wrap_socket(sock, server_hostname="127.0.0.1") as tls:
        cert = tls.getpeercert()
    assert cert is not None
    return str(cert["serialNumber"])


# ---------------------------------------------------------------------- gRPC: CLI and client library


def test_grpc_over_tls_through_the_cli_and_the_client_library(tls_node: NodeProc, pki: Pki) -> None:
    done = run_cli(tls_node, *pki.client_flags(), "modules")
    assert (done.returncode, done.stderr) == (0, "") and "builtin" in done.stdout.split()
    started = run_cli(tls_node, *pki.client_flags(), "start", "builtin", "sleep", "--arg", "duration=0.1", "--wait")
    assert started.returncode == 0, started.stderr
    with Client(tls_node.address, tls_ca=pki.ca.cert, timeout=10) as client:
        handle = client.start("builtin", "sleep", duration=0.1)
        assert handle.wait(timeout=10).state == "done"
    before = task_ids(tls_node)
    assert len(before) == 2

    plain = run_cli(tls_node, "start", "builtin", "sleep", "--arg", "duration=0.1")
    assert plain.returncode == 1 and plain.stdout == ""
    assert one_error_line(plain) == (
        f"error: cannot reach node at {tls_node.address}: the node at {tls_node.address} serves TLS: give "
        "--tls-ca FILE (and --tls-cert FILE --tls-key FILE if it requires a client certificate)")
    with Client(tls_node.address, timeout=5) as plain_client, pytest.raises(NoNodeReachable):
        plain_client.start("builtin", "sleep", duration=0.1)
    untrusted = run_cli(tls_node, "--tls-ca", str(pki.rogue.cert), "modules")  # a CA that did not sign the node
    assert untrusted.returncode == 1
    assert one_error_line(untrusted).startswith(
        f"error: cannot reach node at {tls_node.address}: the certificate of the node at {tls_node.address} is "
        "not accepted: ")
    assert task_ids(tls_node) == before  # nothing refused reached the node


def test_mtls_requires_a_client_certificate_signed_by_the_client_ca(mtls_node: NodeProc, pki: Pki) -> None:
    before = task_ids(mtls_node)
    start = ("start", "builtin", "sleep", "--arg", "duration=0.1")
    no_cert = run_cli(mtls_node, *pki.client_flags(), *start)
    assert no_cert.returncode == 1
    assert one_error_line(no_cert) == (f"error: cannot reach node at {mtls_node.address}: the node at "
                                       f"{mtls_node.address} requires a client certificate: give --tls-cert FILE "
                                       "--tls-key FILE")
    rogue = run_cli(mtls_node, *pki.client_flags(pki.rogue), *start)
    assert rogue.returncode == 1
    assert one_error_line(rogue) == (f"error: cannot reach node at {mtls_node.address}: the node at "
                                     f"{mtls_node.address} does not accept the client certificate {pki.rogue.cert}")
    for kwargs in ({"tls_ca": pki.ca.cert}, {"tls_ca": pki.ca.cert, "tls_cert": pki.rogue.cert,
                                             "tls_key": pki.rogue.key}):
        with Client(mtls_node.address, timeout=5, **kwargs) as refused, pytest.raises(NoNodeReachable):  # type: ignore[arg-type]
            refused.start("builtin", "sleep", duration=0.1)
    assert task_ids(mtls_node) == before

    ok = run_cli(mtls_node, *pki.client_flags(pki.ops), *start, "--wait")
    assert ok.returncode == 0, ok.stderr
    cron = run_cron(mtls_node, *pki.client_flags(pki.ops), "list")  # `taskward cron` has the same flags
    assert (cron.returncode, cron.stderr) == (0, ""), cron.stderr
    cron_no_cert = run_cron(mtls_node, *pki.client_flags(), "list")
    assert cron_no_cert.returncode == 1 and one_error_line(cron_no_cert) == no_cert.stderr.strip()
    with Client(mtls_node.address, tls_ca=pki.ca.cert, tls_cert=pki.ops.cert, tls_key=pki.ops.key,
                timeout=10) as client:
        assert client.start("builtin", "sleep", duration=0.1).wait(timeout=10).state == "done"


def test_a_tls_client_of_a_plaintext_node_is_told_so(node: NodeProc, pki: Pki) -> None:
    done = run_cli(node, *pki.client_flags(pki.ops), "modules")
    assert done.returncode == 1 and done.stdout == ""
    assert one_error_line(done) == (f"error: cannot reach node at {node.address}: the node at {node.address} does "
                                    "not serve TLS: leave out --tls-ca, --tls-cert and --tls-key")


def test_bad_client_tls_files_are_one_error_line(mtls_node: NodeProc, pki: Pki, tmp_path: Path) -> None:
    missing = tmp_path / "absent.pem"
    cases = {
        ("--tls-ca", str(missing)): f"error: cannot read --tls-ca {missing}: No such file or directory",
        ("--tls-ca", str(pki.ca.cert), "--tls-cert", str(pki.ops.cert)): "error: --tls-cert and --tls-key go together",
        ("--tls-ca", str(pki.ca.cert), "--tls-cert", str(pki.ops.cert), "--tls-key", str(pki.rogue.key)):
            f"error: --tls-key {pki.rogue.key} is not the key of --tls-cert {pki.ops.cert}",
        ("--tls-ca", str(pki.ops.key)): f"error: --tls-ca {pki.ops.key} holds no PEM certificate "
                                        "(-----BEGIN CERTIFICATE-----)",
    }
    for flags, message in cases.items():
        done = run_cli(mtls_node, *flags, "modules")
        assert done.returncode == 1 and one_error_line(done) == message


# ---------------------------------------------------------------------- REST and RESP3


def curl(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["curl", "-sS", "--max-time", str(10 * TIMEOUT_MULT), *args], capture_output=True,
                          text=True, timeout=30 * TIMEOUT_MULT, check=False)


def test_rest_over_tls_with_curl_and_httpx(mtls_node: NodeProc, pki: Pki) -> None:
    base = f"https://127.0.0.1:{mtls_node.rest_port}"  # type: ignore[attr-defined]
    ok = curl("--cacert", str(pki.ca.cert), "--cert", str(pki.ops.cert), "--key", str(pki.ops.key),
              f"{base}/task_manager/list_modules")
    assert ok.returncode == 0 and "builtin" in json.loads(ok.stdout), ok.stderr
    assert curl("--cacert", str(pki.ca.cert), f"{base}/task_manager/list_modules").returncode != 0  # no client cert
    assert curl("--cacert", str(pki.ca.cert), "--cert", str(pki.rogue.cert), "--key", str(pki.rogue.key),
                f"{base}/task_manager/list_modules").returncode != 0
    plain = curl(f"http://127.0.0.1:{mtls_node.rest_port}/task_manager/list_modules")  # type: ignore[attr-defined]
    assert plain.returncode != 0 and plain.stdout == ""

    with httpx.Client(base_url=base, verify=pki.ssl_context(pki.ops), timeout=10) as http:
        tid = http.post("/tasks/builtin/sleep", json={"duration": 0.2}).json()  # REST's own hop to gRPC is mTLS
        status = http.get(f"/task_manager/wait_task/{tid}", params={"timeout": 10})
        assert status.status_code == 200 and status.json()["state"] == "done"
    with httpx.Client(base_url=base, verify=pki.ssl_context(), timeout=10) as no_cert, pytest.raises(httpx.HTTPError):
        no_cert.get("/task_manager/list_modules")


def healthcheck(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """``python -m taskward.healthcheck ARGS`` with the given ``TASKWARD_TLS_*`` variables and no other."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("TASKWARD_TLS_")}
    return subprocess.run([sys.executable, "-m", "taskward.healthcheck", *args], capture_output=True, text=True,
                          timeout=30 * TIMEOUT_MULT, cwd=REPO, check=False, env={**clean, **env})


def test_the_container_health_check_speaks_tls_as_the_node_is_configured(mtls_node: NodeProc, pki: Pki,
                                                                          tmp_path: Path) -> None:
    """The health check a container runs takes the node's TLS from the same variables the node does: a
    TLS node with mTLS is healthy to it, and a check without them (or with a bad file) says unhealthy."""
    own = pki.nodes["n1"]
    node_env = {"TASKWARD_TLS_CA": str(pki.ca.cert), "TASKWARD_TLS_CERT": str(own.cert),
                "TASKWARD_TLS_KEY": str(own.key)}
    https = f"https://127.0.0.1:{mtls_node.rest_port}/health"  # type: ignore[attr-defined]
    for args in (("grpc", mtls_node.address), ("http", https)):
        ok = healthcheck(*args, **node_env)
        assert (ok.returncode, ok.stderr) == (0, ""), args
        assert healthcheck(*args).returncode == 1, args  # plaintext, or TLS with no client certificate
        assert healthcheck(*args, TASKWARD_TLS_CA=str(pki.ca.cert)).returncode == 1, args  # no client certificate
    missing = tmp_path / "missing.pem"
    for env, message in (({**node_env, "TASKWARD_TLS_KEY": ""}, "TASKWARD_TLS_CERT and TASKWARD_TLS_KEY go together"),
                         ({**node_env, "TASKWARD_TLS_CA": str(missing)},
                          f"cannot read TASKWARD_TLS_CA {missing}: No such file or directory")):
        bad = healthcheck("grpc", mtls_node.address, **env)
        assert (bad.returncode, bad.stderr) == (1, f"healthcheck: {message}\n")
    not_a_url = healthcheck("http", "127.0.0.1/health")
    assert (not_a_url.returncode, not_a_url.stderr) == (2, "healthcheck: unknown url type: '127.0.0.1/health'\n")


def redis_cli(port: int, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["redis-cli", "-3", "-h", "127.0.0.1", "-p", str(port), *args], capture_output=True,
                          text=True, timeout=30 * TIMEOUT_MULT, check=False, stdin=subprocess.DEVNULL)


def test_resp_over_tls_with_redis_cli(mtls_node: NodeProc, pki: Pki) -> None:
    if shutil.which("redis-cli") is None:
        pytest.skip("redis-cli is not installed (Debian: redis-tools, or scripts/setup.sh)")
    port: int = mtls_node.admin_port  # type: ignore[attr-defined]
    tls = ["--tls", "--cacert", str(pki.ca.cert)]
    ops = [*tls, "--cert", str(pki.ops.cert), "--key", str(pki.ops.key)]
    assert redis_cli(port, *ops, "PING").stdout.strip() == "PONG"
    listing = redis_cli(port, *ops, "TASK.ADMIN", "LIST")
    assert listing.returncode == 0 and "builtin:sleep" in listing.stdout
    for flags in (tls, [*tls, "--cert", str(pki.rogue.cert), "--key", str(pki.rogue.key)], []):
        refused = redis_cli(port, *flags, "PING")
        assert "PONG" not in refused.stdout, (flags, refused.stdout)


# ---------------------------------------------------------------------- the cluster and the gateway


@pytest.mark.needs_etcd
def test_cluster_and_gateway_with_tls_and_mtls(etcd: EtcdCluster, tmp_path: Path, pki: Pki) -> None:
    """Every hop is mTLS: the leader starts children on every node and follows their event streams, a
    follower forwards the start to the leader, and a TLS gateway reaches the nodes with its own certificate."""
    c = Cluster(tmp_path, etcd.endpoints, name=unique_cluster_name("tls"), credentials=pki.credentials(pki.ops))
    for n in c.nodes:
        n.extra += pki.node_flags(n.node_id)
    gateway = GatewayProcess(tmp_path, [n.address for n in c.nodes],
                             extra=[*pki.node_flags("gw"), "--log-level", "debug"])
    try:
        c.start()
        follower = c.followers()[0]
        started = run_cli(follower, *pki.client_flags(pki.ops), "start", "builtin", "sleep", "--arg", "duration=1",
                          "--arg", "steps=4", "--cluster", "--wait")
        assert started.returncode == 0, started.stderr + "\n".join(n.log() for n in c.nodes)
        tid = started.stdout.split()[0]
        tree = json.loads(run_cli(follower, *pki.client_flags(pki.ops), "tree", tid, "--json").stdout)
        assert {row["state"] for row in tree} == {"done"}
        assert sorted(ch["node"] for ch in tree[0]["children_ids"]) == ["n1", "n2", "n3"]

        gateway.launch(cwd=REPO).wait_ready(15 * TIMEOUT_MULT)
        with httpx.Client(base_url=f"https://{gateway.address}", verify=pki.ssl_context(pki.ops), timeout=20) as http:
            gid = http.post("/tasks/builtin/sleep", params={"cluster": "true"},
                            json={"duration": 0.5, "steps": 2}).json()
            done = http.get(f"/task_manager/wait_task/{gid}", params={"timeout": 15})
            assert done.status_code == 200 and done.json()["state"] == "done", done.text
            nodes = http.get("/cluster/nodes").json()
            assert sorted(m["id"] for m in nodes) == ["n1", "n2", "n3"]
        for n in c.nodes:  # no hop fell back to plaintext or failed a handshake
            assert "Handshake failed" not in n.log() and "WRONG_VERSION_NUMBER" not in n.log(), n.log()
    finally:
        gateway.stop()
        codes = c.stop()
    assert set(codes.values()) == {0}


# ---------------------------------------------------------------------- SIGHUP reload


def replace_files(target: CertPair, new: CertPair) -> None:
    """Put ``new``'s certificate and key where the node reads ``target``'s (each file replaced whole)."""
    for src, dst in ((new.cert, target.cert), (new.key, target.key)):
        tmp = dst.with_suffix(".tmp")
        shutil.copyfile(src, tmp)
        tmp.replace(dst)


def reloads(node: NodeProc, mark: str) -> int:
    return node.log().count(mark)


def sighup_and_wait(node: NodeProc, mark: str) -> None:
    before = reloads(node, mark)
    assert node.proc is not None
    node.proc.send_signal(signal.SIGHUP)
    poll(lambda: reloads(node, mark) > before, 10, f"'{mark}' in the log")


@pytest.fixture
def rotating_node(tmp_path: Path, pki: Pki) -> Iterator[tuple[NodeProc, CertPair]]:
    """An mTLS node on gRPC, REST and RESP whose certificate files are its own copies, free to replace."""
    issued = pki.ca.issue("rotating", cn="n1-before")
    (tmp_path / "tls").mkdir()
    own = CertPair(tmp_path / "tls" / "node.crt", tmp_path / "tls" / "node.key", issued.serial)
    shutil.copyfile(issued.cert, own.cert)
    shutil.copyfile(issued.key, own.key)
    rest, admin = free_port(), free_port()
    flags = ["--tls-cert", str(own.cert), "--tls-key", str(own.key), "--tls-ca", str(pki.ca.cert),
             "--tls-client-ca", str(pki.ca.cert), "--rest", f"127.0.0.1:{rest}", "--admin", f"127.0.0.1:{admin}"]
    node = NodeProc(tmp_path / "n1", extra=[*NODE_ARGS, *flags], credentials=pki.credentials(pki.ops))
    node.rest_port, node.admin_port = rest, admin  # type: ignore[attr-defined]
    for n in serve(node):
        yield n, own


def test_sighup_reloads_certificates_and_keeps_open_streams(rotating_node: tuple[NodeProc, CertPair],
                                                            pki: Pki) -> None:
    node, own = rotating_node
    ports = {"gRPC": (node.port, ["h2"]), "REST": (node.rest_port, []),  # type: ignore[attr-defined]
             "RESP": (node.admin_port, [])}  # type: ignore[attr-defined]
    old = f"{own.serial:X}"
    assert {name: served_serial(port, pki.ssl_context(pki.ops, alpn)) for name, (port, alpn) in ports.items()} \
        == dict.fromkeys(ports, old)

    # Open before the reload: a WatchEvents stream (gRPC) and a long wait_task (REST), both over TLS.
    events: queue.Queue[pb.Event | BaseException] = queue.Queue()
    stream = node.stub().WatchEvents(pb.WatchEventsRequest(live_only=True), timeout=60 * TIMEOUT_MULT)

    def follow() -> None:
        try:
            for ev in stream:
                events.put(ev)
        except grpc.RpcError as exc:
            events.put(exc)

    follower = threading.Thread(target=follow, daemon=True)
    follower.start()
    tid = node.stub().StartTask(pb.StartTaskRequest(module="builtin", type="sleep",
                                                    args_json=json.dumps({"duration": 3, "steps": 12}))).task_id
    http = httpx.Client(base_url=f"https://127.0.0.1:{node.rest_port}",  # type: ignore[attr-defined]
                        verify=pki.ssl_context(pki.ops), timeout=30 * TIMEOUT_MULT)
    waited: list[httpx.Response] = []
    waiter = threading.Thread(target=lambda: waited.append(
        http.get(f"/task_manager/wait_task/{tid}", params={"timeout": 30})), daemon=True)
    waiter.start()
    first = events.get(timeout=10 * TIMEOUT_MULT)
    assert isinstance(first, pb.Event) and first.task_id == tid

    rotated = pki.ca.issue("rotated", cn="n1-after")
    replace_files(own, rotated)
    new = f"{rotated.serial:X}"
    sighup_and_wait(node, "certificates reloaded")
    assert "subject commonName=n1-after" in node.log()
    assert {name: served_serial(port, pki.ssl_context(pki.ops, alpn)) for name, (port, alpn) in ports.items()} \
        == dict.fromkeys(ports, new)

    after_reload: list[pb.Event] = []
    while True:  # the stream opened before the reload goes on to the task's end
        ev = events.get(timeout=15 * TIMEOUT_MULT)
        assert isinstance(ev, pb.Event), ev
        if ev.task_id == tid:
            after_reload.append(ev)
            if ev.type == "task.completed":
                break
    assert any(ev.type == "task.progress" for ev in after_reload)
    waiter.join(30 * TIMEOUT_MULT)
    assert len(waited) == 1 and waited[0].status_code == 200 and waited[0].json()["state"] == "done"
    stream.cancel()
    follower.join(10)
    http.close()
    ok = run_cli(node, *pki.client_flags(pki.ops), "modules")  # new connections: the CLI trusts the same CA
    assert ok.returncode == 0, ok.stderr


def test_sighup_replaces_the_client_ca_on_every_listener(tmp_path: Path, pki: Pki) -> None:
    """A CA taken out of ``--tls-client-ca`` is no longer trusted after SIGHUP on gRPC, REST and RESP alike,
    and the one put in is (REST and RESP used to add the new CA to the old one until a restart)."""
    if shutil.which("redis-cli") is None:
        pytest.skip("redis-cli is not installed (Debian: redis-tools, or scripts/setup.sh)")
    client_ca = tmp_path / "client-ca.pem"
    shutil.copyfile(pki.ca.cert, client_ca)
    rest, admin = free_port(), free_port()
    pair = pki.nodes["n1"]
    node = NodeProc(tmp_path / "n1", credentials=pki.credentials(pki.ops), extra=[
        *NODE_ARGS, "--tls-cert", str(pair.cert), "--tls-key", str(pair.key), "--tls-ca", str(pki.ca.cert),
        "--tls-client-ca", str(client_ca), "--rest", f"127.0.0.1:{rest}", "--admin", f"127.0.0.1:{admin}"])

    def accepted(client: CertPair) -> dict[str, bool]:
        """Whether each listener lets ``client`` in (it trusts the node's CA for the node's certificate)."""
        tls = ["--cacert", str(pki.ca.cert), "--cert", str(client.cert), "--key", str(client.key)]
        with grpc.secure_channel(node.address, pki.credentials(client)) as ch:
            try:
                health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(), timeout=5 * TIMEOUT_MULT)
                grpc_ok = True
            except grpc.RpcError as exc:
                assert exc.code() == grpc.StatusCode.UNAVAILABLE, exc
                grpc_ok = False
        return {"gRPC": grpc_ok,
                "REST": curl(*tls, f"https://127.0.0.1:{rest}/openapi.json").returncode == 0,
                "RESP": redis_cli(admin, "--tls", *tls, "PING").stdout.strip() == "PONG"}

    every = ("gRPC", "REST", "RESP")
    for n in serve(node):
        assert accepted(pki.ops) == dict.fromkeys(every, True)
        assert accepted(pki.rogue) == dict.fromkeys(every, False)
        shutil.copyfile(pki.rogue.cert.parent / "ca.crt", client_ca.with_suffix(".tmp"))
        client_ca.with_suffix(".tmp").replace(client_ca)  # the cluster's CA out, the other one in
        sighup_and_wait(n, "certificates reloaded")
        assert accepted(pki.ops) == dict.fromkeys(every, False)
        assert accepted(pki.rogue) == dict.fromkeys(every, True)


def test_a_bad_file_on_reload_keeps_the_old_certificate(rotating_node: tuple[NodeProc, CertPair], pki: Pki) -> None:
    node, own = rotating_node
    old = f"{own.serial:X}"
    own.key.write_text("not a key\n")
    sighup_and_wait(node, "certificates not reloaded")
    assert (f"ERROR taskward.security.tls: certificates not reloaded, still serving the previous ones: --tls-key "
            f"{own.key} holds no PEM private key") in node.log()
    other = pki.ca.issue("other")
    shutil.copyfile(other.key, own.key)  # a key, but not the certificate's
    sighup_and_wait(node, "certificates not reloaded")
    assert f"--tls-key {own.key} is not the key of --tls-cert {own.cert}" in node.log()
    for port, alpn in ((node.port, ["h2"]), (node.rest_port, []), (node.admin_port, [])):  # type: ignore[attr-defined]
        assert served_serial(port, pki.ssl_context(pki.ops, alpn)) == old
    ok = run_cli(node, *pki.client_flags(pki.ops), "start", "builtin", "sleep", "--arg", "duration=0.1", "--wait")
    assert ok.returncode == 0, ok.stderr


# ---------------------------------------------------------------------- start-up refusals


def node_refusal(tmp_path: Path, *flags: str) -> tuple[int, str]:
    """Run ``taskward node`` with ``flags``; its exit code and stderr (it must not have created its data dir)."""
    data = tmp_path / f"data-{free_port()}"
    done = subprocess.run([*taskward_cmd(), "node", "--id", "x1", "--data-dir", str(data), *flags],
                          capture_output=True, text=True, timeout=60 * TIMEOUT_MULT, cwd=REPO, check=False)
    assert not data.exists()
    assert "Traceback" not in done.stderr
    return done.returncode, done.stderr.strip()


def test_bad_tls_files_refuse_to_start(tmp_path: Path, pki: Pki) -> None:
    n1, n2 = pki.nodes["n1"], pki.nodes["n2"]
    listen = ["--listen", f"127.0.0.1:{free_port()}"]
    missing = tmp_path / "missing.pem"
    encrypted = tmp_path / "encrypted.key"
    subprocess.run(["openssl", "pkey", "-in", str(n1.key), "-aes256", "-passout", "pass:secret", "-out",
                    str(encrypted)], check=True, capture_output=True, timeout=60)
    cases = {
        ("--tls-cert", str(missing), "--tls-key", str(n1.key)):
            f"error: cannot read --tls-cert {missing}: No such file or directory",
        ("--tls-cert", str(n1.cert), "--tls-key", str(n2.key)):
            f"error: --tls-key {n2.key} is not the key of --tls-cert {n1.cert}",
        ("--tls-cert", str(n1.key), "--tls-key", str(n1.key)):
            f"error: --tls-cert {n1.key} holds no PEM certificate (-----BEGIN CERTIFICATE-----)",
        ("--tls-cert", str(n1.cert), "--tls-key", str(encrypted)):
            f"error: --tls-key {encrypted} is encrypted: give the key unencrypted, readable by this user only",
        ("--tls-cert", str(n1.cert), "--tls-key", str(n1.key), "--tls-client-ca", str(n1.key)):
            f"error: --tls-client-ca {n1.key} holds no PEM certificate (-----BEGIN CERTIFICATE-----)",
        ("--tls-cert", str(n1.cert)): "error: --tls-cert and --tls-key go together",
        ("--tls-client-ca", str(pki.ca.cert)):
            "error: --tls-client-ca needs --tls-cert and --tls-key: client certificates are asked for on TLS "
            "listeners only",
    }
    for flags, message in cases.items():
        assert node_refusal(tmp_path, *listen, *flags) == (2, message)
    port = free_port()
    gateway = subprocess.run([*taskward_cmd(), "gateway", "--listen", f"127.0.0.1:{port}", "--tls-cert", str(n1.cert),
                              "--tls-key", str(n2.key)], capture_output=True, text=True, timeout=60 * TIMEOUT_MULT,
                             cwd=REPO, check=False)
    assert (gateway.returncode, gateway.stderr.strip()) == (2, f"error: --tls-key {n2.key} is not the key of "
                                                               f"--tls-cert {n1.cert}")


def test_off_loopback_bind_needs_a_token_and_tls(tmp_path: Path, pki: Pki) -> None:
    """Refused before anything binds (no socket is opened on 0.0.0.0 by this test)."""
    token = tmp_path / "token"
    token.write_text("a-long-enough-cluster-secret\n")
    token.chmod(0o600)
    tls = pki.node_flags("n1", mtls=False)
    rule = "off loopback a listener needs --token-file and --tls-cert/--tls-key (or --insecure-bind)"
    for flag in ("--listen", "--rest", "--admin"):
        address = f"0.0.0.0:{free_port()}"
        base = [] if flag == "--listen" else ["--listen", f"127.0.0.1:{free_port()}"]
        assert node_refusal(tmp_path, *base, flag, address) == \
            (2, f"error: refusing to bind {flag} {address} without a token and TLS: {rule}")
        assert node_refusal(tmp_path, *base, flag, address, "--token-file", str(token)) == \
            (2, f"error: refusing to bind {flag} {address} without TLS: {rule}")
        assert node_refusal(tmp_path, *base, flag, address, *tls) == \
            (2, f"error: refusing to bind {flag} {address} without a token: {rule}")
    address = f"0.0.0.0:{free_port()}"
    gateway = subprocess.run([*taskward_cmd(), "gateway", "--listen", address, "--token-file", str(token)],
                             capture_output=True, text=True, timeout=60 * TIMEOUT_MULT, cwd=REPO, check=False)
    assert (gateway.returncode, gateway.stderr.strip()) == \
        (2, f"error: refusing to bind --listen {address} without TLS: {rule}")


def test_insecure_bind_is_logged_loudly_at_start(tmp_path: Path) -> None:
    """With ``--insecure-bind`` the node starts and says so at WARNING (on loopback here: tests bind nothing
    else; what it says for each exposed listener is checked in tests/unit/test_tls_unit.py)."""
    node = NodeProc(tmp_path / "n1", extra=["--insecure-bind"]).start()
    try:
        assert "WARNING taskward.app: --insecure-bind given, but every listener is on loopback or has a token and " \
               "TLS" in node.log()
    finally:
        assert node.stop() == 0

