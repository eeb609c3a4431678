"""The options every channel to a node is made with (``taskward.channels``)."""

from __future__ import annotations

import asyncio
import contextlib

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from taskward.channels import aio_channel

SLOW_START_S = 0.3


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, delay_s: float) -> None:
    first = True
    with contextlib.suppress(ConnectionError):
        while data := await reader.read(65536):
            if first:
                await asyncio.sleep(delay_s)  # the server's first bytes (its SETTINGS) arrive late
                first = False
            writer.write(data)
            await writer.drain()
    writer.close()


async def test_a_server_slow_to_send_its_settings_is_still_reached() -> None:
    """A node busy for a moment (a loaded machine, a TLS handshake) answers its HTTP/2 SETTINGS late: the
    connection must wait for them, not fail the call as UNAVAILABLE ("connection attempt timed out
    before receiving SETTINGS frame"), as it did when the minimum connect timeout was 100 ms."""
    server = grpc.aio.server()
    health_pb2_grpc.add_HealthServicer_to_server(health.aio.HealthServicer(), server)  # type: ignore[attr-defined]
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()

    async def relay(client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        server_r, server_w = await asyncio.open_connection("127.0.0.1", port)
        await asyncio.gather(_pipe(client_r, server_w, 0.0), _pipe(server_r, client_w, SLOW_START_S))

    proxy = await asyncio.start_server(relay, "127.0.0.1", 0)
    channel = aio_channel(f"127.0.0.1:{proxy.sockets[0].getsockname()[1]}")
    try:
        answer = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
        assert answer.status == health_pb2.HealthCheckResponse.SERVING
    finally:
        await channel.close()
        proxy.close()
        await server.stop(None)
