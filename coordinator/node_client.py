"""The coordinator's calls to other nodes, with domain values in and out.

One channel per address (``taskward.channels``), the cluster's bearer token on every call. Requests are
built and answers read here (through ``taskward.convert``), so the leader, the event follower and the
forwarder never handle a protobuf message. A node's own answer (NOT_FOUND, UNAVAILABLE, ...) arrives as
``grpc.aio.AioRpcError``: what it means is the caller's decision.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import NamedTuple

import grpc

from taskward import convert
from taskward.channels import Metadata, aio_channel, bearer
from taskward.event_calls import BatchSupport, EventCall
from taskward.events import SUBSCRIBED, Event
from taskward.model import TaskView
from taskward.pb.taskward.v1 import cron_pb2 as cron_pb
from taskward.pb.taskward.v1 import cron_pb2_grpc as cron_grpc
from taskward.pb.taskward.v1 import tasks_pb2 as pb
from taskward.pb.taskward.v1 import tasks_pb2_grpc as pb_grpc


@dataclass(frozen=True, slots=True, kw_only=True)
class StartRequest:
    """A task start sent to a node: a child of a cluster task (``cluster_parent_id``), or a cluster start
    forwarded to the leader (``cluster``, with the id the follower drew in ``cluster_task_id``)."""

    module: str
    type: str
    args_json: str
    idempotency_key: str = ""
    keyspace: str = ""
    table: str = ""
    entity: str = ""
    cluster: bool = False
    nodes: tuple[str, ...] = ()
    cluster_task_id: str = ""
    cluster_parent_id: str = ""
    task_id: str = ""


class Heard(NamedTuple):
    """One event of a cluster child's subtree, and, on a child's own completion, what it returned (None
    when the node did not say)."""

    event: Event
    result_json: str | None


class EventStream:
    """A node's live stream of cluster children's events. ``subscribed()`` waits for the stream's start and
    tells whether the node promises that every event from then on follows (it says so in the initial
    metadata)."""

    def __init__(self, call: EventCall) -> None:
        self._call = call

    async def subscribed(self) -> bool:
        return SUBSCRIBED in tuple(await self._call.initial_metadata() or ())

    async def __aiter__(self) -> AsyncIterator[Heard]:
        async for msg in self._call:
            if (ev := convert.event_from_pb(msg)) is not None:
                yield Heard(ev, msg.result_json if msg.HasField("result_json") else None)

    def cancel(self) -> None:
        self._call.cancel()


class NodeClients:
    """Channels to the other nodes, one per address; TLS with ``credentials`` (the node's ``--tls-ca`` and
    certificate), which verify each member's certificate against its advertised host before anything is sent."""

    def __init__(self, token: str | None, credentials: grpc.ChannelCredentials | None = None) -> None:
        self._channels: dict[str, grpc.aio.Channel] = {}
        self._stubs: dict[str, pb_grpc.TaskManagerStub] = {}  # a stub builds a callable per method: built once
        self._event_batches: dict[str, BatchSupport] = {}  # per address: whether it serves WatchEventBatches
        self._retired: list[grpc.aio.Channel] = []
        self._credentials = credentials
        self.metadata: Metadata = bearer(token)

    def use_credentials(self, credentials: grpc.ChannelCredentials | None) -> None:
        """New TLS credentials (certificates reloaded): later calls go over new channels. The old ones are
        not cut: calls and event streams on them go on, and they are closed with the others."""
        self._credentials = credentials
        self._retired.extend(self._channels.values())
        self._channels.clear()
        self._stubs.clear()

    def _channel(self, address: str) -> grpc.aio.Channel:
        ch = self._channels.get(address)
        if ch is None:
            ch = aio_channel(address, self._credentials)
            self._channels[address] = ch
        return ch

    def _stub(self, address: str) -> pb_grpc.TaskManagerStub:
        stub = self._stubs.get(address)
        if stub is None:
            stub = self._stubs[address] = pb_grpc.TaskManagerStub(self._channel(address))
        return stub

    async def start(self, address: str, req: StartRequest, *, timeout_s: float) -> str:
        """Start a task on the node at ``address``; its id."""
        resp = await self._stub(address).StartTask(pb.StartTaskRequest(
            module=req.module, type=req.type, args_json=req.args_json, idempotency_key=req.idempotency_key,
            keyspace=req.keyspace, table=req.table, entity=req.entity, cluster=req.cluster, nodes=list(req.nodes),
            cluster_task_id=req.cluster_task_id, cluster_parent_id=req.cluster_parent_id, task_id=req.task_id,
        ), timeout=timeout_s, metadata=self.metadata)
        return str(resp.task_id)

    async def load(self, address: str, *, timeout_s: float) -> tuple[int, int]:
        """(running, queued) root tasks of the node."""
        resp = await self._stub(address).GetLoad(pb.GetLoadRequest(), timeout=timeout_s, metadata=self.metadata)
        return int(resp.running), int(resp.queued)

    async def run_now(self, address: str, schedule_id: str, *, timeout_s: float) -> tuple[str, str]:
        """Ask the node at ``address`` (the leader) to fire a schedule now: (task id, node)."""
        ch = self._channel(address)
        resp = await cron_grpc.CronStub(ch).RunScheduleNow(cron_pb.ScheduleIdRequest(id=schedule_id),
                                                            timeout=timeout_s, metadata=self.metadata)
        return str(resp.task_id), str(resp.node)

    async def abort(self, address: str, task_id: str, *, timeout_s: float) -> None:
        await self._stub(address).AbortTask(pb.TaskIdRequest(task_id=task_id), timeout=timeout_s,
                                            metadata=self.metadata)

    async def status(self, address: str, task_id: str, *, timeout_s: float) -> TaskView:
        """The task's status, read without unregistering it."""
        msg = await self._stub(address).GetTaskStatus(pb.TaskIdRequest(task_id=task_id, keep=True),
                                                       timeout=timeout_s, metadata=self.metadata)
        return convert.status_from_pb(msg)

    async def status_recursive(self, address: str, task_id: str, *, timeout_s: float) -> list[TaskView]:
        resp = await self._stub(address).GetTaskStatusRecursive(pb.TaskIdRequest(task_id=task_id, keep=True),
                                                                timeout=timeout_s, metadata=self.metadata)
        return [convert.status_from_pb(s) for s in resp.statuses]

    def live_events(self, address: str) -> EventStream:
        """The node's events about cluster children's subtrees from now on (no replay)."""
        req = pb.WatchEventsRequest(live_only=True, cluster_children_only=True)
        support = self._event_batches.setdefault(address, BatchSupport())
        return EventStream(EventCall(self._stub(address), req, self.metadata, support))

    async def close(self) -> None:
        for ch in [*self._channels.values(), *self._retired]:
            await ch.close(grace=None)
        self._channels.clear()
        self._stubs.clear()
        self._retired.clear()
