"""Every bad REST input gets the exact status and ``{"message", "code"}`` body, and changes nothing.

Run against a node's own ``--rest`` port and a ``taskward gateway`` in front of it, both with auth on
(the gateway forwards the token to the node).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.conftest import NODE_ARGS
from tests.support.procs import TIMEOUT_MULT, NodeProc, free_port
from tests.support.rest import GatewayProc, client, expect_error, rest_url, wait_http

TOKEN = "s3cret-token"
UNKNOWN = "deadbeef-0000-4000-8000-00000000abcd"
ID_PATHS = [("GET", "/task_manager/task_status/{}"), ("GET", "/task_manager/task_status_recursive/{}"),
            ("POST", "/task_manager/abort_task/{}"), ("GET", "/task_manager/wait_task/{}"),
            ("POST", "/task_manager_test/finish_test_task/{}")]
START = "/tasks/builtin/sleep"
LIMIT = 1024 * 1024


@pytest.fixture(scope="module")
def surfaces(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    base = tmp_path_factory.mktemp("rest-bad")
    token_file = base / "token"
    token_file.write_text(TOKEN + "\n")
    # Every test here sends wrong tokens from 127.0.0.1 on purpose: no failed-auth limit (test_roles tests it).
    node = NodeProc(base / "n1", extra=[*NODE_ARGS, "--token-file", str(token_file), "--auth-failure-limit", "0",
                                        "--rest", f"127.0.0.1:{free_port()}"])
    gw: GatewayProc | None = None
    try:
        node.start()
        wait_http(rest_url(node), node.proc, 15, node.log)
        gw = GatewayProc(base, [node], extra=["--token-file", str(token_file), "--auth-failure-limit", "0"]).start()
        with client(rest_url(node), TOKEN) as c:  # one long running task, so listings are not empty
            seeded = c.post(START, params={"idempotency_key": "seed"}, json={"duration": 600, "steps": 600})
            assert seeded.status_code == 200, seeded.text
            assert c.post("/task_manager_test/test_module").status_code == 200
            deadline = time.monotonic() + 10 * TIMEOUT_MULT
            while c.get("/task_manager/list_module_tasks/builtin").json()[0]["state"] != "running":
                assert time.monotonic() < deadline, "seeded task never started"
                time.sleep(0.01)  # snapshots must not race its created → running step
        yield {"node": rest_url(node), "gateway": gw.url}
    finally:
        codes = [p.stop() for p in (gw, node) if p is not None]
    assert codes == [0, 0], codes


@pytest.fixture(scope="module")
def clients(surfaces: dict[str, str]) -> Iterator[dict[str, httpx.Client]]:
    with client(surfaces["node"], TOKEN) as node, client(surfaces["gateway"], TOKEN) as gateway:
        yield {"node": node, "gateway": gateway}


@pytest.fixture(params=["node", "gateway"])
def rest(request: pytest.FixtureRequest, clients: dict[str, httpx.Client]) -> Iterator[httpx.Client]:
    """An authenticated client; asserts after the test that the node's observable state is unchanged."""
    c = clients[request.param]
    before = snapshot(c)
    yield c
    assert snapshot(c) == before, "a rejected request changed the node's state"


def snapshot(c: httpx.Client) -> tuple[Any, ...]:
    modules = c.get("/task_manager/list_modules").json()
    tasks = tuple((m, t["task_id"], t["state"], t["sequence_number"]) for m in modules
                  for t in c.get(f"/task_manager/list_module_tasks/{m}", params={"internal": "true"}).json())
    return tuple(modules), tasks, c.get("/task_manager/ttl").json(), c.get("/task_manager/user_ttl").json()


# ---------------------------------------------------------------- bodies


def test_malformed_json(rest: httpx.Client) -> None:
    msg = expect_error(rest.post(START, content=b'{"duration": ', headers={"content-type": "application/json"}),
                       400)
    assert msg.startswith("malformed JSON body"), msg


@pytest.mark.parametrize("body", [b"[1, 2]", b'"x"', b"3", b"null"])
def test_body_not_an_object(rest: httpx.Client, body: bytes) -> None:
    expect_error(rest.post(START, content=body, headers={"content-type": "application/json"}), 400,
                 "the request body must be a JSON object of task arguments")


@pytest.mark.parametrize("ctype", ["text/plain", "application/x-www-form-urlencoded", ""])
def test_wrong_content_type(rest: httpx.Client, ctype: str) -> None:
    headers = {"content-type": ctype} if ctype else {}
    expect_error(rest.post(START, content=b'{"duration": 0}', headers=headers), 400,
                 "the request body must be JSON: send Content-Type: application/json")


