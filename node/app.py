"""Composition root of a node: builds every component, serves, and shuts down in order."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import logging.handlers
import queue
import signal
from datetime import UTC, datetime
from typing import Any, Protocol

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from node import __version__
from node.api.grpc import BearerAuthInterceptor, TaskManagerServicer, TestApiServicer
from node.config import NodeConfig
from node.manager import TaskManager
from node.model import NodeInfo
from node.pb.taskward.v1 import tasks_pb2_grpc as pb_grpc
from node.registry import Registry
from node.store import Store
from node.test_module import TestModule

logger = logging.getLogger(__name__)

MAX_MESSAGE_BYTES = 4 * 1024 * 1024
SERVICE_NAMES = ("taskward.v1.TaskManager", "taskward.v1.TestApi")


def setup_logging(level: int = logging.INFO) -> logging.handlers.QueueListener:
    """Log through a queue drained by a thread, so log I/O never blocks the event loop."""
    q: queue.SimpleQueue[logging.LogRecord] = queue.SimpleQueue()
    stream = logging.StreamHandler()
    stream.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    listener = logging.handlers.QueueListener(q, stream, respect_handler_level=True)
    root = logging.getLogger()
    root.handlers[:] = [logging.handlers.QueueHandler(q)]
    root.setLevel(level)
    listener.start()
    return listener


def build_registry(config: NodeConfig) -> Registry:
    registry = Registry()
    registry.load_entry_points()
    for module in config.task_modules:
        n = registry.load_module(module)
        logger.info("loaded %d task type(s) from %s", n, module)
    return registry


class Surface(Protocol):
    """A client-facing server besides gRPC (REST, RESP3) that the node starts and stops."""

    async def stop(self) -> None: ...


class NodeApp:
    """One node process. ``run()`` serves until ``stop()`` (or SIGTERM/SIGINT)."""

    def __init__(self, config: NodeConfig) -> None:
        self.config = config
        self.store = Store(config.db_path, synchronous=config.sqlite_synchronous)
        self.manager = TaskManager(config.manager, self.store, build_registry(config))
        self.test_module = TestModule(self.manager)
        self._stop = asyncio.Event()
        self._started_at = datetime.now(UTC)
        self._server: grpc.aio.Server | None = None
        self._surfaces: list[Surface] = []
        self._health = health.aio.HealthServicer()

    def addresses(self) -> dict[str, str]:
        return {self.config.node_id: self.config.advertise_address}

    def nodes(self) -> list[NodeInfo]:
        """Running alone, the node is the whole cluster and its own leader."""
        return [NodeInfo(id=self.config.node_id, address=self.config.advertise_address, alive=True,
                         leader=True, version=__version__, started_at=self._started_at)]

    async def _start_grpc(self) -> None:
        interceptors: list[Any] = []
        if self.config.token:
            interceptors.append(BearerAuthInterceptor(self.config.token))
        server = grpc.aio.server(
            interceptors=interceptors,
            options=[
                ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
                ("grpc.max_send_message_length", 64 * 1024 * 1024),
                ("grpc.so_reuseport", 0),
            ],
        )
        pb_grpc.add_TaskManagerServicer_to_server(TaskManagerServicer(self.manager, self.addresses, self.nodes), server)
        if self.config.manager.enable_test_api:
            pb_grpc.add_TestApiServicer_to_server(TestApiServicer(self.test_module), server)
        health_pb2_grpc.add_HealthServicer_to_server(self._health, server)
        reflection.enable_server_reflection([*SERVICE_NAMES, health.SERVICE_NAME, reflection.SERVICE_NAME], server)
        server.add_insecure_port(self.config.listen)
        await server.start()
        self._server = server
        await self._set_health(health_pb2.HealthCheckResponse.SERVING)
        logger.info(
            "node %s serving gRPC on %s (auth %s, test API %s)", self.config.node_id, self.config.listen,
            "on" if self.config.token else "off", "on" if self.config.manager.enable_test_api else "off",
        )

    async def _set_health(self, status: int) -> None:
        for name in ("", *SERVICE_NAMES):
            await self._health.set(name, status)

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, self._stop.set)
        self.config.data_dir.mkdir(parents=True, exist_ok=True)
        await self.manager.start()
        try:
            await self._start_grpc()
            await self._start_surfaces()
            self._log_auth()
            await self._stop.wait()
        finally:
            await self.shutdown()

    async def _start_surfaces(self) -> None:
        if self.config.rest:
            from node.api.rest import start_rest_server

            self._surfaces.append(await start_rest_server(self.config))
        if self.config.admin:
            from node.api.resp import start_resp_server

            self._surfaces.append(await start_resp_server(self.config, self.manager))

    def _log_auth(self) -> None:
        if self.config.token:
            logger.info("auth on: every surface requires the bearer token")
        elif self.config.insecure_bind:
            logger.warning("auth off and --insecure-bind given: surfaces may be reachable from other hosts")
        else:
            logger.warning("auth off: no token configured, so surfaces bind to loopback addresses only")

    def stop(self) -> None:
        self._stop.set()

    async def shutdown(self) -> None:
        """(1) stop accepting with a grace period, (2) drain the executor, (3) close SQLite."""
        logger.info("node %s shutting down", self.config.node_id)
        for surface in reversed(self._surfaces):
            await surface.stop()
        self._surfaces.clear()
        if self._server is not None:
            await self._set_health(health_pb2.HealthCheckResponse.NOT_SERVING)
            await self._server.stop(grace=2.0)
            self._server = None
        await self.manager.stop()
        logger.info("node %s stopped", self.config.node_id)
