"""gRPC servicers: thin adapters from ``taskward.v1`` to the TaskManager."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import math
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from typing import Any, TypeVar

import grpc

from taskward import convert
from taskward.api.grpc.status_messages import StatusMessages
from taskward.cluster_view import ClusterView, UnreachableChild
from taskward.errors import InvalidArgument, TaskwardError, status_message
from taskward.events import (
    BATCH_MAX_EVENTS,
    CHILD_BATCH_MAX_EVENTS,
    EPOCH_KEY,
    NODE_KEY,
    POSITION_KEY,
    SUBSCRIBED,
    Event,
    EventLogClosed,
    EventType,
    SubscriberLagged,
    Subscription,
    parse_event_types,
)
from taskward.manager import TaskManager
from taskward.model import Progress, TaskRecord, TaskView, check_labels, check_task_id, linear_eta_ms, matches
from taskward.pb.taskward.v1 import tasks_pb2 as pb
from taskward.pb.taskward.v1 import tasks_pb2_grpc as pb_grpc
from taskward.scylla_test_api import ScyllaTestApi
from taskward.type_signature import signature_of

logger = logging.getLogger(__name__)

R = TypeVar("R")
MAX_PER_CALL = 1000
"""Starts in one ``StartTasks``, reads in one ``GetTaskStatuses``."""
NODES_RESEND_S = 30.0
"""Longest wait of a ``WatchNodes`` stream between two looks at the member list (each change wakes it sooner)."""
Handler = Callable[[Any, Any, grpc.aio.ServicerContext[Any, Any]], Awaitable[R]]


def maps_errors(fn: Handler[R]) -> Handler[R]:
    """The single gRPC mapping of the error tree; anything else is INTERNAL, logged once."""

    @functools.wraps(fn)
    async def wrapper(self: Any, request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> R:
        try:
            return await fn(self, request, context)
        except TaskwardError as exc:
            await context.abort(exc.code, status_message(exc.message))
        except (grpc.aio.AbortError, grpc.aio.UsageError):
            raise
        except Exception:
            logger.exception("unexpected error in %s", fn.__name__)
            await context.abort(grpc.StatusCode.INTERNAL, "internal error")
        raise AssertionError("unreachable")

    return wrapper


def check_batch(count: int, what: str) -> None:
    if count > MAX_PER_CALL:
        raise InvalidArgument(f"at most {MAX_PER_CALL} {what} in one call, got {count}")


def item_error(error: BaseException, method: str) -> tuple[int, str]:
    """(code, message) of one item of a batched call that failed, as its own call would have answered;
    an unexpected error is INTERNAL, logged once, and a cancellation ends the call itself."""
    if isinstance(error, TaskwardError):
        return error.code.value[0], status_message(error.message)
    if not isinstance(error, Exception):
        raise error
    logger.error("unexpected error in %s", method, exc_info=error)
    return grpc.StatusCode.INTERNAL.value[0], "internal error"


class TaskManagerServicer(pb_grpc.TaskManagerServicer):
    """Node tasks come from the TaskManager; cluster tasks (kind ``cluster``) from the ClusterView,
    which answers from this node's replica and forwards writes to the leader."""

    def __init__(self, manager: TaskManager, cluster: ClusterView) -> None:
        self._m = manager
        self._cluster = cluster
        self._closing = asyncio.Event()
        self._messages = StatusMessages()

    def close_streams(self) -> None:
        """End every ``WatchNodes`` stream (shutdown), so none holds the server's graceful stop."""
        self._closing.set()

    def _status(self, view: TaskView) -> pb.TaskStatus:
        """The status of a task of this node (built again only when it changed, if it has no children)."""
        if not view.record.children:
            return self._messages.leaf(view)
        return convert.status_to_pb(view, self._cluster.addresses())

    def _cluster_status(self, rec: TaskRecord) -> pb.TaskStatus:
        eta = linear_eta_ms(rec, datetime.now(UTC))
        msg = convert.status_to_pb(TaskView(rec, Progress(rec.progress_completed, rec.progress_total, eta)),
                                   self._cluster.addresses())
        msg.stale = self._cluster.stale
        return msg

    def _cluster_task(self, task_id: str) -> TaskRecord | None:
        return self._cluster.get(check_task_id(task_id))

    @maps_errors
    async def ListModules(self, request: pb.ListModulesRequest, context: Any) -> pb.ListModulesResponse:
        return pb.ListModulesResponse(modules=self._m.list_modules())

    @maps_errors
    async def ListTasks(self, request: pb.ListTasksRequest, context: Any) -> pb.ListTasksResponse:
        recs, token = self._m.list_tasks(
            request.module, internal=request.internal, keyspace=request.keyspace, table=request.table,
            page_size=request.page_size, page_token=request.page_token,
        )
        cluster_recs: list[TaskRecord] = []
        if not request.page_token:  # cluster tasks lead the first page
            cluster_recs = [r for r in self._cluster.list_module(request.module)
                            if matches(r, internal=request.internal, keyspace=request.keyspace, table=request.table)]
        if request.with_status:  # views read from memory: nothing is unregistered by this read
            return pb.ListTasksResponse(
                statuses=[*map(self._cluster_status, cluster_recs), *(self._status(self._m.view(r.id)) for r in recs)],
                next_page_token=token)
        return pb.ListTasksResponse(tasks=[convert.stats_to_pb(r) for r in cluster_recs + recs], next_page_token=token)

    @maps_errors
    async def GetTaskStatus(self, request: pb.TaskIdRequest, context: Any) -> pb.TaskStatus:
        if (rec := self._cluster_task(request.task_id)) is not None:
            return self._cluster_status(rec)
        return self._status(await self._m.status(request.task_id, keep=request.keep))

    @maps_errors
    async def GetTaskStatuses(self, request: pb.GetTaskStatusesRequest, context: Any) -> pb.GetTaskStatusesResponse:
        """Each read as ``GetTaskStatus`` answers it. A read that must wait (a finished root unregistered
        by it, which is durable first) runs concurrently with the others; the rest answer at once."""
        check_batch(len(request.reads), "reads")
        results: list[pb.StatusResult] = []
        unregistering: dict[int, Awaitable[int]] = {}
        for read in request.reads:
            try:
                if (rec := self._cluster_task(read.task_id)) is not None:
                    results.append(pb.StatusResult(status=self._cluster_status(rec)))
                    continue
                view, unregister = self._m.read(read.task_id, keep=read.keep)
            except Exception as exc:
                code, message = item_error(exc, "GetTaskStatuses")
                results.append(pb.StatusResult(code=code, message=message))
                continue
            if unregister is not None:
                unregistering[len(results)] = self._m.unregister_tree(unregister)
            results.append(pb.StatusResult(status=self._status(view)))
        if unregistering:  # answered once durable, as GetTaskStatus is; a failed one is that read's error
            outcomes = await asyncio.gather(*unregistering.values(), return_exceptions=True)
            for i, outcome in zip(unregistering, outcomes, strict=True):
                if isinstance(outcome, BaseException):
                    code, message = item_error(outcome, "GetTaskStatuses")
                    results[i] = pb.StatusResult(code=code, message=message)
        return pb.GetTaskStatusesResponse(results=results)

    @maps_errors
    async def GetTaskStatusRecursive(self, request: pb.TaskIdRequest, context: Any) -> pb.TaskStatusList:
        if (rec := self._cluster_task(request.task_id)) is not None:
            addresses = self._cluster.addresses()
            children = [convert.unreachable_child_to_pb(c) if isinstance(c, UnreachableChild)
                        else convert.status_to_pb(c, addresses)
                        for c in await self._cluster.child_statuses(rec.id)]
            return pb.TaskStatusList(statuses=[self._cluster_status(rec), *children])
        views = await self._m.status_recursive(request.task_id, keep=request.keep)
        return pb.TaskStatusList(statuses=[self._status(v) for v in views])

    @maps_errors
    async def AbortTask(self, request: pb.TaskIdRequest, context: Any) -> pb.AbortTaskResponse:
        if self._cluster_task(request.task_id) is not None:
            await self._cluster.abort(request.task_id)
            return pb.AbortTaskResponse()
        await self._m.abort(request.task_id)
        return pb.AbortTaskResponse()

    @maps_errors
    async def WaitTask(self, request: pb.WaitTaskRequest, context: Any) -> pb.TaskStatus:
        timeout = request.timeout if request.HasField("timeout") else None
        if timeout is not None and not (math.isfinite(timeout) and timeout >= 0):
            raise InvalidArgument(f"timeout must be a finite number >= 0, got {timeout!r}")
        if self._cluster_task(request.task_id) is not None:
            return self._cluster_status(await self._cluster.wait(request.task_id, timeout))
        return self._status(await self._m.wait(request.task_id, timeout))

    @maps_errors
    async def GetTtl(self, request: pb.GetTtlRequest, context: Any) -> pb.TtlResponse:
        ttl = self._m.ttl.user_task_ttl if request.kind == pb.TTL_KIND_USER else self._m.ttl.task_ttl
        return pb.TtlResponse(ttl=ttl, previous=ttl)

    @maps_errors
    async def SetTtl(self, request: pb.SetTtlRequest, context: Any) -> pb.TtlResponse:
        previous = await self._m.set_ttl(user=request.kind == pb.TTL_KIND_USER, value=request.ttl)
        return pb.TtlResponse(ttl=request.ttl, previous=previous)

    @maps_errors
    async def Drain(self, request: pb.DrainRequest, context: Any) -> pb.DrainResponse:
        return pb.DrainResponse(unregistered=await self._m.drain(request.module))

    @maps_errors
    async def StartTask(self, request: pb.StartTaskRequest, context: Any) -> pb.StartTaskResponse:
        return pb.StartTaskResponse(task_id=await self._start(request))

    @maps_errors
    async def StartTasks(self, request: pb.StartTasksRequest, context: Any) -> pb.StartTasksResponse:
        """Every start at once, each as ``StartTask`` would run it: they share the store's group commit,
        and each answer is its own (an error starts nothing of that one and does not stop the others)."""
        check_batch(len(request.starts), "starts")
        outcomes = await asyncio.gather(*(self._start(r) for r in request.starts), return_exceptions=True)
        results = []
        for outcome in outcomes:
            if isinstance(outcome, str):
                results.append(pb.StartResult(task_id=outcome))
            else:
                code, message = item_error(outcome, "StartTasks")
                results.append(pb.StartResult(code=code, message=message))
        return pb.StartTasksResponse(results=results)

    async def _start(self, request: pb.StartTaskRequest) -> str:
        if request.cluster_parent_id:
            check_task_id(request.cluster_parent_id)
        if request.cluster_task_id:
            check_task_id(request.cluster_task_id)
        if request.task_id:
            check_task_id(request.task_id)
        if request.cluster or request.nodes:
            check_labels(keyspace=request.keyspace, table=request.table, entity=request.entity,
                         idempotency_key=request.idempotency_key)
            return await self._cluster.start_task(
                request.module, request.type, request.args_json, nodes=list(request.nodes),
                idempotency_key=request.idempotency_key, keyspace=request.keyspace, table=request.table,
                entity=request.entity, task_id=request.cluster_task_id,
            )
        return await self._m.start_task(
            request.module, request.type, request.args_json, idempotency_key=request.idempotency_key,
            keyspace=request.keyspace, table=request.table, entity=request.entity,
            cluster_parent=request.cluster_parent_id, task_id=request.task_id,
        )

    @maps_errors
    async def ListTaskTypes(self, request: pb.ListTaskTypesRequest, context: Any) -> pb.ListTaskTypesResponse:
        stats = {t.name: t for t in self._m.list_task_types()}
        return pb.ListTaskTypesResponse(types=[
            convert.task_type_to_pb(stats[spec.qualified_name], module=spec.module, type_name=spec.name,
                                    abortable=spec.abortable, signature=signature_of(spec))
            for spec in self._m.registry.all()])

    @maps_errors
    async def GetLoad(self, request: pb.GetLoadRequest, context: Any) -> pb.LoadResponse:
        running, queued = self._m.load()
        return pb.LoadResponse(running=running, queued=queued)

    @maps_errors
    async def ListNodes(self, request: pb.ListNodesRequest, context: Any) -> pb.ListNodesResponse:
        return pb.ListNodesResponse(nodes=[convert.node_to_pb(n) for n in self._cluster.nodes()],
                                    stale=self._cluster.stale)

    async def WatchNodes(self, request: pb.ListNodesRequest, context: Any) -> AsyncIterator[pb.ListNodesResponse]:
        """The member list now, then each time it differs from the last one sent. The replica's change
        signal wakes it (no polling); ``NODES_RESEND_S`` only bounds each wait, and an unchanged list is
        not sent again."""
        last: pb.ListNodesResponse | None = None
        while not self._closing.is_set():
            current = await self.ListNodes(request, context)
            if current != last:
                yield current
                last = current
            closing = asyncio.ensure_future(self._closing.wait())
            change = asyncio.ensure_future(self._cluster.wait_change(NODES_RESEND_S))
            try:
                await asyncio.wait((closing, change), return_when=asyncio.FIRST_COMPLETED)
            finally:
                closing.cancel()
                change.cancel()

    async def WatchEvents(self, request: pb.WatchEventsRequest, context: Any) -> AsyncIterator[pb.Event]:
        async with self._subscribed(request, context) as sub:
            to_pb = self._event_to_pb(request)
            async for ev in sub.events():
                yield to_pb(ev)

    async def WatchEventBatches(self, request: pb.WatchEventsRequest, context: Any) -> AsyncIterator[pb.EventBatch]:
        """``WatchEvents`` with the events that were ready together in one message: a gRPC message costs
        the node about as much CPU as a no-op task's whole completion, so a subscriber of a busy node
        that takes one message per commit instead of one per event costs it a fraction."""
        async with self._subscribed(request, context) as sub:
            to_pb = self._event_to_pb(request)
            most = CHILD_BATCH_MAX_EVENTS if request.cluster_children_only else BATCH_MAX_EVENTS
            async for batch in sub.batches(most):
                yield pb.EventBatch(events=[to_pb(ev) for ev in batch])

    @contextlib.asynccontextmanager
    async def _subscribed(self, request: pb.WatchEventsRequest, context: Any) -> AsyncIterator[Subscription]:
        """The subscription of an event stream, registered before the initial metadata goes out, so a
        client that has received the metadata knows every event published from then on will reach it
        (the cluster leader relies on this to trust a child's state from the stream instead of polling
        it). A subscriber that lagged or a node that is closing ends the stream with its code."""
        try:
            types = parse_event_types(request.types)
        except TaskwardError as exc:
            await context.abort(exc.code, exc.message)
        position = self._m.events.published  # taken with the subscription, with no await in between
        sub = self._m.events.subscribe(request.after_sequence, live_only=request.live_only,
                                       cluster_only=request.cluster_children_only, types=types)
        try:
            await context.send_initial_metadata((SUBSCRIBED, (POSITION_KEY, str(position)),
                                                 (NODE_KEY, self._m.node_id), (EPOCH_KEY, self._m.events.epoch)))
            yield sub
        except SubscriberLagged as exc:
            await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, str(exc))
        except EventLogClosed as exc:
            await context.abort(grpc.StatusCode.UNAVAILABLE, str(exc))
        finally:
            sub.close()

    def _event_to_pb(self, request: pb.WatchEventsRequest) -> Callable[[Event], pb.Event]:
        """How a stream's events become messages (the request is read once, not per event)."""
        if not request.cluster_children_only:
            return convert.event_to_pb
        table = self._m.table

        def with_result(ev: Event) -> pb.Event:
            msg = convert.event_to_pb(ev)
            if ev.type is EventType.COMPLETED:
                # The child's result rides on its completion: the leader would otherwise ask for it.
                rec = table.get(ev.task_id)
                if rec is not None and rec.is_root:
                    msg.result_json = rec.result
            return msg

        return with_result


