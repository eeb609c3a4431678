"""Composition root of ``taskward gateway``: the REST app in front of a list of nodes, and nothing else.

A gateway holds no task state: every call is forwarded over gRPC (``taskward.client.node_pool``), so any
number of gateways can front the same cluster and one can be restarted at any time.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal

from taskward.api.rest.app import RestServer, RestSettings, create_app
from taskward.config import GatewayConfig

logger = logging.getLogger(__name__)


class GatewayApp:
    """``run()`` serves until SIGTERM/SIGINT or ``stop()``, then ends streams and closes channels."""

    def __init__(self, config: GatewayConfig) -> None:
        self.config = config
        self._stop = asyncio.Event()

    def stop(self) -> None:
        self._stop.set()

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, self._stop.set)
        settings = RestSettings(listen=self.config.listen, nodes=self.config.nodes, token=self.config.token)
        server = await RestServer(create_app(settings), settings.listen).start()
        if self.config.token:
            logger.info("auth on: REST requires the bearer token, which is also sent to the nodes")
        elif self.config.insecure_bind:
            logger.warning("auth off and --insecure-bind given: the gateway may be reachable from other hosts")
        else:
            logger.warning("auth off: no token configured, so the gateway binds to a loopback address only")
        try:
            await self._stop.wait()
        finally:
            logger.info("gateway on %s shutting down", self.config.listen)
            await server.stop()
