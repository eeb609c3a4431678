"""Node-to-node calls carry the cluster's bearer token: a cluster start on an auth-enabled node
only completes if the leader's calls to the node (here: itself, over gRPC) are authenticated."""

from __future__ import annotations

import json
from pathlib import Path

import grpc
import pytest

from taskward.pb.taskward.v1 import tasks_pb2 as pb
from tests.support.procs import NodeProc


def test_leader_calls_to_nodes_carry_the_token(tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("cluster-secret\n")
    n = NodeProc(tmp_path / "n1", extra=["--token-file", str(token_file)]).start()
    try:
        stub = n.stub()
        md = (("authorization", "Bearer cluster-secret"),)
        req = pb.StartTaskRequest(module="builtin", type="sleep", args_json=json.dumps({"duration": 0.2}), cluster=True)
        with pytest.raises(grpc.RpcError) as err:
            stub.StartTask(req)
        assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
        tid = stub.StartTask(req, metadata=md).task_id
        st = stub.WaitTask(pb.WaitTaskRequest(task_id=tid, timeout=15), metadata=md)
        assert (st.stats.kind, st.stats.state, st.error) == ("cluster", "done", "")
        assert [c.node for c in st.children_ids] == ["n1"]
        assert "UNAUTHENTICATED" not in n.log()
    finally:
        assert n.stop() == 0
