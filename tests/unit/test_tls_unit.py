"""TLS files and rules, in process: every bad file is refused with words that name it, a reload with a bad
file changes nothing, a good one reaches new handshakes and the owners of channels, and the off-loopback
rule (a token and TLS, or ``--insecure-bind``, which is then warned about at start)."""

from __future__ import annotations

import argparse
import contextlib
import logging
import socket
import ssl
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from taskward.app import NodeApp
from taskward.config import (
    GatewayConfig,
    ManagerConfig,
    NodeConfig,
    TlsConfig,
    check_exposure,
    insecure_bind_warnings,
    node_config_from,
)
from taskward.coordinator.node_client import NodeClients
from taskward.errors import ConfigError
from taskward.pb.taskward.v1 import tasks_pb2 as pb
from taskward.pb.taskward.v1 import tasks_pb2_grpc as pb_grpc
from taskward.security.tls import Certificates, TlsError, client_credentials, load_config, load_files
from taskward.settings import NODE_SETTINGS, add_arguments, resolve
from tests.support.certs import CertPair, TestCA

RULE = "off loopback a listener needs --token-file and --tls-cert/--tls-key (or --insecure-bind)"


@pytest.fixture(scope="module")
def ca(tmp_path_factory: pytest.TempPathFactory) -> TestCA:
    return TestCA(tmp_path_factory.mktemp("ca"))


@pytest.fixture(scope="module")
def pair(ca: TestCA) -> CertPair:
    return ca.issue("n1")


def test_every_bad_file_is_named(tmp_path: Path, ca: TestCA, pair: CertPair) -> None:
    other = ca.issue("other")
    missing = tmp_path / "missing.pem"
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("hello\n")
    huge = tmp_path / "huge.pem"
    huge.write_bytes(b"x" * (1024 * 1024 + 1))
    cases = [
        (dict(cert=missing, key=pair.key), f"cannot read --tls-cert {missing}: No such file or directory"),
        (dict(cert=garbage, key=pair.key), f"--tls-cert {garbage} holds no PEM certificate "
                                           "(-----BEGIN CERTIFICATE-----)"),
        (dict(cert=pair.cert, key=garbage), f"--tls-key {garbage} holds no PEM private key"),
        (dict(cert=pair.cert, key=other.key), f"--tls-key {other.key} is not the key of --tls-cert {pair.cert}"),
        (dict(cert=pair.cert), "--tls-cert and --tls-key go together"),
        (dict(ca=garbage), f"--tls-ca {garbage} holds no PEM certificate (-----BEGIN CERTIFICATE-----)"),
        (dict(ca=huge), f"--tls-ca {huge} is larger than 1024 KiB: not a PEM file"),
        (dict(cert=pair.cert, key=pair.key, client_ca=tmp_path), f"cannot read --tls-client-ca {tmp_path}: "
                                                                 "Is a directory"),
    ]
    for kwargs, message in cases:
        with pytest.raises(TlsError) as info:
            load_files(**kwargs)  # type: ignore[arg-type]
        assert info.value.message == message
        assert isinstance(info.value, ConfigError) and isinstance(info.value, ValueError)
    good = load_files(cert=pair.cert, key=pair.key, client_ca=ca.cert, ca=ca.cert)
    assert good.cert == pair.cert.read_bytes() and good.client_ca == good.ca == ca.cert.read_bytes()


def test_client_files_are_named_as_the_caller_spells_them(tmp_path: Path, pair: CertPair) -> None:
    assert client_credentials(None, None, None) is None
    with pytest.raises(TlsError, match=r"^tls_cert and tls_key go together$"):
        client_credentials(None, pair.cert, None)
    with pytest.raises(TlsError, match=r"^cannot read tls_ca .*nope\.pem: No such file or directory$"):
        client_credentials(tmp_path / "nope.pem", None, None)
    assert isinstance(client_credentials(None, pair.cert, pair.key), grpc.ChannelCredentials)


