"""The REST app serves its routers' routes themselves (``create_app`` does not ``include_router``: FastAPI
resolves an included router again on every request). That is the same app only while no router has
anything of its own that ``include_router`` would apply."""

from __future__ import annotations

from typing import Any, cast

from fastapi import FastAPI

from taskward.api.rest.app import ROUTERS, RestSettings, create_app
from taskward.api.rest.auth import served_routes


def test_no_router_has_a_prefix_dependencies_or_callbacks_of_its_own() -> None:
    for router in ROUTERS:
        assert (router.prefix, router.dependencies, router.callbacks, router.responses) == ("", [], [], {}), router


def test_the_app_serves_what_including_the_routers_would_serve() -> None:
    app = create_app(RestSettings(listen="127.0.0.1:1", nodes=("127.0.0.1:2",)), pool=cast(Any, object()))
    included = FastAPI(docs_url=None, redoc_url=None)
    for router in ROUTERS:
        included.include_router(router)
    theirs = set(served_routes(included))
    assert theirs and theirs <= set(served_routes(app))
    ours, documented = app.openapi()["paths"], included.openapi()["paths"]
    assert documented and {path: ours.get(path) for path in documented} == documented
