from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.cluster import Cluster, unique_cluster_name
from tests.support.etcd import EtcdCluster, etcd_available
from tests.support.procs import NodeProc

NODE_ARGS = ["--enable-test-api", "--tasks", "tests.support.sample_tasks"]


def _serve(n: NodeProc) -> Iterator[NodeProc]:
    n.start()
    try:
        yield n
    finally:
        code = n.stop()
        assert code == 0, f"node did not stop cleanly ({code}):\n{n.log()}"


@pytest.fixture
def node(tmp_path: Path) -> Iterator[NodeProc]:
    """A real node with the test API and the sample task types of ``tests.support.sample_tasks``."""
    yield from _serve(NodeProc(tmp_path / "n1", extra=NODE_ARGS))


@pytest.fixture(scope="module")
def shared_node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NodeProc]:
    """Like ``node`` but shared by a module's tests, for checks that only compare before/after."""
    yield from _serve(NodeProc(tmp_path_factory.mktemp("shared") / "n1", extra=NODE_ARGS))


NO_ETCD = "etcd is not on PATH (Debian: apt-get install etcd-server, or scripts/setup.sh); cluster tests need it"


@pytest.fixture(scope="session")
def etcd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EtcdCluster]:
    """A real 3-member etcd on loopback, shared by the session; tests keep apart by cluster name."""
    if not etcd_available():
        pytest.skip(NO_ETCD)
    cluster = EtcdCluster(tmp_path_factory.mktemp("etcd")).start()
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
def private_etcd(tmp_path: Path) -> Iterator[EtcdCluster]:
    """A 3-member etcd of the test's own, for tests that kill or pause its members."""
    if not etcd_available():
        pytest.skip(NO_ETCD)
    (tmp_path / "etcd").mkdir()
    cluster = EtcdCluster(tmp_path / "etcd").start()
    try:
        yield cluster
    finally:
        for m in cluster.members:
            if m.proc is not None and m.proc.poll() is None:
                m.resume()
        cluster.stop()


@pytest.fixture
def cluster3(etcd: EtcdCluster, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Cluster]:
    """Nodes n1..n3 on the shared etcd under a cluster name of their own (lease TTL 3 s, dead-node grace
    10 s), up once all three list three members and one leader; stopped at teardown."""
    c = Cluster(tmp_path, etcd.endpoints, name=unique_cluster_name(request.node.name))
    try:
        c.start()
        yield c
    finally:
        c.stop()
