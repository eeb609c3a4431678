"""Task type declaration and argument checking."""

from __future__ import annotations

import pytest

from taskward.context import TaskContext
from taskward.errors import InvalidArgument, UnknownModule, UnknownTaskType
from taskward.registry import MAX_ARGS_BYTES, Registry, task_type


@task_type("unit", "typed")
async def typed(ctx: TaskContext, *, n: int, x: float = 1.0, s: str = "", b: bool = False) -> None: ...


def registry() -> Registry:
    r = Registry()
    r.load_module(__name__)
    r.load_module("taskward.builtin_tasks")
    return r


def test_entry_points_register_builtins() -> None:
    r = Registry()
    r.load_entry_points()
    assert {t.qualified_name for t in r.all()} >= {"builtin:sleep", "builtin:fail"}


def test_args_are_checked_and_coerced() -> None:
    spec = registry().get("unit", "typed")
    assert spec.parse_args('{"n": 2, "x": 3}') == {"n": 2, "x": 3.0}
    assert isinstance(spec.parse_args('{"n": 2, "x": 3}')["x"], float)
    with pytest.raises(InvalidArgument, match="missing required argument 'n'"):
        spec.parse_args("{}")
    with pytest.raises(InvalidArgument, match="must be int, got bool"):
        spec.parse_args('{"n": true}')
    with pytest.raises(InvalidArgument, match="must be bool, got int"):
        spec.parse_args('{"n": 1, "b": 1}')
    with pytest.raises(InvalidArgument, match="args too large"):
        spec.parse_args('{"n": 1, "s": "' + "x" * MAX_ARGS_BYTES + '"}')


def test_unknown_module_and_type() -> None:
    r = registry()
    with pytest.raises(UnknownModule):
        r.get("nope", "x")
    with pytest.raises(UnknownTaskType):
        r.get("unit", "nope")
