"""The cron side of ``ClusterView``: what the node's surfaces call to read and manage schedules.

Reads come from this node's replica (any node answers alike); a node task's last state is asked of
its node (bounded; ``unknown`` when it cannot say). Writes are validated and committed here
(``CronService``); run-now goes to the leader, which alone fires.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence

import grpc

from taskward.coordinator.cache import ClusterCache, ClusterSnapshot
from taskward.coordinator.cron.clock import Clock
from taskward.coordinator.cron.scheduler import Scheduler
from taskward.coordinator.cron.service import CronService
from taskward.coordinator.node_client import NodeClients
from taskward.cron import CronSchedule, CronState, Outcome, ScheduleInput, ScheduleView
from taskward.errors import CoordinatorUnavailable, RunSkipped, ScheduleNotFound, Unavailable, from_status

STATE_TIMEOUT_S = 1.0


class CronFront:
    def __init__(self, service: CronService, scheduler: Scheduler, cache: ClusterCache, clients: NodeClients,
                 clock: Clock, *, leader_address: Callable[[], tuple[str, str]], node_id: str) -> None:
        self._service = service
        self._scheduler = scheduler
        self._cache = cache
        self._clients = clients
        self._clock = clock
        self._leader_address = leader_address
        self._node_id = node_id

    def _writable(self) -> None:
        if self._cache.snapshot.stale:
            raise CoordinatorUnavailable("this node has lost the cluster store")

    async def all(self) -> list[ScheduleView]:
        snap = self._cache.snapshot
        schedules = sorted(snap.schedules.values(), key=lambda s: s.id)
        return list(await asyncio.gather(*(self._view(s, snap) for s in schedules)))

    async def get(self, schedule_id: str) -> ScheduleView:
        snap = self._cache.snapshot
        s = snap.schedules.get(schedule_id)
        if s is None:
            raise ScheduleNotFound(schedule_id)
        return await self._view(s, snap)

    async def put_document(self, inputs: Sequence[ScheduleInput]) -> list[ScheduleView]:
        self._writable()
        await self._service.put_document(inputs)
        self._scheduler.kick()
        return await self.all()

    async def put(self, s: ScheduleInput) -> ScheduleView:
        self._writable()
        saved = await self._service.put(s)
        self._scheduler.kick()
        return await self._view(saved, self._cache.snapshot)

    async def delete(self, schedule_id: str) -> None:
        self._writable()
        await self._service.delete(schedule_id)

    async def set_enabled(self, schedule_id: str, enabled: bool) -> ScheduleView:
        self._writable()
        saved = await self._service.set_enabled(schedule_id, enabled)
        self._scheduler.kick()
        return await self._view(saved, self._cache.snapshot)

    async def run_now(self, schedule_id: str) -> tuple[str, str]:
        """Fire now, on the leader; (task id, node id or empty for a cluster task)."""
        self._writable()
        s = self._service.get(schedule_id)
        leader, address = self._leader_address()
        if leader != self._node_id:
            try:
                return await self._clients.run_now(address, schedule_id, timeout_s=STATE_TIMEOUT_S * 10)
            except grpc.aio.AioRpcError as exc:
                if exc.code() == grpc.StatusCode.NOT_FOUND:
                    raise ScheduleNotFound(schedule_id) from None
                if (exc.details() or "").startswith(f"schedule {schedule_id} not fired: "):
                    raise from_status(exc.code(), exc.details() or "") from None  # the leader's decision
                raise CoordinatorUnavailable(f"the leader did not fire it ({exc.code().name}); retry") from None
        st = await self._scheduler.run_now(s)
        head = st.history[0]
        if head.outcome is Outcome.SKIPPED:
            raise RunSkipped(schedule_id, head.reason)
        if not head.task_id:
            raise Unavailable(f"schedule {schedule_id} not fired: {head.reason}")
        return head.task_id, head.node

    async def _view(self, s: CronSchedule, snap: ClusterSnapshot) -> ScheduleView:
        st = snap.cron_states.get(s.id) or CronState()
        next_time = s.next_slot(max(float(st.last_slot), self._clock.now())) if s.enabled else None
        return ScheduleView(schedule=s, state=st, next_fire_time=next_time,
                            last_task_state=await self._last_state(st, snap))

    async def _last_state(self, st: CronState, snap: ClusterSnapshot) -> str:
        if not st.last_task_id:
            return ""
        if st.last_cluster:
            t = snap.tasks.get(st.last_task_id)
            return t.state.value if t is not None else "unknown"
        if st.start_pending:
            return "created"
        member = snap.members.get(st.last_node)
        if member is None:
            return "unknown"
        try:
            view = await self._clients.status(member.address, st.last_task_id, timeout_s=STATE_TIMEOUT_S)
        except grpc.aio.AioRpcError:
            return "unknown"
        return view.record.state.value
