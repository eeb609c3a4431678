"""Why a node cannot be reached, when TLS is the reason: the command line's second look after gRPC's
``UNAVAILABLE``, whose words ("Socket closed") are the same for a node that is down, one that speaks TLS
to a plaintext client, and one that wants a client certificate it was not given.

One TLS handshake of our own, with the client's own files, tells these apart; anything else (a refused
connection, a timeout) is not a TLS matter and gives None, so the caller keeps gRPC's words. Bounded by
``timeout_s``; loopback or wherever the user pointed the command, nowhere else.
"""

from __future__ import annotations

import socket
import ssl

from taskward.security.tls import FilePath

_NOT_TLS = ("WRONG_VERSION_NUMBER", "UNEXPECTED_EOF", "RECORD_LAYER_FAILURE", "PACKET_LENGTH_TOO_LONG")


def explain_unreachable(address: str, *, ca: FilePath | None, cert: FilePath | None, key: FilePath | None,
                        timeout_s: float = 2.0) -> str | None:
    """A sentence saying what TLS setting keeps the client from ``address`` (``HOST:PORT``), or None."""
    host, _, port = address.rpartition(":")
    host = host.strip("[]")
    try:
        sock = socket.create_connection((host, int(port)), timeout=timeout_s)
    except (OSError, ValueError):
        return None
    with sock:
        if ca is None and cert is None:
            return _plaintext_client(sock, address)
        return _tls_client(sock, host, address, ca=ca, cert=cert, key=key, timeout_s=timeout_s)


def _plaintext_client(sock: socket.socket, address: str) -> str | None:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE  # only: does it answer TLS at all?
    try:
        with ctx.wrap_socket(sock):
            pass
    except (ssl.SSLError, OSError):
        return None
    return f"the node at {address} serves TLS: give --tls-ca FILE (and --tls-cert FILE --tls-key FILE if it " \
           "requires a client certificate)"


def _tls_client(sock: socket.socket, host: str, address: str, *, ca: FilePath | None, cert: FilePath | None,
                key: FilePath | None, timeout_s: float) -> str | None:
    ctx = ssl.create_default_context(cafile=ca) if ca is not None else ssl.create_default_context()
    ctx.set_alpn_protocols(["h2"])
    if cert is not None:
        try:
            ctx.load_cert_chain(cert, key)
        except (ssl.SSLError, OSError):
            return None  # the files were checked before the call; nothing to add here
    try:
        tls = ctx.wrap_socket(sock, server_hostname=host)
    except ssl.SSLCertVerificationError as exc:
        return f"the certificate of the node at {address} is not accepted: {exc.verify_message}"
    except ssl.SSLError as exc:
        if any(word in str(exc) for word in _NOT_TLS):
            return f"the node at {address} does not serve TLS: leave out --tls-ca, --tls-cert and --tls-key"
        return _refused(exc, address, cert)
    except OSError:
        return None
    with tls:
        # TLS 1.3 finishes the client's side of the handshake before the server has looked at the client's
        # certificate: a refusal shows as the connection ending (or an alert) before the first byte.
        tls.settimeout(timeout_s)
        try:
            first = tls.recv(1)
        except ssl.SSLError as exc:
            return _refused(exc, address, cert)
        except OSError:  # a timeout included: the server waits for a request, so it took us
            return None
        return None if first else _client_refused(address, cert)


def _client_refused(address: str, cert: FilePath | None) -> str:
    if cert is None:
        return f"the node at {address} requires a client certificate: give --tls-cert FILE --tls-key FILE"
    return f"the node at {address} does not accept the client certificate {cert}"


def _refused(exc: ssl.SSLError, address: str, cert: FilePath | None) -> str:
    text = str(exc)
    if any(w in text for w in ("CERTIFICATE_REQUIRED", "HANDSHAKE_FAILURE", "UNKNOWN_CA", "BAD_CERTIFICATE",
                               "CERTIFICATE_UNKNOWN", "EOF")):
        return _client_refused(address, cert)
    return f"TLS with the node at {address} failed: {exc.reason or text}"
