"""Composition root of a node: builds every component, serves, and shuts down in order."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import fcntl
import json
import logging
import os
import signal
import uuid
from pathlib import Path
from typing import IO, Any, Protocol

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from taskward import __version__
from taskward.api.grpc.auth import AuthGuard
from taskward.api.grpc.cron import CronServicer
from taskward.api.grpc.limits import StreamLimit
from taskward.api.grpc.method_wrappers import WrappingServer
from taskward.api.grpc.servicers import TaskManagerServicer, TestApiServicer
from taskward.api.prometheus import node_registry
from taskward.config import ListenError, NodeConfig, insecure_bind_warnings
from taskward.coordinator.catalog import CheckedArgs
from taskward.coordinator.cluster import Coordinator
from taskward.coordinator.cron.scheduler import Fired
from taskward.coordinator.store.base import ClusterStore
from taskward.coordinator.store.embedded import EmbeddedStore
from taskward.coordinator.store.etcd import EtcdStore
from taskward.descriptors import guard_descriptors
from taskward.errors import DataDirError
from taskward.manager import TaskManager
from taskward.metrics import NodeMetrics
from taskward.pb.taskward.v1 import cron_pb2_grpc as cron_grpc
from taskward.pb.taskward.v1 import tasks_pb2_grpc as pb_grpc
from taskward.registry import Registry, import_task_module
from taskward.scylla_test_api import ScyllaTestApi
from taskward.security.access import build_access, start_audit_log
from taskward.security.tls import load_certificates
from taskward.store import Store

logger = logging.getLogger(__name__)

MAX_MESSAGE_BYTES = 4 * 1024 * 1024
SERVICE_NAMES = ("taskward.v1.TaskManager", "taskward.v1.TestApi", "taskward.v1.Cron")
TEST_SERVICE = "taskward.v1.TestApi"  # listed by reflection only when it is served


def build_registry(config: NodeConfig) -> Registry:
    registry = Registry()
    registry.load_entry_points()
    for spec in config.task_modules:
        n = registry.load_module(import_task_module(spec), source=spec)  # a worker process loads it alike
        if n:
            logger.info("loaded %d task type(s) from %s", n, spec)
        else:
            logger.warning("--tasks %s defines no task type (mark functions with @taskward.task_type)", spec)
    return registry


def private_dir(path: Path) -> None:
    """The data dir, readable by its owner only (0700) whatever the umask: it holds every task's arguments
    and results, and the instance token that reclaims the node's id."""
    path.mkdir(parents=True, exist_ok=True)
    path.chmod(0o700)


def lock_data_dir(data_dir: Path) -> IO[str]:
    """Hold an exclusive lock on the data dir for the life of this process (the open file is the lock;
    the kernel drops it when the process dies, however it dies). Two nodes on one data dir would both run
    its tasks and both claim its member id: the second one exits 2 instead, naming the first."""
    path = data_dir / "taskward.lock"
    f = path.open("a+")
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        f.seek(0)
        holder = f.read().strip() or "unknown"
        f.close()
        raise DataDirError(f"data dir {data_dir} is in use by another taskward node (pid {holder}; lock {path}): "
                           "one data dir serves one node") from None
    f.seek(0)
    f.truncate()
    f.write(str(os.getpid()))
    f.flush()
    return f


def instance_token(data_dir: Path) -> str:
    """A random token kept in the data dir: a restart from it reclaims the node id at once."""
    path = data_dir / "instance"
    if not path.exists():
        private_dir(data_dir)
        path.write_text(uuid.uuid4().hex)
        path.chmod(0o600)
    return path.read_text().strip()


def build_coordinator(config: NodeConfig, manager: TaskManager,
                      credentials: grpc.ChannelCredentials | None = None) -> Coordinator:
    """etcd when ``--etcd`` is given, else the embedded single-node store in the data dir."""
    cc = config.cluster
    store: ClusterStore
    if cc.etcd.endpoints:
        store = EtcdStore(cc.etcd, prefix=cc.prefix, metrics=manager.metrics)
    else:
        store = EmbeddedStore(config.data_dir / "cluster.sqlite3")

    coordinator = Coordinator(cc, store, node_id=config.node_id, address=config.advertise_address,
                              version=__version__, instance=instance_token(config.data_dir), token=config.token,
                              catalog=RegistryCatalog(manager.registry), credentials=credentials)

    def cron_fired(f: Fired) -> None:
        manager.metrics.cron_fired_slot(f.schedule_id, None if f.run_now else f.delay_s)
        manager.publish_cron_fired(schedule_id=f.schedule_id, slot=f.slot, task_id=f.task_id, module=f.module,
                                   task_type=f.task_type, node=f.node, run_now=f.run_now)

    coordinator.on_cron_fired = cron_fired
    manager.metrics.is_leader = lambda: coordinator.is_leader
    return coordinator


