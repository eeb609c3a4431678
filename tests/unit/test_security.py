"""Roles, tokens files, the failed-auth limit, the audit log and the role tables, without a server."""

from __future__ import annotations

import hashlib
import json
import os
import stat
from pathlib import Path
from typing import Any, cast

import pytest

from taskward.api.resp.commands import AdminCommands, Session, _Spec
from taskward.api.rest.app import RestSettings, create_app
from taskward.api.rest.auth import RouteTable, served_routes
from taskward.api.rest.middleware import OPEN_PATHS, OPEN_PREFIXES
from taskward.config import AuthConfig, NodeConfig
from taskward.errors import AuthRateLimited, ConfigError, PermissionDenied, Unauthenticated
from taskward.model import TypeStats
from taskward.pb.taskward.v1 import cron_pb2, tasks_pb2
from taskward.security import roles
from taskward.security.access import AccessControl, start_audit_log
from taskward.security.audit import AuditLog
from taskward.security.failed_auth import FailedAuthLimiter
from taskward.security.roles import Role
from taskward.security.tokens import SHARED_TOKEN_NAME, Principal, TokenTable

HASHED_SECRET = "hashed-secret-0123456789"
GOOD = f"""
[[token]]
name = "reader"
role = "read"
token = "read-secret-0123456789"

[[token]]
name = "ops"
role = "operate"
token = "operate-secret-0123456789"

[[token]]
name = "hashed-admin"
role = "admin"
sha256 = "{hashlib.sha256(HASHED_SECRET.encode()).hexdigest()}"

[[token]]
name = "peer"
role = "node"
token = "node-secret-0123456789"
"""


def tokens_file(tmp_path: Path, text: str) -> str:
    path = tmp_path / "tokens.toml"
    path.write_text(text)
    path.chmod(0o600)
    return str(path)


# ---------------------------------------------------------------- roles


def test_roles_are_ordered_and_spelled_as_in_files() -> None:
    assert Role.READ < Role.OPERATE < Role.ADMIN < Role.NODE
    assert [Role.parse(r.label) for r in Role] == list(Role)
    with pytest.raises(ValueError, match=r"^unknown role 'Admin' \(expected read, operate, admin, node\)$"):
        Role.parse("Admin")


@pytest.mark.parametrize(("op", "least"), [
    (roles.TASK_STATUS, Role.READ), (roles.EVENTS, Role.READ), (roles.METRICS, Role.READ), (roles.NODES, Role.READ),
    (roles.CRON_READ, Role.READ), (roles.TASK_START, Role.OPERATE), (roles.TASK_ABORT, Role.OPERATE),
    (roles.CRON_RUN_NOW, Role.OPERATE), (roles.TTL_SET, Role.ADMIN), (roles.DRAIN, Role.ADMIN),
    (roles.CRON_WRITE, Role.ADMIN), (roles.TEST_API, Role.ADMIN), (roles.TASK_START_INTERNAL, Role.NODE),
    (roles.NODE_LOAD, Role.NODE),
])
def test_each_operation_needs_its_role_and_no_more(op: roles.Operation, least: Role) -> None:
    assert [r for r in Role if roles.allows(r, op)] == [r for r in Role if r >= least]


def test_what_a_refused_caller_is_told() -> None:
    assert PermissionDenied(roles.denial(Role.READ, roles.TASK_START)).message == \
        "permission denied: task.start needs role operate, the token has role read"


def test_writes_are_audited_and_reads_are_not() -> None:
    ops = {op for table in (roles.GRPC_METHODS, roles.REST_ROUTES, roles.RESP_COMMANDS) for op in table.values()}
    assert {op.name for op in ops if op.mutating} == {
        "task.start", "task.abort", "cron.run_now", "ttl.set", "drain", "cron.write", "test_api"}
    assert all(op.role >= Role.OPERATE for op in ops if op.mutating)


def test_every_served_grpc_method_has_a_role() -> None:
    served = {f"/{s.full_name}/{m.name}" for d in (tasks_pb2.DESCRIPTOR, cron_pb2.DESCRIPTOR)
              for s in d.services_by_name.values() for m in s.methods}
    assert served == set(roles.GRPC_METHODS)


def test_every_served_rest_route_has_a_role_or_is_open() -> None:
    app = create_app(RestSettings(listen="127.0.0.1:1", nodes=("127.0.0.1:2",)), pool=cast(Any, object()))
    served = set(served_routes(app))
    assert {r for r in served if r[1] not in roles.REST_OPEN_ROUTES} == set(roles.REST_ROUTES)
    for route in roles.REST_OPEN_ROUTES:  # open by the middleware too, or its callers would need a token
        path = route.replace("{name}", "x")
        assert path in OPEN_PATHS or path.startswith(OPEN_PREFIXES), route
    assert "/metrics" not in OPEN_PATHS


