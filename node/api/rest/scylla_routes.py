"""The ScyllaDB-compatible endpoints: ``/task_manager/*`` and the test API ``/task_manager_test/*``.

Each handler validates its parameters, makes one gRPC call through the ``NodePool`` (routed to the
task's owner when it names a task, else to the first reachable node) and renders the answer with
``taskward.convert``. The pool raises a node's answer as the error tree, mapped once in ``rest_common``.

Id parameters use the ``:path`` converter so that an id containing ``/`` (e.g. ``..%2F..%2Fetc``,
which the server decodes before routing) reaches the id check and answers 400 malformed instead of a
routing 404.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.routing import APIRoute
from starlette.responses import Response

from taskward.api.rest.common import (
    JsonResponse,
    bad_request,
    check_id,
    parse_bool,
    parse_shard,
    parse_timeout,
    parse_uint,
)
from taskward.api.rest.disconnect import unless_disconnected
from taskward.api.rest.models import TaskStats, TaskStatus, errors
from taskward.client.node_pool import NodePool
from taskward.convert import stats_pb_to_dict, status_pb_to_dict
from taskward.errors import TestApiDisabled
from taskward.pb.taskward.v1 import tasks_pb2 as pb


class LeanRoute(APIRoute):
    """An APIRoute whose endpoint takes only ``request`` and path parameters is called directly.

    FastAPI's dependency solving costs ~30 µs a request, a large share of a gateway's task_status;
    routes with query, header or body parameters keep FastAPI's handler. OpenAPI is unaffected.
    """

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        d = self.dependant
        if d.query_params or d.header_params or d.cookie_params or d.body_params or d.dependencies:
            return super().get_route_handler()
        endpoint = self.endpoint

        async def handler(request: Request) -> Response:
            response: Response = await endpoint(request, **request.path_params)
            return response

        return handler


router = APIRouter(tags=["task_manager"], route_class=LeanRoute)
test_router = APIRouter(tags=["task_manager_test"])

BoolQ = Annotated[str | None, Query(description="true/false/1/0")]
MAX_SHARD = 1 << 16  # as taskward.scylla_test_api checks
WAIT_SLACK_S = 10.0  # the gRPC deadline of a wait exceeds the node's own timeout, so the node's 408 wins


def pool_of(request: Request) -> NodePool:
    pool: NodePool = request.app.state.pool
    return pool


NULL = b"null"


def null_response() -> Response:
    """What ScyllaDB's void endpoints answer, as valid JSON."""
    return Response(NULL, media_type="application/json")


# ---------------------------------------------------------------- /task_manager


@router.get("/task_manager/list_modules", response_model=list[str], responses=errors())
async def list_modules(request: Request) -> Response:
    """Modules of the first reachable node: builtin, registered types' modules, and test while registered."""
    resp = await pool_of(request).call("ListModules", pb.ListModulesRequest())
    return JsonResponse(list(resp.modules))


@router.get("/task_manager/list_module_tasks/{module:path}", response_model=list[TaskStats], responses=errors())
async def list_module_tasks(request: Request, module: str, internal: BoolQ = None,
                            keyspace: Annotated[str, Query()] = "", table: Annotated[str, Query()] = "") -> Response:
    """Tasks of a module (internal ones only with internal=true), filtered by keyspace and table."""
    req = pb.ListTasksRequest(module=module, internal=parse_bool("internal", internal), keyspace=keyspace,
                              table=table)
    resp = await pool_of(request).call("ListTasks", req)
    return JsonResponse([stats_pb_to_dict(t) for t in resp.tasks])


# ``keep`` is read from the query string by hand and documented here, so these hot routes stay LeanRoutes.
KEEP_PARAM = {"parameters": [{
    "name": "keep", "in": "query", "required": False, "schema": {"type": "string"},
    "description": "true: read without unregistering a finished root (as wait_task, the client library and the "
                   "dashboard read); true/false/1/0",
}]}


