"""AeorDB's task API, for users coming from it: ``/admin/tasks`` as a thin adapter over the same gRPC
service layer as every other surface (and ``/.config/cron.json``, served with ``/cron``).

AeorDB's words: ``pending`` (created), ``running``, ``completed`` (done), ``failed``, ``cancelled``
(failed by an abort). AeorDB names a task type without its module: the name must then belong to one
module only, else 400 naming the candidates.
"""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
from fastapi import APIRouter, Request
from starlette.responses import Response

from taskward.api.rest.common import JsonResponse, bad_request, check_id, json_object_body
from taskward.api.rest.models import errors
from taskward.api.rest.scylla_routes import LeanRoute, pool_of
from taskward.pb.taskward.v1 import tasks_pb2 as pb

router = APIRouter(tags=["aeordb"], route_class=LeanRoute)

_STATUS = {"created": "pending", "running": "running", "done": "completed", "failed": "failed"}


def aeordb_task(st: pb.TaskStatus) -> dict[str, Any]:
    """One task in AeorDB's shape; ``progress`` while it runs."""
    status = "cancelled" if st.aborted else _STATUS.get(st.stats.state, st.stats.state)
    out: dict[str, Any] = {
        "id": st.stats.task_id, "task_type": st.stats.type, "status": status,
        "args": orjson.loads(st.args_json or "{}"),
        "created_at": st.created_at.seconds * 1000 + st.created_at.nanos // 1_000_000,
    }
    if st.stats.state == "running":
        out["progress"] = {
            "task_id": st.stats.task_id, "task_type": st.stats.type, "progress": st.progress_fraction,
            "eta_ms": st.eta_ms if st.HasField("eta_ms") else None, "indexed_count": int(st.progress_completed),
            "total_count": int(st.progress_total), "message": st.progress_message or None,
        }
    return out


@router.get("/admin/tasks", response_model=None, responses=errors())
async def list_tasks(request: Request) -> Response:
    """Every registered root task of the first reachable node (and the cluster's tasks), oldest first."""
    pool = pool_of(request)
    node, modules = await pool.first("ListModules", pb.ListModulesRequest())
    listed = await asyncio.gather(*(pool.invoke(node, "ListTasks", pb.ListTasksRequest(module=m), "tasks",
                                                pool.call_timeout) for m in modules.modules))
    ids = [t.task_id for resp in listed for t in resp.tasks]
    statuses = await asyncio.gather(*(pool.read_status(node, pb.TaskIdRequest(task_id=i, keep=True)) for i in ids),
                                    return_exceptions=True)
    tasks = [aeordb_task(st) for st in statuses if isinstance(st, pb.TaskStatus)]  # gone meanwhile: left out
    tasks.sort(key=lambda t: (t["created_at"], t["id"]))
    return JsonResponse({"tasks": tasks})


@router.post("/admin/tasks/{task_type}", response_model=None, responses=errors(413))
async def start_task(request: Request, task_type: str) -> Response:
    """Starts a task of the named type with the JSON body as its arguments; answers ``{"id": ...}``."""
    args = await json_object_body(request, "task arguments")
    pool = pool_of(request)
    types = await pool.call("ListTaskTypes", pb.ListTaskTypesRequest())
    modules = sorted(name.rpartition(":")[0] for name in (t.name for t in types.types)
                     if name.rpartition(":")[2] == task_type)
    if not modules:
        raise bad_request(f"task type {task_type!r} not found in any module")
    if len(modules) > 1:
        raise bad_request(f"task type {task_type!r} is in several modules ({', '.join(modules)}): "
                          "use POST /tasks/{module}/{type}")
    req = pb.StartTaskRequest(module=modules[0], type=task_type, args_json=orjson.dumps(args).decode())
    return JsonResponse({"id": await pool.start_task(req)})


@router.post("/admin/tasks/{task_id}/cancel", response_model=None, responses=errors(403))
async def cancel_task(request: Request, task_id: str) -> Response:
    """Cooperative cancel (AeorDB's word for abort): the task stops between batches."""
    await pool_of(request).call_for_task(check_id(task_id), "AbortTask", pb.TaskIdRequest(task_id=task_id))
    return JsonResponse({"id": task_id})
