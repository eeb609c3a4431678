"""A middleware from outside the package, loaded with ``--tasks`` into a real node, sees every hook of
every run once, in order."""

from __future__ import annotations

import json
from pathlib import Path

from taskward.pb.taskward.v1 import tasks_pb2 as pb
from tests.support.hook_recorder import HOOK_LOG
from tests.support.procs import NodeProc


def test_a_tasks_module_middleware_sees_every_hook_once_in_order(tmp_path: Path) -> None:
    log = tmp_path / "hooks.log"
    node = NodeProc(tmp_path / "n1", extra=["--tasks", "tests.support.hook_recorder"], env={HOOK_LOG: str(log)})
    node.start()
    try:
        stub = node.stub()
        done = stub.StartTask(pb.StartTaskRequest(module="builtin", type="sleep",
                                                  args_json=json.dumps({"duration": 0.1, "steps": 2}))).task_id
        failed = stub.StartTask(pb.StartTaskRequest(module="builtin", type="fail",
                                                    args_json=json.dumps({"error": "nope"}))).task_id
        for tid in (done, failed):
            stub.WaitTask(pb.WaitTaskRequest(task_id=tid, timeout=20), timeout=25)
    finally:
        assert node.stop() == 0, node.log()
    lines = log.read_text().splitlines()
    assert [line for line in lines if done in line] == [
        f"before_run {done} running tx",
        *[f"on_progress {done} running tx"] * 3,  # 0/2, 1/2, 2/2
        f"on_completion {done} done tx", f"after_run {done} done tx",
    ]
    assert [line for line in lines if failed in line] == [
        f"before_run {failed} running tx", f"on_failure {failed} failed tx", f"after_run {failed} failed tx",
    ]
