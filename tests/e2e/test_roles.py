"""Roles, the audit log and the failed-auth limit on real processes: a node (gRPC, REST, RESP) and a gateway
with one tokens file (a token per role, and an admin given only by its SHA-256), exercised through the client
library, the CLI, httpx and the real ``redis-cli``."""

from __future__ import annotations

import hashlib
import json
import os
import stat
import subprocess
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest

from taskward import Client, PermissionDenied, TaskFailed, TaskNotFound, TaskwardError
from taskward.pb.taskward.v1 import tasks_pb2 as pb
from taskward.pb.taskward.v1 import tasks_pb2_grpc as pb_grpc
from tests.conftest import NODE_ARGS
from tests.support.cluster import Cluster, unique_cluster_name
from tests.support.procs import REPO, TIMEOUT_MULT, NodeProc, free_port, poll, refused, run_cli, taskward_cmd
from tests.support.resp_client import RespConn, RespError, cmd, needs_redis_cli
from tests.support.rest import GatewayProc, client, expect_error, rest_url, wait_http

TOKENS = {
    "read": "reader-secret-7c1d2f9a",
    "operate": "operator-secret-4b8e0c2d",
    "admin": "admin-secret-93f1a6be",
    "node": "node-secret-1e5a7d3c",
}
NAMES = {"read": "reader", "operate": "ops", "admin": "hashed-admin", "node": "peer"}
TOKENS_FILE = f"""
[[token]]
name = "reader"
role = "read"
token = "{TOKENS['read']}"

[[token]]
name = "ops"
role = "operate"
token = "{TOKENS['operate']}"

[[token]]
name = "hashed-admin"
role = "admin"
sha256 = "{hashlib.sha256(TOKENS['admin'].encode()).hexdigest()}"

[[token]]
name = "peer"
role = "node"
token = "{TOKENS['node']}"
"""
ROLES = ["read", "operate", "admin", "node"]
LEVEL = {r: i for i, r in enumerate(ROLES)}


def denied(op: str, needs: str, has: str) -> str:
    return f"permission denied: {op} needs role {needs}, the token has role {has}"


@dataclass
class Secured:
    node: NodeProc
    rest: str
    admin_port: int
    gateway: str
    gateway_audit: Path

    @property
    def audit(self) -> Path:
        return self.node.data_dir / "audit.jsonl"


def write_tokens(directory: Path) -> Path:
    path = directory / "tokens.toml"
    path.write_text(TOKENS_FILE)
    path.chmod(0o600)
    return path


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Secured]:
    """The module's tests send wrong tokens from 127.0.0.1 on purpose, so no failed-auth limit here (the
    limit has its own node below)."""
    base = tmp_path_factory.mktemp("roles")
    tokens = write_tokens(base)
    admin_port = free_port()
    node = NodeProc(base / "n1", extra=[*NODE_ARGS, "--tokens-file", str(tokens), "--auth-failure-limit", "0",
                                        "--rest", f"127.0.0.1:{free_port()}", "--admin", f"127.0.0.1:{admin_port}"])
    gw: GatewayProc | None = None
    try:
        node.start()
        wait_http(rest_url(node), node.proc, 15, node.log)
        gw = GatewayProc(base, [node], extra=["--tokens-file", str(tokens), "--audit-log", str(base / "gw.jsonl"),
                                              "--auth-failure-limit", "0"]).start()
        yield Secured(node, rest_url(node), admin_port, gw.url, base / "gw.jsonl")
    finally:
        codes = [p.stop() for p in (gw, node) if p is not None]
    assert codes == [0, 0], codes


def as_role(s: Secured, role: str) -> Client:
    return Client(s.node.address, token=TOKENS[role])


def audit_lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def matching(path: Path, match: dict[str, Any]) -> list[dict[str, Any]]:
    return [line for line in audit_lines(path) if all(line.get(k) == v for k, v in match.items())]


def audit_line(path: Path, **match: Any) -> dict[str, Any]:
    """The one line of ``path`` with these fields (lines of refusals are queued, not awaited: poll)."""
    def found() -> dict[str, Any] | None:
        hits = matching(path, match)
        assert len(hits) <= 1, hits
        return hits[0] if hits else None

    return poll(found, 10, f"audit line {match} in {path}")


