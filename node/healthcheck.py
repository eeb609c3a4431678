"""``python -m taskward.healthcheck``: exit 0 when a taskward process serves, 1 when not (container
health checks).

- ``grpc HOST:PORT`` (default ``TASKWARD_LISTEN`` or 127.0.0.1:7100): the node's gRPC health service
  answers SERVING (a node reports SERVING only once it can take work; no token needed);
- ``http URL``: the URL (a gateway's ``/health``) answers 200.
"""

from __future__ import annotations

import os
import sys
import urllib.error
import urllib.request
from collections.abc import Sequence

from taskward.processes import grpc_serving


def main(argv: Sequence[str]) -> int:
    kind = argv[0] if argv else "grpc"
    if kind == "grpc":
        address = argv[1] if len(argv) > 1 else os.environ.get("TASKWARD_LISTEN", "127.0.0.1:7100")
        return 0 if grpc_serving(address) else 1
    if kind == "http" and len(argv) == 2:
        try:
            with urllib.request.urlopen(argv[1], timeout=2) as resp:
                return 0 if resp.status == 200 else 1
        except (urllib.error.URLError, OSError):
            return 1
    print("usage: python -m taskward.healthcheck [grpc [HOST:PORT] | http URL]", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
