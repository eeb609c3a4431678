"""Hypothesis strategies for the values users (and other processes) send: odd text, edge numbers, ids,
JSON documents good and bad, and protobuf fields of any type.

Each strategy mixes values that are valid for the field it is meant for with values just outside the
rules and plain garbage, so a case usually gets deep into a handler before it meets the one bad value.
"""

from __future__ import annotations

import json
import math
import uuid
from typing import Any

from google.protobuf.descriptor import FieldDescriptor
from hypothesis import strategies as st

# Text a client can send: any Unicode scalar (Hypothesis leaves out lone surrogates, which protobuf
# and UTF-8 cannot carry), plus the classics: control characters, bidi overrides, BOM, path tricks,
# long and multi-byte strings just over the label limit, and numbers spelled oddly.
ODD_STRINGS = [
    "", " ", "\x00", "\t\n", "\r\n", "none", "None", "null", "true", "-1", "0", "1e400", "NaN", "Infinity",
    "..", "../../etc/passwd", "a/b", "%2F", "%00", "\u202e", "\ufeff", "\U0001f642", "é" * 513, "x" * 1025,
    "k" * 4096, "'; DROP TABLE tasks; --", "${jndi:x}", "<script>", "*", "?", "#", "\\", "\u0085", "\u2028",
]
ODD_TEXT = st.one_of(st.sampled_from(ODD_STRINGS), st.text(max_size=24))

UNKNOWN_ID = "deadbeef-0000-4000-8000-00000000abcd"


def malformed_ids() -> st.SearchStrategy[str]:
    """Ids that are not canonical lowercase 8-4-4-4-12 UUIDs (DESIGN §8): each must be refused."""
    canonical = str(uuid.UUID(int=0x1234))
    return st.one_of(
        st.sampled_from([canonical.upper(), canonical.replace("-", ""), "{" + canonical + "}", canonical + " ",
                         " " + canonical, canonical[:-1], canonical + "0", "urn:uuid:" + canonical,
                         canonical.replace("-", "_"), "00000000-0000-0000-0000-00000000000g"]),
        ODD_TEXT,
    )


def task_ids(known: list[str]) -> st.SearchStrategy[str]:
    """Known ids (which the node holds), unknown well-formed ones, and malformed ones."""
    return st.one_of(st.sampled_from(known or [UNKNOWN_ID]), st.uuids().map(str), malformed_ids())


EDGE_FLOATS = [0.0, -0.0, 1.0, -1.0, 0.5, 1e-9, 5e-324, 1e10, 1e300, -1e300, 2.0**63, 2.0**64, 4294967295.0,
               4294967296.0, 253402300799.0, 253402300800.0, math.inf, -math.inf, math.nan]
FLOATS = st.one_of(st.sampled_from(EDGE_FLOATS), st.floats())


def integers(bits: int, signed: bool) -> st.SearchStrategy[int]:
    lo, hi = (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1) if signed else (0, 2**bits - 1)
    edges = sorted({v for v in (lo, hi, 0, 1, 2, 10, 4294967295, 4294967296, 2**31 - 1, 2**31, 2**63 - 1, -1)
                    if lo <= v <= hi})
    return st.one_of(st.sampled_from(edges), st.integers(lo, hi))


# JSON: documents a task type accepts, documents it must refuse, and text that is not JSON at all.
JSON_SCALARS = st.one_of(st.none(), st.booleans(), st.integers(-(2**70), 2**70),
                         st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=12))
JSON_VALUES = st.recursive(JSON_SCALARS, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=4)), max_leaves=10)


def deep(depth: int, kind: str = "list") -> str:
    return ("[" * depth + "]" * depth) if kind == "list" else ('{"a":' * depth + "1" + "}" * depth)


BAD_JSON = [
    "{", "}", "[]", "null", "1", '"s"', "{'a': 1}", '{"a": NaN}', '{"a": Infinity}', '{"a": -Infinity}',
    '{"a": 1e400}', '{"a": ' + "9" * 5000 + "}", '{"a": 1,}', '{"a" 1}', '{"a": "\\ud800"}', "\x00",
    '{"a": 1} {"b": 2}', deep(10_000), deep(10_000, "dict"), deep(65), deep(65, "dict"), deep(64), deep(63),
    '{"a": "' + "x" * 70_000 + '"}', '{"duration": 1, "duration": 2}',
]


def json_text(valid_objects: list[dict[str, Any]]) -> st.SearchStrategy[str]:
    """Argument documents: ones that fit (``valid_objects``), any JSON value, and broken ones."""
    return st.one_of(
        st.sampled_from([json.dumps(o) for o in valid_objects] or ["{}"]),
        st.dictionaries(st.text(max_size=8), JSON_VALUES, max_size=4).map(json.dumps),
        JSON_VALUES.map(json.dumps),
        st.sampled_from(BAD_JSON),
        ODD_TEXT,
    )


def field_value(field: FieldDescriptor) -> st.SearchStrategy[Any]:
    """Any value protobuf accepts for ``field`` (scalars; enums take any number, as proto3 allows)."""
    t = field.type
    if t == FieldDescriptor.TYPE_STRING:
        return ODD_TEXT
    if t == FieldDescriptor.TYPE_BYTES:
        return st.binary(max_size=32)
    if t == FieldDescriptor.TYPE_BOOL:
        return st.booleans()
    if t in (FieldDescriptor.TYPE_DOUBLE, FieldDescriptor.TYPE_FLOAT):
        return FLOATS if t == FieldDescriptor.TYPE_DOUBLE else st.floats(width=32)
    if t in (FieldDescriptor.TYPE_INT64, FieldDescriptor.TYPE_SINT64, FieldDescriptor.TYPE_SFIXED64):
        return integers(64, True)
    if t in (FieldDescriptor.TYPE_UINT64, FieldDescriptor.TYPE_FIXED64):
        return integers(64, False)
    if t in (FieldDescriptor.TYPE_INT32, FieldDescriptor.TYPE_SINT32, FieldDescriptor.TYPE_SFIXED32,
             FieldDescriptor.TYPE_ENUM):
        return integers(32, True)
    if t in (FieldDescriptor.TYPE_UINT32, FieldDescriptor.TYPE_FIXED32):
        return integers(32, False)
    raise TypeError(f"no strategy for {field.full_name} (type {t})")
