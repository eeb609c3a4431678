"""``GetTaskStatuses``: several status reads in one call, each answered as ``GetTaskStatus`` answers it, and
the sharing of concurrent reads of one node's tasks by the client library and the REST gateway (through a
proxy that counts the calls)."""

from __future__ import annotations

import asyncio
import json
import uuid
from pathlib import Path

import grpc
import httpx
import pytest

from taskward import AsyncClient, TaskNotFound
from taskward.pb.taskward.v1 import tasks_pb2 as pb
from tests.conftest import NODE_ARGS
from tests.support.grpc_proxy import CountingProxy
from tests.support.procs import TIMEOUT_MULT, NodeProc
from tests.support.rest import GatewayProc

T = 30 * TIMEOUT_MULT
UNKNOWN = str(uuid.uuid4())
QUEUED_OR_RUNNING = {"created", "running"}  # 60 long sleeps, 16 executor slots


def start_sleep(stub: object, duration: float) -> str:
    req = pb.StartTaskRequest(module="builtin", type="sleep", args_json=json.dumps({"duration": duration, "steps": 1}))
    return str(stub.StartTask(req, timeout=T).task_id)  # type: ignore[attr-defined]


def finished(stub: object) -> str:
    tid = start_sleep(stub, 0)
    stub.WaitTask(pb.WaitTaskRequest(task_id=tid, timeout=10), timeout=T)  # type: ignore[attr-defined]
    return tid


def alone(stub: object, req: pb.TaskIdRequest) -> tuple[int, str]:
    with pytest.raises(grpc.RpcError) as err:
        stub.GetTaskStatus(req, timeout=T)  # type: ignore[attr-defined]
    return err.value.code().value[0], err.value.details()


def test_each_read_of_a_call_is_answered_as_get_task_status_answers_it(node: NodeProc) -> None:
    stub = node.stub()
    running = start_sleep(stub, 3600)
    gone, kept = finished(stub), finished(stub)
    bad = [pb.TaskIdRequest(task_id="not-a-uuid"), pb.TaskIdRequest(task_id=UNKNOWN)]
    errors = [alone(stub, r) for r in bad]
    assert errors == [(grpc.StatusCode.INVALID_ARGUMENT.value[0],
                       "malformed task id 'not-a-uuid': expected a canonical lowercase UUID"),
                      (grpc.StatusCode.NOT_FOUND.value[0], f"task with id {UNKNOWN} not found")]

    reads = [pb.TaskIdRequest(task_id=running), bad[0], pb.TaskIdRequest(task_id=gone), bad[1],
             pb.TaskIdRequest(task_id=kept, keep=True)]
    results = stub.GetTaskStatuses(pb.GetTaskStatusesRequest(reads=reads), timeout=T).results

    assert [(r.code, r.message) for r in results] == [(0, ""), errors[0], (0, ""), errors[1], (0, "")]
    assert not results[1].HasField("status") and not results[3].HasField("status")  # no status with an error
    assert [(r.status.stats.task_id, r.status.stats.state) for r in (results[0], results[2], results[4])] == [
        (running, "running"), (gone, "done"), (kept, "done")]
    assert results[4].status == stub.GetTaskStatus(pb.TaskIdRequest(task_id=kept, keep=True), timeout=T)
    # As GetTaskStatus: the finished root read without keep is unregistered by the read, the kept one stays.
    assert alone(stub, pb.TaskIdRequest(task_id=gone)) == (grpc.StatusCode.NOT_FOUND.value[0],
                                                           f"task with id {gone} not found")
    assert stub.GetTaskStatus(pb.TaskIdRequest(task_id=kept, keep=True), timeout=T).stats.state == "done"
    assert stub.GetTaskStatuses(pb.GetTaskStatusesRequest(), timeout=T).results == []


def test_more_than_a_thousand_reads_are_refused_whole(node: NodeProc) -> None:
    stub = node.stub()
    tid = finished(stub)
    with pytest.raises(grpc.RpcError) as err:
        stub.GetTaskStatuses(pb.GetTaskStatusesRequest(reads=[pb.TaskIdRequest(task_id=tid)] * 1001), timeout=T)
    assert (err.value.code(), err.value.details()) == (grpc.StatusCode.INVALID_ARGUMENT,
                                                      "at most 1000 reads in one call, got 1001")
    # Nothing was read: the finished root is still registered.
    assert stub.GetTaskStatus(pb.TaskIdRequest(task_id=tid, keep=True), timeout=T).stats.state == "done"


def test_concurrent_reads_share_calls_in_the_client_and_the_gateway(tmp_path: Path) -> None:
    node = NodeProc(tmp_path / "n1", extra=NODE_ARGS).start()
    proxy = CountingProxy(node.address).start()
    gateway = GatewayProc(tmp_path, [proxy.address]).start()
    stub = node.stub()
    ids = [start_sleep(stub, 3600) for _ in range(60)]

    async def client_reads() -> list[str]:
        async with AsyncClient(proxy.address, timeout=T) as client:
            lone = await client.task(ids[0]).status()  # alone: one GetTaskStatus
            assert lone.state == "running" and proxy.count("GetTaskStatus") == 1
            statuses = await asyncio.gather(*(client.task(i).status() for i in ids))
            with pytest.raises(TaskNotFound) as missing:  # an error is its read's alone, amid the others
                await asyncio.gather(*(client.task(i).status() for i in (ids[1], UNKNOWN, ids[2])))
            assert missing.value.message == f"task with id {UNKNOWN} not found"
            return [s.id for s in statuses if s.state in QUEUED_OR_RUNNING]

    async def rest_reads() -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=gateway.url, timeout=T) as http:
            return await asyncio.gather(*(http.get(f"/task_manager/task_status/{i}") for i in [*ids, UNKNOWN]))

    try:
        assert asyncio.run(client_reads()) == ids
        batched, unary = proxy.count("GetTaskStatuses"), proxy.count("GetTaskStatus")
        assert batched >= 1 and batched + unary < 1 + (len(ids) + 3) // 2, (batched, unary)

        answers = asyncio.run(rest_reads())
        assert [(a.status_code, a.json()["id"]) for a in answers[:-1]] == [(200, i) for i in ids]
        assert {a.json()["state"] for a in answers[:-1]} <= QUEUED_OR_RUNNING
        assert (answers[-1].status_code, answers[-1].json()) == (400, {
            "message": f"task with id {UNKNOWN} not found", "code": 400})
        assert proxy.count("GetTaskStatuses") > batched  # the gateway shared calls too
    finally:
        gateway.stop()
        proxy.stop()
        node.stop()
