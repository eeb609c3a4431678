from __future__ import annotations

import json

from taskward.pb.taskward.v1 import tasks_pb2 as pb
from tests.support.procs import NodeProc


def test_tree_task_runs_and_folds(node: NodeProc) -> None:
    stub = node.stub()
    stub.SetTtl(pb.SetTtlRequest(kind=pb.TTL_KIND_USER, ttl=100))
    tid = stub.StartTask(pb.StartTaskRequest(module="sample", type="tree",
                                             args_json=json.dumps({"fanout": 2, "depth": 2}))).task_id
    final = stub.WaitTask(pb.WaitTaskRequest(task_id=tid, timeout=10))
    assert final.stats.state == "done"
    statuses = stub.GetTaskStatusRecursive(pb.TaskIdRequest(task_id=tid)).statuses
    # root + 2 direct children kept; the 4 grandchildren succeeded and were dropped by folding
    assert [s.stats.state for s in statuses] == ["done"] * 3
    assert statuses[0].progress_total == 2