def check(allowed: bool, call: Callable[[], Any], message: str) -> Any:
    """Run ``call``: it answers when ``allowed``, else raises PermissionDenied with ``message``."""
    if allowed:
        return call()
    with pytest.raises(PermissionDenied) as err:
        call()
    assert err.value.code == grpc.StatusCode.PERMISSION_DENIED
    assert err.value.message == message
    return None


# ---------------------------------------------------------------- gRPC, through the client library


@pytest.mark.parametrize("role", ROLES)
def test_grpc_each_role_does_what_it_may_and_nothing_else(secured: Secured, role: str) -> None:
    level = LEVEL[role]
    label = f"roles-{role}-{uuid.uuid4().hex[:8]}"
    with as_role(secured, role) as c, as_role(secured, "node") as root:
        assert "builtin" in c.modules() and c.nodes()  # reads: every role
        ttl = root.ttl()
        # start (operate): a refused start starts nothing
        handle = check(level >= 1, lambda: c.start("builtin", "sleep", duration=60, steps=60, keyspace=label),
                       denied("task.start", "operate", role))
        assert len(root.tasks("builtin", keyspace=label)) == (1 if level >= 1 else 0)
        # abort (operate): a refused abort leaves the task running
        victim = root.start("builtin", "sleep", duration=60, steps=60, keyspace=label + "-victim")
        poll(lambda: victim.status().state == "running" or None, 10, "victim running")
        check(level >= 1, lambda: c.task(victim.id).abort(), denied("task.abort", "operate", role))
        if level >= 1:
            with pytest.raises(TaskFailed, match=r"aborted$"):
                victim.wait(timeout=10 * TIMEOUT_MULT)
        else:
            assert victim.status().state == "running"
            victim.abort()
        if handle is not None:
            handle.abort()
        # ttl set and drain (admin): a refused set leaves the ttl as it was
        check(level >= 2, lambda: c.set_ttl(ttl), denied("ttl.set", "admin", role))
        with pytest.raises(PermissionDenied) if level < 2 else pytest.raises(TaskwardError, match="module nope"):
            c.drain("nope")  # the role is checked before the module: a reader learns nothing about modules
        assert root.ttl() == ttl
        check(level >= 2, lambda: c.call("RegisterTestModule", pb.Empty(), service="test"),
              denied("test_api", "admin", role))
        assert ("test" in root.modules()) == (level >= 2)
        if level >= 2:
            c.call("UnregisterTestModule", pb.Empty(), service="test")
        # node-to-node calls (node)
        check(level >= 3, lambda: c.call("GetLoad", pb.GetLoadRequest()), denied("node.load", "node", role))


@pytest.mark.parametrize("field", ["cluster_parent_id", "cluster_task_id", "task_id"])
def test_only_the_node_role_sets_internal_fields(secured: Secured, field: str) -> None:
    """A client that could set cluster_parent_id would exempt its tasks from the retention caps."""
    chosen = str(uuid.uuid4())
    req = pb.StartTaskRequest(module="builtin", type="sleep", args_json='{"duration": 0}',
                              cluster=field == "cluster_task_id", **{field: chosen})
    match = {"operation": "task.start_internal", "outcome": "denied", "token_name": "hashed-admin",
             "target": "builtin:sleep", "surface": "grpc", "peer": AnyLoopbackPeer()}
    before = len(matching(secured.audit, match))
    with as_role(secured, "admin") as admin, as_role(secured, "node") as node:
        with pytest.raises(PermissionDenied) as err:
            admin.call("StartTask", req)
        assert err.value.message == denied("task.start_internal", "node", "admin")
        with pytest.raises(TaskNotFound):
            node.task(chosen).status()  # nothing was started
        if field == "task_id":
            assert node.call("StartTask", req).task_id == chosen
            assert node.task(chosen).wait(timeout=10 * TIMEOUT_MULT).state == "done"
    poll(lambda: len(matching(secured.audit, match)) == before + 1 or None, 10, "the denial's audit line")


