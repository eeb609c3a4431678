"""Bounds on what a node accepts from outside: JSON nesting, non-finite numbers, tree depth.

Every JSON document a client or another node hands us (task arguments, a cron schedule's arguments,
a replicated record's arguments and results) is checked here before it is parsed: Python's ``json``
recurses once per nesting level, and accepts ``NaN`` and ``Infinity`` (and turns ``1e400`` into
infinity), none of which is JSON a client could read back. A document nested deeper than
``MAX_JSON_DEPTH`` levels, or carrying a non-finite number, is refused with ``InvalidArgument``
naming the limit, so it never reaches the store nor costs a ``RecursionError`` deep in a handler.

Task trees are bounded the same way (``MAX_TREE_DEPTH``): a tree is walked on every status read, and
its records are replicated to readers that walk them too.
"""

from __future__ import annotations

import json
import math
import re
from itertools import accumulate
from typing import Any

from taskward.errors import InvalidArgument

MAX_JSON_DEPTH = 64
"""Deepest nesting of arrays and objects in task arguments, results and cron arguments (``{}`` is 1)."""
MAX_TREE_DEPTH = 100
"""Most levels of children under a root task: a task ``MAX_TREE_DEPTH`` levels down has no children."""
MAX_ARGS_BYTES = 64 * 1024
"""Largest task arguments, in UTF-8 bytes of JSON."""
MAX_RESULT_BYTES = 64 * 1024
"""Largest task result, in UTF-8 bytes of compact JSON."""
MAX_PROGRESS = float(2**53)
"""Largest progress value (units done or total): every whole number up to it is exact in a double."""

_STRING = re.compile(r'"(?:[^"\\]|\\.)*"', re.DOTALL)
_NOT_BRACKET = re.compile(r"[^\[\]{}]+")


def json_depth(text: str) -> int:
    """How deeply arrays and objects nest in ``text`` (0 for a scalar), counted without parsing it, so a
    document of any depth costs no recursion. Brackets inside string literals do not count; for text that
    is not JSON the count errs high, never low."""
    if text.count("[") + text.count("{") == 0:
        return 0
    brackets = _NOT_BRACKET.sub("", _STRING.sub("", text))
    return max(accumulate((1 if c in "[{" else -1 for c in brackets), initial=0))


def check_json_depth(text: str, what: str) -> None:
    """``InvalidArgument`` when ``text`` nests deeper than ``MAX_JSON_DEPTH`` levels."""
    if text.count("[") + text.count("{") > MAX_JSON_DEPTH and (depth := json_depth(text)) > MAX_JSON_DEPTH:
        raise InvalidArgument(f"{what} nested {depth} levels deep: the limit is {MAX_JSON_DEPTH} levels of arrays "
                              "and objects")


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number (only finite numbers are accepted)")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"number {text} is out of range (only finite numbers are accepted)")
    return value


_DECODER = json.JSONDecoder(parse_constant=_no_constant, parse_float=_finite_float)
"""One decoder for every document: ``json.loads`` with hooks would build a new one per call."""


def loads(text: str, what: str) -> Any:
    """Parse JSON from outside: nested at most ``MAX_JSON_DEPTH`` levels, finite numbers only (``NaN``,
    ``Infinity`` and overflowing literals such as ``1e400`` are refused). ``InvalidArgument`` otherwise,
    saying ``"{what} are not valid JSON: ..."`` (``what`` is a plural, as in ``args``)."""
    check_json_depth(text, what)
    try:
        if text.startswith("\ufeff"):  # as json.loads says it
            raise json.JSONDecodeError("Unexpected UTF-8 BOM (decode using utf-8-sig)", text, 0)
        return _DECODER.decode(text)
    except ValueError as exc:  # JSONDecodeError, or a number refused above (its message says which)
        raise InvalidArgument(f"{what} are not valid JSON: {exc}") from None


def check_progress(done: float, total: float) -> None:
    """Progress values are finite numbers from 0 to ``MAX_PROGRESS``: they are summed over a tree, stored,
    and shown as JSON numbers and whole counts."""
    for name, value in (("done", done), ("total", total)):
        if not (math.isfinite(value) and 0 <= value <= MAX_PROGRESS):
            raise InvalidArgument(f"progress {name} must be a finite number from 0 to {MAX_PROGRESS:.0f}, "
                                  f"got {value!r}")
