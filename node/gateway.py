"""Composition root of ``taskward gateway``: the REST app in front of a list of nodes, and nothing else.

A gateway holds no task state: every call is forwarded over gRPC (``taskward.client.node_pool``), so any
number of gateways can front the same cluster and one can be restarted at any time.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal

from taskward.api.rest.app import REST_ALPN, RestServer, RestSettings, create_app
from taskward.config import GatewayConfig, insecure_bind_warnings
from taskward.descriptors import guard_descriptors
from taskward.security.access import build_access, start_audit_log
from taskward.security.tls import load_certificates

logger = logging.getLogger(__name__)


class GatewayApp:
    """``run()`` serves until SIGTERM/SIGINT or ``stop()``, then ends streams and closes channels."""

    def __init__(self, config: GatewayConfig) -> None:
        self.config = config
        self.certificates = load_certificates(config.tls)  # a bad file: TlsError, exit 2
        self.access = build_access(config.auth)  # audit log only with --audit-log
        self._stop = asyncio.Event()

    def stop(self) -> None:
        self._stop.set()

    def _reload_certificates(self) -> None:
        """SIGHUP: read the certificate files again; new handshakes and new channels to the nodes use them."""
        if self.certificates is None:
            logger.info("SIGHUP: no --tls-* files to reload")
            return
        self.certificates.reload()

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, self._stop.set)
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(signal.SIGHUP, self._reload_certificates)
        certs = self.certificates
        start_audit_log(self.access)
        settings = RestSettings(listen=self.config.listen, nodes=self.config.nodes, token=self.config.token,
                                credentials=certs.channel_credentials if certs else None, merged_events=True,
                                access=self.access)
        limits = guard_descriptors(loop, {"REST": self.config.rest_limits})["REST"]
        server = RestServer(create_app(settings), settings.listen, limits=limits,
                            ssl_context=certs.server_context(alpn=REST_ALPN) if certs and certs.serving else None)
        if certs is not None:
            certs.on_reload(server.pool.use_credentials)
        await server.start()
        for line in insecure_bind_warnings({"--listen": self.config.listen}, token=self.access.enabled,
                                           tls=self.config.tls.serves, insecure_bind=self.config.insecure_bind):
            logger.warning("%s", line)
        if self.access.enabled:
            logger.info("auth on: REST requires a bearer token whose role allows the call (%d tokens)",
                        len(self.access.tokens.principals))
            if self.config.token is None:
                logger.warning("no token to send to the nodes (no --token-file, no node entry with a plain-text "
                               "token in --tokens-file): the nodes must run without auth")
        elif self.config.insecure_bind:
            logger.warning("auth off and --insecure-bind given: the gateway may be reachable from other hosts")
        else:
            logger.warning("auth off: no token configured, so the gateway binds to a loopback address only")
        try:
            await self._stop.wait()
        finally:
            logger.info("gateway on %s shutting down", self.config.listen)
            await server.stop()
            if self.access.audit_log is not None:
                await self.access.audit_log.close()
