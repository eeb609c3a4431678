"""Channels to the listed nodes, failover in list order, and the task-owner cache: the routing layer under
the client library (``taskward.AsyncClient``) and the REST surface (node ``--rest`` and ``taskward gateway``).

One pool holds one channel per listed node and implements the routing rules (architecture: Routing):

- calls that name no task go to the *first reachable* listed node (a node answering ``UNAVAILABLE``
  is skipped, so a dead first node fails over to the next);
- calls that name a task go to the node that *owns* it, found by asking every node in parallel with a
  bounded timeout and cached (id → address) afterwards; a task started through the pool is cached
  from the start answer, without a probe.

The ownership probe is ``WaitTask(timeout=0)``: unlike ``GetTaskStatus`` it never unregisters a
finished task, and it answers OK (finished) or DEADLINE_EXCEEDED (still running) on the owner and
NOT_FOUND elsewhere.

Errors: everything a node answers is raised as the ``taskward.errors`` tree (``from_status``), so a caller
catches ``TaskNotFound`` or ``Unavailable`` whichever surface it serves and never sees a
``grpc.aio.AioRpcError``. When no listed node could answer, ``NoNodeReachable`` is raised ``from`` the last
node's own error, whose message says why (the CLI prints it).
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections import OrderedDict
from collections.abc import AsyncIterator, Sequence
from typing import Any, Literal

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from taskward.channels import Metadata, aio_channel, bearer
from taskward.client.call_batcher import STARTS, STATUSES, CallBatcher
from taskward.errors import NoNodeReachable, TaskNotFound, TaskwardError, Unavailable, from_status
from taskward.event_calls import BatchSupport, EventCall
from taskward.pb.taskward.v1 import cron_pb2_grpc as cron_grpc
from taskward.pb.taskward.v1 import tasks_pb2 as pb
from taskward.pb.taskward.v1 import tasks_pb2_grpc as pb_grpc

logger = logging.getLogger(__name__)

Service = Literal["tasks", "test", "cron"]
FOUND_CODES = frozenset({grpc.StatusCode.OK, grpc.StatusCode.DEADLINE_EXCEEDED})
REFUSED_CODES = frozenset({grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.UNAUTHENTICATED,
                           grpc.StatusCode.PERMISSION_DENIED})
"""Probe answers that are the caller's fault: every node would say the same, so the first one is raised."""
DEFAULT = -1.0
"""``deadline`` default: the pool's ``call_timeout`` (``None`` means no deadline at all)."""


def rpc_error(exc: grpc.aio.AioRpcError) -> TaskwardError:
    """The error a node answered, as the error tree; the message is the node's (or the code's name when
    it sent none, as REST has always answered)."""
    return from_status(exc.code(), exc.details() or exc.code().name.lower())


class NodeStubs:
    """The stubs of one node, with the bearer token already in the call metadata."""

    __slots__ = ("address", "channel", "cron", "event_batches", "health", "metadata", "test", "tm")

    def __init__(self, address: str, token: str | None,
                 credentials: grpc.ChannelCredentials | None = None, server_name: str = "") -> None:
        self.address = address
        self.metadata: Metadata = bearer(token)
        self.event_batches = BatchSupport()
        self._open(credentials, server_name)

    def watch_events(self, request: pb.WatchEventsRequest) -> EventCall:
        """The node's event stream (several events per message where it serves that)."""
        return EventCall(self.tm, request, self.metadata, self.event_batches)

    def redial(self, credentials: grpc.ChannelCredentials | None, server_name: str = "") -> grpc.aio.Channel:
        """A new channel for the calls from now on; the previous one (returned) is left to the calls on it."""
        previous = self.channel
        self._open(credentials, server_name)
        return previous

    def _open(self, credentials: grpc.ChannelCredentials | None, server_name: str) -> None:
        self.channel = aio_channel(self.address, credentials, server_name=server_name)
        self.tm = pb_grpc.TaskManagerStub(self.channel)
        self.test = pb_grpc.TestApiStub(self.channel)
        self.cron = cron_grpc.CronStub(self.channel)
        self.health = health_pb2_grpc.HealthStub(self.channel)


