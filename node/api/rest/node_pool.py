"""gRPC client pool that the REST surface (node ``--rest`` and ``taskward gateway``) talks through.

REST is a thin adapter: it never touches a TaskManager, it calls nodes over ``grpc.aio``. This pool
holds one channel per listed node and implements the routing rules (architecture: Routing):

- calls that name no task go to the *first reachable* listed node (a node answering ``UNAVAILABLE``
  is skipped, so a dead first node fails over to the next);
- calls that name a task go to the node that *owns* it, found by asking every node in parallel with a
  bounded timeout and cached (id → address) afterwards.

The ownership probe is ``WaitTask(timeout=0)``: unlike ``GetTaskStatus`` it never unregisters a
finished task, and it answers OK (finished) or DEADLINE_EXCEEDED (still running) on the owner and
NOT_FOUND elsewhere.
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from collections.abc import AsyncIterator, Sequence
from typing import Any, Literal

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from taskward.channels import Metadata, aio_channel, bearer
from taskward.errors import NoNodeReachable
from taskward.pb.taskward.v1 import cron_pb2_grpc as cron_grpc
from taskward.pb.taskward.v1 import tasks_pb2 as pb
from taskward.pb.taskward.v1 import tasks_pb2_grpc as pb_grpc

logger = logging.getLogger(__name__)

Service = Literal["tasks", "test", "cron"]
FAILOVER_CODES = frozenset({grpc.StatusCode.UNAVAILABLE})
FOUND_CODES = frozenset({grpc.StatusCode.OK, grpc.StatusCode.DEADLINE_EXCEEDED})


class NodeStubs:
    """The stubs of one node, with the bearer token already in the call metadata."""

    __slots__ = ("address", "channel", "cron", "health", "metadata", "test", "tm")

    def __init__(self, address: str, token: str | None) -> None:
        self.address = address
        self.channel = aio_channel(address)
        self.tm = pb_grpc.TaskManagerStub(self.channel)
        self.test = pb_grpc.TestApiStub(self.channel)
        self.cron = cron_grpc.CronStub(self.channel)
        self.health = health_pb2_grpc.HealthStub(self.channel)
        self.metadata: Metadata = bearer(token)


class NodePool:
    """Channels to the listed nodes, failover in list order, and the task-owner cache.

    ``call``/``call_for_task`` take a stub method name (``"GetTaskStatus"``) and a request, and raise
    ``grpc.aio.AioRpcError`` for the node's own answers or ``NoNodeReachable`` when no node could
    answer. ``call_timeout`` (seconds) bounds every unary call except ``WaitTask``, which gets the caller's.
    """

    def __init__(self, addresses: Sequence[str], token: str | None = None, *, locate_timeout: float = 2.0,
                 call_timeout: float = 30.0, cache_size: int = 100_000) -> None:
        if not addresses:
            raise ValueError("a node pool needs at least one address")
        self.nodes = [NodeStubs(a, token) for a in addresses]
        self.locate_timeout = locate_timeout
        self.call_timeout = call_timeout
        self._owners: OrderedDict[str, NodeStubs] = OrderedDict()
        self._cache_size = cache_size

    @property
    def addresses(self) -> list[str]:
        return [n.address for n in self.nodes]

    async def close(self) -> None:
        for n in self.nodes:
            await n.channel.close(grace=None)

    # ---------------------------------------------------------------- calls

    @staticmethod
    async def invoke(node: NodeStubs, method: str, request: Any, service: Service, deadline: float | None) -> Any:
        stub = node.test if service == "test" else node.cron if service == "cron" else node.tm
        return await getattr(stub, method)(request, timeout=deadline, metadata=node.metadata)

    async def _first(self, method: str, request: Any, service: Service,
                     deadline: float | None) -> tuple[NodeStubs, Any]:
        last: grpc.aio.AioRpcError | None = None
        for node in self.nodes:
            try:
                return node, await self.invoke(node, method, request, service, deadline)
            except grpc.aio.AioRpcError as exc:
                if exc.code() not in FAILOVER_CODES:
                    raise
                last = exc
                logger.debug("node %s unavailable for %s: %s", node.address, method, exc.details())
        raise NoNodeReachable(f"no node reachable: {', '.join(self.addresses)} ({_details(last)})")

    async def call(self, method: str, request: Any, *, service: Service = "tasks",
                   deadline: float | None = -1.0) -> Any:
        """The first listed node that is reachable answers (listings, modules, ttl, the test API)."""
        return (await self._first(method, request, service, self.call_timeout if deadline == -1.0 else deadline))[1]

    async def first(self, method: str, request: Any, *, service: Service = "tasks") -> tuple[NodeStubs, Any]:
        """Like ``call``, and which node answered (for follow-up calls that must go to the same node)."""
        return await self._first(method, request, service, self.call_timeout)

    async def start(self, method: str, request: Any, *, service: Service = "tasks") -> Any:
        """Like ``call`` for a call answering a new ``task_id``, whose owner is then known without a probe."""
        node, resp = await self._first(method, request, service, self.call_timeout)
        if len(self.nodes) > 1:
            self._remember(resp.task_id, node)
        return resp

    async def call_for_task(self, task_id: str, method: str, request: Any, *, service: Service = "tasks",
                            deadline: float | None = -1.0) -> Any:
        """The node that owns ``task_id`` answers; a NOT_FOUND there drops the cached owner."""
        deadline = self.call_timeout if deadline == -1.0 else deadline
        if len(self.nodes) == 1:  # a node's own REST surface: nothing to route
            return await self.invoke(self.nodes[0], method, request, service, deadline)
        for attempt in range(2):
            node = self._owners.get(task_id)
            if node is None:
                node = await self.locate(task_id)
            try:
                return await self.invoke(node, method, request, service, deadline)
            except grpc.aio.AioRpcError as exc:
                if exc.code() == grpc.StatusCode.NOT_FOUND:
                    self._owners.pop(task_id, None)
                elif exc.code() in FAILOVER_CODES and attempt == 0:
                    # Its owner went away: a cluster task is known to every node, so look again.
                    self._owners.pop(task_id, None)
                    continue
                raise
        raise AssertionError("unreachable")

    async def locate(self, task_id: str) -> NodeStubs:
        """Ask every node in parallel whether it knows ``task_id``; the first that does owns it.

        Raises the NOT_FOUND of a node when every node answered and none knows the id, and
        ``NoNodeReachable`` when some nodes could not be asked (the task may be on one of them).
        """
        probe = pb.WaitTaskRequest(task_id=task_id, timeout=0)

        async def ask(node: NodeStubs) -> NodeStubs:
            await node.tm.WaitTask(probe, timeout=self.locate_timeout, metadata=node.metadata)
            return node

        pending = {asyncio.create_task(ask(n), name=f"locate-{n.address}"): n for n in self.nodes}
        not_found: grpc.aio.AioRpcError | None = None
        unreachable: list[str] = []
        try:
            while pending:
                done, _ = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                for fut in done:
                    node = pending.pop(fut)
                    exc = fut.exception()
                    if exc is None or (isinstance(exc, grpc.aio.AioRpcError) and exc.code() in FOUND_CODES):
                        self._remember(task_id, node)
                        return node
                    if isinstance(exc, grpc.aio.AioRpcError) and exc.code() == grpc.StatusCode.NOT_FOUND:
                        not_found = exc
                    elif isinstance(exc, grpc.aio.AioRpcError) and exc.code() in (
                            grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.UNAUTHENTICATED):
                        raise exc
                    else:
                        unreachable.append(node.address)
        finally:
            for fut in pending:
                fut.cancel()
        if unreachable or not_found is None:
            raise NoNodeReachable(
                f"task with id {task_id} not found on the reachable nodes; unreachable: {', '.join(unreachable)}"
            )
        raise not_found

    def _remember(self, task_id: str, node: NodeStubs) -> None:
        self._owners[task_id] = node
        self._owners.move_to_end(task_id)
        while len(self._owners) > self._cache_size:
            self._owners.popitem(last=False)

    def same_owner(self, task_id: str, other_id: str) -> None:
        """``task_id`` lives where ``other_id`` does (a child created beside its parent)."""
        node = self._owners.get(other_id)
        if node is not None:
            self._remember(task_id, node)

    def owner_of(self, task_id: str) -> str | None:
        """The cached owner's address (for tests and logs)."""
        node = self._owners.get(task_id)
        return node.address if node else None

    # ---------------------------------------------------------------- streams and fan-out

    async def watch_events(self, after: int) -> AsyncIterator[pb.Event]:
        """The event stream of the first reachable node, from sequence ``after`` on."""
        last: grpc.aio.AioRpcError | None = None
        for node in self.nodes:
            call = node.tm.WatchEvents(pb.WatchEventsRequest(after_sequence=after), metadata=node.metadata)
            try:
                first = True
                async for ev in call:
                    first = False
                    yield ev
                return
            except grpc.aio.AioRpcError as exc:
                if not first or exc.code() not in FAILOVER_CODES:
                    raise
                last = exc
            finally:
                call.cancel()
        raise NoNodeReachable(f"no node reachable: {', '.join(self.addresses)} ({_details(last)})")

    async def each(self, method: str, request: Any, deadline: float = 2.0) -> list[tuple[str, Any]]:
        """``method`` on every node at once: (address, response or the exception it raised)."""

        async def one(node: NodeStubs) -> Any:
            return await self.invoke(node, method, request, "tasks", deadline)

        results = await asyncio.gather(*(one(n) for n in self.nodes), return_exceptions=True)
        return list(zip(self.addresses, results, strict=True))

    async def health(self, deadline: float = 1.0) -> dict[str, bool]:
        """Whether each node's gRPC health service answers SERVING (health needs no token)."""

        async def one(node: NodeStubs) -> bool:
            try:
                resp = await node.health.Check(health_pb2.HealthCheckRequest(), timeout=deadline)
            except grpc.aio.AioRpcError:
                return False
            return bool(resp.status == health_pb2.HealthCheckResponse.SERVING)

        results = await asyncio.gather(*(one(n) for n in self.nodes))
        return dict(zip(self.addresses, results, strict=True))


def _details(exc: grpc.aio.AioRpcError | None) -> str:
    return exc.details() or exc.code().name if exc is not None else "no answer"
