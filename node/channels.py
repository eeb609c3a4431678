"""gRPC channels to a node, made in one place for every client of one: the leader's calls and event
streams, a follower's forwarded writes, the client library (``taskward.Client``) and through it the REST
gateway and the CLI, and the demo.

One set of options, so a node killed and restarted is reached again within half a second (gRPC's
default reconnect backoff grows to 120 s), a silently dead peer is noticed by keepalive, and a large
recursive status fits; and one spelling of the bearer token in call metadata.

``grpc.min_reconnect_backoff_ms`` is gRPC's *minimum connect timeout*: how long one connection attempt
may take until the server's HTTP/2 SETTINGS arrive (its name says backoff; the backoff is the initial and
maximum values). It was 100 ms, and a node or client busy for a moment (a loaded 2-core machine, a TLS
handshake) then failed a healthy connection as UNAVAILABLE ("connection attempt timed out before
receiving SETTINGS frame"). One second gives a busy process ten times that, and is still no longer than
the deadlines of the calls that must tell a stopped peer from a slow one (1 to 2 s).
"""

from __future__ import annotations

import grpc

MAX_MESSAGE_BYTES = 64 * 1024 * 1024
CHANNEL_OPTIONS: tuple[tuple[str, int], ...] = (
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
    ("grpc.keepalive_time_ms", 5000),
    ("grpc.keepalive_timeout_ms", 2000),
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 1000),  # the minimum connect timeout (see above)
    ("grpc.max_reconnect_backoff_ms", 500),
)

Metadata = tuple[tuple[str, str], ...]


def bearer(token: str | None) -> Metadata:
    """Call metadata carrying ``token`` (none without one)."""
    return (("authorization", f"Bearer {token}"),) if token else ()


def aio_channel(address: str, credentials: grpc.ChannelCredentials | None = None, *,
                server_name: str = "") -> grpc.aio.Channel:
    """A ``grpc.aio`` channel to a node's gRPC address, for code on the event loop; TLS with
    ``credentials`` (``grpc.ssl_channel_credentials``, built by ``taskward.security.tls``), plaintext
    without. The server's certificate must name the host of ``address``, or ``server_name`` when given
    (a node calling itself on a loopback address checks the name its peers use)."""
    if credentials is not None:
        options = (*CHANNEL_OPTIONS, ("grpc.ssl_target_name_override", server_name)) if server_name else CHANNEL_OPTIONS
        return grpc.aio.secure_channel(address, credentials, options=options)
    return grpc.aio.insecure_channel(address, options=CHANNEL_OPTIONS)


def sync_channel(address: str, credentials: grpc.ChannelCredentials | None = None) -> grpc.Channel:
    """A blocking channel, for command-line tools and health checks; TLS with ``credentials``."""
    if credentials is not None:
        return grpc.secure_channel(address, credentials, options=CHANNEL_OPTIONS)
    return grpc.insecure_channel(address, options=CHANNEL_OPTIONS)