@pytest.mark.parametrize(("method", "path", "op", "params"), [
    ("GET", "/task_manager/task_status/a/b", roles.TASK_STATUS, {"task_id": "a/b"}),
    ("HEAD", "/task_manager/list_modules", roles.LIST_MODULES, {}),
    ("POST", "/task_manager/ttl", roles.TTL_SET, {}),
    ("POST", "/tasks/builtin/sleep", roles.TASK_START, {"module": "builtin", "type_name": "sleep"}),
    ("GET", "/tasks/builtin", roles.LIST_TASKS, {"module": "builtin"}),
    ("POST", "/admin/tasks/x/cancel", roles.TASK_ABORT, {"task_id": "x"}),
    ("POST", "/admin/tasks/sleep", roles.TASK_START, {"task_type": "sleep"}),
    ("POST", "/cron/s1/run-now", roles.CRON_RUN_NOW, {"schedule_id": "s1"}),
    ("PUT", "/.config/cron.json", roles.CRON_WRITE, {}),
    ("GET", "/cluster/nodes/stream", roles.NODES, {}),
])
def test_the_route_table_matches_as_the_router_does(method: str, path: str, op: roles.Operation,
                                                    params: dict[str, str]) -> None:
    assert RouteTable(roles.REST_ROUTES).match(method, path) == (op, params)


@pytest.mark.parametrize(("method", "path"), [("PUT", "/task_manager/ttl"), ("GET", "/nope"), ("GET", "/"),
                                              ("GET", "/cron/a/b/c")])
def test_calls_no_route_serves_are_left_to_the_router(method: str, path: str) -> None:
    assert RouteTable(roles.REST_ROUTES).match(method, path) is None


# ---------------------------------------------------------------- tokens files


def test_a_tokens_file_names_each_caller_and_its_role(tmp_path: Path) -> None:
    table = TokenTable.build(tokens_file=tokens_file(tmp_path, GOOD))
    assert table.enabled
    assert table.authenticate("read-secret-0123456789") == Principal("reader", Role.READ)
    assert table.authenticate(b"operate-secret-0123456789") == Principal("ops", Role.OPERATE)
    assert table.authenticate(HASHED_SECRET) == Principal("hashed-admin", Role.ADMIN)
    assert table.authenticate("node-secret-0123456789") == Principal("peer", Role.NODE)
    for wrong in ("read-secret-012345678", "READ-SECRET-0123456789", "", " read-secret-0123456789"):
        assert table.authenticate(wrong) is None
    assert table.outgoing == "node-secret-0123456789"  # the first node entry with its token in plain text


def test_the_shared_token_is_one_node_token_and_the_one_sent(tmp_path: Path) -> None:
    alone = TokenTable.build(shared_token="shared-secret-0123456789")
    assert alone.principals == [Principal(SHARED_TOKEN_NAME, Role.NODE)]
    assert alone.outgoing == "shared-secret-0123456789"
    both = TokenTable.build(tokens_file=tokens_file(tmp_path, GOOD), shared_token="shared-secret-0123456789")
    assert both.authenticate("shared-secret-0123456789") == Principal(SHARED_TOKEN_NAME, Role.NODE)
    assert both.authenticate("read-secret-0123456789") == Principal("reader", Role.READ)
    assert both.outgoing == "shared-secret-0123456789"
    assert not TokenTable.build().enabled and TokenTable.build().outgoing is None


ENTRY = 'name = "a"\nrole = "read"\ntoken = "secret-a-0123456789"\n'
ENTRY_B = ENTRY.replace('name = "a"', 'name = "b"')
SHARED_NAMED = ENTRY.replace('name = "a"', 'name = "shared-token"')