def test_start_batches_are_checked_and_audited_start_by_start(secured: Secured) -> None:
    """``StartTasks`` needs what each of its starts needs (one internal start makes it ``node``'s), and the
    audit log has a line per start, as if each had been a ``StartTask``."""
    label = f"batch-{uuid.uuid4().hex[:8]}"
    good = pb.StartTaskRequest(module="builtin", type="sleep", args_json='{"duration": 0}', keyspace=label)
    bad = pb.StartTaskRequest(module="builtin", type="nope")
    internal = pb.StartTaskRequest(module="builtin", type="sleep", args_json='{"duration": 0}',
                                   task_id=str(uuid.uuid4()))
    with as_role(secured, "read") as reader, as_role(secured, "operate") as ops, as_role(secured, "node") as root:
        with pytest.raises(PermissionDenied) as err:
            reader.call("StartTasks", pb.StartTasksRequest(starts=[good]))
        assert err.value.message == denied("task.start", "operate", "read")
        with pytest.raises(PermissionDenied) as err:
            ops.call("StartTasks", pb.StartTasksRequest(starts=[good, internal]))
        assert err.value.message == denied("task.start_internal", "node", "operate")
        assert root.tasks("builtin", keyspace=label) == []  # a refused call starts none of its starts
        resp = ops.call("StartTasks", pb.StartTasksRequest(starts=[good, bad]))
        started = resp.results[0].task_id
        assert [t.id for t in root.tasks("builtin", keyspace=label)] == [started]
    ok = audit_line(secured.audit, token_name="ops", operation="task.start", task_id=started)
    assert (ok["target"], ok["outcome"], ok["surface"]) == ("builtin:sleep", "ok", "grpc")
    refused = matching(secured.audit, {"token_name": "ops", "target": "builtin:nope"})
    assert [(x["operation"], x["outcome"]) for x in refused] == [("task.start", "invalid_argument")]
    audit_line(secured.audit, token_name="reader", operation="task.start", target="1 starts", outcome="denied")
    audit_line(secured.audit, token_name="ops", operation="task.start_internal", target="2 starts",
               outcome="denied")


class AnyLoopbackPeer:
    def __eq__(self, other: object) -> bool:
        return isinstance(other, str) and other.startswith("127.0.0.1:")


def test_the_cli_says_what_the_role_lacks(secured: Secured) -> None:
    env = {"TASKWARD_TOKEN": TOKENS["read"]}
    before = run_cli(secured.node, "ttl", env=env)
    assert before.returncode == 0 and before.stdout.startswith("Current ttl: ")
    refused = run_cli(secured.node, "ttl", "--set", "4242", env=env)
    assert (refused.returncode, refused.stdout) == (1, "")
    assert refused.stderr == f"error: {denied('ttl.set', 'admin', 'read')}\n"
    assert run_cli(secured.node, "ttl", env=env).stdout == before.stdout
    start = run_cli(secured.node, "start", "builtin", "sleep", "--arg", "duration=0", env=env)
    assert (start.returncode, start.stderr) == (1, f"error: {denied('task.start', 'operate', 'read')}\n")


# ---------------------------------------------------------------- REST: a node's own port and a gateway


