"""TLS for a node or a gateway: every listener (gRPC, REST, RESP) and every call the process makes, from
PEM files read and checked in one place, and reloaded on SIGHUP without dropping a connection.

Reading: ``load_files`` reads the files once and checks them together (each readable and PEM, the key
unencrypted and the key of the certificate, every CA bundle usable), so a bad file is one ``TlsError``
naming it: exit 2 at start, or at a reload a logged error while the process keeps serving what it had.

Serving: gRPC gets ``dynamic_ssl_server_credentials``, whose fetch callback gRPC asks on each new
connection, so a reload is taken up by the next handshake; REST (uvicorn) and RESP (asyncio) get
``ssl.SSLContext`` objects that a reload loads again in place: new handshakes see the new certificate,
connections already set up keep theirs. (A context only ever adds CAs: a client CA replaced by a reload
is still trusted on REST and RESP until the process restarts.)

Calling: ``channel_credentials`` verifies the other side with ``--tls-ca`` (the system's roots without
it) and presents this process's certificate, so nodes that require client certificates accept each
other. gRPC checks the server's certificate against the host it dials (a member's advertised address)
during the handshake, before any byte of a call, the bearer token included, is sent.
"""

from __future__ import annotations

import importlib
import logging
import os
import re
import ssl
import tempfile
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc

from taskward.config import TlsConfig
from taskward.errors import ConfigError

logger = logging.getLogger(__name__)

FilePath = str | os.PathLike[str]
MAX_PEM_BYTES = 1024 * 1024
FLAGS: Mapping[str, str] = {"cert": "--tls-cert", "key": "--tls-key", "client_ca": "--tls-client-ca", "ca": "--tls-ca"}
"""How the files are named to whoever gave them: command-line flags (node, gateway, CLI) ..."""
ARGUMENTS: Mapping[str, str] = {"cert": "tls_cert", "key": "tls_key", "client_ca": "tls_client_ca", "ca": "tls_ca"}
"""... or the client library's keyword arguments."""
_CERTIFICATE = b"-----BEGIN CERTIFICATE-----"
_PRIVATE_KEY = re.compile(rb"-----BEGIN (?:[A-Z]+ )?PRIVATE KEY-----")

CredentialsListener = Callable[[grpc.ChannelCredentials | None], None]


class TlsError(ConfigError, ValueError):
    """A TLS file that cannot be used (unreadable, not PEM, an encrypted key, the key of another certificate),
    or files that do not go together. Also a ``ValueError``: the client library raises it for bad arguments."""


@dataclass(frozen=True, slots=True)
class TlsMaterial:
    """The bytes of one reading of the files, already checked: ``cert`` and ``key`` belong together."""

    cert: bytes | None = None
    key: bytes | None = None
    client_ca: bytes | None = None
    ca: bytes | None = None


def load_files(*, cert: FilePath | None = None, key: FilePath | None = None, client_ca: FilePath | None = None,
               ca: FilePath | None = None, names: Mapping[str, str] = FLAGS) -> TlsMaterial:
    """Read and check the given files (each at most once); ``TlsError`` names the first bad one as ``names``
    spells it."""
    if (cert is None) != (key is None):
        raise TlsError(f"{names['cert']} and {names['key']} go together")
    material = TlsMaterial(
        cert=_certificates(cert, names["cert"]) if cert is not None else None,
        key=_private_key(key, names["key"]) if key is not None else None,
        client_ca=_ca_bundle(client_ca, names["client_ca"]) if client_ca is not None else None,
        ca=_ca_bundle(ca, names["ca"]) if ca is not None else None,
    )
    if material.cert is not None and material.key is not None:
        _check_pair(material, f"{names['cert']} {cert}", f"{names['key']} {key}")
    return material


def load_config(config: TlsConfig) -> TlsMaterial:
    """The files of a node's or gateway's ``--tls-*`` settings (unset ones are skipped)."""
    return load_files(cert=config.cert or None, key=config.key or None, client_ca=config.client_ca or None,
                      ca=config.ca or None)


def client_credentials(ca: FilePath | None, cert: FilePath | None, key: FilePath | None, *,
                       names: Mapping[str, str] = ARGUMENTS) -> grpc.ChannelCredentials | None:
    """TLS credentials of a client (the library, the CLI): ``ca`` verifies the nodes (the system's roots
    without it), ``cert`` + ``key`` are the client's certificate for nodes that require one. None of them:
    None (plaintext)."""
    if ca is None and cert is None and key is None:
        return None
    return channel_credentials(load_files(cert=cert, key=key, ca=ca, names=names))


def channel_credentials(m: TlsMaterial) -> grpc.ChannelCredentials:
    """gRPC client credentials from files already read: ``m.ca`` verifies the server (the system's roots
    without it); ``m.cert`` is presented when there is one."""
    return grpc.ssl_channel_credentials(root_certificates=m.ca, private_key=m.key, certificate_chain=m.cert)


def client_context(m: TlsMaterial) -> ssl.SSLContext:
    """The same for an HTTPS client (``ssl``), from the same bytes."""
    ctx = ssl.create_default_context(cadata=m.ca.decode("ascii", errors="ignore") if m.ca is not None else None)
    if m.cert is not None:
        _load_chain(ctx, m)
    return ctx


