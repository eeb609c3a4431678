"""``AsyncClient``: the client library's one implementation (``Client`` runs it on a loop of its own).

An application talks to taskward through this client instead of generated stubs: typed statuses,
keyword task arguments, the error tree (``taskward.errors``) instead of gRPC status codes, failover
between the listed nodes and owner routing (``NodePool``), and event streams that resume by themselves
(``EventStream``).

Reads never unregister anything: every status read sends ``keep`` (ScyllaDB's ``task_status`` unregisters
a finished root when read; an application that looks twice must see the task twice). The CLI, which
keeps ScyllaDB's semantics, asks for them with ``unregister=True``.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping, Sequence
from typing import Any, TypeVar

import grpc

from taskward import limits
from taskward.client.cluster_events import ClusterEventStream
from taskward.client.events import EventStream, TaskEventStream
from taskward.client.node_pool import DEFAULT, NodePool, Service
from taskward.client.status import TaskStatus
from taskward.convert import node_pb_to_dict, schedule_json_to_pb, schedule_pb_to_dict
from taskward.errors import InvalidArgument, TaskFailed
from taskward.model import check_task_id
from taskward.pb.taskward.v1 import cron_pb2 as cron_pb
from taskward.pb.taskward.v1 import tasks_pb2 as pb
from taskward.security.tls import client_credentials

WAIT_SLACK_S = 10.0
"""A wait's gRPC deadline exceeds its timeout by this much, so the node's own answer (WaitTimeout) wins."""
LOCATE_TIMEOUT_S = 2.0

Path = str | os.PathLike[str]
S = TypeVar("S", bound="EventStream | ClusterEventStream")


def node_addresses(nodes: str | Sequence[str]) -> list[str]:
    """``"host:port"``, ``"a:1,b:2"`` or a list of them, in failover order."""
    items = [nodes] if isinstance(nodes, str) else list(nodes)
    addresses = [a.strip() for item in items for a in item.split(",") if a.strip()]
    if not addresses:
        raise ValueError("a client needs at least one node address (host:port)")
    return addresses


def channel_credentials(tls_ca: Path | None, tls_cert: Path | None,
                        tls_key: Path | None) -> grpc.ChannelCredentials | None:
    """TLS credentials from PEM files (read once, and checked, by ``taskward.security.tls``): ``tls_ca``
    verifies the nodes (the system's roots without it), ``tls_cert`` + ``tls_key`` are this client's
    certificate for nodes that require one. None of them: plaintext. A bad file raises ``TlsError`` (a
    ``ValueError``) naming it."""
    return client_credentials(tls_ca, tls_cert, tls_key)


def _args_json(args: Mapping[str, Any]) -> str:
    try:
        return json.dumps(args, separators=(",", ":"), allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise InvalidArgument(f"task arguments must be JSON values: {exc}") from None
    except RecursionError:
        raise InvalidArgument(f"task arguments nested too deeply: the limit is {limits.MAX_JSON_DEPTH} levels of "
                              "arrays and objects") from None


class AsyncTaskHandle:
    """One task, by id; every method is one call to the node that owns it (cluster tasks: any node)."""

    __slots__ = ("_client", "id")

    def __init__(self, client: AsyncClient, task_id: str) -> None:
        self._client = client
        self.id = task_id

    def __repr__(self) -> str:
        return f"AsyncTaskHandle({self.id!r})"

    async def status(self, *, unregister: bool = False) -> TaskStatus:
        """The task's current status. ``unregister=True`` reads as ScyllaDB's ``task_status`` does (a
        finished root leaves the node's registry once read); by default nothing is unregistered."""
        msg = await self._client._pool().call_for_task(
            self.id, "GetTaskStatus", pb.TaskIdRequest(task_id=self.id, keep=not unregister))
        return TaskStatus.from_pb(msg)

    async def wait(self, timeout: float | None = None) -> TaskStatus:  # noqa: ASYNC109  (the node's timeout: DESIGN §9)
        """Until the task has finished; its final status. Raises ``TaskFailed`` (``.error``, ``.status``) when it
        ended failed or aborted, and ``WaitTimeout`` (a ``TimeoutError``) after ``timeout`` seconds."""
        status = await self._wait_status(timeout)
        if status.failed:
            raise TaskFailed(self.id, status.error, status)
        return status

    async def _wait_status(self, timeout: float | None) -> TaskStatus:  # noqa: ASYNC109  (sent to the node)
        req = pb.WaitTaskRequest(task_id=self.id)
        if timeout is not None:
            req.timeout = timeout  # the node judges it (negative or not finite: InvalidArgument)
        deadline = None if timeout is None or not math.isfinite(timeout) else max(0.0, timeout) + WAIT_SLACK_S
        return TaskStatus.from_pb(await self._client._pool().call_for_task(self.id, "WaitTask", req,
                                                                             deadline=deadline))

    async def result(self, timeout: float | None = None) -> Any:  # noqa: ASYNC109  (the node's timeout)
        """Waits (as ``wait``), then the value the task's body returned (``None`` when it returned nothing;
        a cluster task's is ``{node_id: child_result}``)."""
        return (await self.wait(timeout)).result

    async def abort(self) -> None:
        """Cooperative abort of the task and its descendants; ``NotAbortable`` when its type is not."""
        await self._client._pool().call_for_task(self.id, "AbortTask", pb.TaskIdRequest(task_id=self.id))

    async def tree(self, *, unregister: bool = False) -> list[TaskStatus]:
        """The task and its descendants, breadth first, root first (``unregister`` as for ``status``)."""
        resp = await self._client._pool().call_for_task(
            self.id, "GetTaskStatusRecursive", pb.TaskIdRequest(task_id=self.id, keep=not unregister))
        return [TaskStatus.from_pb(s) for s in resp.statuses]

    def events(self) -> TaskEventStream:
        """This task's events (``task_id`` is the task's, or ``cluster_parent_id`` is, for a cluster task's
        children on the listed nodes), from now until it has finished; an async iterator of event dicts."""
        return self._client._track(TaskEventStream(self._client._pool(), self.id, self._wait_status,
                                                   on_close=self._client._untrack))


class AsyncClient:
    """taskward's client for asyncio code; ``Client`` is the same for synchronous code.

    ``nodes`` is ``"host:port"`` or a list of them, in failover order: calls that name no task go to the
    first node that answers, calls about a task to the node that owns it. ``token`` is the bearer token;
    ``tls_ca``/``tls_cert``/``tls_key`` are PEM files (TLS when any is given); ``timeout`` bounds every call
    except waits, in seconds. Every error is a ``taskward.TaskwardError``: ``TaskNotFound``,
    ``InvalidArgument``, ``NotAbortable``, ``Unauthenticated``, ``PermissionDenied``, ``Unavailable`` (no
    listed node could answer), ``TaskFailed`` and ``WaitTimeout`` from waits.

    Use it inside one event loop (its gRPC channels are made on first use, in the loop that uses them),
    as ``async with AsyncClient(...) as client:`` or with ``await client.close()``.
    """

    def __init__(self, nodes: str | Sequence[str], *, token: str | None = None, tls_ca: Path | None = None,
                 tls_cert: Path | None = None, tls_key: Path | None = None, timeout: float = 30.0) -> None:
        self.addresses = node_addresses(nodes)
        self.timeout = timeout
        self._token = token
        self._credentials = channel_credentials(tls_ca, tls_cert, tls_key)
        self._node_pool: NodePool | None = None
        self._streams: set[EventStream | ClusterEventStream] = set()
        self._closed = False

    def __repr__(self) -> str:
        return f"AsyncClient({self.addresses!r})"

    def _pool(self) -> NodePool:
        if self._node_pool is None:
            if self._closed:
                raise RuntimeError("the client is closed")
            self._node_pool = NodePool(self.addresses, self._token, credentials=self._credentials,
                                       call_timeout=self.timeout,
                                       locate_timeout=min(LOCATE_TIMEOUT_S, self.timeout))
        return self._node_pool

    def _track(self, stream: S) -> S:
        self._streams.add(stream)
        return stream

    def _untrack(self, stream: EventStream | ClusterEventStream) -> None:
        self._streams.discard(stream)

    async def close(self) -> None:
        """Ends open event streams and closes the channels; idempotent."""
        self._closed = True
        for stream in list(self._streams):
            await stream.aclose()
        if self._node_pool is not None:
            pool, self._node_pool = self._node_pool, None
            await pool.close()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # ---------------------------------------------------------------- tasks

    async def start(self, module: str, type: str, /, *, idempotency_key: str | None = None,
                    cluster: bool = False, nodes: Sequence[str] | None = None, keyspace: str | None = None,
                    table: str | None = None, entity: str | None = None, **args: Any) -> AsyncTaskHandle:
        """Starts a task of ``module:type`` with ``args`` (JSON values) as its arguments; its handle.

        ``cluster=True`` runs it on every live node as a cluster task, ``nodes`` (node ids) on those; the
        same ``idempotency_key`` again gives the same task. ``keyspace``/``table``/``entity`` are ScyllaDB's
        labels, so arguments of those names (and of the other keywords here) cannot travel in ``args``:
        ``start_with_args`` takes the arguments as one mapping instead.
        """
        return await self.start_with_args(module, type, args, idempotency_key=idempotency_key, cluster=cluster,
                                          nodes=nodes, keyspace=keyspace, table=table, entity=entity)

    async def start_with_args(self, module: str, type: str, args: Mapping[str, Any], /, *,
                              idempotency_key: str | None = None, cluster: bool = False,
                              nodes: Sequence[str] | None = None, keyspace: str | None = None,
                              table: str | None = None, entity: str | None = None) -> AsyncTaskHandle:
        """``start`` with the task's arguments as one mapping, so any argument name works (``table``, too)."""
        req = pb.StartTaskRequest(
            module=module, type=type, args_json=_args_json(args), idempotency_key=idempotency_key or "",
            keyspace=keyspace or "", table=table or "", entity=entity or "", cluster=cluster,
            nodes=list(nodes or ()),
        )
        return AsyncTaskHandle(self, await self._pool().start_task(req))

    def task(self, task_id: str) -> AsyncTaskHandle:
        """A handle for an existing task (no call is made; ``InvalidArgument`` for a malformed id)."""
        return AsyncTaskHandle(self, check_task_id(task_id))

    async def tasks(self, module: str, internal: bool = False, keyspace: str | None = None,
                    table: str | None = None) -> list[TaskStatus]:
        """The tasks of ``module`` on the first reachable node, as ScyllaDB's ``list_module_tasks``: one call,
        one consistent listing, and each entry ``partial`` (only the ``task_stats`` fields; see
        ``TaskStatus``). Children are listed only with ``internal``."""
        resp = await self._pool().call("ListTasks", pb.ListTasksRequest(
            module=module, internal=internal, keyspace=keyspace or "", table=table or ""))
        return [TaskStatus.from_stats_pb(t, module) for t in resp.tasks]

    async def modules(self) -> list[str]:
        resp = await self._pool().call("ListModules", pb.ListModulesRequest())
        return list(resp.modules)

    async def nodes(self) -> list[dict[str, Any]]:
        """The cluster's members as the first reachable node sees them, as REST's ``/cluster/nodes`` entries:
        ``id``, ``address``, ``alive``, ``leader``, ``version``, ``started_at`` (like every dict of this client,
        the JSON object REST answers; only ``TaskStatus`` turns times into datetimes)."""
        resp = await self._pool().call("ListNodes", pb.ListNodesRequest())
        return [node_pb_to_dict(n) for n in resp.nodes]

    def events(self, after: int | Mapping[str, int] | None = None, *, types: Sequence[str] = ()) -> EventStream:
        """Events of every listed node, merged, resumed by themselves after any disconnect (see
        ``EventStream``): live from now with ``after=None``, else what each node retained after ``after``
        (one sequence for every node, or an earlier stream's ``positions``: address → sequence). ``types``:
        only events of these types (e.g. ``("task.completed", "task.failed", "task.aborted")``); the nodes
        then send nothing else. An unknown type raises ``InvalidArgument`` on the first read."""
        return self._track(EventStream(self._pool(), after, on_close=self._untrack, types=types))

    def cluster_events(self, after: str | int | None = None, *, types: Sequence[str] = ()) -> ClusterEventStream:
        """Events of every listed node merged into one stream that resumes by itself, each with ``node`` (the
        node's id), as the gateway's ``GET /events`` serves them (see ``ClusterEventStream``). ``after=None``:
        live from now; ``after=N``: what each node retained after sequence N, then live; ``after=TOKEN``: an
        earlier stream's ``position`` (or a gateway event's SSE id), continued exactly where it stood."""
        return self._track(ClusterEventStream(self._pool(), after, on_close=self._untrack, types=types))

    # ---------------------------------------------------------------- settings

    async def ttl(self, *, user: bool = False) -> int:
        """``task_ttl`` (``user_task_ttl`` with ``user``) in seconds."""
        kind = pb.TTL_KIND_USER if user else pb.TTL_KIND_TASK
        return int((await self._pool().call("GetTtl", pb.GetTtlRequest(kind=kind))).ttl)

    async def set_ttl(self, seconds: int, *, user: bool = False) -> int:
        """Sets ``task_ttl`` (``user_task_ttl``); the previous value."""
        kind = pb.TTL_KIND_USER if user else pb.TTL_KIND_TASK
        return int((await self._pool().call("SetTtl", pb.SetTtlRequest(kind=kind, ttl=seconds))).previous)

    async def drain(self, module: str) -> int:
        """Unregisters the finished tasks of ``module``; how many."""
        return int((await self._pool().call("Drain", pb.DrainRequest(module=module))).unregistered)

    # ---------------------------------------------------------------- cron (the REST /cron document's entries)

    async def schedules(self) -> list[dict[str, Any]]:
        """Every schedule as an entry of the ``/cron`` document (what may be written back as it is)."""
        resp = await self._pool().call("ListSchedules", cron_pb.ListSchedulesRequest(), service="cron")
        return [schedule_pb_to_dict(s) for s in resp.schedules]

    async def schedule(self, schedule_id: str) -> dict[str, Any]:
        resp = await self._pool().call("GetSchedule", cron_pb.ScheduleIdRequest(id=schedule_id), service="cron")
        return schedule_pb_to_dict(resp)

    async def put_schedule(self, entry: Mapping[str, Any]) -> dict[str, Any]:
        """Creates or replaces one schedule (a document entry with its ``id``); as stored."""
        msg = schedule_json_to_pb(0, dict(entry))
        return schedule_pb_to_dict(await self._pool().call("PutSchedule", msg, service="cron"))

    async def put_schedules(self, entries: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
        """Replaces the whole document, atomically (one bad entry changes nothing); what is in force."""
        req = cron_pb.PutSchedulesRequest(schedules=[schedule_json_to_pb(i, dict(e)) for i, e in enumerate(entries)])
        resp = await self._pool().call("PutSchedules", req, service="cron")
        return [schedule_pb_to_dict(s) for s in resp.schedules]

    async def delete_schedule(self, schedule_id: str) -> None:
        await self._pool().call("DeleteSchedule", cron_pb.ScheduleIdRequest(id=schedule_id), service="cron")

    async def enable_schedule(self, schedule_id: str, enabled: bool = True) -> dict[str, Any]:
        req = cron_pb.SetScheduleEnabledRequest(id=schedule_id, enabled=enabled)
        return schedule_pb_to_dict(await self._pool().call("SetScheduleEnabled", req, service="cron"))

    async def run_schedule_now(self, schedule_id: str) -> dict[str, Any]:
        """Fires the schedule's task now (its concurrency policy applies): ``{"task_id", "node"}``."""
        resp = await self._pool().call("RunScheduleNow", cron_pb.ScheduleIdRequest(id=schedule_id), service="cron")
        return {"task_id": resp.task_id, "node": resp.node or None}

    # ---------------------------------------------------------------- any rpc

    async def call(self, method: str, request: Any, *, service: Service = "tasks", task_id: str | None = None,
                   deadline: float | None = DEFAULT) -> Any:
        """Any rpc of ``taskward.v1`` with its generated request message, for what the typed methods do not
        cover: routed to ``task_id``'s owner when given, else to the first reachable node, with this
        client's token, TLS and error mapping; answers the generated response message. ``deadline`` is the
        gRPC deadline in seconds (default: the client's ``timeout``; ``None``: none)."""
        if task_id is not None:
            return await self._pool().call_for_task(task_id, method, request, service=service, deadline=deadline)
        return await self._pool().call(method, request, service=service, deadline=deadline)