def test_wrong_charset(rest: httpx.Client) -> None:
    expect_error(rest.post(START, content=b'{"duration": 0}',
                           headers={"content-type": "application/json; charset=latin-1"}), 400,
                 "unsupported charset 'latin-1': the request body must be UTF-8 JSON")


def test_non_utf8_body(rest: httpx.Client) -> None:
    expect_error(rest.post(START, content=b'{"duration": "\xff\xfe"}', headers={"content-type": "application/json"}),
                 400, "the request body is not valid UTF-8")


def test_huge_body(rest: httpx.Client) -> None:
    big = b'{"duration": 0, "pad": "' + b"x" * LIMIT + b'"}'
    expect_error(rest.post(START, content=big, headers={"content-type": "application/json"}), 413,
                 f"request body larger than {LIMIT} bytes")

    def chunks() -> Iterator[bytes]:  # no Content-Length: refused while reading
        yield b'{"pad": "'
        for _ in range(40):
            yield b"x" * 65536
        yield b'"}'

    expect_error(rest.post(START, content=chunks(), headers={"content-type": "application/json"}), 413,
                 f"request body larger than {LIMIT} bytes")


def test_arguments_rejected_by_the_task_type(rest: httpx.Client) -> None:
    expect_error(rest.post(START, json={}), 400, "missing required argument 'duration' for builtin:sleep")
    expect_error(rest.post(START, json={"duration": "x"}), 400)


# ---------------------------------------------------------------- ids, modules


@pytest.mark.parametrize(("method", "path"), ID_PATHS)
@pytest.mark.parametrize("bad", ["..%2F..%2Fetc", "..%2F..%2Fetc%2Fpasswd", "not-a-uuid", UNKNOWN.upper(),
                                 UNKNOWN + "0", "%FF%FE", "%20"])
def test_malformed_ids(rest: httpx.Client, method: str, path: str, bad: str) -> None:
    msg = expect_error(rest.request(method, path.format(bad)), 400)
    assert msg.startswith("malformed task id"), msg


@pytest.mark.parametrize(("method", "path"), ID_PATHS)
def test_unknown_id(rest: httpx.Client, method: str, path: str) -> None:
    expect_error(rest.request(method, path.format(UNKNOWN)), 400, f"task with id {UNKNOWN} not found")


def test_unknown_id_in_test_api(rest: httpx.Client) -> None:
    expect_error(rest.delete("/task_manager_test/test_task", params={"task_id": UNKNOWN}), 400,
                 f"task with id {UNKNOWN} not found")
    expect_error(rest.post("/task_manager_test/test_task", params={"parent_id": UNKNOWN}), 400,
                 f"task with id {UNKNOWN} not found")
    expect_error(rest.delete("/task_manager_test/test_task"), 400, "missing parameter task_id")
    expect_error(rest.post("/task_manager_test/test_task", params={"shard": 70000}), 400,
                 "shard must be between 0 and 65536")


def test_unknown_module(rest: httpx.Client) -> None:
    expect_error(rest.get("/task_manager/list_module_tasks/nope"), 400, "module nope not found")
    expect_error(rest.get("/task_manager/list_module_tasks/..%2F..%2Fetc"), 400, "module ../../etc not found")
    expect_error(rest.post("/task_manager/drain/nope"), 400, "module nope not found")
    expect_error(rest.post("/tasks/nope/sleep", json={}), 400, "module nope not found")
    expect_error(rest.post("/tasks/builtin/nope", json={}), 400, "task type builtin:nope not found")


def test_idempotency_conflict(rest: httpx.Client) -> None:
    seed = {"duration": 600, "steps": 600}
    first = rest.post(START, params={"idempotency_key": "seed"}, json=seed)
    assert first.status_code == 200 and rest.post(START, params={"idempotency_key": "seed"}, json=seed).json() == (
        first.json()), "the same key and arguments answer the same id and start nothing"
    expect_error(rest.post(START, params={"idempotency_key": "seed"}, json={**seed, "steps": 5}), 400,
                 "idempotency key 'seed' was already used with different arguments")


# ---------------------------------------------------------------- query parameters


@pytest.mark.parametrize("path", ["/task_manager/ttl", "/task_manager/user_ttl"])
@pytest.mark.parametrize("value", ["-1", "1.5", "1e3", "abc", "", str(1 << 63), str(1 << 64), "0x10", " 1", "+1"])
def test_bad_ttl(rest: httpx.Client, path: str, value: str) -> None:
    name = path.rsplit("/", 1)[1]
    msg = expect_error(rest.post(path, params={name: value}), 400)
    assert msg.startswith(f"missing parameter {name}" if value == "" else f"bad parameter {name}"), msg


