"""taskward's own REST endpoints beyond ScyllaDB's: start a task, members, events (SSE), metrics, health."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import Counter
from collections.abc import AsyncIterator
from typing import Annotated

import orjson
from fastapi import APIRouter, Header, Query, Request
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.responses import Response, StreamingResponse

from taskward.api.rest.common import JsonResponse, error_response, json_object_body, parse_bool, parse_uint
from taskward.api.rest.middleware import RestMetrics
from taskward.api.rest.models import NodeInfo, errors
from taskward.api.rest.scylla_routes import pool_of
from taskward.client.node_pool import NodePool, NodeStubs
from taskward.convert import event_pb_to_dict, node_pb_to_dict
from taskward.errors import TaskwardError
from taskward.pb.taskward.v1 import tasks_pb2 as pb

logger = logging.getLogger(__name__)

router = APIRouter(tags=["taskward"])
SSE_PING_S = 15.0
SSE_QUEUE = 1024


# ---------------------------------------------------------------- starting tasks


@router.post("/tasks/{module}/{type_name:path}", response_model=str, responses=errors(413))
async def start_task(
    request: Request, module: str, type_name: str,
    cluster: Annotated[str | None, Query(description="true: a cluster task on every (or the listed) node")] = None,
    nodes: Annotated[str, Query(description="comma-separated node ids (cluster start)")] = "",
    idempotency_key: Annotated[str, Query()] = "", keyspace: Annotated[str, Query()] = "",
    table: Annotated[str, Query()] = "", entity: Annotated[str, Query()] = "",
) -> Response:
    """Starts a task of a registered type with the JSON object body as its arguments; answers the new id.

    The body may be empty (no arguments) and is at most 1 MiB (the task type itself accepts at most
    64 KiB of arguments). The same idempotency_key again answers the same id.
    """
    args_json = orjson.dumps(await json_object_body(request, 'task arguments')).decode()
    req = pb.StartTaskRequest(
        module=module, type=type_name, args_json=args_json, idempotency_key=idempotency_key, keyspace=keyspace,
        table=table, entity=entity, cluster=parse_bool("cluster", cluster),
        nodes=[n.strip() for n in nodes.split(",") if n.strip()],
    )
    resp = await pool_of(request).start("StartTask", req)
    return JsonResponse(resp.task_id)


@router.get("/cluster/nodes", response_model=list[NodeInfo], responses=errors())
async def cluster_nodes(request: Request) -> Response:
    """Members of the cluster, as the first reachable node sees them."""
    resp = await pool_of(request).call("ListNodes", pb.ListNodesRequest())
    return JsonResponse([node_pb_to_dict(n) for n in resp.nodes])


# ---------------------------------------------------------------- events


def sse_frame(ev: pb.Event) -> bytes:
    """One SSE frame; ``data`` is the event's JSON as the client library gives it (``convert``)."""
    return b"id: %d\nevent: %s\ndata: %s\n\n" % (ev.sequence, ev.type.encode(), orjson.dumps(event_pb_to_dict(ev)))


class EventStreams:
    """Open SSE streams, so that shutting the server down ends them at once instead of after a timeout."""

    def __init__(self) -> None:
        self._queues: set[asyncio.Queue[bytes | None]] = set()

    def open(self) -> asyncio.Queue[bytes | None]:
        q: asyncio.Queue[bytes | None] = asyncio.Queue(SSE_QUEUE)
        self._queues.add(q)
        return q

    def discard(self, q: asyncio.Queue[bytes | None]) -> None:
        self._queues.discard(q)

    def close_all(self) -> None:
        for q in list(self._queues):
            _put_end(q)


def _put_end(q: asyncio.Queue[bytes | None]) -> None:
    with contextlib.suppress(asyncio.QueueFull):
        q.put_nowait(None)
        return
    q.get_nowait()  # full: make room for the end marker (the reader is going away anyway)
    q.put_nowait(None)


