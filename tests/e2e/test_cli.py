"""``taskward tasks`` (README: CLI reference): the real CLI process against a real node."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

from taskward.pb.taskward.v1 import tasks_pb2 as pb
from taskward.pb.taskward.v1 import tasks_pb2_grpc as pb_grpc
from tests.support.procs import REPO, TIMEOUT_MULT, NodeProc, new_test_module, run_cli, taskward_cmd

LIST_COLUMNS = ["task_id", "type", "kind", "scope", "state", "sequence_number", "keyspace", "table", "entity",
                "shard", "start_time", "end_time"]
UUID_RE = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
ISO_RE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")
EPOCH = "1970-01-01T00:00:00Z"
UNKNOWN = "deadbeef-0000-4000-8000-00000000abcd"


def create(t: pb_grpc.TestApiStub, **kw: object) -> str:
    return t.CreateTestTask(pb.CreateTestTaskRequest(**kw)).task_id  # type: ignore[arg-type]


def cli(node: NodeProc, *args: str, code: int = 0) -> str:
    """Run the CLI, check its exit code, return stdout."""
    p = run_cli(node, *args)
    assert p.returncode == code, f"taskward tasks {' '.join(args)} exited {p.returncode}:\n{p.stdout}\n{p.stderr}"
    return p.stdout


def cli_err(node: NodeProc, *args: str, code: int = 1) -> str:
    """Run the CLI expecting failure; return stderr (and check nothing went to stdout)."""
    p = run_cli(node, *args)
    assert p.returncode == code, f"taskward tasks {' '.join(args)} exited {p.returncode}:\n{p.stdout}\n{p.stderr}"
    assert p.stdout == ""
    return p.stderr


def parse_table(out: str) -> tuple[list[str], list[dict[str, str]]]:
    """Columns and rows of a CLI table; cells are sliced at the header's column offsets."""
    lines = out.rstrip("\n").split("\n")
    header = lines[0]
    names = header.split()
    starts = [m.start() for m in re.finditer(r"\S+", header)]
    ends = [*starts[1:], None]
    rows = [{n: line[s:e].strip() for n, s, e in zip(names, starts, ends, strict=True)} for line in lines[1:]]
    return names, rows


def status_lines(out: str) -> dict[str, str]:
    return dict(line.split(": ", 1) if ": " in line else (line.rstrip(":"), "") for line in out.splitlines())


def start(node: NodeProc, *args: str) -> str:
    out = cli(node, "start", *args)
    assert UUID_RE.match(out.rstrip("\n")) and out.count("\n") == 1, repr(out)
    return out.strip()


# ---------------------------------------------------------------- basics


def test_help_and_host_option(shared_node: NodeProc) -> None:
    out = cli(shared_node, "--help")
    assert out.startswith("usage: taskward tasks") and "-h HOST, --host HOST" in out
    for sub in ("modules", "list", "status", "tree", "abort", "wait", "ttl", "user-ttl", "drain", "start", "nodes"):
        assert re.search(rf"^\s+{re.escape(sub)}\s", out, re.M), sub
    # -h is the host: another loopback address where nothing listens cannot be reached
    cmd = [*taskward_cmd(), "tasks", "-h", "127.0.0.2", "-p", str(shared_node.port), "modules"]
    p = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, timeout=60 * TIMEOUT_MULT, check=False)
    assert p.returncode == 1 and p.stderr.startswith(f"error: cannot reach node at 127.0.0.2:{shared_node.port}")


def test_modules(shared_node: NodeProc) -> None:
    assert cli(shared_node, "modules") == "builtin\nsample\n"
    with new_test_module(shared_node):
        assert cli(shared_node, "modules") == "builtin\nsample\ntest\n"
    assert cli(shared_node, "modules") == "builtin\nsample\n"


def test_nodes(shared_node: NodeProc) -> None:
    names, rows = parse_table(cli(shared_node, "nodes"))
    assert names == ["id", "address", "alive", "leader", "version", "started_at"]
    assert len(rows) == 1
    row = rows[0]
    assert (row["id"], row["address"], row["alive"], row["leader"]) == ("n1", shared_node.address, "true", "true")
    assert row["version"] and ISO_RE.match(row["started_at"])


# ---------------------------------------------------------------- list, status, tree