def _status_request(request: Request, task_id: str) -> pb.TaskIdRequest:
    tid = check_id(task_id)
    return pb.TaskIdRequest(task_id=tid, keep=parse_bool("keep", request.query_params.get("keep")))


@router.get("/task_manager/task_status/{task_id:path}", response_model=TaskStatus, responses=errors(),
            openapi_extra=KEEP_PARAM)
async def task_status(request: Request, task_id: str) -> Response:
    """A task's status; reading a finished root node task unregisters it (ScyllaDB) unless ``keep=true``."""
    req = _status_request(request, task_id)
    msg = await pool_of(request).call_for_task(req.task_id, "GetTaskStatus", req)
    return JsonResponse(status_pb_to_dict(msg))


@router.get("/task_manager/task_status_recursive/{task_id:path}", response_model=list[TaskStatus],
            responses=errors(), openapi_extra=KEEP_PARAM)
async def task_status_recursive(request: Request, task_id: str) -> Response:
    """The task and its descendants in BFS order, root first; unregisters a finished root unless ``keep=true``."""
    req = _status_request(request, task_id)
    resp = await pool_of(request).call_for_task(req.task_id, "GetTaskStatusRecursive", req)
    return JsonResponse([status_pb_to_dict(s) for s in resp.statuses])


@router.post("/task_manager/abort_task/{task_id:path}", response_model=None, responses=errors(403))
async def abort_task(request: Request, task_id: str) -> Response:
    """Cooperative abort of the task and all its descendants; 403 when it is not abortable."""
    tid = check_id(task_id)
    await pool_of(request).call_for_task(tid, "AbortTask", pb.TaskIdRequest(task_id=tid))
    return null_response()


@router.get("/task_manager/wait_task/{task_id:path}", response_model=TaskStatus, responses=errors(408))
async def wait_task(
    request: Request, task_id: str,
    timeout_s: Annotated[str | None, Query(alias="timeout", description="seconds (non-negative number)")] = None,
) -> Response:
    """Blocks until the task finishes (408 after ``timeout`` seconds); never unregisters it."""
    tid = check_id(task_id)
    seconds = parse_timeout(timeout_s)
    req = pb.WaitTaskRequest(task_id=tid)
    if seconds is not None:
        req.timeout = seconds
    deadline = None if seconds is None else seconds + WAIT_SLACK_S
    # A client that goes away cancels the node's wait at once: abandoned waits must not pile up.
    msg = await unless_disconnected(request, pool_of(request).call_for_task(tid, "WaitTask", req, deadline=deadline))
    return JsonResponse(status_pb_to_dict(msg))


async def _get_ttl(request: Request, kind: pb.TtlKind) -> Response:
    resp = await pool_of(request).call("GetTtl", pb.GetTtlRequest(kind=kind))
    return JsonResponse(resp.ttl)


async def _set_ttl(request: Request, kind: pb.TtlKind, name: str, value: str | None) -> Response:
    ttl = parse_uint(name, value)
    resp = await pool_of(request).call("SetTtl", pb.SetTtlRequest(kind=kind, ttl=ttl))
    return JsonResponse(resp.previous)


TtlQ = Annotated[str | None, Query(description="seconds (non-negative integer)")]


@router.get("/task_manager/ttl", response_model=int, responses=errors())
async def get_ttl(request: Request) -> Response:
    """task_ttl of the first reachable node, in seconds."""
    return await _get_ttl(request, pb.TTL_KIND_TASK)


@router.post("/task_manager/ttl", response_model=int, responses=errors())
async def set_ttl(request: Request, ttl: TtlQ = None) -> Response:
    """Sets task_ttl; answers the previous value."""
    return await _set_ttl(request, pb.TTL_KIND_TASK, "ttl", ttl)


@router.get("/task_manager/user_ttl", response_model=int, responses=errors())
async def get_user_ttl(request: Request) -> Response:
    """user_task_ttl of the first reachable node, in seconds."""
    return await _get_ttl(request, pb.TTL_KIND_USER)