@pytest.mark.parametrize(("text", "message"), [
    ('[[token]]\nname = "a"\nrole = "root"\ntoken = "t"\n',
     "token entry 1 ('a'): unknown role 'root' (expected read, operate, admin, node)"),
    (f"[[token]]\n{ENTRY}\n[[token]]\n{ENTRY.replace('secret-a', 'secret-b')}",
     "duplicate name 'a' (entries 1 and 2)"),
    ('[[token]]\nname = "a"\nrole = "read"\n', "token entry 1 ('a'): missing token or sha256"),
    ('[[token]]\nname = "a"\nrole = "read"\nsha256 = "ABC"\n',
     "token entry 1 ('a'): sha256 must be 64 lowercase hex digits (sha256sum of the token's UTF-8 bytes)"),
    (f'[[token]]\nname = "a"\nrole = "read"\nsha256 = "{"A" * 64}"\n',
     "token entry 1 ('a'): sha256 must be 64 lowercase hex digits (sha256sum of the token's UTF-8 bytes)"),
    (f'[[token]]\n{ENTRY}sha256 = "{"a" * 64}"\n', "token entry 1 ('a'): both token and sha256 given; give one"),
    ('[[token]]\nrole = "read"\ntoken = "t"\n', "token entry 1: missing name"),
    ('[[token]]\nname = "a b"\nrole = "read"\ntoken = "t"\n',
     "token entry 1 ('a b'): invalid name: expected [A-Za-z0-9][A-Za-z0-9._@-]{0,63}"),
    ('[[token]]\nname = "a"\ntoken = "t"\n', "token entry 1 ('a'): missing role (read, operate, admin or node)"),
    (f'[[token]]\n{ENTRY}rol = "x"\n',
     "token entry 1 ('a'): unknown key 'rol' (expected name, role, and token or sha256)"),
    ('[[token]]\nname = "a"\nrole = "read"\ntoken = " t"\n',
     "token entry 1 ('a'): token has leading or trailing white space"),
    ('[[token]]\nname = "a"\nrole = "read"\ntoken = ""\n', "token entry 1 ('a'): token must be a non-empty string"),
    (f"[[token]]\n{ENTRY}\n[[token]]\n{ENTRY_B}",
     "entries 'a' and 'b' have the same token; a token names one caller"),
    ("", "no [[token]] entries (each with name, role, and token or sha256)"),
    ('token = "t"\n', "no [[token]] entries (each with name, role, and token or sha256)"),
    (f'roles = 1\n[[token]]\n{ENTRY}', "unknown key 'roles' (the file holds [[token]] entries only)"),
])
def test_a_bad_tokens_file_is_refused_with_what_is_wrong(tmp_path: Path, text: str, message: str) -> None:
    path = tokens_file(tmp_path, text)
    with pytest.raises(ConfigError) as err:
        TokenTable.build(tokens_file=path)
    assert err.value.message == f"--tokens-file {path}: {message}"


def test_an_unreadable_or_malformed_tokens_file_is_refused(tmp_path: Path) -> None:
    missing = tmp_path / "nope.toml"
    with pytest.raises(ConfigError) as err:
        TokenTable.build(tokens_file=str(missing))
    assert err.value.message == f"cannot read --tokens-file {missing}: No such file or directory"
    bad = tokens_file(tmp_path, "[[token]\n")
    with pytest.raises(ConfigError) as err:
        TokenTable.build(tokens_file=bad)
    assert err.value.message.startswith(f"--tokens-file {bad} is not valid TOML: ")


def test_the_shared_token_must_not_clash_with_the_file(tmp_path: Path) -> None:
    path = tokens_file(tmp_path, f"[[token]]\n{ENTRY}")
    with pytest.raises(ConfigError) as err:
        TokenTable.build(tokens_file=path, shared_token="secret-a-0123456789")
    assert err.value.message == (f"--tokens-file {path}: entry 'a' has the same token as --token-file/TASKWARD_TOKEN; "
                                 "give each token once")
    named = tokens_file(tmp_path, f"[[token]]\n{SHARED_NAMED}")
    with pytest.raises(ConfigError) as err:
        TokenTable.build(tokens_file=named, shared_token="other-0123456789")
    assert err.value.message == (f"--tokens-file {named}: the name 'shared-token' is taken by "
                                 "--token-file/TASKWARD_TOKEN; rename the entry")


def test_a_node_needs_a_token_it_can_send(tmp_path: Path) -> None:
    path = tokens_file(tmp_path, f"[[token]]\n{ENTRY}")
    tokens = TokenTable.build(tokens_file=path)
    with pytest.raises(ConfigError) as err:
        NodeConfig(node_id="n1", data_dir=tmp_path, auth=AuthConfig(tokens=tokens), token=tokens.outgoing)
    assert err.value.message == (
        f"--tokens-file {path} has no node entry with a plain-text token, and no --token-file is given: a node "
        "calls itself and the other nodes (cluster tasks, cron, --rest) with one; add a [[token]] with role = "
        '"node" and token = "...", or give --token-file')


