"""REST reads a live view is built on (the dashboard at ``/ui`` uses them; any client may).

- ``GET /task_types``: every registered type with its arguments (names, JSON types, defaults), so a
  start form is built from the same signature a start is checked against.
- ``GET /tasks/{module}``: a module's tasks with their full status (progress, ETA, children, error,
  result) from **every** listed node at once, so a gateway's view covers the cluster and not only the
  first node. Nothing is unregistered by this read (ScyllaDB's ``task_status`` would unregister a finished
  root; this asks ``ListTasks`` with ``with_status``, which never does). ``brief=true`` answers only what
  a list shows of each (the dashboard's first read of a thousand tasks is then a third of the size).
- ``GET /cluster/nodes/stream``: the member list as server-sent events, now and at every change, so a
  node that dies or a new leader shows without polling.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from typing import Annotated, Any

import grpc
import orjson
from fastapi import APIRouter, Query, Request
from starlette.responses import Response, StreamingResponse

from taskward.api.rest.common import JsonResponse, parse_bool
from taskward.api.rest.models import errors
from taskward.api.rest.scylla_routes import pool_of
from taskward.client.node_pool import NodePool, NodeStubs, rpc_error
from taskward.convert import node_pb_to_dict, status_pb_to_brief_dict, status_pb_to_dict, task_type_pb_to_dict
from taskward.errors import NoNodeReachable, TaskwardError, Unavailable
from taskward.pb.taskward.v1 import tasks_pb2 as pb

logger = logging.getLogger(__name__)

router = APIRouter(tags=["dashboard"])

PAGE_SIZE = 2000  # statuses per ListTasks page: ~600 KB, well below the 4 MiB message cap
MAX_TASKS_PER_NODE = 20_000
"""Beyond this a node's list is cut (``truncated``): a view of more tasks than this is not readable anyway."""
LIST_DEADLINE_S = 5.0
SSE_PING_S = 15.0


@router.get("/task_types", responses=errors())
async def task_types(request: Request) -> Response:
    """Registered task types of the first reachable node: module, type, abortable, run history, and
    ``params`` (``name``, ``type`` = number|integer|boolean|string or null for any JSON value,
    ``required``, ``default`` when there is one); ``extra_args`` when the body takes more."""
    resp = await pool_of(request).call("ListTaskTypes", pb.ListTaskTypesRequest())
    return JsonResponse([task_type_pb_to_dict(t) for t in resp.types])


async def _node_statuses(pool: NodePool, node: NodeStubs, req: pb.ListTasksRequest) -> tuple[list[Any], bool]:
    """Every page of one node's list; (statuses, whether the list was cut at ``MAX_TASKS_PER_NODE``)."""
    out: list[Any] = []
    token = ""
    while True:
        page = pb.ListTasksRequest()
        page.CopyFrom(req)
        page.page_token = token
        resp = await pool.invoke(node, "ListTasks", page, "tasks", LIST_DEADLINE_S)
        out.extend(resp.statuses)
        token = resp.next_page_token
        if not token:
            return out, False
        if len(out) >= MAX_TASKS_PER_NODE:
            return out, True


