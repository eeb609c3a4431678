"""etcd with TLS (client certificates required) and with user authentication, on real processes: the
node's --etcd-cacert/--etcd-cert/--etcd-key and --etcd-user flags work, a node without the right
credentials is refused at start with a clear message, and a node whose etcd forgot its token (etcd
restarted) logs in again by itself."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.certs import TlsFiles, make_certs
from tests.support.cluster import Cluster, start_cluster_task, unique_cluster_name, wait_task
from tests.support.etcd import EtcdCluster, etcd_available
from tests.support.procs import NodeProc, refused

pytestmark = pytest.mark.needs_etcd

PASSWORD = "s3cret-root"


@pytest.fixture
def tls(tmp_path: Path) -> TlsFiles:
    return make_certs(tmp_path / "pki")


@pytest.fixture
def etcd_tls(tmp_path: Path, tls: TlsFiles) -> Iterator[EtcdCluster]:
    if not etcd_available():
        pytest.skip("etcd is not on PATH")
    (tmp_path / "etcd").mkdir()
    e = EtcdCluster(tmp_path / "etcd", size=1, tls=tls).start()
    try:
        yield e
    finally:
        e.stop()


@pytest.fixture
def etcd_auth(tmp_path: Path) -> Iterator[EtcdCluster]:
    if not etcd_available():
        pytest.skip("etcd is not on PATH")
    (tmp_path / "etcd").mkdir()
    e = EtcdCluster(tmp_path / "etcd", size=1).start()
    e.enable_auth(PASSWORD)
    try:
        yield e
    finally:
        e.stop()


def run_one_cluster_task(c: Cluster) -> str:
    tid = start_cluster_task(c.nodes[-1], duration=0.2, steps=2)
    final = wait_task(c.nodes[-1], tid)  # the answering node has it at once; another may lag a moment
    assert (final.stats.state, len(final.children_ids)) == ("done", len(c.nodes))
    return tid


def test_tls_with_client_certificates(etcd_tls: EtcdCluster, tls: TlsFiles, tmp_path: Path) -> None:
    flags = ["--etcd-cacert", str(tls.ca), "--etcd-cert", str(tls.client_cert), "--etcd-key", str(tls.client_key)]
    c = Cluster(tmp_path / "nodes", etcd_tls.endpoints, size=2, name=unique_cluster_name("tls"), extra=flags)
    (tmp_path / "nodes").mkdir()
    try:
        c.start()
        tid = run_one_cluster_task(c)
    finally:
        c.stop()
    base = ["--etcd", etcd_tls.endpoints, "--cluster", c.name]
    no_client_cert = NodeProc(tmp_path / "x1", node_id="x1", extra=[*base, "--etcd-cacert", str(tls.ca)])
    assert "error: cluster store unavailable: etcd: UNAVAILABLE" in refused(no_client_cert)
    untrusted = NodeProc(tmp_path / "x2", node_id="x2", extra=base)  # https, but the test CA is not trusted
    assert "error: cluster store unavailable: etcd: UNAVAILABLE" in refused(untrusted)
    missing = NodeProc(tmp_path / "x3", node_id="x3", extra=[*base, "--etcd-cacert", str(tmp_path / "nope.crt")])
    assert "error: cannot read the etcd TLS files" in refused(missing, code=2)
    assert etcd_tls.keys(f"/taskward/{c.name}/") == [f"tasks/{tid}"]  # the refused nodes wrote nothing


def test_user_auth_and_login_again_after_etcd_restarts(etcd_auth: EtcdCluster, tmp_path: Path) -> None:
    name = unique_cluster_name("auth")
    (tmp_path / "nodes").mkdir()
    c = Cluster(tmp_path / "nodes", etcd_auth.endpoints, size=2, name=name, extra=["--etcd-user", "root"])
    for n in c.nodes:
        n.env["TASKWARD_ETCD_PASSWORD"] = PASSWORD
    try:
        c.start()
        run_one_cluster_task(c)
        member = etcd_auth.members[0]
        member.kill()  # simple tokens live in etcd's memory: after a restart every node's token is void
        member.start(new=False)
        etcd_auth.wait_healthy()
        c.wait_formed(30)
        run_one_cluster_task(c)
    finally:
        c.stop()
    base = ["--etcd", etcd_auth.endpoints, "--cluster", name]
    keys = etcd_auth.keys(f"/taskward/{name}/")
    wrong = NodeProc(tmp_path / "x1", node_id="x1", extra=[*base, "--etcd-user", "root"],
                     env={"TASKWARD_ETCD_PASSWORD": "wrong"})
    assert "error: cluster store unavailable: etcd authentication failed" in refused(wrong)
    anonymous = NodeProc(tmp_path / "x2", node_id="x2", extra=base)
    assert "error: cluster store unavailable: etcd: INVALID_ARGUMENT etcdserver: user name is empty" in \
        refused(anonymous)
    assert etcd_auth.keys(f"/taskward/{name}/") == keys  # the refused nodes wrote nothing