class TestApiServicer(pb_grpc.TestApiServicer):
    __test__ = False

    def __init__(self, test_api: ScyllaTestApi) -> None:
        self._t = test_api

    @maps_errors
    async def RegisterTestModule(self, request: pb.Empty, context: Any) -> pb.Empty:
        await self._t.register()
        return pb.Empty()

    @maps_errors
    async def UnregisterTestModule(self, request: pb.Empty, context: Any) -> pb.Empty:
        await self._t.unregister()
        return pb.Empty()

    @maps_errors
    async def CreateTestTask(self, request: pb.CreateTestTaskRequest, context: Any) -> pb.StartTaskResponse:
        task_id = await self._t.create_task(
            task_id=request.task_id, shard=request.shard, parent_id=request.parent_id,
            keyspace=request.keyspace, table=request.table, entity=request.entity, user_task=request.user_task,
        )
        return pb.StartTaskResponse(task_id=task_id)

    @maps_errors
    async def UnregisterTestTask(self, request: pb.TaskIdRequest, context: Any) -> pb.Empty:
        await self._t.unregister_task(request.task_id)
        return pb.Empty()

    @maps_errors
    async def FinishTestTask(self, request: pb.FinishTestTaskRequest, context: Any) -> pb.Empty:
        await self._t.finish_task(request.task_id, request.error)
        return pb.Empty()
