"""A node that would join with bad credentials or bad state refuses to start, says why (exit 2), and
leaves no trace in the cluster: a wrong token, a corrupted data dir."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.cluster import Cluster, etcd_keys, unique_cluster_name
from tests.support.etcd import EtcdCluster
from tests.support.procs import NodeProc, poll, refused


@pytest.mark.needs_etcd
def test_a_node_with_the_wrong_token_is_refused_by_the_others(etcd: EtcdCluster, tmp_path: Path) -> None:
    name = unique_cluster_name("token")
    c = Cluster(tmp_path, etcd.endpoints, size=2, name=name)
    for n in c.nodes:
        n.env["TASKWARD_TOKEN"] = "the-cluster-secret"
    def member_ids() -> list[str]:
        return sorted(k.removeprefix("members/") for k in etcd_keys(etcd.endpoints, f"/taskward/{name}/")
                      if k.startswith("members/"))

    try:
        for n in c.nodes:
            n.start()
        poll(lambda: member_ids() == ["n1", "n2"] or None, 20, "both members registered")
        base = ["--etcd", etcd.endpoints, "--cluster", name]
        intruder = NodeProc(tmp_path / "x1", node_id="x1", extra=base, env={"TASKWARD_TOKEN": "another-secret"})
        log = refused(intruder, code=2)
        assert "error: the cluster refuses this node's token: member n" in log, log
        assert "answered UNAUTHENTICATED (use the cluster's --token-file)" in log
        assert "Traceback" not in log
        anonymous = NodeProc(tmp_path / "x2", node_id="x2", extra=base)
        assert "error: the cluster refuses this node's token" in refused(anonymous, code=2)
        assert member_ids() == ["n1", "n2"]  # the refused nodes never registered
    finally:
        c.stop()


@pytest.mark.parametrize("db", ["taskward.sqlite3", "cluster.sqlite3"])
def test_a_corrupted_data_dir_refuses_to_start(tmp_path: Path, db: str) -> None:
    n = NodeProc(tmp_path / "n1")
    n.start()
    assert n.stop() == 0
    path = n.data_dir / db
    garbage = b"this is not a database, it was overwritten by mistake" * 100
    path.write_bytes(garbage)
    for suffix in ("-wal", "-shm"):
        Path(str(path) + suffix).unlink(missing_ok=True)
    log = refused(n, code=2)
    assert f"error: {path} is not a usable " in log and "(file is not a database): restore it from a backup " \
        "or move the data dir away; the node does not start with it" in log, log
    assert "Traceback" not in log
    assert path.read_bytes() == garbage  # left as it was, for the operator to inspect
