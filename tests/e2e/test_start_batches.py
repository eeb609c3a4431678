"""``StartTasks``: several starts in one call, each answered as ``StartTask`` answers it, and the client
library's batching of concurrent starts into such calls (through a proxy that counts the calls)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import grpc
import pytest

from taskward import AsyncClient, InvalidArgument
from taskward.pb.taskward.v1 import tasks_pb2 as pb
from tests.conftest import NODE_ARGS
from tests.support.grpc_proxy import CountingProxy
from tests.support.procs import TIMEOUT_MULT, NodeProc

T = 30 * TIMEOUT_MULT


def sleep(duration: float = 0, **kw: str) -> pb.StartTaskRequest:
    return pb.StartTaskRequest(module="builtin", type="sleep", args_json=json.dumps({"duration": duration,
                                                                                       "steps": 1}), **kw)


def listed(node: NodeProc) -> set[str]:
    return {t.task_id for t in node.stub().ListTasks(pb.ListTasksRequest(module="builtin"), timeout=T).tasks}


def test_each_start_of_a_call_is_answered_as_start_task_answers_it(node: NodeProc) -> None:
    stub = node.stub()
    bad = [
        pb.StartTaskRequest(module="builtin", type="nope"),
        pb.StartTaskRequest(module="builtin", type="sleep", args_json='{"duration": -1}'),
        pb.StartTaskRequest(module="builtin", type="sleep", args_json="[1]"),
        sleep(task_id="not-a-uuid"),
    ]
    # What each bad start gets alone; none of them starts anything.
    alone = []
    for req in bad:
        with pytest.raises(grpc.RpcError) as err:
            stub.StartTask(req, timeout=T)
        alone.append((err.value.code().value[0], err.value.details()))
    before = listed(node)
    starts = [sleep(), bad[0], sleep(idempotency_key="k1"), bad[1], bad[2], sleep(idempotency_key="k1"), bad[3]]
    resp = stub.StartTasks(pb.StartTasksRequest(starts=starts), timeout=T)

    answers = [(r.task_id, r.code, r.message) for r in resp.results]
    assert [a[1:] for i, a in enumerate(answers) if i in (1, 3, 4, 6)] == alone
    assert answers[1][1:] == (grpc.StatusCode.INVALID_ARGUMENT.value[0], "task type builtin:nope not found")
    assert all(not a[0] for i, a in enumerate(answers) if i in (1, 3, 4, 6))  # no id with an error
    first, keyed, again = answers[0][0], answers[2][0], answers[5][0]
    assert first and keyed and keyed == again and answers[0][1:] == answers[2][1:] == (0, "")
    assert listed(node) - before == {first, keyed}  # the good starts, once each; nothing of the bad ones
    for tid in (first, keyed):
        done = stub.WaitTask(pb.WaitTaskRequest(task_id=tid, timeout=10), timeout=T)
        assert done.stats.state == "done"
    assert stub.StartTasks(pb.StartTasksRequest(), timeout=T).results == []


def test_more_than_a_thousand_starts_are_refused_whole(node: NodeProc) -> None:
    stub = node.stub()
    before = listed(node)
    with pytest.raises(grpc.RpcError) as err:
        stub.StartTasks(pb.StartTasksRequest(starts=[sleep()] * 1001), timeout=T)
    assert (err.value.code(), err.value.details()) == (grpc.StatusCode.INVALID_ARGUMENT,
                                                      "at most 1000 starts in one call, got 1001")
    assert listed(node) == before


def test_the_client_carries_concurrent_starts_in_shared_calls(tmp_path: Path) -> None:
    node = NodeProc(tmp_path / "n1", extra=[*NODE_ARGS, "--retention-max-per-module", "1000"]).start()
    proxy = CountingProxy(node.address).start()

    async def go() -> tuple[list[str], str]:
        async with AsyncClient(proxy.address, timeout=T) as client:
            lone = (await client.start("builtin", "sleep", duration=0, steps=1)).id  # alone: one StartTask
            assert (proxy.count("StartTask"), proxy.count("StartTasks")) == (1, 0)
            handles = await asyncio.gather(*(client.start("builtin", "sleep", duration=0, steps=1)
                                             for _ in range(200)))
            with pytest.raises(InvalidArgument) as bad:  # an error is its start's alone, amid the others
                await asyncio.gather(*(client.start("builtin", "sleep", duration=d, steps=1) for d in (0, -1, 0)))
            assert bad.value.message == "duration must be between 0 and 604800 seconds"
            for h in handles:
                assert (await h.wait(timeout=T)).state == "done"
            return [h.id for h in handles], lone

    try:
        ids, lone = asyncio.run(go())
        calls = proxy.count("StartTask") + proxy.count("StartTasks")
        assert len(set(ids)) == 200 and lone not in ids
        assert proxy.count("StartTasks") >= 1 and calls < 1 + 200 // 4, (
            proxy.count("StartTask"), proxy.count("StartTasks"))
        assert set(ids) | {lone} <= listed(node)
    finally:
        proxy.stop()
        node.stop()