@pytest.mark.parametrize("path", ["/task_manager/ttl", "/task_manager/user_ttl"])
def test_ttl_out_of_range(rest: httpx.Client, path: str) -> None:
    name = path.rsplit("/", 1)[1]
    expect_error(rest.post(path), 400, f"missing parameter {name}")
    before = rest.get(path).json()
    expect_error(rest.post(path, params={name: str(1 << 32)}), 400,
                 "ttl must be at most 4294967295 (ScyllaDB's task_ttl_in_seconds range), got 4294967296")
    expect_error(rest.post(path, params={name: str((1 << 63) - 1)}), 400,
                 f"ttl must be at most 4294967295 (ScyllaDB's task_ttl_in_seconds range), got {(1 << 63) - 1}")
    assert rest.get(path).json() == before  # refused: unchanged


@pytest.mark.parametrize("value", ["-1", "-0.5", "abc", "nan", "inf", "1e400", str(1 << 64), "1,5"])
def test_bad_timeout(rest: httpx.Client, value: str) -> None:
    msg = expect_error(rest.get(f"/task_manager/wait_task/{UNKNOWN}", params={"timeout": value}), 400)
    assert msg == f"bad parameter timeout: expected a non-negative number, got {value!r}", msg


@pytest.mark.parametrize("value", ["yes", "2", "", "truee"])
def test_bad_boolean(rest: httpx.Client, value: str) -> None:
    msg = expect_error(rest.get("/task_manager/list_module_tasks/builtin", params={"internal": value}), 400)
    assert msg == f"bad parameter internal: expected true, false, 1 or 0, got {value!r}"
    expect_error(rest.post(START, params={"cluster": value}, json={"duration": 0}), 400)


def test_bad_event_position(rest: httpx.Client) -> None:
    expect_error(rest.get("/events", params={"after": "-3"}), 400)
    expect_error(rest.get("/events", headers={"last-event-id": "x"}), 400)


# ---------------------------------------------------------------- routing errors, auth


def test_unknown_route_and_method(rest: httpx.Client) -> None:
    expect_error(rest.get("/nope"), 404, "Not Found")
    expect_error(rest.get("/task_manager/abort_task/" + UNKNOWN), 405, "Method Not Allowed")
    expect_error(rest.put("/task_manager/ttl", params={"ttl": 1}), 405, "Method Not Allowed")


@pytest.mark.parametrize(("method", "path"), [("POST", "/admin/tasks/%2F"), ("PUT", "/cron/%2F"),
                                            ("GET", "/cron/"), ("GET", "/task_manager/list_modules/")])
def test_a_slash_too_many_is_not_found_rather_than_redirected(rest: httpx.Client, method: str, path: str) -> None:
    """A segment that decodes to "/" leaves an empty one; neither it nor a trailing slash is redirected to the
    path without it (a 307 would have the client send its POST again to another route)."""
    expect_error(rest.request(method, path, json={}), 404, "Not Found")


@pytest.mark.parametrize("auth", [None, "Bearer wrong", f"Bearer {TOKEN}x", f"bearer {TOKEN}", TOKEN,
                                  f"Basic {TOKEN}", "Bearer"])
def test_unauthenticated(rest: httpx.Client, surfaces: dict[str, str], auth: str | None) -> None:
    base = str(rest.base_url).rstrip("/")
    headers = {"authorization": auth} if auth is not None else {}
    with httpx.Client(base_url=base, headers=headers, timeout=10) as anon:
        calls: list[tuple[str, str, dict[str, Any]]] = [
            ("GET", "/task_manager/list_modules", {}), ("POST", "/task_manager/ttl", {"params": {"ttl": 99}}),
            ("POST", START, {"json": {"duration": 0}}), ("POST", "/task_manager_test/test_module", {}),
            ("DELETE", "/task_manager_test/test_module", {}), ("GET", "/events", {}), ("GET", "/nope", {}),
            ("GET", "/cluster/nodes", {}), ("GET", "/cron", {}), ("PUT", "/cron", {"json": {"schedules": []}}),
            ("GET", "/.config/cron.json", {}), ("POST", "/cron/x/run-now", {}), ("GET", "/admin/tasks", {}),
            ("POST", "/admin/tasks/sleep", {"json": {"duration": 0}}),
        ]
        for method, path, kw in calls:
            resp = anon.request(method, path, **kw)
            expect_error(resp, 401, "missing or wrong bearer token")
            assert resp.headers["www-authenticate"] == "Bearer"
        big = anon.post(START, content=b"x" * (2 * LIMIT), headers={"content-type": "application/json"})
        expect_error(big, 401, "missing or wrong bearer token")  # refused before the body is read
        assert anon.get("/health").status_code == 200
        expect_error(anon.get("/metrics"), 401, "missing or wrong bearer token")  # metrics need role read
        assert anon.get("/openapi.json").status_code == 200