@pytest.mark.parametrize("surface", ["node", "gateway"])
def test_rest_roles(secured: Secured, surface: str) -> None:
    base = secured.rest if surface == "node" else secured.gateway
    label = f"rest-{surface}-{uuid.uuid4().hex[:8]}"
    start = ("/tasks/builtin/sleep", {"keyspace": label})
    with client(base, TOKENS["read"]) as reader, client(base, TOKENS["operate"]) as ops, \
            client(base, TOKENS["admin"]) as admin, httpx.Client(base_url=base, timeout=10) as anon:
        ttl = reader.get("/task_manager/ttl").json()
        expect_error(reader.post(start[0], params=start[1], json={"duration": 60}), 403,
                     denied("task.start", "operate", "read"))
        assert reader.get("/task_manager/list_module_tasks/builtin", params={"keyspace": label}).json() == []
        expect_error(reader.post("/task_manager/ttl", params={"ttl": ttl + 1}), 403, denied("ttl.set", "admin", "read"))
        expect_error(ops.post("/task_manager/ttl", params={"ttl": ttl + 1}), 403,
                     denied("ttl.set", "admin", "operate"))
        assert reader.get("/task_manager/ttl").json() == ttl
        expect_error(ops.post("/task_manager_test/test_module"), 403, denied("test_api", "admin", "operate"))
        expect_error(ops.put("/cron", json={"schedules": []}), 403, denied("cron.write", "admin", "operate"))
        task_id = ops.post(start[0], params=start[1], json={"duration": 60, "steps": 60}).json()
        expect_error(reader.post(f"/task_manager/abort_task/{task_id}"), 403, denied("task.abort", "operate", "read"))
        assert reader.get(f"/task_manager/wait_task/{task_id}", params={"timeout": 0}).status_code == 408  # running
        assert ops.post(f"/task_manager/abort_task/{task_id}").status_code == 200
        assert admin.post("/task_manager/ttl", params={"ttl": ttl}).json() == ttl  # the sha256 entry is admin
        assert reader.get("/metrics").status_code == 200  # metrics: role read
        expect_error(anon.get("/metrics"), 401, "missing or wrong bearer token")
        assert anon.get("/health").status_code == 200
        expect_error(reader.get("/no/such/path"), 404, "Not Found")  # the router still answers what it serves
    node_line = audit_line(secured.audit, task_id=task_id, operation="task.start")
    if surface == "node":  # one line: REST's, naming the caller (its hop to the node's gRPC is not logged again)
        assert (node_line["surface"], node_line["token_name"], node_line["target"]) == ("rest", "ops", "builtin:sleep")
    else:  # the node names the gateway; the gateway's own log names the caller
        assert (node_line["surface"], node_line["token_name"]) == ("grpc", "peer")
        gw_line = audit_line(secured.gateway_audit, task_id=task_id)
        assert (gw_line["surface"], gw_line["token_name"], gw_line["operation"]) == ("rest", "ops", "task.start")
        assert audit_line(secured.gateway_audit, operation="task.abort", target=task_id, token_name="ops")["outcome"] \
            == "ok"
        assert audit_line(secured.gateway_audit, operation="task.abort", target=task_id, token_name="reader")[
            "outcome"] == "denied"


# ---------------------------------------------------------------- RESP, with the real redis-cli


def redis_cli(port: int, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["redis-cli", "-3", "-h", "127.0.0.1", "-p", str(port), *args], capture_output=True,
                          text=True, timeout=20 * TIMEOUT_MULT, check=False)


@needs_redis_cli
def test_resp_auth_by_token_or_by_name(secured: Secured) -> None:
    named = redis_cli(secured.admin_port, "--user", "reader", "--pass", TOKENS["read"], "TASK.ADMIN", "LIST")
    assert named.returncode == 0 and "builtin:sleep" in named.stdout, named
    default = redis_cli(secured.admin_port, "--pass", TOKENS["node"], "TASK.ADMIN", "LIST")
    assert "builtin:sleep" in default.stdout, default
    wrong_name = redis_cli(secured.admin_port, "--user", "ops", "--pass", TOKENS["read"], "TASK.ADMIN", "LIST")
    assert "WRONGPASS invalid username-password pair or user is disabled." in wrong_name.stdout + wrong_name.stderr
    assert "builtin:sleep" not in wrong_name.stdout
    with RespConn(secured.admin_port) as c:
        assert c.call("TASK.ADMIN", "LIST") == RespError("NOAUTH Authentication required.")
        hello = c.call("HELLO", "3", "AUTH", "default", TOKENS["operate"])
        assert hello["proto"] == 3
        assert "builtin:sleep" in c.call("TASK.ADMIN", "LIST")
    audit_line(secured.audit, surface="resp", operation="authenticate", target="AUTH", token_name=None,
               outcome="unauthenticated")


# ---------------------------------------------------------------- the audit log