@router.post("/task_manager/user_ttl", response_model=int, responses=errors())
async def set_user_ttl(request: Request, user_ttl: TtlQ = None) -> Response:
    """Sets user_task_ttl; answers the previous value."""
    return await _set_ttl(request, pb.TTL_KIND_USER, "user_ttl", user_ttl)


@router.post("/task_manager/drain/{module:path}", response_model=None, responses=errors())
async def drain(request: Request, module: str) -> Response:
    """Unregisters every finished task of the module (running ones stay); 400 for an unknown module."""
    await pool_of(request).call("Drain", pb.DrainRequest(module=module))
    return null_response()


# ---------------------------------------------------------------- /task_manager_test


async def _test_call(request: Request, method: str, req: Any, task_id: str = "") -> Any:
    """A TestApi call; a node without --enable-test-api does not serve the service at all (404)."""
    pool = pool_of(request)
    try:
        if task_id:
            return await pool.call_for_task(task_id, method, req, service="test")
        if method == "CreateTestTask":
            return await pool.start(method, req, service="test")
        return await pool.call(method, req, service="test")
    except TestApiDisabled:  # the node does not serve the service at all: say why, not "Method not found!"
        raise TestApiDisabled() from None


@test_router.post("/task_manager_test/test_module", response_model=None, responses=errors(404))
async def register_test_module(request: Request) -> Response:
    """Registers module ``test`` (on the first reachable node)."""
    await _test_call(request, "RegisterTestModule", pb.Empty())
    return null_response()


@test_router.delete("/task_manager_test/test_module", response_model=None, responses=errors(404))
async def unregister_test_module(request: Request) -> Response:
    """Unregisters module ``test`` with all its tasks."""
    await _test_call(request, "UnregisterTestModule", pb.Empty())
    return null_response()


@test_router.post("/task_manager_test/test_task", response_model=str, responses=errors(404))
async def create_test_task(
    request: Request, task_id: Annotated[str, Query()] = "", shard: Annotated[str | None, Query()] = None,
    parent_id: Annotated[str, Query()] = "", keyspace: Annotated[str, Query()] = "",
    table: Annotated[str, Query()] = "", entity: Annotated[str, Query()] = "", user_task: BoolQ = None,
) -> Response:
    """A running, non-abortable test task; with parent_id a child (on the parent's node). Answers its id."""
    if task_id:
        check_id(task_id)
    if parent_id:
        check_id(parent_id)
    shard_n = parse_shard(shard)
    if shard_n > MAX_SHARD:
        raise bad_request(f"shard must be between 0 and {MAX_SHARD}")
    req = pb.CreateTestTaskRequest(
        task_id=task_id, shard=shard_n, parent_id=parent_id, keyspace=keyspace,
        table=table, entity=entity, user_task=parse_bool("user_task", user_task),
    )
    resp = await _test_call(request, "CreateTestTask", req, parent_id)
    if parent_id:
        pool_of(request).same_owner(resp.task_id, parent_id)
    return JsonResponse(resp.task_id)


@test_router.delete("/task_manager_test/test_task", response_model=None, responses=errors(404))
async def unregister_test_task(request: Request, task_id: Annotated[str | None, Query()] = None) -> Response:
    """Unregisters a test task (a child stays visible through its parent)."""
    if not task_id:
        raise bad_request("missing parameter task_id")
    tid = check_id(task_id)
    await _test_call(request, "UnregisterTestTask", pb.TaskIdRequest(task_id=tid), tid)
    return null_response()


@test_router.post("/task_manager_test/finish_test_task/{task_id:path}", response_model=None, responses=errors(404))
async def finish_test_task(request: Request, task_id: str, error: Annotated[str, Query()] = "") -> Response:
    """Finishes a test task: done, or failed with ``error``."""
    tid = check_id(task_id)
    await _test_call(request, "FinishTestTask", pb.FinishTestTaskRequest(task_id=tid, error=error), tid)
    return null_response()