class NodePool:
    """Channels to the listed nodes, failover in list order, and the task-owner cache.

    ``call``/``call_for_task`` take a stub method name (``"GetTaskStatus"``) and a request, and raise the
    ``taskward.errors`` tree: the node's own answer, or ``NoNodeReachable`` when no node could answer.
    ``call_timeout`` (seconds) bounds every unary call except ``WaitTask``, which gets the caller's.
    Create a pool inside the event loop that uses it (``grpc.aio`` channels belong to one loop).
    """

    def __init__(self, addresses: Sequence[str], token: str | None = None, *,
                 credentials: grpc.ChannelCredentials | None = None, server_name: str = "",
                 locate_timeout: float = 2.0, call_timeout: float = 30.0, cache_size: int = 100_000) -> None:
        if not addresses:
            raise ValueError("a node pool needs at least one address")
        self.nodes = [NodeStubs(a, token, credentials, server_name) for a in addresses]
        self._server_name = server_name
        self._retired: list[grpc.aio.Channel] = []
        self.locate_timeout = locate_timeout
        self.call_timeout = call_timeout
        self._owners: OrderedDict[str, NodeStubs] = OrderedDict()
        self._cache_size = cache_size
        self._starts = CallBatcher(self._send_start, STARTS)
        self._reads = {n: CallBatcher(functools.partial(self._send_read, n), STATUSES) for n in self.nodes}

    @property
    def addresses(self) -> list[str]:
        return [n.address for n in self.nodes]

    def use_credentials(self, credentials: grpc.ChannelCredentials | None) -> None:
        """New TLS credentials (the process's certificates were reloaded): calls from now on go over new
        channels; calls and streams on the old ones go on, and those channels are closed with the pool."""
        self._retired.extend(n.redial(credentials, self._server_name) for n in self.nodes)

    async def close(self) -> None:
        for ch in [*(n.channel for n in self.nodes), *self._retired]:
            await ch.close(grace=None)
        self._retired.clear()

    # ---------------------------------------------------------------- calls

    @staticmethod
    async def invoke(node: NodeStubs, method: str, request: Any, service: Service, deadline: float | None) -> Any:
        """One call to one node, its error mapped to the tree."""
        stub = node.tm if service == "tasks" else node.test if service == "test" else node.cron
        try:
            return await getattr(stub, method)(request, timeout=deadline, metadata=node.metadata)
        except grpc.aio.AioRpcError as exc:
            raise rpc_error(exc) from None

    async def _first(self, method: str, request: Any, service: Service,
                     deadline: float | None) -> tuple[NodeStubs, Any]:
        last: Unavailable | None = None
        for node in self.nodes:
            try:
                return node, await self.invoke(node, method, request, service, deadline)
            except Unavailable as exc:
                last = exc
                logger.debug("node %s unavailable for %s: %s", node.address, method, exc.message)
        raise NoNodeReachable(
            f"no node reachable: {', '.join(self.addresses)} ({last.message if last else 'no answer'})"
        ) from last

    def _deadline(self, deadline: float | None) -> float | None:
        return self.call_timeout if deadline == DEFAULT else deadline

    async def call(self, method: str, request: Any, *, service: Service = "tasks",
                   deadline: float | None = DEFAULT) -> Any:
        """The first listed node that is reachable answers (listings, modules, ttl, the test API)."""
        return (await self._first(method, request, service, self._deadline(deadline)))[1]

    async def first(self, method: str, request: Any, *, service: Service = "tasks") -> tuple[NodeStubs, Any]:
        """Like ``call``, and which node answered (for follow-up calls that must go to the same node)."""
        return await self._first(method, request, service, self.call_timeout)

    async def start(self, method: str, request: Any, *, service: Service = "tasks") -> Any:
        """Like ``call`` for a call answering a new ``task_id``, whose owner is then known without a probe."""
        node, resp = await self._first(method, request, service, self.call_timeout)
        if len(self.nodes) > 1:
            self._remember(resp.task_id, node)
        return resp

    async def start_task(self, request: pb.StartTaskRequest) -> str:
        """``StartTask``, carried with other starts made meanwhile in one ``StartTasks`` call when some are
        under way (``CallBatcher``); the new task's id, its owner then known without a probe."""
        node, task_id = await self._starts.call(request)
        if len(self.nodes) > 1:
            self._remember(task_id, node)
        return task_id

    async def _send_start(self, method: str, request: Any) -> tuple[NodeStubs, Any]:
        return await self._first(method, request, "tasks", self.call_timeout)

    async def read_status(self, node: NodeStubs, request: pb.TaskIdRequest) -> pb.TaskStatus:
        """``GetTaskStatus`` on ``node``, carried with other reads of that node made meanwhile in one
        ``GetTaskStatuses`` call when some are under way (``CallBatcher``)."""
        return (await self._reads[node].call(request))[1]

    async def _send_read(self, node: NodeStubs, method: str, request: Any) -> tuple[NodeStubs, Any]:
        return node, await self.invoke(node, method, request, "tasks", self.call_timeout)

    async def call_for_task(self, task_id: str, method: str, request: Any, *, service: Service = "tasks",
                            deadline: float | None = DEFAULT) -> Any:
        """The node that owns ``task_id`` answers; a NOT_FOUND there drops the cached owner. Status reads
        with the pool's own deadline share calls (``read_status``)."""
        timeout = self._deadline(deadline)
        shared = method == "GetTaskStatus" and service == "tasks" and deadline == DEFAULT

        async def ask(node: NodeStubs) -> Any:
            if shared:
                return await self.read_status(node, request)
            return await self.invoke(node, method, request, service, timeout)

        if len(self.nodes) == 1:  # a node's own REST surface, a one-node client: nothing to route
            return await ask(self.nodes[0])
        for attempt in range(2):
            node = self._owners.get(task_id)
            if node is None:
                node = await self.locate(task_id)
            try:
                return await ask(node)
            except TaskNotFound:
                self._owners.pop(task_id, None)
                raise
            except Unavailable:
                # Its owner went away: a cluster task is known to every node, so look again (once).
                self._owners.pop(task_id, None)
                if attempt:
                    raise
        raise AssertionError("unreachable")

    async def locate(self, task_id: str) -> NodeStubs:
        """Ask every node in parallel whether it knows ``task_id``; the first that does owns it.

        Raises the node's ``TaskNotFound`` when every node answered and none knows the id, and
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
                    elif isinstance(exc, grpc.aio.AioRpcError) and exc.code() in REFUSED_CODES:
                        raise rpc_error(exc) from None
                    else:
                        unreachable.append(node.address)
        finally:
            for fut in pending:
                fut.cancel()
        if unreachable or not_found is None:
            raise NoNodeReachable(
                f"task with id {task_id} not found on the reachable nodes; unreachable: {', '.join(unreachable)}"
            )
        raise rpc_error(not_found)

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

    async def watch_events(self, after: int, *, live_only: bool = False, types: Sequence[str] = ()
                           ) -> AsyncIterator[pb.Event]:
        """The event stream of the first reachable node, from sequence ``after`` on, or with ``live_only``
        only what is published from now on (REST's ``/events``; the client library follows every node
        instead: ``taskward.client.events``)."""
        last: Unavailable | None = None
        for node in self.nodes:
            call = node.watch_events(pb.WatchEventsRequest(after_sequence=after, live_only=live_only, types=types))
            first = True
            try:
                async for ev in call:
                    first = False
                    yield ev
                return
            except grpc.aio.AioRpcError as exc:
                err = rpc_error(exc)
                if not first or not isinstance(err, Unavailable):
                    raise err from None
                last = err
            finally:
                call.cancel()
        raise NoNodeReachable(
            f"no node reachable: {', '.join(self.addresses)} ({last.message if last else 'no answer'})"
        ) from last

    async def each(self, method: str, request: Any, deadline: float = 2.0) -> list[tuple[str, Any]]:
        """``method`` on every node at once: (address, response or the error it raised)."""

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
