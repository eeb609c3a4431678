"""The ``taskward.v1.Cron`` servicer: a thin adapter over ``ClusterView.cron``."""

from __future__ import annotations

from typing import Any

from taskward import convert
from taskward.api.grpc.servicers import maps_errors
from taskward.cluster_view import ClusterView
from taskward.pb.taskward.v1 import cron_pb2 as pb
from taskward.pb.taskward.v1 import cron_pb2_grpc as pb_grpc


class CronServicer(pb_grpc.CronServicer):
    def __init__(self, cluster: ClusterView) -> None:
        self._cron = cluster.cron

    @maps_errors
    async def ListSchedules(self, request: pb.ListSchedulesRequest, context: Any) -> pb.ScheduleList:
        return pb.ScheduleList(schedules=[convert.schedule_to_pb(v) for v in await self._cron.all()])

    @maps_errors
    async def GetSchedule(self, request: pb.ScheduleIdRequest, context: Any) -> pb.ScheduleStatus:
        return convert.schedule_to_pb(await self._cron.get(request.id))

    @maps_errors
    async def PutSchedules(self, request: pb.PutSchedulesRequest, context: Any) -> pb.ScheduleList:
        views = await self._cron.put_document([convert.schedule_input_from_pb(s) for s in request.schedules])
        return pb.ScheduleList(schedules=[convert.schedule_to_pb(v) for v in views])

    @maps_errors
    async def PutSchedule(self, request: pb.CronSchedule, context: Any) -> pb.ScheduleStatus:
        return convert.schedule_to_pb(await self._cron.put(convert.schedule_input_from_pb(request)))

    @maps_errors
    async def DeleteSchedule(self, request: pb.ScheduleIdRequest, context: Any) -> pb.DeleteScheduleResponse:
        await self._cron.delete(request.id)
        return pb.DeleteScheduleResponse()

    @maps_errors
    async def SetScheduleEnabled(self, request: pb.SetScheduleEnabledRequest, context: Any) -> pb.ScheduleStatus:
        return convert.schedule_to_pb(await self._cron.set_enabled(request.id, request.enabled))

    @maps_errors
    async def RunScheduleNow(self, request: pb.ScheduleIdRequest, context: Any) -> pb.RunNowResponse:
        task_id, node = await self._cron.run_now(request.id)
        return pb.RunNowResponse(task_id=task_id, node=node)