def test_the_audit_log_names_who_did_what(secured: Secured) -> None:
    missing = str(uuid.uuid4())
    with as_role(secured, "operate") as ops, as_role(secured, "read") as reader:
        started = ops.start("builtin", "sleep", duration=0)
        with pytest.raises(TaskNotFound):
            ops.task(missing).abort()
        with pytest.raises(PermissionDenied):
            reader.drain("builtin")
    with httpx.Client(base_url=secured.rest, timeout=10) as anon:
        anon.post(f"/task_manager/abort_task/{missing}", headers={"authorization": "Bearer guess"})
    fields = ["token_name", "surface", "operation", "target", "outcome"]
    expected = [
        (["ops", "grpc", "task.start", "builtin:sleep", "ok"], {"task_id": started.id}),
        (["ops", "grpc", "task.abort", missing, "not_found"], {}),
        (["reader", "grpc", "drain", "builtin", "denied"], {}),
        ([None, "rest", "authenticate", f"POST /task_manager/abort_task/{missing}", "unauthenticated"], {}),
    ]
    for values, extra in expected:
        line = audit_line(secured.audit, **dict(zip(fields, values, strict=True)), **extra)
        assert set(line) == {"time", "peer", *fields, *extra}, line
        assert line["peer"] == AnyLoopbackPeer() and line["time"].endswith("Z")
        assert {k: line[k] for k in extra} == extra
    assert stat.S_IMODE(secured.audit.stat().st_mode) == 0o600


