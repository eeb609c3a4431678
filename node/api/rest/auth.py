"""Authentication, roles and the audit log on the REST surface (``taskward.security.access``'s flow, as gRPC
has it), in one pure-ASGI middleware that runs before routing, so a refused request's body is never read.

1. Open paths (``middleware.OPEN_PATHS``: probes, docs, the dashboard's files) pass untouched.
2. With tokens: ``Authorization: Bearer T``, else 401 (``WWW-Authenticate: Bearer``); an address over the
   failed-auth limit gets 429 with ``Retry-After``.
3. The route's operation comes from ``RouteTable``, compiled once from ``roles.REST_ROUTES`` with
   Starlette's own path syntax (so it matches what the router will match); a path no route serves passes
   on, and the router answers its 404 or 405. A refused role is 403 ``{"message": "permission denied:
   ...", "code": 403}``.
4. A mutating call's audit line is written before the last byte of its answer leaves.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from typing import Any

import orjson
from fastapi import FastAPI
from starlette.routing import compile_path
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from taskward.api.rest.middleware import OPEN_PATHS, OPEN_PREFIXES, scope_peer, send_error
from taskward.errors import AuthRateLimited, PermissionDenied, Unauthenticated
from taskward.security.access import AccessControl
from taskward.security.roles import REST_OPEN_ROUTES, REST_ROUTES, TASK_START, UNLISTED, Operation
from taskward.security.tokens import Principal

logger = logging.getLogger(__name__)

MAX_START_ANSWER = 4096  # a start answers its id: more than this is not an id


class RouteTable:
    """(method, path) → (operation, path parameters), for the routes of ``REST_ROUTES`` and any other served
    route (``UNLISTED``: admins only). Indexed by the first path segment, so a request tries a handful of
    patterns, not all of them."""

    def __init__(self, routes: dict[tuple[str, str], Operation]) -> None:
        by_template: dict[str, dict[str, Operation]] = {}
        for (method, template), op in routes.items():
            by_template.setdefault(template, {})[method] = op
            if method == "GET":
                by_template[template].setdefault("HEAD", op)
        self._index: dict[str, list[tuple[re.Pattern[str], dict[str, Operation]]]] = {}
        for template, ops in by_template.items():
            regex, _, _ = compile_path(template)
            self._index.setdefault(_first_segment(template), []).append((regex, ops))

    def match(self, method: str, path: str) -> tuple[Operation, dict[str, str]] | None:
        """The operation of the route that serves this call, or None when no route does (404/405)."""
        for regex, ops in self._index.get(_first_segment(path), ()):
            m = regex.match(path)
            if m is not None and method in ops:
                return ops[method], m.groupdict()
        return None


def _first_segment(path: str) -> str:
    return path.split("/", 2)[1] if path.count("/") >= 1 else ""


def served_routes(app: FastAPI) -> Iterator[tuple[str, str]]:
    """(method, route template) of every route ``app`` serves, routers included."""
    for route in app.router.routes:
        contexts = getattr(route, "effective_route_contexts", None)  # FastAPI's included routers
        for r in contexts() if contexts is not None else (route,):
            path = getattr(r, "path", None)
            for method in getattr(r, "methods", None) or ():
                if path and method != "HEAD":
                    yield method, path


def route_table(app: FastAPI) -> tuple[RouteTable, list[str]]:
    """The table for ``app``: ``REST_ROUTES`` plus its other routes as ``UNLISTED`` (named in the second
    value, for a warning: a route nobody placed in ``roles`` is allowed to admins only)."""
    routes = dict(REST_ROUTES)
    unlisted = []
    for method, path in served_routes(app):
        if path not in REST_OPEN_ROUTES and (method, path) not in routes:
            routes[(method, path)] = UNLISTED
            unlisted.append(f"{method} {path}")
    return RouteTable(routes), sorted(unlisted)


class AccessMiddleware:
    """The REST surface's access control; added only when there is something to do (tokens or an audit log)."""

    def __init__(self, app: ASGIApp, access: AccessControl, routes: RouteTable) -> None:
        self.app = app
        self._access = access
        self._routes = routes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path: str = scope.get("path", "")
        if scope["type"] != "http" or path in OPEN_PATHS or path.startswith(OPEN_PREFIXES):
            await self.app(scope, receive, send)
            return
        peer, host = scope_peer(scope)
        principal: Principal | None = None
        if self._access.enabled:
            given: bytes | None = None
            for name, value in scope["headers"]:
                if name == b"authorization":
                    given = value[7:] if value.startswith(b"Bearer ") else b""
                    break
            try:
                principal = self._access.authenticate(given, peer=peer, host=host, surface="rest",
                                                      attempted=f"{scope['method']} {path[:200]}")
            except AuthRateLimited as exc:
                await send_error(send, 429, exc.message, [(b"retry-after", str(exc.retry_after_s).encode())])
                return
            except Unauthenticated as exc:
                await send_error(send, 401, exc.message, [(b"www-authenticate", b"Bearer")])
                return
        found = self._routes.match(scope["method"], path)
        if found is None:  # no route serves it: the router's 404 or 405
            await self.app(scope, receive, send)
            return
        op, params = found
        target = rest_target(params, scope)
        try:
            self._access.authorize(principal, op, peer=peer, surface="rest", target=target)
        except PermissionDenied as exc:
            await send_error(send, 403, exc.message)
            return
        if not op.mutating or self._access.audit_log is None:
            await self.app(scope, receive, send)
            return
        await self._audited(scope, receive, send, op, principal, peer, target)

    async def _audited(self, scope: Scope, receive: Receive, send: Send, op: Operation, principal: Principal | None,
                       peer: str, target: str) -> None:
        status = 500
        body = bytearray()
        written = False

        async def audit(outcome: str) -> None:
            nonlocal written
            written = True
            extra = {"task_id": tid} if op is TASK_START and (tid := _started_id(bytes(body))) else {}
            await self._access.audit(principal, op, peer=peer, surface="rest", target=target, outcome=outcome,
                                     **extra)

        async def auditing_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            elif message["type"] == "http.response.body":
                if len(body) < MAX_START_ANSWER:
                    body.extend(message.get("body", b"")[:MAX_START_ANSWER])
                if not message.get("more_body") and not written:
                    await audit("ok" if 200 <= status < 300 else f"http_{status}")
            await send(message)

        try:
            await self.app(scope, receive, auditing_send)
        finally:
            if not written:  # raised before answering: the server answers 500
                await audit("http_500")


def _started_id(answer: bytes) -> str:
    """The new task's id from a start's answer: a JSON string (``/tasks``) or ``{"id"}`` (AeorDB's)."""
    try:
        value: Any = orjson.loads(answer)
    except orjson.JSONDecodeError:
        return ""
    if isinstance(value, dict):
        value = value.get("id")
    return value if isinstance(value, str) else ""


def rest_target(params: dict[str, str], scope: Scope) -> str:
    """What a REST call acts on: the task, schedule or module its path names, else its path and query."""
    for key in ("task_id", "schedule_id", "task_type"):
        if key in params:
            return params[key]
    if "module" in params:
        return f"{params['module']}:{params['type_name']}" if "type_name" in params else params["module"]
    query = scope.get("query_string", b"").decode("latin-1")
    path: str = scope["path"]
    return path + (f"?{query}" if query else "")