class RegistryCatalog:
    """The coordinator's ``TaskCatalog``, answered by this node's registry."""

    def __init__(self, registry: Registry) -> None:
        self._registry = registry

    def check(self, module: str, type_name: str, args_json: str) -> CheckedArgs:
        spec = self._registry.get(module, type_name)
        canon = json.dumps(spec.parse_args(args_json), sort_keys=True, separators=(",", ":"))
        return CheckedArgs(canon, spec.abortable, spec.progress_units)

    def modules_with(self, type_name: str) -> list[str]:
        return sorted(t.module for t in self._registry.all() if t.name == type_name)


class Surface(Protocol):
    """A client-facing server besides gRPC (REST, RESP3) that the node starts and stops."""

    async def stop(self) -> None: ...


class NodeApp:
    """One node process. ``run()`` serves until ``stop()`` (or SIGTERM/SIGINT)."""

    def __init__(self, config: NodeConfig) -> None:
        self.config = config
        self.certificates = load_certificates(config.tls)  # a bad file: TlsError, exit 2, nothing created
        self.metrics = NodeMetrics()
        self.metrics_registry = node_registry(self.metrics, node_id=config.node_id, version=__version__)
        self.store = Store(config.db_path, synchronous=config.sqlite_synchronous, metrics=self.metrics)
        self.manager = TaskManager(config.manager, self.store, build_registry(config), metrics=self.metrics)
        self.test_api = ScyllaTestApi(self.manager)
        self.coordinator = build_coordinator(
            config, self.manager, self.certificates.channel_credentials if self.certificates else None)
        if self.certificates is not None:
            self.certificates.on_reload(self.coordinator.use_credentials)
        self.coordinator.on_fatal = self._fatal
        self.access = build_access(config.auth)
        self.fatal_error: BaseException | None = None
        self._stop = asyncio.Event()
        self._server: grpc.aio.Server | None = None
        self._tasks_servicer: TaskManagerServicer | None = None
        self._surfaces: list[Surface] = []
        self._coordinator_started = False
        self._lock: IO[str] | None = None
        self._health = health.aio.HealthServicer()  # type: ignore[attr-defined]  # grpc-stubs lacks health.aio


    async def _start_grpc(self) -> None:
        limits = self.config.grpc_limits
        server = grpc.aio.server(
            options=[
                ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
                ("grpc.max_send_message_length", 64 * 1024 * 1024),
                ("grpc.so_reuseport", 0),
                *limits.server_options(),
            ],
            maximum_concurrent_rpcs=limits.max_rpcs,
        )
        # The cap on long-lived calls first: bounds apply before auth.
        wrapped = WrappingServer(server, [StreamLimit(limits.max_streams), AuthGuard(self.access)])
        self._tasks_servicer = TaskManagerServicer(self.manager, self.coordinator)
        pb_grpc.add_TaskManagerServicer_to_server(self._tasks_servicer, wrapped)
        cron_grpc.add_CronServicer_to_server(CronServicer(self.coordinator), wrapped)
        if self.config.manager.enable_test_api:
            pb_grpc.add_TestApiServicer_to_server(TestApiServicer(self.test_api), wrapped)
        health_pb2_grpc.add_HealthServicer_to_server(self._health, WrappingServer(server, ()))  # not wrapped
        served = [n for n in SERVICE_NAMES if n != TEST_SERVICE or self.config.manager.enable_test_api]
        reflection.enable_server_reflection([*served, health.SERVICE_NAME, reflection.SERVICE_NAME], server)
        try:
            if self.certificates is not None and self.certificates.serving:
                server.add_secure_port(self.config.listen, self.certificates.grpc_server_credentials())
            else:
                server.add_insecure_port(self.config.listen)
        except RuntimeError:  # taken since the check at start-up
            raise ListenError(f"cannot listen on {self.config.listen}: address already in use") from None
        await server.start()
        self._server = server
        await self._set_health(health_pb2.HealthCheckResponse.NOT_SERVING)  # until registered
        logger.info(
            "node %s serving gRPC on %s (auth %s, TLS %s, test API %s)", self.config.node_id, self.config.listen,
            "on" if self.access.enabled else "off", self._tls_mode(),
            "on" if self.config.manager.enable_test_api else "off",
        )

    def _tls_mode(self) -> str:
        if self.certificates is None or not self.certificates.serving:
            return "off"
        return "on, client certificates required" if self.certificates.requires_client_certificates else "on"

    def _reload_certificates(self) -> None:
        """SIGHUP: read the certificate files again; new handshakes use them, open connections stay."""
        if self.certificates is None:
            logger.info("SIGHUP: no --tls-* files to reload")
            return
        self.certificates.reload()

    async def _set_health(self, status: int) -> None:
        for name in ("", *SERVICE_NAMES):
            await self._health.set(name, status)

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, self._stop.set)
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(signal.SIGHUP, self._reload_certificates)
        self._fit_limits(loop)
        private_dir(self.config.data_dir)
        self._lock = lock_data_dir(self.config.data_dir)
        logger.info("node %s: data in %s", self.config.node_id, self.config.data_dir.resolve())
        start_audit_log(self.access)
        await self.manager.start()
        try:
            await self._start_grpc()
            await self.coordinator.start()
            self._coordinator_started = True
            await self._start_surfaces()
            await self._set_health(health_pb2.HealthCheckResponse.SERVING)
            self._log_auth()
            await self._stop.wait()
        finally:
            await self.shutdown()
        if self.fatal_error is not None:
            raise self.fatal_error

    def _fit_limits(self, loop: asyncio.AbstractEventLoop) -> None:
        """Raise the open-file limit and fit the connection caps of the surfaces served below it."""
        c = self.config
        caps: dict[str, Any] = {"gRPC": c.grpc_limits}
        if c.rest:
            caps["REST"] = c.rest_limits
        if c.admin:
            caps["RESP"] = c.resp_limits
        fitted = guard_descriptors(loop, caps)
        self.config = dataclasses.replace(c, grpc_limits=fitted["gRPC"], rest_limits=fitted.get("REST", c.rest_limits),
                                          resp_limits=fitted.get("RESP", c.resp_limits))

    async def _start_surfaces(self) -> None:
        if self.config.rest:
            from taskward.api.rest.app import start_rest_server

            self._surfaces.append(await start_rest_server(self.config, self.certificates, access=self.access,
                                                          node_metrics=self.metrics_registry))
        if self.config.admin:
            from taskward.api.resp.server import start_resp_server

            certs = self.certificates
            ssl_context = certs.server_context() if certs is not None and certs.serving else None
            self._surfaces.append(await start_resp_server(self.config, self.manager, ssl_context=ssl_context,
                                                          access=self.access))
        if self.config.metrics:
            from taskward.api.metrics_server import MetricsServer

            certs = self.certificates
            ssl_context = certs.server_context() if certs is not None and certs.serving else None
            self._surfaces.append(await MetricsServer(self.config.metrics, self.metrics_registry, access=self.access,
                                                      ssl_context=ssl_context).start())

    def _log_auth(self) -> None:
        for line in insecure_bind_warnings(self.config.listeners, token=self.access.enabled,
                                           tls=self.config.tls.serves, insecure_bind=self.config.insecure_bind):
            logger.warning("%s", line)
        if self.access.enabled:
            logger.info("auth on: every surface requires a bearer token (%d tokens; roles: %s)",
                        len(self.access.tokens.principals),
                        ", ".join(f"{p.name}={p.role.label}" for p in self.access.tokens.principals))
        elif self.config.insecure_bind:
            logger.warning("auth off and --insecure-bind given: surfaces may be reachable from other hosts")
        else:
            logger.warning("auth off: no token configured, so surfaces bind to loopback addresses only")

    def stop(self) -> None:
        self._stop.set()

    def _fatal(self, exc: BaseException) -> None:
        """A background component cannot go on: stop the node loudly (non-zero exit)."""
        self.fatal_error = exc
        self._stop.set()

    async def shutdown(self) -> None:
        """(1) stop accepting on every surface, (2) stop leading, (3) drain the executor and close SQLite
        after a WAL checkpoint, (4) revoke the membership lease last, so peers see us alive meanwhile."""
        logger.info("node %s shutting down", self.config.node_id)
        for surface in reversed(self._surfaces):
            await surface.stop()
        self._surfaces.clear()
        if self._server is not None:
            await self._set_health(health_pb2.HealthCheckResponse.NOT_SERVING)
            # Event streams never end on their own (the cluster leader keeps one to every node): end
            # them now, or they would hold the graceful stop for its whole grace period.
            self.manager.events.close()
            if self._tasks_servicer is not None:
                self._tasks_servicer.close_streams()  # WatchNodes streams, for the same reason
            await self._server.stop(grace=2.0)
            self._server = None
        if self._coordinator_started:
            await self.coordinator.stop_leading()
        await self.manager.stop()
        if self._coordinator_started:
            await self.coordinator.stop()
            self._coordinator_started = False
        if self.access.audit_log is not None:
            await self.access.audit_log.close()  # last: every surface has stopped, so every line is queued
        logger.info("node %s stopped", self.config.node_id)
