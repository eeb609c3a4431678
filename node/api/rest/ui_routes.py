"""``/ui``: the dashboard, served by the process itself from files shipped inside the package.

The page is static (HTML, CSS and JavaScript modules in ``taskward/ui/``, no build step and nothing
fetched from elsewhere); it talks to the same REST API as any client, with the bearer token it asks for
once. So it needs no token to load (``/ui`` is an open path, like ``/docs``): the files hold no data.

Caching: every answer carries a strong ``ETag`` (a hash of the file) and ``Cache-Control: no-cache``,
so a browser revalidates each file with one cheap 304 and an upgraded node is picked up at once, with
no stale mix of old and new modules.

Headers: a strict Content-Security-Policy (scripts, styles and connections from this origin only; no
inline script, no framing), ``nosniff`` and no referrer, so a task's error message or argument shown on
the page can never run as code there, and the page cannot be framed by another site.

Links in the page are relative to ``/ui`` (``ui/app.js``), so the dashboard also works behind a
reverse proxy that serves the API under a path prefix; ``/ui/`` redirects to ``/ui`` for the same reason.
"""

from __future__ import annotations

import hashlib
import importlib.resources
import re
from dataclasses import dataclass
from functools import cache

from fastapi import APIRouter, Request
from starlette.responses import RedirectResponse, Response

from taskward.errors import TaskwardError

router = APIRouter(include_in_schema=False)

UI_PATH = "/ui"
ASSET_PREFIX = "/ui/"
INDEX = "index.html"
MEDIA_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
}
_NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,63}\.(?:html|js|css|svg)")
SECURITY_HEADERS = {
    "content-security-policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
        "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    ),
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    "x-frame-options": "DENY",
}


class UiAssetNotFound(TaskwardError):
    http_override = 404

    def __init__(self, name: str) -> None:
        super().__init__(f"no dashboard file {name!r}")


@dataclass(frozen=True, slots=True)
class Asset:
    body: bytes
    media_type: str
    etag: str


@cache
def asset(name: str) -> Asset | None:
    """A file of the shipped dashboard, read once; None for a name that is not one (nothing outside the
    folder can be named: names are plain file names of the four served kinds)."""
    if not _NAME.fullmatch(name):
        return None
    resource = importlib.resources.files("taskward").joinpath("ui", name)
    if not resource.is_file():
        return None
    body = resource.read_bytes()
    suffix = name[name.rindex("."):]
    return Asset(body, MEDIA_TYPES[suffix], '"' + hashlib.sha256(body).hexdigest()[:32] + '"')


def _serve(request: Request, name: str) -> Response:
    found = asset(name)
    if found is None:
        raise UiAssetNotFound(name)
    headers = {"etag": found.etag, "cache-control": "no-cache", **SECURITY_HEADERS}
    if found.etag in (t.strip() for t in request.headers.get("if-none-match", "").split(",")):
        return Response(status_code=304, headers=headers)
    return Response(found.body, media_type=found.media_type, headers=headers)


@router.get(UI_PATH)
async def index(request: Request) -> Response:
    return _serve(request, INDEX)


@router.get(ASSET_PREFIX)
async def index_slash() -> Response:
    """``/ui/`` → ``/ui`` (relative, so a path prefix in front of the API is kept)."""
    return RedirectResponse("../ui", status_code=308)


@router.get(ASSET_PREFIX + "{name}")
async def ui_asset(request: Request, name: str) -> Response:
    return _serve(request, name)