# ---------------------------------------------------------------- the failed-auth limit


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_an_address_is_blocked_after_the_limit_until_its_window_ends() -> None:
    clock = Clock()
    limiter = FailedAuthLimiter(3, 60.0, clock=clock)
    assert [limiter.failed("10.0.0.1") for _ in range(3)] == [False, False, True]
    assert limiter.blocked("10.0.0.1") == 60 and limiter.blocked("10.0.0.2") == 0
    clock.now += 59.2
    assert limiter.blocked("10.0.0.1") == 1
    clock.now += 0.8
    assert limiter.blocked("10.0.0.1") == 0
    assert limiter.failed("10.0.0.1") is False  # a new window: counting starts again


def test_failures_in_separate_windows_do_not_add_up() -> None:
    clock = Clock()
    limiter = FailedAuthLimiter(2, 10.0, clock=clock)
    limiter.failed("h")
    clock.now += 10.0
    assert limiter.failed("h") is False and limiter.blocked("h") == 0


def test_calls_without_a_token_do_not_count_and_are_audited_within_the_limit() -> None:
    limiter = FailedAuthLimiter(3, 60.0, clock=Clock())
    assert [limiter.missing("h") for _ in range(5)] == [True, True, True, False, False]
    assert limiter.blocked("h") == 0
    assert [limiter.failed("h") for _ in range(3)] == [False, False, True]


def test_limit_zero_never_blocks() -> None:
    limiter = FailedAuthLimiter(0, 60.0)
    assert not any(limiter.failed("h") for _ in range(100)) and limiter.blocked("h") == 0


# ---------------------------------------------------------------- the access flow and the audit log


def lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


async def test_the_access_flow_refuses_counts_and_audits(tmp_path: Path) -> None:
    log = AuditLog(tmp_path / "audit.jsonl")
    access = AccessControl(TokenTable.build(tokens_file=tokens_file(tmp_path, GOOD)), audit=log,
                           limiter=FailedAuthLimiter(2, 60.0))
    start_audit_log(access)
    try:
        kw: dict[str, Any] = {"peer": "127.0.0.9:5", "host": "127.0.0.9", "surface": "resp", "attempted": "AUTH"}
        reader = access.authenticate("read-secret-0123456789", **kw)
        assert reader == Principal("reader", Role.READ)
        assert access.authenticate(b"read-secret-0123456789", name="reader", **kw) == reader
        assert access.authenticate(b"read-secret-0123456789", name="default", **kw) == reader
        with pytest.raises(Unauthenticated):
            access.authenticate(b"read-secret-0123456789", name="ops", **kw)  # a name must match its token
        with pytest.raises(PermissionDenied) as denied:
            access.authorize(reader, roles.TTL_SET, peer="127.0.0.9:5", surface="resp", target="task_ttl=1")
        assert denied.value.message == "permission denied: ttl.set needs role admin, the token has role read"
        access.authorize(None, roles.TTL_SET, peer="p", surface="resp", target="t")  # auth off: allowed
        for _ in range(3):  # no token at all is not a guess: refused, audited (twice: the limit), not counted
            with pytest.raises(Unauthenticated):
                access.authenticate(None if _ else b"", **kw)
        assert access.authenticate("read-secret-0123456789", **kw) == reader
        with pytest.raises(Unauthenticated):
            access.authenticate("guess", **kw)
        with pytest.raises(AuthRateLimited) as limited:  # the limit is reached: even a good token is not checked
            access.authenticate("read-secret-0123456789", **kw)
        assert limited.value.message == "too many failed authentication attempts from 127.0.0.9: try again in 60 s"
        assert access.authenticate("read-secret-0123456789", **{**kw, "host": "127.0.0.8"}) == reader
        await access.audit(reader, roles.TASK_START, peer="127.0.0.9:5", surface="grpc", target="builtin:sleep",
                           outcome="ok", task_id="t1")
    finally:
        await log.close()
    got = lines(tmp_path / "audit.jsonl")
    assert [{k: v for k, v in line.items() if k != "time"} for line in got] == [
        {"token_name": None, "peer": "127.0.0.9:5", "surface": "resp", "operation": "authenticate",
         "target": "AUTH", "outcome": "unauthenticated"},
        {"token_name": "reader", "peer": "127.0.0.9:5", "surface": "resp", "operation": "ttl.set",
         "target": "task_ttl=1", "outcome": "denied"},
        *[{"token_name": None, "peer": "127.0.0.9:5", "surface": "resp", "operation": "authenticate",
           "target": "AUTH", "outcome": "unauthenticated"}] * 2,
        {"token_name": None, "peer": "127.0.0.9:5", "surface": "resp", "operation": "authenticate",
         "target": "AUTH", "outcome": "unauthenticated"},
        {"token_name": None, "peer": "127.0.0.9:5", "surface": "resp", "operation": "authenticate",
         "target": "AUTH", "outcome": "blocked"},
        {"token_name": "reader", "peer": "127.0.0.9:5", "surface": "grpc", "operation": "task.start",
         "target": "builtin:sleep", "outcome": "ok", "task_id": "t1"},
    ]
    assert all(line["time"].endswith("Z") and len(line["time"]) == len("2026-01-01T00:00:00.000Z") for line in got)


