"""``python -m taskward.healthcheck``: exit 0 when a taskward process serves, 1 when not (container
health checks).

- ``grpc HOST:PORT`` (default ``TASKWARD_LISTEN`` or 127.0.0.1:7100): the node's gRPC health service
  answers SERVING (a node reports SERVING only once it can take work; no token needed);
- ``http URL``: the URL (a gateway's ``/health``) answers 200.

A node configured for TLS through its environment (``TASKWARD_TLS_CERT``/``TASKWARD_TLS_KEY``, and
``TASKWARD_TLS_CA``, as a container's node is) is asked over TLS the way the node calls its peers: its
``--tls-ca`` verifies it (the system's roots without one), and its own certificate is presented, which
a node that requires client certificates (``--tls-client-ca``) accepts. The check runs in the node's
own container, so it sees the same variables; ``https`` URLs are verified with ``TASKWARD_TLS_CA`` too.
"""

from __future__ import annotations

import os
import ssl
import sys
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence

import grpc

from taskward.processes import grpc_serving
from taskward.security.tls import TlsError, client_credentials, load_files

TLS_VARIABLES: Mapping[str, str] = {"ca": "TASKWARD_TLS_CA", "cert": "TASKWARD_TLS_CERT", "key": "TASKWARD_TLS_KEY"}


def grpc_credentials(env: Mapping[str, str]) -> grpc.ChannelCredentials | None:
    """TLS as the node's environment configures it, or None (plaintext). ``TlsError`` names a bad file."""
    ca, cert, key = (env.get(TLS_VARIABLES[k]) or None for k in ("ca", "cert", "key"))
    return client_credentials(ca, cert, key, names=TLS_VARIABLES)


def https_context(env: Mapping[str, str]) -> ssl.SSLContext | None:
    """For an ``https`` URL: verified with ``TASKWARD_TLS_CA`` (else the system's roots), presenting
    ``TASKWARD_TLS_CERT`` when it is set."""
    ca, cert, key = (env.get(TLS_VARIABLES[k]) or None for k in ("ca", "cert", "key"))
    if ca is None and cert is None:
        return None
    load_files(cert=cert, key=key, ca=ca, names=TLS_VARIABLES)  # a bad file is named, as for gRPC
    ctx = ssl.create_default_context(cafile=ca)
    if cert is not None and key is not None:
        ctx.load_cert_chain(cert, key)
    return ctx


def main(argv: Sequence[str], env: Mapping[str, str] = os.environ) -> int:
    kind = argv[0] if argv else "grpc"
    try:
        if kind == "grpc" and len(argv) <= 2:
            address = argv[1] if len(argv) > 1 else env.get("TASKWARD_LISTEN", "127.0.0.1:7100")
            return 0 if grpc_serving(address, grpc_credentials(env)) else 1
        if kind == "http" and len(argv) == 2:
            context = https_context(env) if argv[1].startswith("https:") else None
            try:
                with urllib.request.urlopen(argv[1], timeout=2, context=context) as resp:
                    return 0 if resp.status == 200 else 1
            except (urllib.error.URLError, OSError):
                return 1
    except TlsError as exc:
        print(f"healthcheck: {exc.message}", file=sys.stderr)
        return 1
    print("usage: python -m taskward.healthcheck [grpc [HOST:PORT] | http URL]", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