# ---------------------------------------------------------------------- the live certificates of a process


class Certificates:
    """The TLS of one process, live: what its listeners serve and what its own calls present.

    Built at start (a ``TlsError`` then stops the process with exit 2). ``reload()`` (SIGHUP) reads every
    file again: on success new handshakes on every listener use the new files and the callbacks given to
    ``on_reload`` get new channel credentials for new channels; on a bad file nothing changes and the
    error is logged. Everything but the gRPC fetch callback runs on the event loop.
    """

    def __init__(self, config: TlsConfig) -> None:
        self.config = config
        self._material = load_config(config)
        self._lock = threading.Lock()  # the fetch callback runs on gRPC's threads
        self._pending: grpc.ServerCertificateConfiguration | None = None
        self._served: list[_ServedContext] = []  # each listener's TLS, across reloads
        self._listeners: list[CredentialsListener] = []
        self._channel_credentials = self._dial_credentials(self._material)
        if self._material.cert is not None:
            logger.info("TLS certificate %s: %s", config.cert, describe(self._material.cert))
        if config.serves and not config.ca:
            logger.warning("--tls-cert without --tls-ca: this process's own calls to nodes (other nodes, its own "
                           "--rest) verify them against the system's root CAs, not your own CA")

    @property
    def serving(self) -> bool:
        """Whether the listeners speak TLS."""
        return self.config.serves

    @property
    def requires_client_certificates(self) -> bool:
        return bool(self.config.client_ca)

    @property
    def channel_credentials(self) -> grpc.ChannelCredentials | None:
        """For this process's own calls to nodes: TLS with ``--tls-ca`` and our certificate, or None."""
        return self._channel_credentials

    def on_reload(self, listener: CredentialsListener) -> None:
        """``listener(new channel credentials)`` after each successful reload (owners of channels re-dial)."""
        self._listeners.append(listener)

    def grpc_server_credentials(self) -> grpc.ServerCredentials:
        """For ``server.add_secure_port``: gRPC asks ``_fetch`` on each new connection, so a reload takes
        effect at the next handshake and open connections are never touched."""
        return grpc.dynamic_ssl_server_credentials(
            _server_configuration(self._material), self._fetch,  # type: ignore[arg-type]  # None = keep (gRPC docs)
            require_client_authentication=self.requires_client_certificates)

    def _fetch(self) -> grpc.ServerCertificateConfiguration | None:
        with self._lock:
            pending, self._pending = self._pending, None
        return pending  # None: keep the current one

    def server_context(self, *, alpn: Sequence[str] = ()) -> ssl.SSLContext:
        """The context of one listener (REST, RESP, metrics), for the listener's whole life. After a
        ``reload`` its handshakes switch to a context built from the new files (``_ServedContext``)."""
        served = _ServedContext(_server_context(self._material, alpn), alpn)
        self._served.append(served)
        return served.first

    def reload(self) -> bool:
        """Read every file again and use them from the next handshake on; False (logged, nothing changed)
        when a file is bad."""
        try:
            material = load_config(self.config)
            fresh = [_server_context(material, served.alpn) for served in self._served]
        except (TlsError, ssl.SSLError, OSError) as exc:
            reason = exc.message if isinstance(exc, TlsError) else str(exc)
            logger.error("certificates not reloaded, still serving the previous ones: %s", reason)
            return False
        for served, ctx in zip(self._served, fresh, strict=True):  # all built: none half-switched
            served.current = ctx
        with self._lock:
            self._pending = _server_configuration(material) if material.cert is not None else None
        self._material = material
        self._channel_credentials = self._dial_credentials(material)
        for listener in self._listeners:
            try:
                listener(self._channel_credentials)
            except Exception:  # one owner failing to re-dial must not keep the others on old credentials
                logger.exception("re-dialling with the reloaded certificates failed")
        logger.info("certificates reloaded%s", f": {describe(material.cert)}" if material.cert else "")
        return True

    def _dial_credentials(self, m: TlsMaterial) -> grpc.ChannelCredentials | None:
        if not self.config.dials:
            return None
        return channel_credentials(m)


def load_certificates(config: TlsConfig) -> Certificates | None:
    """A process's certificates, or None when it has no ``--tls-*`` file at all."""
    if not (config.serves or config.dials):
        return None
    return Certificates(config)


# ---------------------------------------------------------------------- checks and loading


def _read(path: FilePath, name: str) -> bytes:
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_PEM_BYTES + 1)
    except OSError as exc:
        raise TlsError(f"cannot read {name} {path}: {exc.strerror or exc}") from None
    if len(data) > MAX_PEM_BYTES:
        raise TlsError(f"{name} {path} is larger than {MAX_PEM_BYTES // 1024} KiB: not a PEM file")
    return data


def _certificates(path: FilePath, name: str) -> bytes:
    data = _read(path, name)
    if _CERTIFICATE not in data:
        raise TlsError(f"{name} {path} holds no PEM certificate ({_CERTIFICATE.decode()})")
    return data


