"""Headless Chromium for the dashboard's tests: Debian's ``chromium`` driven by Playwright for Python.

No browser is downloaded (``playwright install`` is never run): Playwright launches the system binary by
``executable_path``. Chromium is kept off every address but loopback. ``Watch`` records what a person
would see go wrong (console errors, uncaught exceptions, failed requests) so a test can assert that a page
loaded cleanly. Screenshots go to the artifact folder (``TASKWARD_TEST_ARTIFACTS``, default
``test-artifacts/`` at the repository root) and, with ``TASKWARD_UPDATE_SCREENSHOTS=1``, to
``docs/screenshots/`` for the README.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.support.procs import REPO, TIMEOUT_MULT

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
ARTIFACTS = Path(os.environ.get("TASKWARD_TEST_ARTIFACTS", REPO / "test-artifacts")) / "ui"
SCREENSHOTS = REPO / "docs" / "screenshots"
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-extensions",
    "--disable-background-networking", "--disable-component-update", "--disable-sync", "--no-proxy-server",
    "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
]


def launch() -> Iterator[Any]:
    """A browser for a module's tests (skipped with a reason when Chromium or Playwright is missing)."""
    if CHROMIUM is None:
        pytest.skip("chromium is not installed (scripts/setup.sh installs it)")
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is missing (pip install -e '.[test]')")
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


@dataclass
class Watch:
    """What went wrong on a page, as it happened."""

    console_errors: list[str] = field(default_factory=list)
    page_errors: list[str] = field(default_factory=list)
    failed_requests: list[str] = field(default_factory=list)
    bad_responses: list[str] = field(default_factory=list)

    def attach(self, page: Any) -> Watch:
        page.on("console", lambda m: self.console_errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: self.page_errors.append(str(e)))
        page.on("requestfailed", lambda r: self.failed_requests.append(f"{r.method} {r.url}: {r.failure}"))
        page.on("response", lambda r: self.bad_responses.append(f"{r.status} {r.url}") if r.status >= 400 else None)
        return self

    def assert_clean(self) -> None:
        assert (self.console_errors, self.page_errors, self.failed_requests, self.bad_responses) == ([], [], [], [])


def open_page(browser: Any, url: str, *, width: int = 1280, height: int = 800, scheme: str = "light",
              init: Callable[[Any], None] | None = None) -> tuple[Any, Watch]:
    context = browser.new_context(viewport={"width": width, "height": height}, color_scheme=scheme)
    page = context.new_page()
    page.set_default_timeout(20_000 * TIMEOUT_MULT)
    watch = Watch().attach(page)
    if init is not None:
        init(page)
    page.goto(url)
    return page, watch


def screenshot(page: Any, name: str) -> Path:
    """Saves ``name``.png as a test artifact, and for the README when asked to."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    if os.environ.get("TASKWARD_UPDATE_SCREENSHOTS") == "1":
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, SCREENSHOTS / f"{name}.png")
    return path


def wait_until(check: Callable[[], Any], timeout: float, what: str, interval: float = 0.05) -> Any:
    """For values only a script can read (a page's own measurements): bounded in time; Playwright's
    ``wait_for_function`` would evaluate a string, which the dashboard's CSP refuses."""
    end = time.monotonic() + timeout * TIMEOUT_MULT
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > end:
            raise TimeoutError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)
