"""Fuzzing the REST surface: generated parameters and bodies for every route, through the real FastAPI app
in-process (httpx's ASGI transport) in front of one real node process.

Each case is a route with its path segments, query parameters and body drawn from values a client could
send: valid ones, near-misses and garbage (odd Unicode, bad numbers, ids that are not ids, broken JSON,
bodies that are not UTF-8 or not JSON, unknown parameters). Every answer is 2xx with a body of the
route's shape or a 4xx ``{"message", "code"}``, never 5xx; an exception in a handler fails the case with
its traceback (the transport re-raises it). A rejected request leaves the node's store as it was
(``world.FuzzNode.fingerprint``); the TTLs answered agree with those set; a normal call works at the end.

The SSE streams (``/events``, ``/cluster/nodes/stream``) are left out: a valid request never ends, which
a case cannot wait for; ``tests/e2e`` covers their parameters.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from fastapi import FastAPI
from hypothesis import example, given, settings
from hypothesis import strategies as st

from taskward.api.rest.app import RestSettings, create_app
from tests.fuzz.cases import CaseCount
from tests.fuzz.values import BAD_JSON, FLOATS, JSON_VALUES, ODD_TEXT, json_text, task_ids
from tests.fuzz.world import MAX_TTL, NEVER_DUE, SCHEDULE_ID, Fingerprint, FuzzNode, Seeded

pytestmark = pytest.mark.timeout(900)

UUID_RE = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
WAIT_S = 0.3
BIG_BODY = b'{"duration": 0, "pad": "' + b"x" * (1024 * 1024) + b'"}'  # over the 1 MiB body limit


@dataclass(frozen=True)
class Route:
    method: str
    path: str  # with {slot} for a path segment
    params: tuple[str, ...] = ()
    body: str = ""  # "", "args" (task arguments), "schedule", "document"
    mutates: bool = True

    def __repr__(self) -> str:
        return f"{self.method} {self.path}"


ROUTES = [
    Route("GET", "/task_manager/list_modules", mutates=False),
    Route("GET", "/task_manager/list_module_tasks/{module}", ("internal", "keyspace", "table"), mutates=False),
    Route("GET", "/task_manager/task_status/{id}"),  # reading a finished root unregisters it
    Route("GET", "/task_manager/task_status_recursive/{id}"),
    Route("POST", "/task_manager/abort_task/{id}"),
    Route("GET", "/task_manager/wait_task/{id}", ("timeout",), mutates=False),
    Route("GET", "/task_manager/ttl", mutates=False),
    Route("POST", "/task_manager/ttl", ("ttl",)),
    Route("GET", "/task_manager/user_ttl", mutates=False),
    Route("POST", "/task_manager/user_ttl", ("user_ttl",)),
    Route("POST", "/task_manager/drain/{module}"),
    Route("POST", "/task_manager_test/test_task",
          ("task_id", "shard", "parent_id", "keyspace", "table", "entity", "user_task")),
    Route("DELETE", "/task_manager_test/test_task", ("task_id",)),
    Route("POST", "/task_manager_test/finish_test_task/{id}", ("error",)),
    Route("POST", "/tasks/{module}/{type}", ("cluster", "nodes", "idempotency_key", "keyspace", "table", "entity"),
          body="args"),
    Route("GET", "/cluster/nodes", mutates=False),
    Route("GET", "/task_types", mutates=False),
    Route("GET", "/tasks/{module}", mutates=False),
    Route("GET", "/cron", mutates=False),
    Route("PUT", "/cron", body="document"),
    Route("PUT", "/.config/cron.json", body="document"),
    Route("GET", "/cron/{schedule}", mutates=False),
    Route("PUT", "/cron/{schedule}", body="schedule"),
    Route("DELETE", "/cron/{schedule}"),
    Route("POST", "/cron/{schedule}/enable"),
    Route("POST", "/cron/{schedule}/disable"),
    Route("POST", "/cron/{schedule}/run-now"),
    Route("GET", "/admin/tasks", mutates=False),
    Route("POST", "/admin/tasks/{type}", body="args"),
    Route("POST", "/admin/tasks/{id}/cancel"),
    Route("GET", "/health", mutates=False),
]
RARE = [Route("POST", "/task_manager_test/test_module"), Route("DELETE", "/task_manager_test/test_module")]


@dataclass
class Case:
    route: Route
    path: str
    params: dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    content_type: str | None = None

    def __repr__(self) -> str:
        body = self.body if len(self.body) < 300 else self.body[:300] + b"..."
        return f"Case({self.route!r}, path={self.path!r}, params={self.params!r}, body={body!r}, " \
               f"content_type={self.content_type!r})"


def strategies(s: Seeded) -> dict[str, st.SearchStrategy[str]]:
    numbers = st.one_of(st.sampled_from(["0", "1", "60", str(MAX_TTL), str(MAX_TTL + 1), "-1", "1.5", "1e3", " 1",
                                         "0x10", "٣", "9" * 30, "", "nan", "inf"]), FLOATS.map(repr))
    booleans = st.sampled_from(["true", "false", "1", "0", "TRUE", "yes", "", "2", "true "])
    return {
        "id": task_ids(s.ids), "task_id": task_ids(s.ids), "parent_id": task_ids(s.ids),
        "module": st.one_of(st.sampled_from(["builtin", "sample", "test", "nosuch", "..", "a/b"]), ODD_TEXT),
        "type": st.one_of(st.sampled_from(["sleep", "fail", "whoami", "tree", "nosuch", "sleep/x"]), ODD_TEXT),
        "schedule": st.one_of(st.sampled_from([SCHEDULE_ID, "fuzz-other", "-x", "a" * 129]), ODD_TEXT),
        "internal": booleans, "user_task": booleans, "cluster": booleans,
        "ttl": numbers, "user_ttl": numbers, "timeout": st.one_of(st.sampled_from(["0", "0.0", "-0"]), numbers),
        "shard": numbers, "nodes": st.sampled_from(["n1", "n1,n1", "n2", ",", "", "n1,,x"]),
        "idempotency_key": st.one_of(st.sampled_from(["k1", "k2"]), ODD_TEXT),
    }


def bodies(kind: str) -> st.SearchStrategy[tuple[bytes, str | None]]:
    """A body and its content type (None: no header)."""
    types = st.sampled_from(["application/json", "application/json; charset=utf-8", "Application/JSON",
                             "application/json; charset=latin-1", "text/plain", None])
    schedule = {"id": SCHEDULE_ID, "module": "builtin", "task_type": "sleep", "schedule": NEVER_DUE,
                "args": {"duration": 0}, "timezone": "Europe/Paris", "concurrency": "allow"}
    valid: list[Any] = {
        "args": [{"duration": 0}, {"duration": 0, "steps": 2}, {"error": "x"}, {"extra": [1, None]}, {}],
        "schedule": [schedule, {**schedule, "enabled": False}, {k: v for k, v in schedule.items() if k != "id"}],
        "document": [{"schedules": [schedule]}, {"schedules": []}],
    }[kind]
    fields = st.sampled_from(sorted(schedule)) if kind != "args" else st.text(max_size=8)
    edited = st.tuples(st.sampled_from(valid), fields, JSON_VALUES).map(
        lambda t: {**t[0], t[1]: t[2]} if isinstance(t[0], dict) and "schedules" not in t[0]
        else {"schedules": [{**schedule, t[1]: t[2]}]})
    text = st.one_of(st.sampled_from(valid).map(json.dumps), edited.map(json.dumps), json_text([]),
                     st.sampled_from(BAD_JSON)).map(str.encode)
    raw = st.one_of(text, st.binary(max_size=40), st.sampled_from([b"", b"   ", b"\xff\xfe{}", BIG_BODY]))
    return st.tuples(raw, types)


def case_strategy(route: Route, named: dict[str, st.SearchStrategy[str]]) -> st.SearchStrategy[Case]:
    slots = re.findall(r"{(\w+)}", route.path)
    segment = st.tuples(*[named[s] for s in slots]) if slots else st.just(())
    params = st.dictionaries(st.sampled_from([*route.params, "bogus"]),
                             st.one_of(*[named.get(p, ODD_TEXT) for p in route.params]) if route.params else ODD_TEXT,
                             max_size=3)
    body = bodies(route.body) if route.body else st.one_of(st.just((b"", None)), bodies("args"))

    def make(args: tuple[tuple[str, ...], dict[str, str], tuple[bytes, str | None]]) -> Case:
        values, query, (data, ctype) = args
        path = route.path
        for slot, value in zip(slots, values, strict=True):
            path = path.replace("{" + slot + "}", quote(value, safe="") or "%20", 1)
        return Case(route, path, query, data, ctype)

    return st.tuples(segment, params, body).map(make)


class Checker:
    """The oracle: what each answer must look like, and what the store must still hold."""

    def __init__(self, node: FuzzNode, count: CaseCount) -> None:
        self.node = node
        self.count = count
        self.ttl = dict(zip(("ttl", "user_ttl"), node.ttls(), strict=True))
        self.fp: Fingerprint = node.fingerprint()

    def check(self, case: Case, answer: httpx.Response | None) -> None:
        self.count.add()
        if answer is None:  # a wait still waiting: it changed nothing
            assert self.node.fingerprint() == self.fp, f"{case!r} changed the store while it waited"
            return
        route, status = case.route, answer.status_code
        assert status < 500, f"{case!r} -> {status} {answer.text[:500]}"
        assert not 300 <= status < 400, f"{case!r} -> {status} to {answer.headers.get('location')}"
        if status >= 400:
            body = answer.json()
            assert set(body) == {"message", "code"} and body["code"] == status, (case, body)
            assert isinstance(body["message"], str) and body["message"].strip(), (case, body)
            assert "Traceback" not in body["message"], body
        else:
            self.check_ok(case, answer)
            if route.mutates:
                self.fp = self.node.settle(self.fp)
                return
        after = self.node.fingerprint()
        assert after == self.fp, f"{case!r} -> {status} changed the store:\n{self.node.explain(self.fp, after)}"

    def check_ok(self, case: Case, answer: httpx.Response) -> None:
        route, path = case.route, case.route.path
        if path in ("/health",):
            return
        body = answer.json()
        if path in ("/task_manager/ttl", "/task_manager/user_ttl"):
            name = path.rsplit("/", 1)[1]
            assert body == self.ttl[name], (case, body, self.ttl)  # GET: the value; POST: the previous one
            if route.method == "POST":
                self.node.restore_ttls()  # so that no finished test task expires in the background
        elif path == "/tasks/{module}/{type}" or (path == "/task_manager_test/test_task" and route.method == "POST"):
            assert isinstance(body, str) and UUID_RE.fullmatch(body), (case, body)
        elif path == "/admin/tasks/{type}":
            assert set(body) == {"id"} and UUID_RE.fullmatch(body["id"]), (case, body)
        elif path in ("/task_manager/task_status/{id}", "/task_manager/wait_task/{id}"):
            assert body["id"] == body["task_id"] and UUID_RE.fullmatch(body["id"]), (case, body)
        elif path.startswith("/task_manager/list_module_tasks/"):
            assert isinstance(body, list) and all(UUID_RE.fullmatch(t["task_id"]) for t in body), (case, body)
        elif path == "/task_manager/list_modules":
            assert isinstance(body, list) and all(isinstance(m, str) for m in body), body


@pytest.fixture(scope="module")
def fuzz_node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FuzzNode]:
    node = FuzzNode(tmp_path_factory.mktemp("fuzz-rest") / "n1").start()
    try:
        yield node
    finally:
        code = node.stop()
    assert code == 0, f"node did not stop cleanly ({code}):\n{node.proc.log()}"


def test_every_route_answers_every_request(fuzz_node: FuzzNode) -> None:
    count = CaseCount("rest")
    checker = Checker(fuzz_node, count)
    named = strategies(fuzz_node.seeded)
    weighted = [r for r in ROUTES for _ in range(4)] + RARE
    case = st.one_of([case_strategy(r, named) for r in weighted])
    runner = asyncio.Runner()

    async def open_app() -> tuple[FastAPI, httpx.AsyncClient]:  # gRPC channels belong to the loop that opens them
        app = create_app(RestSettings(listen="127.0.0.1:0", nodes=(fuzz_node.address,)))
        return app, httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://fuzz", timeout=30)

    app, client = runner.run(open_app())

    async def send(c: Case) -> httpx.Response | None:
        """The answer; None for a wait still waiting after ``WAIT_S`` (one without a timeout waits for its task)."""
        headers = {"content-type": c.content_type} if c.content_type else {}
        request = client.request(c.route.method, c.path, params=c.params, content=c.body or None, headers=headers)
        if c.route.path != "/task_manager/wait_task/{id}":
            return await request
        try:
            async with asyncio.timeout(WAIT_S):
                return await request
        except TimeoutError:
            return None

    @settings(max_examples=4_500)
    @given(cases=st.lists(case, min_size=1, max_size=4))
    @example(cases=[Case(Route("POST", "/tasks/{module}/{type}", body="args"), "/tasks/builtin/sleep",
                         body=b'{"duration": NaN}', content_type="application/json")])
    @example(cases=[Case(Route("POST", "/admin/tasks/{type}", body="args"), "/admin/tasks/%2F", body=b"{}",
                         content_type="application/json")])
    def each(cases: list[Case]) -> None:
        for c in cases:
            checker.check(c, runner.run(send(c)))

    try:
        each()
    finally:
        runner.run(client.aclose())
        runner.run(app.state.pool.close())
        runner.close()
    count.check()
    fuzz_node.assert_serving()
