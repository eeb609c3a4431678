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
import sys
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence

from taskward.processes import grpc_serving
from taskward.security.tls import TlsError, TlsMaterial, channel_credentials, client_context, load_files

TLS_VARIABLES: Mapping[str, str] = {"ca": "TASKWARD_TLS_CA", "cert": "TASKWARD_TLS_CERT", "key": "TASKWARD_TLS_KEY"}


def tls_material(env: Mapping[str, str]) -> TlsMaterial | None:
    """The node's TLS files as its environment names them, each read once; None: plaintext. ``TlsError``
    names a bad file."""
    files = {k: env.get(variable) or None for k, variable in TLS_VARIABLES.items()}
    if not any(files.values()):
        return None
    return load_files(ca=files["ca"], cert=files["cert"], key=files["key"], names=TLS_VARIABLES)


def main(argv: Sequence[str], env: Mapping[str, str] = os.environ) -> int:
    kind = argv[0] if argv else "grpc"
    try:
        if kind == "grpc" and len(argv) <= 2:
            address = argv[1] if len(argv) > 1 else env.get("TASKWARD_LISTEN", "127.0.0.1:7100")
            m = tls_material(env)
            return 0 if grpc_serving(address, channel_credentials(m) if m is not None else None) else 1
        if kind == "http" and len(argv) == 2:
            m = tls_material(env) if argv[1].startswith("https:") else None
            try:
                with urllib.request.urlopen(argv[1], timeout=2,
                                            context=client_context(m) if m is not None else None) as resp:
                    return 0 if resp.status == 200 else 1
            except (urllib.error.URLError, OSError):
                return 1
    except TlsError as exc:
        print(f"healthcheck: {exc.message}", file=sys.stderr)
        return 1
    except ValueError as exc:  # urllib: not a URL it can open
        print(f"healthcheck: {exc}", file=sys.stderr)
        return 2
    print("usage: python -m taskward.healthcheck [grpc [HOST:PORT] | http URL]", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