def _private_key(path: FilePath, name: str) -> bytes:
    data = _read(path, name)
    if b"ENCRYPTED" in data:
        raise TlsError(f"{name} {path} is encrypted: give the key unencrypted, readable by this user only")
    if not _PRIVATE_KEY.search(data):
        raise TlsError(f"{name} {path} holds no PEM private key")
    return data


def _ca_bundle(path: FilePath, name: str) -> bytes:
    data = _certificates(path, name)
    try:
        ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT).load_verify_locations(cadata=data.decode("ascii", errors="ignore"))
    except (ssl.SSLError, ValueError) as exc:
        raise TlsError(f"{name} {path} is not a usable PEM CA bundle: {_reason(exc)}") from None
    return data


def _check_pair(m: TlsMaterial, cert_name: str, key_name: str) -> None:
    try:
        _load_chain(ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER), m)
    except ssl.SSLError as exc:
        if "KEY_VALUES_MISMATCH" in str(exc) or "key values mismatch" in str(exc):
            raise TlsError(f"{key_name} is not the key of {cert_name}") from None
        raise TlsError(f"cannot use {cert_name} with {key_name}: {_reason(exc)}") from None


def _reason(exc: Exception) -> str:
    return str(getattr(exc, "reason", None) or exc)


def _no_password() -> bytes:
    return b""  # an encrypted key fails to load instead of prompting on a terminal


def _load_chain(ctx: ssl.SSLContext, m: TlsMaterial) -> None:
    """``load_cert_chain`` from bytes already read: ``ssl`` takes only paths, so they go to a private
    temporary directory (0700) for the call. Loading the bytes that were checked, not the files again,
    keeps a file replaced meanwhile from being half-used."""
    assert m.cert is not None and m.key is not None
    with tempfile.TemporaryDirectory(prefix="taskward-tls-") as tmp:
        cert, key = Path(tmp, "cert.pem"), Path(tmp, "key.pem")
        cert.write_bytes(m.cert)
        fd = os.open(key, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(m.key)
        ctx.load_cert_chain(cert, key, password=_no_password)


def _server_context(m: TlsMaterial, alpn: Sequence[str]) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    if alpn:
        ctx.set_alpn_protocols(list(alpn))
    _load_chain(ctx, m)
    if m.client_ca is not None:
        ctx.verify_mode = ssl.CERT_REQUIRED
        ctx.load_verify_locations(cadata=m.client_ca.decode("ascii", errors="ignore"))
    return ctx


class _ServedContext:
    """A listener's TLS across reloads. The listener keeps the context it was given (``first``); each
    handshake on it is switched, as the client's hello arrives, to ``current``, the context of the files
    last loaded: its certificate, and its client CAs *instead of* the old ones. (Loading new files into
    the listener's context in place could only add CAs to what it trusts: an ``SSLContext`` cannot drop
    one, so a CA taken out of ``--tls-client-ca`` would have stayed trusted until a restart.) OpenSSL calls
    the switch for every hello, with or without a server name, and verifies the client's certificate
    against the store of the context switched to. Connections already open keep the context they had."""

    def __init__(self, first: ssl.SSLContext, alpn: Sequence[str]) -> None:
        self.first = self.current = first
        self.alpn = tuple(alpn)
        first.sni_callback = self._switch

    def _switch(self, conn: ssl.SSLObject | ssl.SSLSocket, server_name: str | None, ctx: ssl.SSLContext) -> None:
        if self.current is not ctx:
            conn.context = self.current


def _server_configuration(m: TlsMaterial) -> grpc.ServerCertificateConfiguration:
    assert m.cert is not None and m.key is not None
    return grpc.ssl_server_certificate_configuration([(m.key, m.cert)], root_certificates=m.client_ca)


def describe(cert: bytes) -> str:
    """``subject …, serial …, valid until …`` of the first certificate in ``cert``, for the log (and a
    warning when it has expired); the file name's worth of nothing when it cannot be decoded."""
    info = _decode(cert)
    if not info:
        return "(not decoded)"
    subject = ", ".join(f"{k}={v}" for rdn in info.get("subject", ()) for k, v in rdn)
    until = str(info.get("notAfter", "?"))
    try:
        if ssl.cert_time_to_seconds(until) < time.time():
            logger.warning("the TLS certificate %s expired on %s", subject, until)
    except ValueError:
        pass
    return f"subject {subject or '?'}, serial {info.get('serialNumber', '?')}, valid until {until}"


def _decode(cert: bytes) -> dict[str, Any]:
    """The first certificate's fields as ``SSLSocket.getpeercert()`` gives them. The ``ssl`` module decodes
    a certificate only from a file, through a helper of its C module; any failure gives {}."""
    try:
        decode = importlib.import_module("_ssl")._test_decode_cert
        with tempfile.TemporaryDirectory(prefix="taskward-tls-") as tmp:
            path = Path(tmp, "cert.pem")
            path.write_bytes(cert)
            info = decode(str(path))
    except Exception:  # diagnostics only: never a reason to refuse a certificate
        return {}
    return info if isinstance(info, dict) else {}
