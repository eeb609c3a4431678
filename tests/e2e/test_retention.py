"""Retention caps (count per module, maximum age) on top of ScyllaDB's TTLs."""

from __future__ import annotations

import time
from pathlib import Path

import grpc
import pytest

from taskward.pb.taskward.v1 import tasks_pb2 as pb
from tests.support.procs import TIMEOUT_MULT, NodeProc


def run_done(stub, n: int) -> list[str]:  # type: ignore[no-untyped-def]
    ids = []
    for _ in range(n):
        tid = stub.StartTask(pb.StartTaskRequest(module="builtin", type="sleep", args_json='{"duration": 0}')).task_id
        assert stub.WaitTask(pb.WaitTaskRequest(task_id=tid, timeout=10)).stats.state == "done"
        ids.append(tid)
    return ids


def listed(stub) -> list[str]:  # type: ignore[no-untyped-def]
    return [t.task_id for t in stub.ListTasks(pb.ListTasksRequest(module="builtin")).tasks]


def test_at_most_n_finished_tasks_per_module_newest_kept(tmp_path: Path) -> None:
    n = NodeProc(tmp_path / "n1", extra=["--retention-max-per-module", "3"]).start()
    try:
        stub = n.stub()
        ids = run_done(stub, 5)
        assert listed(stub) == ids[2:]
        with pytest.raises(grpc.RpcError) as err:
            stub.WaitTask(pb.WaitTaskRequest(task_id=ids[0], timeout=0))
        assert err.value.code() == grpc.StatusCode.NOT_FOUND
    finally:
        assert n.stop() == 0


def test_finished_tasks_older_than_max_age_are_pruned(tmp_path: Path) -> None:
    n = NodeProc(tmp_path / "n1", extra=["--retention-max-age", "1"]).start()
    try:
        stub = n.stub()
        ids = run_done(stub, 2)
        running = stub.StartTask(pb.StartTaskRequest(module="builtin", type="sleep",
                                                     args_json='{"duration": 30, "steps": 300}')).task_id
        assert set(ids) <= set(listed(stub))
        deadline = time.monotonic() + 5 * TIMEOUT_MULT
        while set(ids) & set(listed(stub)):
            assert time.monotonic() < deadline, "finished tasks outlived the maximum age"
            time.sleep(0.1)
        assert listed(stub) == [running]  # running tasks are never pruned
        stub.AbortTask(pb.TaskIdRequest(task_id=running))
    finally:
        assert n.stop() == 0
