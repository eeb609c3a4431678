"""Cluster-wide cron over REST: ``/cron`` (and AeorDB's ``/.config/cron.json``, the same document).

A thin adapter over the ``taskward.v1.Cron`` gRPC service. The document is AeorDB's cron.json,
``{"schedules": [...]}``, each entry with AeorDB's fields (``id``, ``task_type``, ``schedule``, ``args``,
``enabled``) and taskward's (``module``, ``timezone``, ``cluster``, ``concurrency``, ``misfire_grace_s``).
What a GET adds (``next_fire_time``, ``last_*``, ``history``) is accepted back and ignored, so a document
read can be written again as it is.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from starlette.responses import Response

from taskward.api.rest.common import JsonResponse, bad_request, json_body, json_object_body
from taskward.api.rest.models import errors
from taskward.api.rest.scylla_routes import LeanRoute, null_response, pool_of
from taskward.convert import schedule_json_to_pb, schedule_pb_to_dict
from taskward.pb.taskward.v1 import cron_pb2 as pb

router = APIRouter(tags=["cron"], route_class=LeanRoute)

def _document(resp: pb.ScheduleList) -> Response:
    return JsonResponse({"schedules": [schedule_pb_to_dict(s) for s in resp.schedules]})


async def get_document(request: Request) -> Response:
    """Every schedule, with its next fire time, last slot and task, and recent history."""
    return _document(await pool_of(request).call("ListSchedules", pb.ListSchedulesRequest(), service="cron"))


async def put_document(request: Request) -> Response:
    """Replaces every schedule, atomically: one invalid entry rejects the document and changes nothing."""
    body: Any = await json_body(request, what="the cron document", envelope=3)  # {schedules: [{args: ...}]}
    if not isinstance(body, dict) or set(body) != {"schedules"} or not isinstance(body["schedules"], list):
        raise bad_request('the request body must be {"schedules": [...]}')
    req = pb.PutSchedulesRequest(schedules=[schedule_json_to_pb(i, e) for i, e in enumerate(body["schedules"])])
    return _document(await pool_of(request).call("PutSchedules", req, service="cron"))


for _path in ("/cron", "/.config/cron.json"):
    router.add_api_route(_path, get_document, methods=["GET"], responses=errors(), response_model=None,
                         summary="The cron document" + (" (AeorDB's path)" if _path != "/cron" else ""))
    router.add_api_route(_path, put_document, methods=["PUT"], responses=errors(413), response_model=None,
                         summary="Replace the cron document" + (" (AeorDB's path)" if _path != "/cron" else ""))


@router.get("/cron/{schedule_id}", response_model=None, responses=errors())
async def get_schedule(request: Request, schedule_id: str) -> Response:
    resp = await pool_of(request).call("GetSchedule", pb.ScheduleIdRequest(id=schedule_id), service="cron")
    return JsonResponse(schedule_pb_to_dict(resp))


@router.put("/cron/{schedule_id}", response_model=None, responses=errors(413))
async def put_schedule(request: Request, schedule_id: str) -> Response:
    """Creates or replaces one schedule (the body is one document entry; its id may be left out)."""
    entry = schedule_json_to_pb(0, await json_object_body(request, "schedule fields", envelope=1), path_id=schedule_id)
    resp = await pool_of(request).call("PutSchedule", entry, service="cron")
    return JsonResponse(schedule_pb_to_dict(resp))


@router.delete("/cron/{schedule_id}", response_model=None, responses=errors())
async def delete_schedule(request: Request, schedule_id: str) -> Response:
    await pool_of(request).call("DeleteSchedule", pb.ScheduleIdRequest(id=schedule_id), service="cron")
    return null_response()


async def _set_enabled(request: Request, schedule_id: str, enabled: bool) -> Response:
    req = pb.SetScheduleEnabledRequest(id=schedule_id, enabled=enabled)
    return JsonResponse(schedule_pb_to_dict(await pool_of(request).call("SetScheduleEnabled", req, service="cron")))


@router.post("/cron/{schedule_id}/enable", response_model=None, responses=errors())
async def enable_schedule(request: Request, schedule_id: str) -> Response:
    """Enables a schedule: its slots from now on fire (the ones it missed while disabled do not)."""
    return await _set_enabled(request, schedule_id, True)


@router.post("/cron/{schedule_id}/disable", response_model=None, responses=errors())
async def disable_schedule(request: Request, schedule_id: str) -> Response:
    return await _set_enabled(request, schedule_id, False)


@router.post("/cron/{schedule_id}/run-now", response_model=None, responses=errors(409))
async def run_now(request: Request, schedule_id: str) -> Response:
    """Fires the schedule's task now (its concurrency policy applies); answers the task id and its node."""
    resp = await pool_of(request).call("RunScheduleNow", pb.ScheduleIdRequest(id=schedule_id), service="cron")
    return JsonResponse({"task_id": resp.task_id, "node": resp.node or None})