def test_tls_settings_that_do_not_go_together() -> None:
    with pytest.raises(ConfigError, match=r"^--tls-cert and --tls-key go together$"):
        TlsConfig(cert="a.pem")
    with pytest.raises(ConfigError, match=r"^--tls-client-ca needs --tls-cert and --tls-key"):
        TlsConfig(client_ca="ca.pem")
    assert (TlsConfig().serves, TlsConfig().dials) == (False, False)
    assert (TlsConfig(ca="ca.pem").serves, TlsConfig(ca="ca.pem").dials) == (False, True)
    assert (TlsConfig(cert="c", key="k").serves, TlsConfig(cert="c", key="k").dials) == (True, True)


def handshake(ctx: ssl.SSLContext, client: ssl.SSLContext) -> tuple[bool, dict[str, Any] | None]:
    """One connection from ``client`` to a listener with ``ctx`` (in a thread): whether the listener accepted
    it (its own verdict, taken when its handshake ends) and the certificate it served. No SNI is sent, as
    for any client that dials an IP address."""
    verdict: list[bool] = []
    served: dict[str, Any] | None = None
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)

        def accept() -> None:
            conn, _ = listener.accept()
            try:
                with ctx.wrap_socket(conn, server_side=True):
                    verdict.append(True)
            except (ssl.SSLError, OSError):
                verdict.append(False)

        t = threading.Thread(target=accept, daemon=True)
        t.start()
        with socket.create_connection(("127.0.0.1", listener.getsockname()[1]), timeout=5) as s, \
                contextlib.suppress(ssl.SSLError, OSError), client.wrap_socket(s, server_hostname="127.0.0.1") as tls:
            served = tls.getpeercert()
            tls.recv(1)  # TLS 1.3: the listener's verdict on our certificate comes after our side's handshake
        t.join(5)
    return verdict == [True], served


def served_serial(ctx: ssl.SSLContext, trust: Path) -> str:
    """The serial a new handshake with a listener using ``ctx`` is served."""
    _, cert = handshake(ctx, ssl.create_default_context(cafile=str(trust)))
    assert cert is not None
    return str(cert["serialNumber"])


@pytest.fixture
def live(tmp_path: Path, ca: TestCA, pair: CertPair) -> Iterator[tuple[Certificates, CertPair]]:
    own = CertPair(tmp_path / "node.crt", tmp_path / "node.key", pair.serial)
    own.cert.write_bytes(pair.cert.read_bytes())
    own.key.write_bytes(pair.key.read_bytes())
    yield Certificates(TlsConfig(cert=str(own.cert), key=str(own.key), ca=str(ca.cert))), own


def test_a_reload_reaches_new_handshakes_and_channel_owners(live: tuple[Certificates, CertPair], ca: TestCA,
                                                            caplog: pytest.LogCaptureFixture) -> None:
    certs, own = live
    ctx = certs.server_context()
    seen: list[grpc.ChannelCredentials | None] = []
    certs.on_reload(seen.append)
    assert served_serial(ctx, ca.cert) == f"{own.serial:X}"
    assert certs._fetch() is None  # nothing new for gRPC's next handshake yet

    new = ca.issue("rotated", cn="n1-after")
    own.cert.write_bytes(new.cert.read_bytes())
    own.key.write_bytes(new.key.read_bytes())
    with caplog.at_level(logging.INFO, logger="taskward.security.tls"):
        assert certs.reload()
    assert served_serial(ctx, ca.cert) == f"{new.serial:X}"  # the same context, new handshakes
    assert isinstance(certs._fetch(), grpc.ServerCertificateConfiguration) and certs._fetch() is None
    assert len(seen) == 1 and seen[0] is certs.channel_credentials
    assert f"certificates reloaded: subject commonName=n1-after, serial {new.serial:X}" in caplog.text


def client_accepted(ctx: ssl.SSLContext, trust: Path, client: CertPair) -> bool:
    """Whether a listener with ``ctx`` accepts a handshake from ``client``."""
    side = ssl.create_default_context(cafile=str(trust))
    side.load_cert_chain(client.cert, client.key)
    return handshake(ctx, side)[0]