async def _pump(pool: NodePool, after: int, q: asyncio.Queue[bytes | None]) -> None:
    try:
        async for ev in pool.watch_events(after):
            await q.put(sse_frame(ev))
        await q.put(b": stream ended by the node\n\n")
    except asyncio.CancelledError:
        raise
    except Exception as exc:
        reason = exc.message if isinstance(exc, TaskwardError) else str(exc)
        await q.put(b": stream ended: %s\n\n" % reason.replace("\n", " ").encode())
    _put_end(q)


@router.get("/events", responses=errors(), response_class=StreamingResponse)
async def events(
    request: Request, after: Annotated[str | None, Query(description="resume after this sequence")] = None,
    last_event_id: Annotated[str | None, Header(description="SSE resume position (wins over after)")] = None,
) -> Response:
    """Server-sent events of the first reachable node: ``id`` = sequence, ``event`` = type, ``data`` = JSON.

    Reconnect with ``Last-Event-ID`` (or ``?after=``) to resume without gaps; ``: ping`` comments keep
    idle connections alive. Sequence numbers are per node.
    """
    if last_event_id:
        position = parse_uint("Last-Event-ID", last_event_id.strip())
    else:
        position = 0 if after is None else parse_uint("after", after)
    pool = pool_of(request)
    await pool.call("GetTtl", pb.GetTtlRequest())  # reachability and auth fail as JSON errors, not a broken stream
    streams: EventStreams = request.app.state.event_streams

    async def frames() -> AsyncIterator[bytes]:
        # The pump starts with the first frame, so a response that is never sent leaks no gRPC stream.
        q = streams.open()
        pump = asyncio.create_task(_pump(pool, position, q), name="sse-pump")
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


# ---------------------------------------------------------------- metrics and health


async def _node_tasks(pool: NodePool, node: NodeStubs) -> Counter[tuple[str, str]]:
    mods = await pool.invoke(node, "ListModules", pb.ListModulesRequest(), "tasks", 2.0)
    lists = await asyncio.gather(*(
        pool.invoke(node, "ListTasks", pb.ListTasksRequest(module=m, internal=True), "tasks", 2.0) for m in mods.modules
    ))
    counts: Counter[tuple[str, str]] = Counter()
    for module, resp in zip(mods.modules, lists, strict=True):
        counts.update((module, t.state) for t in resp.tasks)
        for state in ("created", "running", "done", "failed"):
            counts[(module, state)] += 0
    return counts


@router.get("/metrics", response_class=Response, responses={200: {"content": {CONTENT_TYPE_LATEST: {}}}})
async def metrics(request: Request) -> Response:
    """Prometheus text: REST requests and latency per route, and tasks by node, module and state.

    Needs no token (like /health): it shows counts only, never ids or arguments.
    """
    pool = pool_of(request)
    m: RestMetrics = request.app.state.metrics
    results = await asyncio.gather(*(_node_tasks(pool, n) for n in pool.nodes), return_exceptions=True)
    m.tasks.clear()
    for node, counts in zip(pool.nodes, results, strict=True):
        up = not isinstance(counts, BaseException)
        m.node_up.labels(node.address).set(1 if up else 0)
        if up:
            assert not isinstance(counts, BaseException)
            for (module, state), n in counts.items():
                m.tasks.labels(node.address, module, state).set(n)
    return Response(generate_latest(m.registry), media_type=CONTENT_TYPE_LATEST)


@router.get("/health", responses={503: errors()[503]})
async def health(request: Request) -> Response:
    """200 while at least one listed node serves (its gRPC health check); 503 otherwise. Needs no token."""
    pool = pool_of(request)
    nodes = await pool.health()
    if not any(nodes.values()):
        return error_response(503, f"no node serving: {', '.join(pool.addresses)}")
    return JsonResponse({"status": "ok", "nodes": nodes})
