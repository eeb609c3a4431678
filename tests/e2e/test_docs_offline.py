"""``/docs`` works offline: the page and every asset it names come from the node itself, and a real headless
Chromium (kept off every address but loopback) renders FastAPI's OpenAPI 3.1 document with it."""

from __future__ import annotations

import re
import shutil
import subprocess
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.procs import TIMEOUT_MULT, NodeProc, free_port

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture(scope="module")
def rest(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    address = f"127.0.0.1:{free_port()}"
    n = NodeProc(tmp_path_factory.mktemp("docs") / "n1", extra=["--rest", address]).start()
    yield f"http://{address}"
    n.stop()


def get(url: str) -> tuple[int, str, bytes]:
    with urllib.request.urlopen(url, timeout=10) as resp:
        return resp.status, resp.headers.get("Content-Type", ""), resp.read()


def test_the_page_and_every_asset_come_from_the_server(rest: str) -> None:
    status, ctype, body = get(f"{rest}/docs")
    html = body.decode()
    assert (status, ctype.split(";")[0]) == (200, "text/html")
    refs = re.findall(r"""(?:src|href)=["']([^"']+)["']""", html) + re.findall(r"""url: ?["']([^"']+)["']""", html)
    assert refs, html
    for ref in refs:
        url = urllib.parse.urljoin(f"{rest}/docs", ref)
        assert url.startswith(rest), f"/docs refers to {url}, not to the server itself"
        assert get(url)[0] == 200, url
    js = get(f"{rest}/docs/assets/swagger-ui-bundle.js")[2].decode()
    assert "isOAS31" in js  # Swagger UI 5: it can render OpenAPI 3.1
    assert get(f"{rest}/openapi.json")[2].startswith(b'{"openapi":"3.1')


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (scripts/setup.sh installs it)")
def test_headless_chromium_renders_the_api(rest: str, tmp_path: Path) -> None:
    assert CHROMIUM is not None
    out = subprocess.run(
        [CHROMIUM, "--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-extensions",
         "--disable-background-networking", "--disable-component-update", "--disable-sync", "--no-proxy-server",
         "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1", f"--user-data-dir={tmp_path / 'profile'}",
         "--virtual-time-budget=15000", "--dump-dom", f"{rest}/docs"],
        capture_output=True, text=True, timeout=90 * TIMEOUT_MULT, check=False)
    dom = out.stdout
    assert out.returncode == 0, out.stderr[-2000:]
    assert "Unable to render this definition" not in dom
    assert 'class="swagger-ui' in dom and "taskward" in dom
    for path in ("/task_manager/list_modules", "/task_manager/task_status/{task_id}", "/cron"):
        assert path in dom, f"{path} not rendered"