@router.get("/tasks/{module}", responses=errors())
async def module_tasks(
    request: Request, module: str,
    internal: Annotated[str | None, Query(description="true/false/1/0: internal tasks (children) too")] = None,
    keyspace: Annotated[str, Query()] = "", table: Annotated[str, Query()] = "",
    brief: Annotated[str | None, Query(description="true/false/1/0: only what a list shows of each task "
                                                   "(no result, duplicate id or bookkeeping fields)")] = None,
) -> Response:
    """Tasks of a module with their full status, from every listed node; never unregisters anything.

    Answers ``{"tasks": [task_status + "served_by"], "unreachable": [address], "truncated": bool}``:
    ``served_by`` is the gRPC address of the node that answered (a cluster task, known to every node,
    is listed once); nodes that could not be asked are in ``unreachable``. A node that does not know
    the module (a ``test`` module registered on another node only) has no tasks of it. 400 for a module
    no reachable node knows; 503 when no node could be asked.

    ``brief=true``: each status has only what a list shows, ``task_id, type, kind, state, module,
    is_abortable, aborted, error, parent_id, start_time, end_time, keyspace, table, progress_total,
    progress_completed, progress_fraction, attempt, children_ids`` and, when set, ``eta_ms`` and
    ``next_attempt_at`` (no result, no duplicate ``id``, no bookkeeping fields).
    """
    pool = pool_of(request)
    req = pb.ListTasksRequest(module=module, internal=parse_bool("internal", internal), keyspace=keyspace,
                              table=table, page_size=PAGE_SIZE, with_status=True)
    to_dict = status_pb_to_brief_dict if parse_bool("brief", brief) else status_pb_to_dict
    results = await asyncio.gather(*(_node_statuses(pool, n, req) for n in pool.nodes), return_exceptions=True)
    tasks: list[dict[str, object]] = []
    seen: set[str] = set()
    unreachable: list[str] = []
    refused: TaskwardError | None = None
    truncated = answered = False
    for node, result in zip(pool.nodes, results, strict=True):
        if isinstance(result, Unavailable):
            unreachable.append(node.address)
            continue
        if isinstance(result, TaskwardError):
            refused = refused or result
            continue
        if isinstance(result, BaseException):
            raise result
        statuses, cut = result
        answered = True
        truncated = truncated or cut
        for msg in statuses:
            task_id = msg.stats.task_id
            if task_id not in seen:
                seen.add(task_id)
                task = to_dict(msg)
                task["served_by"] = node.address
                tasks.append(task)
    if not answered:
        if refused is not None:
            raise refused
        raise NoNodeReachable(f"no node reachable: {', '.join(pool.addresses)}")
    return JsonResponse({"tasks": tasks, "unreachable": unreachable, "truncated": truncated})


def _nodes_frame(resp: pb.ListNodesResponse) -> bytes:
    data = orjson.dumps({"nodes": [node_pb_to_dict(n) for n in resp.nodes], "stale": resp.stale})
    return b"event: nodes\ndata: %s\n\n" % data


async def _watch_nodes(pool: NodePool) -> AsyncIterator[pb.ListNodesResponse]:
    """``WatchNodes`` of the first reachable node; a node lost mid-stream ends it (the client reconnects
    and is served by the next node, whose first answer is its current list)."""
    last: Unavailable | None = None
    for node in pool.nodes:
        call = node.tm.WatchNodes(pb.ListNodesRequest(), metadata=node.metadata)
        first = True
        try:
            async for resp in call:
                first = False
                yield resp
            return
        except grpc.aio.AioRpcError as exc:
            err = rpc_error(exc)
            if not first or not isinstance(err, Unavailable):
                raise err from None
            last = err
        finally:
            call.cancel()
    raise NoNodeReachable(f"no node reachable: {', '.join(pool.addresses)} ({last.message if last else 'no answer'})")


async def _pump(pool: NodePool, q: asyncio.Queue[bytes | None]) -> None:
    try:
        async for resp in _watch_nodes(pool):
            await q.put(_nodes_frame(resp))
        await q.put(b": stream ended by the node\n\n")
    except asyncio.CancelledError:
        raise
    except Exception as exc:
        reason = exc.message if isinstance(exc, TaskwardError) else str(exc)
        await q.put(b": stream ended: %s\n\n" % reason.replace("\n", " ").encode())
    await q.put(None)


@router.get("/cluster/nodes/stream", responses=errors(), response_class=StreamingResponse)
async def nodes_stream(request: Request) -> Response:
    """Server-sent events: ``event: nodes`` with ``data`` = ``{"nodes": [member], "stale": bool}``, the
    first at once, then one at each change (a member joins or its lease ends, the leader changes, the
    answering node loses or regains the cluster store). ``: ping`` comments every 15 s. The stream ends
    when its node goes away: reconnect (a gateway then asks the next listed node)."""
    pool = pool_of(request)
    await pool.call("ListNodes", pb.ListNodesRequest())  # reachability and auth fail as JSON errors
    streams = request.app.state.event_streams  # ended together with /events at shutdown

    async def frames() -> AsyncIterator[bytes]:
        q: asyncio.Queue[bytes | None] = streams.open()
        pump = asyncio.create_task(_pump(pool, q), name="sse-nodes-pump")
        try:
            yield b": connected\n\n"
            while True:
                try:
                    async with asyncio.timeout(SSE_PING_S):
                        frame = await q.get()
                except TimeoutError:
                    yield b": ping\n\n"
                    continue
                if frame is None:
                    return
                yield frame
        finally:
            pump.cancel()
            streams.discard(q)

    headers = {"cache-control": "no-cache", "x-accel-buffering": "no"}
    return StreamingResponse(frames(), media_type="text/event-stream", headers=headers)
