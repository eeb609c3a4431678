"""What a task type's arguments look like from outside: names, JSON types, defaults.

A start form (the dashboard's) and any client that wants to offer a type's arguments need the same
facts ``TaskType.parse_args`` checks: which keyword parameters the body takes after ``ctx``, which of
them are required, the scalar type an annotation asks for, and the default. They are read from the
body's signature, so a type declares its arguments once, in Python, and every surface agrees with the
check a start goes through.
"""

from __future__ import annotations

import functools
import inspect
import json
import logging
from dataclasses import dataclass
from typing import Any, get_type_hints

from taskward.registry import TaskType

logger = logging.getLogger(__name__)

JSON_TYPES: dict[Any, str] = {float: "number", int: "integer", bool: "boolean", str: "string"}
"""The annotations ``TaskType.parse_args`` checks, by the JSON type a value must have; any other
annotation (or none) accepts any JSON value, which is described as an empty type."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Param:
    """One argument: ``json_type`` empty when any JSON value goes; ``default_json`` empty when the
    argument is required or its default has no JSON form (it is then left to the body)."""

    name: str
    json_type: str
    required: bool
    default_json: str


@dataclass(frozen=True, slots=True, kw_only=True)
class TypeSignature:
    params: tuple[Param, ...]
    extra_args: bool
    """The body takes ``**kwargs``: arguments beyond ``params`` are accepted too."""


def signature_of(spec: TaskType) -> TypeSignature:
    return _describe(spec.body)


@functools.cache
def _describe(body: Any) -> TypeSignature:
    """Computed once per body (signatures do not change while a node runs)."""
    params = list(inspect.signature(body).parameters.values())[1:]  # after ctx
    try:
        hints = get_type_hints(body)
    except Exception:  # an annotation that does not resolve: describe the names, leave the types open
        logger.warning("cannot resolve the annotations of %s", getattr(body, "__qualname__", body))
        hints = {}
    out: list[Param] = []
    for p in params:
        if p.kind not in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD):
            continue
        out.append(Param(name=p.name, json_type=JSON_TYPES.get(hints.get(p.name), ""),
                         required=p.default is p.empty, default_json=_default_json(p.default)))
    extra = any(p.kind is p.VAR_KEYWORD for p in params)
    return TypeSignature(params=tuple(out), extra_args=extra)


def _default_json(value: Any) -> str:
    if value is inspect.Parameter.empty:
        return ""
    try:
        return json.dumps(value, separators=(",", ":"), allow_nan=False)
    except (TypeError, ValueError):
        return ""