def test_a_reloaded_client_ca_replaces_the_old_one_on_the_same_listener(tmp_path: Path, ca: TestCA,
                                                                       pair: CertPair) -> None:
    other = TestCA(tmp_path / "other", name="taskward-test-other-ca")
    trusted = tmp_path / "client-ca.pem"
    trusted.write_bytes(ca.cert.read_bytes())
    certs = Certificates(TlsConfig(cert=str(pair.cert), key=str(pair.key), client_ca=str(trusted), ca=str(ca.cert)))
    ctx = certs.server_context()
    ours, theirs = ca.issue("client-ours"), other.issue("client-theirs")
    assert (client_accepted(ctx, ca.cert, ours), client_accepted(ctx, ca.cert, theirs)) == (True, False)

    trusted.write_bytes(other.cert.read_bytes())  # the old CA is taken out, the other one put in
    assert certs.reload()
    assert (client_accepted(ctx, ca.cert, ours), client_accepted(ctx, ca.cert, theirs)) == (False, True)
    assert served_serial(ctx, ca.cert) == f"{pair.serial:X}"  # the same listener, the same certificate


def test_a_bad_file_on_reload_changes_nothing(live: tuple[Certificates, CertPair], ca: TestCA,
                                              caplog: pytest.LogCaptureFixture) -> None:
    certs, own = live
    ctx = certs.server_context()
    seen: list[grpc.ChannelCredentials | None] = []
    certs.on_reload(seen.append)
    credentials = certs.channel_credentials
    own.key.write_bytes(ca.issue("stranger").key.read_bytes())
    with caplog.at_level(logging.INFO, logger="taskward.security.tls"):
        assert not certs.reload()
    assert ("certificates not reloaded, still serving the previous ones: "
            f"--tls-key {own.key} is not the key of --tls-cert {own.cert}") in caplog.text
    assert served_serial(ctx, ca.cert) == f"{own.serial:X}"
    assert certs._fetch() is None and seen == [] and certs.channel_credentials is credentials


def test_off_loopback_needs_a_token_and_tls() -> None:
    for token, tls, missing in ((False, False, "a token and TLS"), (True, False, "TLS"), (False, True, "a token")):
        with pytest.raises(ConfigError) as info:
            check_exposure("--rest", "0.0.0.0:80", token=token, tls=tls, insecure_bind=False)
        assert info.value.message == f"refusing to bind --rest 0.0.0.0:80 without {missing}: {RULE}"
    for address in ("127.0.0.1:1", "localhost:1", "[::1]:1"):
        check_exposure("--listen", address, token=False, tls=False, insecure_bind=False)
    check_exposure("--listen", "0.0.0.0:1", token=True, tls=True, insecure_bind=False)
    check_exposure("--listen", "0.0.0.0:1", token=False, tls=False, insecure_bind=True)
    with pytest.raises(ConfigError, match="invalid --listen address"):  # still checked with --insecure-bind
        check_exposure("--listen", "nonsense", token=False, tls=False, insecure_bind=True)
    tls = TlsConfig(cert="c.pem", key="k.pem")
    NodeConfig(node_id="n1", listen="0.0.0.0:7100", data_dir=Path("d"), token="t" * 20, tls=tls)
    GatewayConfig(listen="0.0.0.0:10000", token="t" * 20, tls=tls)
    with pytest.raises(ConfigError, match=r"^refusing to bind --listen 0\.0\.0\.0:10000 without TLS"):
        GatewayConfig(listen="0.0.0.0:10000", token="t" * 20)


