"""``/docs``: Swagger UI 5, served by this process from an installed package, never from a CDN.

An operator's node often has no route to the internet, and a docs page that fetches its code from a
CDN is a blank page there (and a third party told about every visit). Swagger UI 5 renders FastAPI's
OpenAPI 3.1 document; the Swagger UI 4 bundle on PyPI cannot ("Unable to render this definition").
The assets come from ``fastapi-offline``'s package data (Swagger UI 5 and ReDoc, MIT): a maintained
copy with a version of its own, rather than a 1.5 MB JavaScript file vendored into this repository.
Only ``fastapi-offline``'s files are used, not its ``FastAPI`` subclass.
"""

from __future__ import annotations

import importlib.resources

from fastapi import APIRouter, HTTPException
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse, Response

router = APIRouter(include_in_schema=False)

ASSETS = {
    "swagger-ui-bundle.js": "text/javascript; charset=utf-8",
    "swagger-ui.css": "text/css; charset=utf-8",
    "favicon.png": "image/png",
}
ASSET_PREFIX = "/docs/assets/"
_cache: dict[str, bytes] = {}


def _asset(name: str) -> bytes:
    """One file of the installed Swagger UI, read once."""
    data = _cache.get(name)
    if data is None:
        data = importlib.resources.files("fastapi_offline").joinpath("static", name).read_bytes()
        _cache[name] = data
    return data


@router.get("/docs", response_class=HTMLResponse)
async def docs() -> HTMLResponse:
    return get_swagger_ui_html(
        openapi_url="/openapi.json", title="taskward REST API", swagger_js_url=ASSET_PREFIX + "swagger-ui-bundle.js",
        swagger_css_url=ASSET_PREFIX + "swagger-ui.css", swagger_favicon_url=ASSET_PREFIX + "favicon.png",
    )


@router.get(ASSET_PREFIX + "{name}")
async def asset(name: str) -> Response:
    media_type = ASSETS.get(name)
    if media_type is None:
        raise HTTPException(status_code=404, detail=f"no docs asset {name!r}")
    return Response(_asset(name), media_type=media_type, headers={"Cache-Control": "public, max-age=86400"})
