"""The client's call sharing against real in-process gRPC servers that answer as other nodes may: one that
does not serve ``StartTasks`` or ``GetTaskStatuses`` (an older version), and one that answers some starts
``UNAVAILABLE``."""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc

from taskward import AsyncClient
from taskward.pb.taskward.v1 import tasks_pb2 as pb

SERVICE = "taskward.v1.TaskManager"


class Node:
    """A grpc.aio server with StartTask (a fresh id each) and, when given, a StartTasks behaviour."""

    def __init__(self, start_tasks: Callable[[pb.StartTasksRequest], pb.StartTasksResponse] | None) -> None:
        self.calls: Counter[str] = Counter()
        self.started: list[str] = []
        self._start_tasks = start_tasks

    def _start(self, request: pb.StartTaskRequest) -> str:
        self.started.append(request.entity)
        return str(uuid.uuid4())

    async def start_task(self, request: pb.StartTaskRequest, context: Any) -> pb.StartTaskResponse:
        self.calls["StartTask"] += 1
        await asyncio.sleep(0.01)  # long enough for concurrent starts to queue behind it
        return pb.StartTaskResponse(task_id=self._start(request))

    async def start_tasks(self, request: pb.StartTasksRequest, context: Any) -> pb.StartTasksResponse:
        self.calls["StartTasks"] += 1
        assert self._start_tasks is not None
        return self._start_tasks(request)

    async def status(self, request: pb.TaskIdRequest, context: Any) -> pb.TaskStatus:
        self.calls["GetTaskStatus"] += 1
        await asyncio.sleep(0.01)
        return pb.TaskStatus(stats=pb.TaskStats(task_id=request.task_id, state="running"))

    def handlers(self) -> grpc.GenericRpcHandler:
        methods = {"StartTask": grpc.unary_unary_rpc_method_handler(
            self.start_task, request_deserializer=pb.StartTaskRequest.FromString,
            response_serializer=pb.StartTaskResponse.SerializeToString),
            "GetTaskStatus": grpc.unary_unary_rpc_method_handler(
            self.status, request_deserializer=pb.TaskIdRequest.FromString,
            response_serializer=pb.TaskStatus.SerializeToString)}
        if self._start_tasks is not None:
            methods["StartTasks"] = grpc.unary_unary_rpc_method_handler(
                self.start_tasks, request_deserializer=pb.StartTasksRequest.FromString,
                response_serializer=pb.StartTasksResponse.SerializeToString)
        return grpc.method_handlers_generic_handler(SERVICE, methods)


async def served(node: Node) -> AsyncIterator[str]:
    server = grpc.aio.server()
    server.add_generic_rpc_handlers((node.handlers(),))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        yield f"127.0.0.1:{port}"
    finally:
        await server.stop(None)


async def start_many(address: str, n: int) -> list[str]:
    async with AsyncClient(address, timeout=10) as client:
        handles = await asyncio.gather(*(client.start("builtin", "sleep", entity=f"e{i}", duration=0)
                                         for i in range(n)))
    return [h.id for h in handles]


async def test_a_node_without_start_tasks_gets_one_start_task_per_start() -> None:
    node = Node(None)
    async for address in served(node):
        ids = await start_many(address, 40)
        again = await start_many(address, 10)
    assert len(set(ids) | set(again)) == 50 and sorted(node.started) == sorted(f"e{i}" for i in [*range(40),
                                                                                                 *range(10)])
    # StartTasks is refused by the server itself (no handler); each client then starts one call per start.
    assert node.calls == {"StartTask": 50}


async def test_a_node_without_get_task_statuses_gets_one_get_task_status_per_read() -> None:
    node = Node(None)
    ids = [str(uuid.uuid4()) for _ in range(40)]
    async for address in served(node):
        async with AsyncClient(address, timeout=10) as client:
            statuses = await asyncio.gather(*(client.task(i).status() for i in ids))
            again = await asyncio.gather(*(client.task(i).status() for i in ids[:10]))
    assert [s.id for s in statuses] == ids and [s.id for s in again] == ids[:10]
    assert node.calls == {"GetTaskStatus": 50}


async def test_a_start_answered_unavailable_goes_again_on_its_own() -> None:
    def half_unavailable(request: pb.StartTasksRequest) -> pb.StartTasksResponse:
        results = []
        for i, start in enumerate(request.starts):
            if i % 2:
                results.append(pb.StartResult(code=grpc.StatusCode.UNAVAILABLE.value[0], message="store busy"))
            else:
                node.started.append(start.entity)
                results.append(pb.StartResult(task_id=str(uuid.uuid4())))
        return pb.StartTasksResponse(results=results)

    node = Node(half_unavailable)
    async for address in served(node):
        ids = await start_many(address, 40)
    assert len(set(ids)) == 40
    assert sorted(node.started) == sorted(f"e{i}" for i in range(40))  # each started once, somewhere
    assert node.calls["StartTasks"] >= 1 and node.calls["StartTask"] >= 1


async def test_an_error_of_the_whole_call_is_every_start_s_error() -> None:
    def refused(request: pb.StartTasksRequest) -> pb.StartTasksResponse:
        raise AssertionError("not reached")

    node = Node(refused)
    async for address in served(node):
        async with AsyncClient(address, timeout=10) as client:
            outcomes = await asyncio.gather(*(client.start("builtin", "sleep", duration=0) for _ in range(20)),
                                            return_exceptions=True)
    errors = [o for o in outcomes if isinstance(o, Exception)]
    assert node.calls["StartTasks"] >= 1 and len(errors) == 20 - node.calls["StartTask"]
    assert {type(e).__name__ for e in errors} == {"TaskwardError"}
    assert {getattr(e, "code", None) for e in errors} == {grpc.StatusCode.UNKNOWN}
