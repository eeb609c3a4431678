"""Shared pieces of the REST surface: the JSON response, the one error mapping, parameter parsing.

Every 4xx/5xx answer is ``{"message": ..., "code": N}`` (architecture: Surfaces), whoever produced it: a node's gRPC
status, our own parameter checks, or FastAPI/Starlette themselves (404, 405, validation). The gRPC →
HTTP table is ``taskward.errors.HTTP_FOR_GRPC``, so REST says exactly what gRPC said.
"""

from __future__ import annotations

import logging
import math
import re
from typing import Any

import grpc
import orjson
from fastapi import Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

from taskward import limits
from taskward.errors import InvalidArgument, TaskwardError
from taskward.model import check_task_id

logger = logging.getLogger(__name__)

MAX_INT64 = (1 << 63) - 1
_UINT_RE = re.compile(r"[0-9]+")
_TRUE, _FALSE = frozenset({"true", "1"}), frozenset({"false", "0"})


class JsonResponse(Response):
    """orjson-rendered JSON: measurably cheaper than the stdlib encoder on the task_status hot path."""

    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content)


def error_response(status: int, message: str, headers: dict[str, str] | None = None) -> JsonResponse:
    return JsonResponse({"message": message, "code": status}, status_code=status, headers=headers)


class BodyTooLarge(TaskwardError):
    """A REST body over the limit (gRPC's own message cap answers RESOURCE_EXHAUSTED too)."""

    grpc_code = grpc.StatusCode.RESOURCE_EXHAUSTED
    http_override = 413

    def __init__(self, limit: int) -> None:
        super().__init__(f"request body larger than {limit} bytes")


def bad_request(message: str) -> InvalidArgument:
    """A bad query parameter or body: the same error the node raises for bad input (400)."""
    return InvalidArgument(message)


# ---------------------------------------------------------------- exception handlers


async def _on_taskward_error(request: Request, exc: Exception) -> Response:
    """Our own checks and every node answer (the node pool raises those as the error tree, with the
    node's message): the status from ``HTTP_FOR_GRPC``, the message unchanged."""
    assert isinstance(exc, TaskwardError)
    if exc.http_status == 500:
        logger.error("node answered %s to %s %s: %s", exc.code.name, request.method, request.url.path, exc.message)
    return error_response(exc.http_status, exc.message)


async def _on_http_exception(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)
    return error_response(exc.status_code, str(exc.detail), getattr(exc, "headers", None))


async def _on_validation(request: Request, exc: Exception) -> Response:
    """FastAPI's 422 becomes the 400 ScyllaDB answers for a bad parameter, with a one-line message."""
    assert isinstance(exc, RequestValidationError)
    parts = []
    for err in exc.errors():
        where = ".".join(str(x) for x in err.get("loc", ()) if x not in ("query", "path", "body", "header"))
        parts.append(f"{where}: {err.get('msg', 'invalid')}" if where else str(err.get("msg", "invalid")))
    return error_response(400, "bad parameter: " + "; ".join(parts))


async def _on_internal(request: Request, exc: Exception) -> Response:
    logger.exception("unexpected error in %s %s", request.method, request.url.path, exc_info=exc)
    return error_response(500, "internal error")


EXCEPTION_HANDLERS: dict[Any, Any] = {
    TaskwardError: _on_taskward_error,
    StarletteHTTPException: _on_http_exception,
    RequestValidationError: _on_validation,
    Exception: _on_internal,
}


# ---------------------------------------------------------------- query parameters


def parse_bool(name: str, value: str | None, default: bool = False) -> bool:
    """``true/false/1/0`` (any case); anything else is a bad parameter."""
    if value is None:
        return default
    v = value.strip().lower()
    if v in _TRUE:
        return True
    if v in _FALSE:
        return False
    raise bad_request(f"bad parameter {name}: expected true, false, 1 or 0, got {value!r}")


def parse_uint(name: str, value: str | None) -> int:
    """A non-negative integer that fits int64 (ttl values, sequence positions)."""
    if value is None or value == "":
        raise bad_request(f"missing parameter {name}")
    if not _UINT_RE.fullmatch(value):
        raise bad_request(f"bad parameter {name}: expected a non-negative integer, got {value!r}")
    n = int(value)
    if n > MAX_INT64:
        raise bad_request(f"bad parameter {name}: {value} is too large")
    return n


def parse_timeout(value: str | None) -> float | None:
    """Seconds as a non-negative finite number, or ``None`` (wait without limit)."""
    if value is None or value == "":
        return None
    try:
        t = float(value)
    except ValueError:
        raise bad_request(f"bad parameter timeout: expected a non-negative number, got {value!r}") from None
    if not math.isfinite(t) or t < 0 or t > MAX_INT64:
        raise bad_request(f"bad parameter timeout: expected a non-negative number, got {value!r}")
    return t


def parse_shard(value: str | None) -> int:
    return 0 if value is None or value == "" else parse_uint("shard", value)


def check_id(task_id: str) -> str:
    """Validate before routing, so a malformed id never fans out to every node (raises ``MalformedTaskId``)."""
    return check_task_id(task_id)


# ---------------------------------------------------------------- JSON bodies


async def json_body(request: Request, *, what: str = "the request body", envelope: int = 0) -> object:
    """The body as JSON (None when empty). 400 for a body that is not UTF-8 JSON sent as such, or that
    nests deeper than the JSON limit (``limits.MAX_JSON_DEPTH``) plus ``envelope`` levels of the document's
    own structure around the arguments it carries; 413 comes from the body limit middleware."""
    body = await request.body()
    if not body.strip():
        return None
    media, _, params = request.headers.get("content-type", "").partition(";")
    if media.strip().lower() != "application/json":
        raise bad_request("the request body must be JSON: send Content-Type: application/json")
    charset = params.strip().lower().removeprefix("charset=").strip('"') if "charset=" in params.lower() else "utf-8"
    if charset not in ("utf-8", "utf8"):
        raise bad_request(f"unsupported charset {charset!r}: the request body must be UTF-8 JSON")
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise bad_request("the request body is not valid UTF-8") from None
    most = limits.MAX_JSON_DEPTH + envelope
    if text.count("[") + text.count("{") > most and (depth := limits.json_depth(text)) > most:
        raise bad_request(f"{what} nested {depth - envelope} levels deep: the limit is {limits.MAX_JSON_DEPTH} "
                          "levels of arrays and objects")
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        raise bad_request(f"malformed JSON body: {exc}") from None


async def json_object_body(request: Request, what: str, *, envelope: int = 0) -> dict[str, Any]:
    """The body as a JSON object; empty means ``{}`` (a JSON ``null`` is not an object)."""
    if not (await request.body()).strip():
        return {}
    value = await json_body(request, what=what, envelope=envelope)
    if not isinstance(value, dict):
        raise bad_request(f"the request body must be a JSON object of {what}")
    return value
