"""Replicated records are input too: bad keys written straight into etcd under the cluster's prefix
(not UTF-8, undecodable, fields out of range, members without a lease or with an address that names
nothing) are skipped and named in the log; every node keeps serving (its replica reads as stale), a
later cluster start completes, a node restarts, and a bad member never receives a call. The cluster
path applies the node path's label, key and argument limits before anything is replicated.

Three real nodes on the session's real etcd; each test writes its bad keys and deletes them again.
"""

from __future__ import annotations

import contextlib
import json
import math
import socket
import threading
import uuid
from collections.abc import Iterator, Sequence

import grpc
import pytest
from aetcd import rpc

from taskward.pb.taskward.v1 import cluster_pb2 as cpb
from taskward.pb.taskward.v1 import tasks_pb2 as pb
from tests.support.cluster import Cluster, start_cluster_task, unique_cluster_name, wait_finished
from tests.support.etcd import EtcdCluster
from tests.support.procs import NodeProc, poll

pytestmark = pytest.mark.needs_etcd

NODES = ["n1", "n2", "n3"]


@pytest.fixture(scope="module")
def cluster(etcd: EtcdCluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    c = Cluster(tmp_path_factory.mktemp("replicated"), etcd.endpoints, name=unique_cluster_name("replicated-input"))
    try:
        c.start()
        yield c
    finally:
        codes = c.stop()
    assert set(codes.values()) == {0}, codes


class Listener:
    """A plain TCP socket on loopback that counts the connections it is offered (a node that calls the
    address it listens on would connect here)."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.sock.settimeout(0.2)
        self.address = f"127.0.0.1:{self.sock.getsockname()[1]}"
        self.connections = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while not self._stop.is_set():
            with contextlib.suppress(TimeoutError, OSError):
                conn, _ = self.sock.accept()
                self.connections += 1
                conn.close()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self.sock.close()


@pytest.fixture
def listener() -> Iterator[Listener]:
    lst = Listener()
    try:
        yield lst
    finally:
        lst.close()


def key(c: Cluster, suffix: bytes) -> bytes:
    return f"/taskward/{c.name}/".encode() + suffix


def grant(etcd: EtcdCluster, ttl: int) -> int:
    with etcd.channel() as ch:
        return int(rpc.rpc_pb2_grpc.LeaseStub(ch).LeaseGrant(rpc.LeaseGrantRequest(TTL=ttl), timeout=5).ID)


@contextlib.contextmanager
def written(etcd: EtcdCluster, c: Cluster, items: Sequence[tuple[bytes, bytes, int]]) -> Iterator[None]:
    """Put ``(key suffix, value, lease)`` straight into etcd; delete them again afterwards, and then every
    node's replica must read as live again (nothing of them lingers)."""
    with etcd.channel() as ch:
        kv = rpc.rpc_pb2_grpc.KVStub(ch)
        for suffix, value, lease in items:
            kv.Put(rpc.PutRequest(key=key(c, suffix), value=value, lease=lease), timeout=5)
        try:
            yield
        finally:
            for suffix, _, _ in items:
                kv.DeleteRange(rpc.DeleteRangeRequest(key=key(c, suffix)), timeout=5)
    for n in c.alive:
        poll(lambda n=n: not n.stub().ListNodes(pb.ListNodesRequest(), timeout=2).stale, 15,
             f"{n.node_id}'s replica to read as live once the bad keys are gone")


def members(n: NodeProc) -> pb.ListNodesResponse:
    return n.stub().ListNodes(pb.ListNodesRequest(), timeout=2)


def skipped_everywhere(c: Cluster, what: str) -> None:
    """Every node has seen the bad records (its replica reads as stale), and logged one of them by key."""
    for n in c.alive:
        poll(lambda n=n: members(n).stale, 15, f"{n.node_id}'s replica to read as stale")
        assert "skipping bad cluster record" in n.log() and what in n.log(), n.log()[-3000:]


def keeps_working(c: Cluster, *, restart: bool = True) -> None:
    """A cluster start on a follower completes on exactly the three real nodes; then every node lists it
    (so every replica has applied what was written before it), answers listings, and lists exactly the
    real members with one leader; a follower stops cleanly and starts again."""
    leader = next(m.id for m in members(c.nodes[0]).nodes if m.leader)
    follower = next(n for n in c.nodes if n.node_id != leader)
    tid = start_cluster_task(follower, duration=0.2, steps=2)
    final = wait_finished(c.nodes, tid, timeout=30)
    assert final.stats.state == "done", final.error
    assert sorted(ch.node for ch in final.children_ids) == NODES
    for n in c.alive:
        poll(lambda n=n: tid in {t.task_id for t in n.stub().ListTasks(pb.ListTasksRequest(module="builtin"),
                                                                       timeout=5).tasks},
             15, f"{n.node_id} to list {tid}")
        listed = members(n)
        assert sorted(m.id for m in listed.nodes) == NODES
        assert len([m for m in listed.nodes if m.leader]) == 1
    if restart:
        assert follower.stop() == 0, follower.log()
        follower.start()
        poll(lambda: sorted(m.id for m in members(follower).nodes) == NODES
             and any(m.leader for m in members(follower).nodes), 30, f"{follower.node_id} to rejoin")


def task_record(task_id: str, **fields: object) -> bytes:
    base: dict[str, object] = {"id": task_id, "module": "builtin", "type": "sleep", "args_json": '{"duration":1}',
                               "state": "running", "created_at": 1.7e9, "target_nodes": ["n1"]}
    return cpb.ClusterTaskRecord(**{**base, **fields}).SerializeToString()


def child(progress: float) -> cpb.ClusterChild:
    return cpb.ClusterChild(node="n1", task_id=str(uuid.uuid4()), state="running", progress_completed=progress,
                            progress_total=4.0)


def test_a_key_that_is_not_utf8_is_skipped(etcd: EtcdCluster, cluster: Cluster) -> None:
    with written(etcd, cluster, [(b"tasks/\xff\xfe-not-utf8", b"junk", 0)]):
        keeps_working(cluster)
        skipped_everywhere(cluster, "the key is not UTF-8")


def test_an_undecodable_record_is_skipped(etcd: EtcdCluster, cluster: Cluster) -> None:
    tid = str(uuid.uuid4())
    with written(etcd, cluster, [(f"tasks/{tid}".encode(), b"\xff\xff\xff\xff", 0)]):
        keeps_working(cluster, restart=False)
        skipped_everywhere(cluster, f"'tasks/{tid}': not a cluster task record")
        with pytest.raises(grpc.RpcError) as err:
            cluster.nodes[0].stub().GetTaskStatus(pb.TaskIdRequest(task_id=tid))
        assert err.value.code() == grpc.StatusCode.NOT_FOUND


def test_records_with_fields_out_of_range_are_skipped(etcd: EtcdCluster, cluster: Cluster) -> None:
    """Each of these once made ``ListTasks`` fail on every node, or would put a NaN on every surface."""
    bad = {str(uuid.uuid4()): fields for fields in (
        {"created_at": 1e300}, {"start_time": -1.0}, {"end_time": math.nan},
        {"children": [child(math.nan)]}, {"children": [child(-3.0)]}, {"args_json": '{"duration": NaN}'},
        {"entity": "e" * 2000},
    )}
    items = [(f"tasks/{tid}".encode(), task_record(tid, **fields), 0) for tid, fields in bad.items()]
    with written(etcd, cluster, items):
        keeps_working(cluster, restart=False)
        skipped_everywhere(cluster, "created_at 1e+300 is not a time")
        for n in cluster.alive:
            for tid in bad:
                assert f"'tasks/{tid}'" in n.log()
            listed = {t.task_id for t in n.stub().ListTasks(pb.ListTasksRequest(module="builtin"), timeout=5).tasks}
            assert not listed & set(bad)


def test_a_member_without_a_lease_never_receives_a_call(etcd: EtcdCluster, cluster: Cluster,
                                                        listener: Listener) -> None:
    """It once received ``StartTask`` and ``WatchEvents`` carrying the cluster token. It sorts first, so a
    node that restarts would ask it first whether the cluster accepts its token."""
    ghost = cpb.MemberRecord(id="a-ghost", address=listener.address, version="9.9.9", started_at=1.7e9,
                             instance="not-a-node").SerializeToString()
    with written(etcd, cluster, [(b"members/a-ghost", ghost, 0)]):
        keeps_working(cluster)
        skipped_everywhere(cluster, "'members/a-ghost': not bound to a lease")
    assert listener.connections == 0


def test_a_member_with_an_invalid_address_is_left_out(etcd: EtcdCluster, cluster: Cluster) -> None:
    lease = grant(etcd, 60)
    nowhere = cpb.MemberRecord(id="a-nowhere", address="no address here", version="9.9.9", started_at=1.7e9,
                               instance="not-a-node").SerializeToString()
    with written(etcd, cluster, [(b"members/a-nowhere", nowhere, lease)]):
        keeps_working(cluster, restart=False)
        skipped_everywhere(cluster, "address 'no address here' is not a HOST:PORT address")


@pytest.mark.parametrize(("fields", "message"), [
    ({"entity": "e" * 1_000_000}, "entity longer than 1024 characters"),
    ({"idempotency_key": "k" * 200_000}, "idempotency_key longer than 1024 characters"),
    ({"keyspace": "k" * 1025}, "keyspace longer than 1024 characters"),
    ({"args_json": json.dumps({"duration": 1, "steps": 1, "pad": "x" * 70_000})}, "args too large: "),
    ({"args_json": '{"duration": ' + "[" * 10_000 + "]" * 10_000 + "}"},
     "args nested 10001 levels deep: the limit is 64 levels of arrays and objects"),
    ({"args_json": '{"duration": Infinity}'},
     "args are not valid JSON: Infinity is not a JSON number (only finite numbers are accepted)"),
])
def test_the_cluster_path_applies_the_node_limits(cluster: Cluster, fields: dict[str, str], message: str) -> None:
    """On the leader and on a follower (which forwards to the leader): refused before anything is
    replicated (no task record, no idempotency record)."""
    assert cluster.etcd_endpoints is not None
    before = etcd_prefix_keys(cluster)
    for n in cluster.nodes[:2]:  # one of them is a follower
        req = pb.StartTaskRequest(module="builtin", type="sleep", cluster=True,
                                  **{"args_json": '{"duration": 1}', **fields})
        with pytest.raises(grpc.RpcError) as err:
            n.stub().StartTask(req, timeout=10)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert err.value.details().startswith(message), err.value.details()
    assert etcd_prefix_keys(cluster) == before


def etcd_prefix_keys(c: Cluster) -> set[bytes]:
    """Every key under the cluster's ``tasks/`` and ``idempotency/`` (raw bytes: nothing is decoded)."""
    hosts = [e.split("://", 1)[-1] for e in (c.etcd_endpoints or "").split(",")]
    found: set[bytes] = set()
    with grpc.insecure_channel("ipv4:" + ",".join(hosts)) as ch:
        for sub in (b"tasks/", b"idempotency/"):
            k = key(c, sub)
            resp = rpc.rpc_pb2_grpc.KVStub(ch).Range(
                rpc.RangeRequest(key=k, range_end=k[:-1] + bytes([k[-1] + 1]), keys_only=True), timeout=5)
            found |= {kv.key for kv in resp.kvs}
    return found



@pytest.mark.parametrize("value", [
    pytest.param(b"\xff\xfe not a leader record", id="junk"),
    pytest.param(cpb.LeaderRecord(node_id="n9", instance="gone").SerializeToString(), id="names-no-member"),
    pytest.param(cpb.LeaderRecord(node_id="n2", instance="gone").SerializeToString(), id="a-member-without-a-lease"),
])
def test_a_leader_key_no_live_member_holds_is_cleared(etcd: EtcdCluster, tmp_path_factory: pytest.TempPathFactory,
                                                      value: bytes) -> None:
    """A leader key without a lease never expires, and elections only create the key: left there (by hand,
    by a restore), it kept the cluster leaderless for good. Found unheld for a lease TTL, it is deleted
    (only if it still holds what was judged) and a leader is elected; cluster tasks then run."""
    c = Cluster(tmp_path_factory.mktemp("unheld"), etcd.endpoints, name=unique_cluster_name("unheld-leader"))
    with etcd.channel() as ch:
        rpc.rpc_pb2_grpc.KVStub(ch).Put(rpc.PutRequest(key=key(c, b"leader"), value=value), timeout=5)
    try:
        for n in c.nodes:
            n.start()
        poll(lambda: any("deleted a leader key that no live member holds" in n.log() for n in c.nodes), 30,
             "a node to clear the leader key")
        c.wait_formed(30)  # a leader elected: the one the key named (a member) was not leading with it
        keeps_working(c, restart=False)
    finally:
        codes = c.stop()
    assert set(codes.values()) == {0}, codes