def test_list(node: NodeProc) -> None:
    with new_test_module(node) as t:
        r0 = create(t, keyspace="ks0", table="t0", entity="e0")
        r1 = create(t, keyspace="ks1", table="t1", shard=1)
        c0 = create(t, keyspace="ks0", table="t0", parent_id=r0)
        names, rows = parse_table(cli(node, "list", "test"))
        assert names == LIST_COLUMNS
        assert [r["task_id"] for r in rows] == [r0, r1]
        row = rows[0]
        assert (row["type"], row["kind"], row["scope"], row["state"], row["sequence_number"]) == (
            "test", "node", "node", "running", "1")
        assert (row["keyspace"], row["table"], row["entity"], row["shard"]) == ("ks0", "t0", "e0", "0")
        assert ISO_RE.match(row["start_time"]) and row["end_time"] == ""  # unset: empty, as nodetool prints it
        assert rows[1]["shard"] == "1" and rows[1]["entity"] == ""
        assert [r["task_id"] for r in parse_table(cli(node, "list", "test", "--internal"))[1]] == [r0, r1, c0]
        assert [r["task_id"] for r in parse_table(cli(node, "list", "test", "-ks", "ks1"))[1]] == [r1]
        assert [r["task_id"] for r in parse_table(cli(node, "list", "test", "--keyspace", "ks0",
                                                      "--internal"))[1]] == [r0, c0]
        assert [r["task_id"] for r in parse_table(cli(node, "list", "test", "-t", "t0"))[1]] == [r0]
        assert [r["task_id"] for r in parse_table(cli(node, "list", "test", "--table", "t1"))[1]] == [r1]
        assert parse_table(cli(node, "list", "test", "-ks", "nope"))[1] == []
        js = json.loads(cli(node, "list", "test", "--json"))
        assert [list(d) for d in js] == [LIST_COLUMNS] * 2
        assert js[0]["end_time"] == EPOCH  # JSON keeps DESIGN's epoch string
        assert (js[0]["task_id"], js[0]["sequence_number"], js[1]["shard"]) == (r0, 1, 1)
        out = cli(node, "list", "test", "--interval", "0.05", "--iterations", "3")
        assert out.count("task_id ") == 3 and out.count(r0) == 3
    assert cli_err(node, "list", "test") == "error: module test not found\n"


def test_status(node: NodeProc) -> None:
    stub = node.stub()
    stub.SetTtl(pb.SetTtlRequest(kind=pb.TTL_KIND_TASK, ttl=1000))
    with new_test_module(node) as t:
        root = create(t, keyspace="ks0", table="t0")
        child = create(t, parent_id=root)
        st = status_lines(cli(node, "status", root))
        assert (st["id"], st["type"], st["kind"], st["scope"], st["state"]) == (root, "test", "node", "node",
                                                                                  "running")
        assert (st["keyspace"], st["table"], st["parent_id"], st["is_abortable"]) == ("ks0", "t0", "none", "false")
        assert (st["sequence_number"], st["shard"], st["error"], st["end_time"]) == ("1", "0", "", "")  # unset: empty
        assert ISO_RE.match(st["start_time"])
        assert [c["task_id"] for c in json.loads(st["children_ids"])] == [child]
        js = json.loads(cli(node, "status", child, "--json"))
        assert (js["id"], js["state"], js["parent_id"], js["sequence_number"]) == (child, "running", root, 1)
        assert {"is_abortable", "error", "progress_units", "progress_total", "progress_completed",
                "children_ids", "start_time", "end_time"} <= set(js)
        t.FinishTestTask(pb.FinishTestTaskRequest(task_id=child, error="child failed"))
        t.FinishTestTask(pb.FinishTestTaskRequest(task_id=root))
        st = status_lines(cli(node, "status", root))  # unregisters the finished root
        assert st["state"] == "done" and ISO_RE.match(st["end_time"]) and st["end_time"] != EPOCH
        assert cli_err(node, "status", root) == f"error: task with id {root} not found\n"