def test_insecure_bind_warnings_name_each_gap() -> None:
    listeners = {"--listen": "0.0.0.0:7100", "--rest": "127.0.0.1:7101", "--admin": "0.0.0.0:3320"}
    assert insecure_bind_warnings(listeners, token=True, tls=False, insecure_bind=False) == []
    assert insecure_bind_warnings(listeners, token=True, tls=False, insecure_bind=True) == [
        "INSECURE (--insecure-bind): --listen 0.0.0.0:7100 is reachable from other hosts without TLS; the bearer "
        "token and task data cross the network in clear text",
        "INSECURE (--insecure-bind): --admin 0.0.0.0:3320 is reachable from other hosts without TLS; the bearer "
        "token and task data cross the network in clear text",
    ]
    assert insecure_bind_warnings({"--listen": "0.0.0.0:1"}, token=False, tls=True, insecure_bind=True) == [
        "INSECURE (--insecure-bind): --listen 0.0.0.0:1 is reachable from other hosts without a token; anyone who "
        "can reach it may call it"]
    assert insecure_bind_warnings({"--listen": "127.0.0.1:1"}, token=False, tls=False, insecure_bind=True) == [
        "--insecure-bind given, but every listener is on loopback or has a token and TLS"]


def test_a_node_logs_insecure_bind_at_start(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """What ``NodeApp`` logs once it serves (``_log_auth``), for a config it never binds here."""
    config = NodeConfig(node_id="n1", listen="0.0.0.0:7100", admin="0.0.0.0:3320", data_dir=tmp_path / "n1",
                        insecure_bind=True, manager=ManagerConfig(node_id="n1"))
    app = NodeApp(config)
    with caplog.at_level(logging.WARNING, logger="taskward.app"):
        app._log_auth()
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert "INSECURE (--insecure-bind): --listen 0.0.0.0:7100 is reachable from other hosts without TLS; task data " \
           "cross the network in clear text" in warnings
    assert "INSECURE (--insecure-bind): --admin 0.0.0.0:3320 is reachable from other hosts without a token; anyone " \
           "who can reach it may call it" in warnings


def test_node_settings_carry_the_tls_files(pair: CertPair, ca: TestCA) -> None:
    p = argparse.ArgumentParser()
    add_arguments(p, NODE_SETTINGS)
    args = p.parse_args(["--id", "n1", "--tls-cert", str(pair.cert), "--tls-key", str(pair.key),
                         "--tls-client-ca", str(ca.cert)])
    config = node_config_from(resolve(NODE_SETTINGS, args, {"TASKWARD_TLS_CA": str(ca.cert)}))
    assert config.tls == TlsConfig(cert=str(pair.cert), key=str(pair.key), client_ca=str(ca.cert), ca=str(ca.cert))
    assert load_config(config.tls).ca == ca.cert.read_bytes()


class _Load(pb_grpc.TaskManagerServicer):
    """Counts the calls that reach it, and the tokens they carried."""

    def __init__(self) -> None:
        self.tokens: list[str] = []

    async def GetLoad(self, request: pb.GetLoadRequest, context: Any) -> pb.LoadResponse:
        self.tokens.append(dict(context.invocation_metadata()).get("authorization", ""))
        return pb.LoadResponse(running=1, queued=2)


async def test_a_member_is_checked_before_it_is_sent_anything(ca: TestCA, pair: CertPair) -> None:
    """A node calls a member only once the member's certificate names the host it advertised: the token
    never reaches a server that cannot show it."""
    impostor = ca.issue("impostor", sans="DNS:elsewhere.invalid")  # signed by the same CA, another name
    for cert, ok in ((pair, True), (impostor, False)):
        servicer = _Load()
        server = grpc.aio.server()
        pb_grpc.add_TaskManagerServicer_to_server(servicer, server)
        port = server.add_secure_port("127.0.0.1:0", grpc.ssl_server_credentials(
            [(cert.key.read_bytes(), cert.cert.read_bytes())]))
        await server.start()
        clients = NodeClients("cluster-secret", Certificates(TlsConfig(cert=str(pair.cert), key=str(pair.key),
                                                                      ca=str(ca.cert))).channel_credentials)
        try:
            if ok:
                assert await clients.load(f"127.0.0.1:{port}", timeout_s=5) == (1, 2)
                assert servicer.tokens == ["Bearer cluster-secret"]
            else:
                with pytest.raises(grpc.aio.AioRpcError) as info:
                    await clients.load(f"127.0.0.1:{port}", timeout_s=5)
                assert info.value.code() == grpc.StatusCode.UNAVAILABLE
                assert servicer.tokens == []
        finally:
            await clients.close()
            await server.stop(None)