def test_token_file_is_one_node_token_and_the_log_survives_restarts(tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("the-shared-secret-42\n")
    token_file.chmod(0o600)
    n = NodeProc(tmp_path / "n1", extra=["--token-file", str(token_file)])
    ids = [str(uuid.uuid4()), str(uuid.uuid4())]
    for i, chosen in enumerate(ids):
        n.start()
        try:
            with Client(n.address, token="the-shared-secret-42") as c:  # every role's calls, internal fields too
                req = pb.StartTaskRequest(module="builtin", type="sleep", args_json='{"duration": 0}', task_id=chosen)
                assert c.call("StartTask", req).task_id == chosen
                assert c.call("GetLoad", pb.GetLoadRequest()) is not None
                c.set_ttl(i)
        finally:
            assert n.stop() == 0
        lines = audit_lines(n.data_dir / "audit.jsonl")
        assert [(x["token_name"], x["operation"], x.get("task_id") or x["target"]) for x in lines] == [
            (name, op, what) for j in range(i + 1)
            for name, op, what in (("shared-token", "task.start_internal", ids[j]),
                                   ("shared-token", "ttl.set", f"task_ttl={j}"))]


def test_a_bad_audit_log_path_stops_the_start(tmp_path: Path) -> None:
    (tmp_path / "a-dir").mkdir()
    log = refused(NodeProc(tmp_path / "n1", extra=["--audit-log", str(tmp_path / "a-dir")]), code=2)
    assert f"error: cannot open --audit-log {tmp_path / 'a-dir'}: Is a directory" in log
    assert "Traceback" not in log


# ---------------------------------------------------------------- the failed-auth limit


def test_failed_authentication_is_limited_per_address(tmp_path: Path) -> None:
    """Pipelined AUTH guesses stop being checked at the limit; a correct token from another address works."""
    tokens = write_tokens(tmp_path)
    admin_port = free_port()
    n = NodeProc(tmp_path / "n1", extra=["--tokens-file", str(tokens), "--auth-failure-limit", "5",
                                         "--rest", f"127.0.0.1:{free_port()}", "--admin", f"127.0.0.1:{admin_port}"])
    n.start()
    try:
        wait_http(rest_url(n), n.proc, 15, n.log)
        with RespConn(admin_port) as c:  # one write: 8 guesses, then the right token
            c.send(b"".join(cmd("AUTH", f"guess-{i}") for i in range(8)) + cmd("AUTH", TOKENS["read"])
                   + cmd("TASK.ADMIN", "LIST"))
            replies = [c.read() for _ in range(10)]
        assert replies[:5] == [RespError("WRONGPASS invalid username-password pair or user is disabled.")] * 5
        for reply in replies[5:9]:  # refused unchecked, the right token too
            assert isinstance(reply, RespError) and reply.text.startswith(
                "ERR too many failed authentication attempts from 127.0.0.1: try again in "), reply
            assert 50 <= int(reply.text.rsplit(" ", 2)[1]) <= 60
        assert replies[9] == RespError("NOAUTH Authentication required.")
        with RespConn(admin_port, source="127.0.0.2") as other:  # another address is not affected
            assert other.call("AUTH", "reader", TOKENS["read"]) == "OK"
            assert "builtin:sleep" in other.call("TASK.ADMIN", "LIST")
        with client(rest_url(n), TOKENS["read"]) as rest:
            resp = rest.get("/task_manager/list_modules")
            expect_error(resp, 429)
            assert resp.json()["message"].startswith("too many failed authentication attempts from 127.0.0.1: ")
            assert 50 <= int(resp.headers["retry-after"]) <= 60
            for header in ("x-forwarded-for", "x-real-ip"):  # a header cannot move a client to another address
                spoofed = rest.get("/task_manager/list_modules", headers={header: "10.1.2.3"})
                expect_error(spoofed, 429)
                assert spoofed.json()["message"].startswith("too many failed authentication attempts from 127.0.0.1")
        transport = httpx.HTTPTransport(local_address="127.0.0.2")
        with httpx.Client(base_url=rest_url(n), transport=transport, timeout=10,
                          headers={"authorization": f"Bearer {TOKENS['read']}"}) as rest:
            assert rest.get("/task_manager/list_modules").json() == ["builtin"]  # its hop to gRPC is not blocked
        stub = pb_grpc.TaskManagerStub(n.channel())
        with pytest.raises(grpc.RpcError) as err:
            stub.ListModules(pb.ListModulesRequest(), metadata=(("authorization", f"Bearer {TOKENS['read']}"),))
        assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert err.value.details().startswith("too many failed authentication attempts from 127.0.0.1: try again in ")
        outcomes = [(x["surface"], x["outcome"]) for x in audit_lines(n.data_dir / "audit.jsonl")]
        assert outcomes == [("resp", "unauthenticated")] * 5 + [("resp", "blocked")]
    finally:
        assert n.stop() == 0


# ---------------------------------------------------------------- refusals at start


BAD_FILES = [
    ('[[token]]\nname = "a"\nrole = "root"\ntoken = "t"\n',
     "token entry 1 ('a'): unknown role 'root' (expected read, operate, admin, node)"),
    ('[[token]]\nname = "a"\nrole = "read"\n', "token entry 1 ('a'): missing token or sha256"),
    ('[[token]]\nname = "a"\nrole = "read"\nsha256 = "xyz"\n',
     "token entry 1 ('a'): sha256 must be 64 lowercase hex digits (sha256sum of the token's UTF-8 bytes)"),
]


@pytest.mark.parametrize(("command", "case"), [("node", 0), ("node", 1), ("gateway", 2)])
def test_a_bad_tokens_file_exits_2_naming_the_problem(tmp_path: Path, command: str, case: int) -> None:
    text, message = BAD_FILES[case]
    path = tmp_path / "tokens.toml"
    path.write_text(text)
    args = ["--id", "n1", "--data-dir", str(tmp_path / "d")] if command == "node" else []
    out = subprocess.run([*taskward_cmd(), command, *args, "--tokens-file", str(path)], capture_output=True,
                         text=True, timeout=60 * TIMEOUT_MULT, cwd=REPO, check=False, env=dict(os.environ))
    assert (out.returncode, out.stdout) == (2, "")
    assert out.stderr == f"error: --tokens-file {path}: {message}\n"
    assert not (tmp_path / "d").exists()


def test_a_node_without_a_token_to_send_exits_2(tmp_path: Path) -> None:
    path = tmp_path / "tokens.toml"
    path.write_text(f'[[token]]\nname = "ops"\nrole = "admin"\ntoken = "{TOKENS["admin"]}"\n')
    path.chmod(0o600)
    out = subprocess.run([*taskward_cmd(), "node", "--id", "n1", "--data-dir", str(tmp_path / "d"), "--tokens-file",
                          str(path)], capture_output=True, text=True, timeout=60 * TIMEOUT_MULT, cwd=REPO, check=False)
    assert out.returncode == 2
    assert out.stderr == (
        f"error: --tokens-file {path} has no node entry with a plain-text token, and no --token-file is given: a "
        "node calls itself and the other nodes (cluster tasks, cron, --rest) with one; add a [[token]] with role = "
        '"node" and token = "...", or give --token-file\n')


# ---------------------------------------------------------------- a cluster


def test_nodes_call_each_other_with_a_node_token(etcd: Any, tmp_path: Path) -> None:
    """Two nodes with the tokens file run a cluster task across both (their calls to each other carry the
    node entry's token); a node whose token is only admin there is refused at join, naming why."""
    tokens = write_tokens(tmp_path)
    c = Cluster(tmp_path, etcd.endpoints, size=2, name=unique_cluster_name("roles"),
                extra=["--tokens-file", str(tokens)])
    try:
        for n in c.nodes:
            n.start()
        with Client([n.address for n in c.nodes], token=TOKENS["operate"]) as ops:
            poll(lambda: (sorted(m["id"] for m in ops.nodes() if m["alive"]) == ["n1", "n2"]
                          and sum(m["leader"] for m in ops.nodes()) == 1) or None, 30, "both nodes and a leader")
            done = ops.start("builtin", "sleep", duration=0, cluster=True).wait(timeout=30 * TIMEOUT_MULT)
            assert sorted(child.node for child in done.children_ids) == ["n1", "n2"]
        admin_token = tmp_path / "admin-token"
        admin_token.write_text(TOKENS["admin"])
        admin_token.chmod(0o600)
        intruder = NodeProc(tmp_path / "x1", node_id="x1", extra=[
            "--etcd", etcd.endpoints, "--cluster", c.name, "--token-file", str(admin_token)])
        log = refused(intruder, code=2)
        assert "error: the cluster refuses this node's token: member n" in log, log
        assert ("answered PERMISSION_DENIED (permission denied: node.load needs role node, the token has role "
                "admin): nodes call each other with a token of role node") in log, log
        assert "Traceback" not in log
    finally:
        c.stop()


def test_status_batches_need_what_a_status_read_needs(secured: Secured) -> None:
    """``GetTaskStatuses`` is read by read what ``GetTaskStatus`` is: role read, and a token at all."""
    with as_role(secured, "operate") as ops, as_role(secured, "read") as reader:
        tid = ops.start("builtin", "sleep", duration=0).id
        reads = pb.GetTaskStatusesRequest(reads=[pb.TaskIdRequest(task_id=tid, keep=True)])
        assert [r.status.stats.task_id for r in reader.call("GetTaskStatuses", reads).results] == [tid]
    with Client(secured.node.address) as anonymous, pytest.raises(TaskwardError) as err:
        anonymous.call("GetTaskStatuses", reads)
    assert (err.value.code, err.value.message) == (grpc.StatusCode.UNAUTHENTICATED, "missing or wrong bearer token")


def test_event_batches_need_what_watch_events_needs(secured: Secured) -> None:
    """``WatchEventBatches`` is ``WatchEvents`` (role read, a token at all); the client follows with it."""
    with as_role(secured, "operate") as ops, as_role(secured, "read") as reader, \
            reader.events(after=0, types=("task.completed",)) as events:
        tid = ops.start("builtin", "sleep", duration=0).id
        assert next(e for e in events if e["task_id"] == tid)["type"] == "task.completed"
    with grpc.insecure_channel(secured.node.address) as ch:
        stub = pb_grpc.TaskManagerStub(ch)
        answers = []
        for metadata in ((), (("authorization", "Bearer wrong"),)):
            with pytest.raises(grpc.RpcError) as err:
                next(iter(stub.WatchEventBatches(pb.WatchEventsRequest(live_only=True), metadata=metadata,
                                                 timeout=10 * TIMEOUT_MULT)))
            answers.append((err.value.code(), err.value.details()))
    assert answers == [(grpc.StatusCode.UNAUTHENTICATED, "missing or wrong bearer token")] * 2