def test_tree(node: NodeProc) -> None:
    with new_test_module(node) as t:
        root = create(t)
        child1 = create(t, parent_id=root)
        grandchild = create(t, parent_id=child1)
        child2 = create(t, parent_id=root)
        other = create(t)
        names, rows = parse_table(cli(node, "tree", root))
        assert names[:12] == LIST_COLUMNS and "parent_id" in names
        assert [r["task_id"] for r in rows] == [root, child1, child2, grandchild]
        assert [r["parent_id"] for r in rows] == ["none", root, root, child1]
        js = json.loads(cli(node, "tree", root, "--json"))
        assert [d["id"] for d in js] == [root, child1, child2, grandchild]
        # a finished user task in another module: `tree` shows it, and unregisters it like status does
        done = start(node, "builtin", "sleep", "--arg", "duration=0", "--wait")
        rows = parse_table(cli(node, "tree"))[1]
        assert [r["task_id"] for r in rows] == [done, root, child1, child2, grandchild, other]
        assert rows[0]["state"] == "done"
        assert cli_err(node, "status", done) == f"error: task with id {done} not found\n"


# ---------------------------------------------------------------- errors, abort, wait


def test_unknown_and_malformed_ids(shared_node: NodeProc) -> None:
    for sub in ("status", "abort", "tree"):
        assert cli_err(shared_node, sub, UNKNOWN) == f"error: task with id {UNKNOWN} not found\n"
        assert cli_err(shared_node, sub, "nope").startswith("error: ")
        assert cli_err(shared_node, sub, UNKNOWN.upper()).startswith("error: ")
    assert cli_err(shared_node, "wait", UNKNOWN, code=125) == f"error: task with id {UNKNOWN} not found\n"
    assert cli_err(shared_node, "wait", "nope", code=125).startswith("error: ")


def test_abort(node: NodeProc) -> None:
    with new_test_module(node) as t:
        tid = create(t)
        assert cli_err(node, "abort", tid) == f"Task with id {tid} is not abortable\n"
        assert status_lines(cli(node, "status", tid))["state"] == "running"
    tid = start(node, "builtin", "sleep", "--arg", "duration=30", "--arg", "steps=300")
    assert cli(node, "abort", tid) == ""
    st = status_lines(cli(node, "wait", tid, code=123))
    assert (st["state"], st["error"], st["aborted"]) == ("failed", "aborted", "true")


def test_wait_exit_codes(shared_node: NodeProc) -> None:
    done = start(shared_node, "builtin", "sleep", "--arg", "duration=0.1", "--arg", "steps=2")
    st = status_lines(cli(shared_node, "wait", done))
    assert (st["id"], st["state"], st["progress_completed"], st["progress_total"]) == (done, "done", "2", "2")
    assert cli(shared_node, "wait", done, "--quiet") == ""  # wait does not unregister
    failed = start(shared_node, "builtin", "fail", "--arg", "error=it broke")
    st = status_lines(cli(shared_node, "wait", failed, "--timeout", "10", code=123))
    assert (st["state"], st["error"]) == ("failed", "it broke")
    assert cli(shared_node, "wait", "-q", failed, code=123) == ""
    with new_test_module(shared_node) as t:
        tid = create(t)
        assert cli_err(shared_node, "wait", tid, "--timeout", "0.3", code=124) == "Operation timed out\n"


# ---------------------------------------------------------------- settings, drain


def test_ttl(node: NodeProc) -> None:
    assert cli(node, "ttl") == "Current ttl: 0\n"
    assert cli(node, "ttl", "--set", "5") == "Current ttl: 5\n"
    assert cli(node, "ttl") == "Current ttl: 5\n"
    assert cli(node, "user-ttl") == "Current user ttl: 3600\n"
    assert cli(node, "user-ttl", "--set", "10") == "Current user ttl: 10\n"
    assert cli(node, "user-ttl") == "Current user ttl: 10\n"
    assert cli(node, "ttl") == "Current ttl: 5\n"
    assert cli_err(node, "ttl", "--set", "-1").startswith("error: ")
    assert node.stub().GetTtl(pb.GetTtlRequest(kind=pb.TTL_KIND_USER)).ttl == 10


def test_drain(node: NodeProc) -> None:
    node.stub().SetTtl(pb.SetTtlRequest(kind=pb.TTL_KIND_TASK, ttl=1000))
    with new_test_module(node) as t:
        finished, running = create(t), create(t)
        t.FinishTestTask(pb.FinishTestTaskRequest(task_id=finished))
        done = start(node, "builtin", "sleep", "--arg", "duration=0", "--wait")
        assert [r["task_id"] for r in parse_table(cli(node, "list", "test"))[1]] == [finished, running]
        cli(node, "drain", "--module", "test")
        assert [r["task_id"] for r in parse_table(cli(node, "list", "test"))[1]] == [running]
        assert [r["task_id"] for r in parse_table(cli(node, "list", "builtin"))[1]] == [done]
        cli(node, "drain")
        assert parse_table(cli(node, "list", "builtin"))[1] == []
        assert [r["task_id"] for r in parse_table(cli(node, "list", "test"))[1]] == [running]
    assert cli_err(node, "drain", "--module", "nope") == "error: module nope not found\n"


