"""The dashboard's files as the REST app serves them (in-process), the argument signatures a start form is
built from, and the helper that ends a REST call whose client went away."""

from __future__ import annotations

import asyncio
import re
import tomllib
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from starlette.requests import Request
from starlette.types import Message

from taskward import builtin_tasks
from taskward.api.rest.app import RestSettings, create_app
from taskward.api.rest.disconnect import ClientGone, unless_disconnected
from taskward.registry import Registry, TaskType
from taskward.type_signature import Param, signature_of

REPO = Path(__file__).resolve().parents[2]
UI = REPO / "node" / "ui"


@pytest.fixture
async def ui() -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(RestSettings(listen="127.0.0.1:1", nodes=("127.0.0.1:1",), token="secret"))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
        yield c
    await app.state.pool.close()


async def test_the_page_and_every_file_it_loads_are_served(ui: httpx.AsyncClient) -> None:
    page = await ui.get("/ui")  # no token needed: the files hold no data
    assert page.status_code == 200 and page.headers["content-type"] == "text/html; charset=utf-8"
    csp = page.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "frame-ancestors 'none'" in csp and "unsafe" not in csp
    assert page.headers["x-content-type-options"] == "nosniff"
    refs = re.findall(r'(?:src|href)="(ui/[^"]+)"', page.text)
    modules = {p.name for p in UI.glob("*.js")}
    assert {r.removeprefix("ui/") for r in refs} >= {"app.js", "style.css", "favicon.svg"}
    for js in modules:  # every module another one imports is there too
        for imported in re.findall(r'from "\./([a-z_]+\.js)"', (UI / js).read_text()):
            assert imported in modules, f"{js} imports a missing {imported}"
    kinds = {".js": "text/javascript; charset=utf-8", ".css": "text/css; charset=utf-8", ".svg": "image/svg+xml"}
    for name in {r.removeprefix("ui/") for r in refs} | modules:
        resp = await ui.get(f"/ui/{name}")
        assert resp.status_code == 200, name
        assert resp.headers["content-type"] == kinds[Path(name).suffix], name
        assert resp.content == (UI / name).read_bytes()


async def test_files_are_revalidated_cheaply(ui: httpx.AsyncClient) -> None:
    first = await ui.get("/ui/app.js")
    assert first.headers["cache-control"] == "no-cache" and first.headers["etag"].startswith('"')
    again = await ui.get("/ui/app.js", headers={"if-none-match": first.headers["etag"]})
    assert (again.status_code, again.content) == (304, b"")
    changed = await ui.get("/ui/app.js", headers={"if-none-match": '"other"'})
    assert changed.status_code == 200 and changed.content == first.content


@pytest.mark.parametrize("name", ["nope.js", "..%2Fapp.py", "app.py", ".hidden.js", "APP.JS"])
async def test_only_dashboard_files_are_served(ui: httpx.AsyncClient, name: str) -> None:
    resp = await ui.get(f"/ui/{name}")
    assert resp.status_code == 404
    body = resp.json()
    assert body["code"] == 404 and isinstance(body["message"], str) and body["message"]


async def test_the_slash_form_redirects_relatively(ui: httpx.AsyncClient) -> None:
    resp = await ui.get("/ui/")
    assert (resp.status_code, resp.headers["location"]) == (308, "../ui")


async def test_the_api_still_needs_the_token(ui: httpx.AsyncClient) -> None:
    for path in ("/task_types", "/tasks/builtin", "/cluster/nodes/stream", "/events?live=true"):
        resp = await ui.get(path)
        assert resp.status_code == 401, path
        assert resp.json() == {"message": "missing or wrong bearer token", "code": 401}


def test_every_dashboard_file_is_shipped_in_the_package() -> None:
    globs = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["taskward"]
    shipped = {p.name for g in globs if g.startswith("ui/") for p in UI.glob(g.removeprefix("ui/"))}
    assert shipped == {p.name for p in UI.iterdir()}


def test_signatures_describe_what_a_start_checks() -> None:
    registry = Registry()
    registry.load_module(builtin_tasks)
    sleep_sig, fail_sig = signature_of(registry.get("builtin", "sleep")), signature_of(registry.get("builtin", "fail"))
    assert sleep_sig.params == (Param(name="duration", json_type="number", required=True, default_json=""),
                                Param(name="steps", json_type="integer", required=False, default_json="10"))
    assert fail_sig.params == (Param(name="error", json_type="string", required=False, default_json='"failed"'),)

    class Opaque:
        pass

    async def odd(ctx: object, flag: bool = False, data: dict[str, int] | None = None, thing: object = Opaque(),
                  **more: object) -> None: ...

    sig = signature_of(TaskType(module="t", name="odd", body=odd))
    assert sig.extra_args is True
    assert sig.params == (Param(name="flag", json_type="boolean", required=False, default_json="false"),
                          Param(name="data", json_type="", required=False, default_json="null"),
                          Param(name="thing", json_type="", required=False, default_json=""))


def _request(receive: object) -> Request:
    return Request({"type": "http", "method": "GET", "path": "/", "headers": [], "query_string": b""},
                   receive)  # type: ignore[arg-type]


async def test_a_call_is_cancelled_when_its_client_goes_away() -> None:
    gone = asyncio.Event()
    messages: list[Message] = [{"type": "http.request", "body": b"", "more_body": False}]

    async def receive() -> Message:
        if messages:
            return messages.pop(0)
        await gone.wait()
        return {"type": "http.disconnect"}

    started = asyncio.Event()
    cancelled = asyncio.Event()

    async def long_call() -> str:
        started.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.set()
            raise
        return "never"

    waiting = asyncio.create_task(unless_disconnected(_request(receive), long_call()))
    await started.wait()
    assert not waiting.done()
    gone.set()
    with pytest.raises(ClientGone):
        await waiting
    assert cancelled.is_set()


async def test_a_call_that_ends_first_answers() -> None:
    async def receive() -> Message:
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    async def quick() -> int:
        return 7

    assert await unless_disconnected(_request(receive), quick()) == 7