async def test_the_audit_log_is_private_and_appended_to(tmp_path: Path) -> None:
    path = tmp_path / "logs" / "audit.jsonl"
    old_umask = os.umask(0)
    try:
        for run in range(2):
            log = AuditLog(path)
            log.start()
            await log.record(token_name="t", peer="p", surface="rest", operation="drain", target=f"m{run}",
                             outcome="ok")
            await log.close()
            await log.close()  # idempotent
    finally:
        os.umask(old_umask)
    assert [line["target"] for line in lines(path)] == ["m0", "m1"]
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


async def test_a_record_waits_until_its_line_is_written(tmp_path: Path) -> None:
    log = AuditLog(tmp_path / "audit.jsonl")
    log.start()
    try:
        for i in range(50):
            await log.record(token_name=None, peer="p", surface="grpc", operation="task.abort", target=str(i),
                             outcome="not_found")
            assert len((tmp_path / "audit.jsonl").read_text().splitlines()) == i + 1
    finally:
        await log.close()


async def test_an_audit_log_that_cannot_be_opened_stops_the_start(tmp_path: Path) -> None:
    (tmp_path / "dir.jsonl").mkdir()
    access = AccessControl(TokenTable.build(), audit=AuditLog(tmp_path / "dir.jsonl"))
    with pytest.raises(ConfigError) as err:
        start_audit_log(access)
    assert err.value.message == f"cannot open --audit-log {tmp_path / 'dir.jsonl'}: Is a directory"


# ---------------------------------------------------------------- RESP


class NoTypes:
    type_stats_version = 0

    def list_task_types(self) -> list[TypeStats]:
        return []


def test_resp_auth_by_token_or_by_name_and_token(tmp_path: Path) -> None:
    access = AccessControl(TokenTable.build(tokens_file=tokens_file(tmp_path, GOOD)), limiter=FailedAuthLimiter(0))
    commands = AdminCommands(NoTypes(), access=access, server_version="t")
    s = Session(id=1, authenticated=False)
    assert commands.execute(s, [b"AUTH", b"reader", b"operate-secret-0123456789"]).startswith(b"-WRONGPASS")
    assert not s.authenticated
    assert commands.execute(s, [b"AUTH", b"ops", b"operate-secret-0123456789"]) == b"+OK\r\n"
    assert s.principal == Principal("ops", Role.OPERATE)
    assert commands.execute(s, [b"AUTH", b"read-secret-0123456789"]) == b"+OK\r\n"
    assert s.principal == Principal("reader", Role.READ)
    assert commands.execute(s, [b"TASK.ADMIN", b"LIST"]) == b"*0\r\n"


def test_resp_refuses_a_command_the_role_does_not_allow(tmp_path: Path) -> None:
    """No RESP command needs more than read today; a command that did would answer NOPERM."""
    access = AccessControl(TokenTable.build(tokens_file=tokens_file(tmp_path, GOOD)), limiter=FailedAuthLimiter(0))
    commands = AdminCommands(NoTypes(), access=access, server_version="t")
    commands._table[b"drain"] = _Spec("drain", 1, lambda s, a: b"+OK\r\n", op=roles.DRAIN)
    s = Session(id=1, authenticated=False)
    assert commands.execute(s, [b"AUTH", b"read-secret-0123456789"]) == b"+OK\r\n"
    assert commands.execute(s, [b"DRAIN"]) == \
        b"-NOPERM permission denied: drain needs role admin, the token has role read\r\n"
    assert commands.execute(s, [b"AUTH", b"peer", b"node-secret-0123456789"]) == b"+OK\r\n"
    assert commands.execute(s, [b"DRAIN"]) == b"+OK\r\n"


def test_every_resp_command_that_touches_tasks_has_a_role() -> None:
    commands = AdminCommands(NoTypes(), token=None, server_version="t")
    named = {sub.name for spec in commands._table.values() for sub in (spec.subcommands or {}).values()}
    assert named == set(roles.RESP_COMMANDS)