# ---------------------------------------------------------------- start


def test_start_args(shared_node: NodeProc) -> None:
    tid = start(shared_node, "builtin", "sleep", "--arg", "duration=0", "--arg", "steps=3", "-ks", "k1", "-t", "t1")
    assert cli(shared_node, "wait", tid, "--quiet") == ""
    st = json.loads(cli(shared_node, "status", tid, "--json"))
    assert (st["state"], st["progress_total"], st["keyspace"], st["table"]) == ("done", 3, "k1", "t1")
    # "3" as a JSON string is not an int: the value really is parsed as JSON
    err = cli_err(shared_node, "start", "builtin", "sleep", "--arg", "duration=0", "--arg", 'steps="3"')
    assert err.startswith("error: ") and "must be int" in err
    tid = start(shared_node, "builtin", "fail", "--arg", "error=hello")
    st = status_lines(cli(shared_node, "wait", tid, code=123))
    assert st["error"] == "hello"
    assert cli_err(shared_node, "start", "builtin", "nope") == "error: task type builtin:nope not found\n"
    assert cli_err(shared_node, "start", "nope", "sleep") == "error: module nope not found\n"
    assert cli_err(shared_node, "start", "builtin", "sleep", "--arg", "novalue").startswith("error: --arg expects K=V")
    assert cli_err(shared_node, "start", "builtin", "sleep").startswith("error: missing required argument")
    tid = start(shared_node, "builtin", "sleep", "--arg", "duration=0", "--cluster", "--wait")  # embedded coordinator
    assert json.loads(cli(shared_node, "status", tid, "--json"))["kind"] == "cluster"
    err = cli_err(shared_node, "start", "builtin", "sleep", "--arg", "duration=0", "--nodes", "nope")
    assert err == "error: node nope is not a live member of the cluster\n"


def test_start_wait_exit_codes(shared_node: NodeProc) -> None:
    out = cli(shared_node, "start", "builtin", "sleep", "--arg", "duration=0.1", "--arg", "steps=1", "--wait")
    assert UUID_RE.match(out.strip()) and out.count("\n") == 1  # only the id: --wait is quiet
    out = cli(shared_node, "start", "builtin", "fail", "--arg", "error=x", "--wait", code=123)
    assert UUID_RE.match(out.strip()) and out.count("\n") == 1
    out = cli(shared_node, "start", "sample", "raises", "--wait", code=123)
    assert json.loads(cli(shared_node, "status", out.strip(), "--json"))["error"] == "boom"


def test_idempotency_key(node: NodeProc) -> None:
    ids = []
    for key, extra in (("k1", []), ("k2", ["--wait"])):
        first = start(node, "builtin", "sleep", "--arg", "duration=0", "--idempotency-key", key, *extra)
        assert start(node, "builtin", "sleep", "--arg", "duration=0", "--idempotency-key", key, *extra) == first
        err = cli_err(node, "start", "builtin", "sleep", "--arg", "duration=1", "--idempotency-key", key)
        assert err == f"error: idempotency key {key!r} was already used with different arguments\n"
        ids.append(first)
    assert ids[0] != ids[1]
    assert [r["task_id"] for r in parse_table(cli(node, "list", "builtin"))[1]] == ids


def test_an_unreadable_token_file_is_an_error_line(shared_node: NodeProc, tmp_path: Path) -> None:
    missing = run_cli(shared_node, "--token-file", str(tmp_path / "absent"), "modules")
    assert (missing.returncode, missing.stdout, missing.stderr) == (
        1, "", "error: cannot read --token-file: No such file or directory\n")
    waiting = run_cli(shared_node, "--token-file", str(tmp_path / "absent"), "wait", "x")
    assert (waiting.returncode, waiting.stderr) == (125, "error: cannot read --token-file: No such file or directory\n")
