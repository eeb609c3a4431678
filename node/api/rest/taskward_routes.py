"""taskward's own REST endpoints beyond ScyllaDB's: start a task, members, events (SSE), metrics, health."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncGenerator, AsyncIterator
from typing import Annotated

import orjson
from fastapi import APIRouter, Header, Query, Request
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from starlette.responses import Response, StreamingResponse

from taskward.api.rest.common import JsonResponse, error_response, json_object_body, parse_bool, parse_uint
from taskward.api.rest.merged_events import Start as MergedStart
from taskward.api.rest.merged_events import merged_frames, merged_start
from taskward.api.rest.middleware import RestMetrics
from taskward.api.rest.models import NodeInfo, errors
from taskward.api.rest.scylla_routes import pool_of
from taskward.client.node_pool import NodePool
from taskward.convert import event_pb_to_dict, node_pb_to_dict
from taskward.errors import TaskwardError
from taskward.events import parse_event_types
from taskward.pb.taskward.v1 import tasks_pb2 as pb

logger = logging.getLogger(__name__)

router = APIRouter(tags=["taskward"])
SSE_PING_S = 15.0
SSE_QUEUE = 1024
SSE_BATCH = 64


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
    return JsonResponse(await pool_of(request).start_task(req))


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


async def _node_frames(pool: NodePool, after: int, live_only: bool, types: list[str]
                       ) -> AsyncGenerator[bytes, None]:
    async for ev in pool.watch_events(after, live_only=live_only, types=types):
        yield sse_frame(ev)


async def _pump(source: AsyncGenerator[bytes, None], q: asyncio.Queue[bytes | None]) -> None:
    """Frames from ``source`` into ``q`` until either ends; ``source`` is closed (its node streams with it)
    however the pump ends, a cancellation included."""
    try:
        async with contextlib.aclosing(source):
            async for frame in source:
                await q.put(frame)
        await q.put(b": stream ended by the node\n\n")
    except asyncio.CancelledError:
        raise
    except Exception as exc:
        reason = exc.message if isinstance(exc, TaskwardError) else str(exc)
        await q.put(b": stream ended: %s\n\n" % reason.replace("\n", " ").encode())
    _put_end(q)


@router.get("/events", responses=errors(), response_class=StreamingResponse)
async def events(
    request: Request,
    after: Annotated[str | None, Query(description="resume after this sequence (a gateway: or token)")] = None,
    last_event_id: Annotated[str | None, Header(description="SSE resume position (wins over after)")] = None,
    live: Annotated[str | None, Query(description="true: only events from now on, no replay (a new "
                                                  "viewer); ignored when resuming")] = None,
    types: Annotated[str | None, Query(description="only events of these types, comma-separated "
                                                   "(e.g. task.completed,task.failed,task.aborted)")] = None,
) -> Response:
    """Server-sent events: ``id`` = resume position, ``event`` = type, ``data`` = JSON.

    On a node's ``--rest``: that node's stream, ``id`` = its sequence. On a gateway: the merged stream of
    every listed node, each event's ``data`` with ``node`` (the node's id) and ``id`` an opaque resume
    token (``after`` also takes a plain sequence, for every node). Reconnect with ``Last-Event-ID`` (or
    ``?after=``) to resume without gaps or repeats; ``: ping`` comments keep idle connections alive.
    Without a resume position the retained events are replayed first, unless ``live=true`` (what a
    dashboard that has just read the current state wants). ``types``: only events of those types. A
    malformed position or an unknown type is a 400.
    """
    live_only = parse_bool("live", live)
    wanted = [t.strip() for t in (types or "").split(",") if t.strip()]
    parse_event_types(wanted)  # a 400 naming the unknown type, before the stream opens
    merged: bool = request.app.state.merged_events
    start: MergedStart = None
    position = 0
    if merged:
        start = merged_start(last_event_id, after, live_only)
    elif last_event_id:
        position = parse_uint("Last-Event-ID", last_event_id.strip())
        live_only = False
    else:
        position = 0 if after is None else parse_uint("after", after)
        live_only = live_only and after is None
    pool = pool_of(request)
    await pool.call("GetTtl", pb.GetTtlRequest())  # reachability and auth fail as JSON errors, not a broken stream
    streams: EventStreams = request.app.state.event_streams

    async def frames() -> AsyncIterator[bytes]:
        # The pump starts with the first frame, so a response that is never sent leaks no gRPC stream.
        q = streams.open()
        source = merged_frames(pool, start, wanted) if merged else _node_frames(pool, position, live_only, wanted)
        pump = asyncio.create_task(_pump(source, q), name="sse-pump")
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
                batch = [frame]  # whatever else is already waiting goes out in the same write
                while len(batch) < SSE_BATCH and not q.empty():
                    more = q.get_nowait()
                    if more is None:
                        yield b"".join(batch)
                        return
                    batch.append(more)
                yield b"".join(batch) if len(batch) > 1 else frame
        finally:
            pump.cancel()
            streams.discard(q)

    headers = {"cache-control": "no-cache", "x-accel-buffering": "no"}
    return StreamingResponse(frames(), media_type="text/event-stream", headers=headers)


# ---------------------------------------------------------------- metrics and health


@router.get("/metrics", response_class=Response, responses={200: {"content": {CONTENT_TYPE_LATEST: {}}}})
async def metrics(request: Request) -> Response:
    """Prometheus text. A node's ``--rest``: the node's own metrics (``taskward_tasks_started_total``,
    ``taskward_tasks_finished_total``, durations, running, queue depth, events, store commits, leader,
    etcd and cron; kept as things happen, so a scrape costs the same however many tasks the node retains)
    and this REST surface's requests and latency per route. A gateway: its requests and latency, and
    ``taskward_node_up{node}`` from each listed node's health check (scrape the nodes themselves for their
    metrics). Counts only, never ids or arguments.
    """
    m: RestMetrics = request.app.state.metrics
    node_registry: CollectorRegistry | None = request.app.state.node_metrics
    if node_registry is not None:
        return Response(generate_latest(node_registry) + generate_latest(m.registry), media_type=CONTENT_TYPE_LATEST)
    for address, serving in (await pool_of(request).health()).items():
        m.node_up.labels(address).set(1 if serving else 0)
    return Response(generate_latest(m.registry), media_type=CONTENT_TYPE_LATEST)


@router.get("/health", responses={503: errors()[503]})
async def health(request: Request) -> Response:
    """200 while at least one listed node serves (its gRPC health check); 503 otherwise. Needs no token."""
    pool = pool_of(request)
    nodes = await pool.health()
    if not any(nodes.values()):
        return error_response(503, f"no node serving: {', '.join(pool.addresses)}")
    return JsonResponse({"status": "ok", "nodes": nodes})
