"""Task types: how they are declared, found and given validated arguments.

A task type is a callable marked with :func:`task_type`. Marking does not register anything (no
global registry): a :class:`Registry` collects marked callables from the modules it is asked to load
— the ``taskward.tasks`` entry-point group and every ``--tasks MODULE``.
"""

from __future__ import annotations

import functools
import importlib
import importlib.util
import inspect
import json
import logging
import os
import sys
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field, replace
from enum import Enum
from importlib.metadata import entry_points
from pathlib import Path
from types import ModuleType
from typing import Any, get_type_hints

from taskward import limits
from taskward.errors import ConfigError, InvalidArgument, UnknownModule, UnknownTaskType

logger = logging.getLogger(__name__)

MAX_ARGS_BYTES = limits.MAX_ARGS_BYTES
MAX_RESULT_BYTES = limits.MAX_RESULT_BYTES
ENTRY_POINT_GROUP = "taskward.tasks"
_MARK = "__taskward_task_type__"
MIDDLEWARE_MARK = "__taskward_middleware__"
"""Set by ``taskward.task_middleware`` in the marked class's own ``__dict__``: a subclass is not marked."""

TaskBody = Callable[..., Awaitable[Any] | Any]


class BodyExecutor(Enum):
    """Where a type's body runs: ``thread`` (the default) keeps it in the node process, an async body on the
    event loop and a synchronous one in a worker thread; ``process`` runs it in the node's pool of worker
    processes (``taskward.procpool``), so CPU-bound bodies use every core instead of sharing the GIL."""

    THREAD = "thread"
    PROCESS = "process"


@dataclass(frozen=True, slots=True, kw_only=True)
class TaskType:
    module: str
    name: str
    body: TaskBody
    executor: BodyExecutor = BodyExecutor.THREAD
    source: str = ""
    """What the node loaded the body's module from (a ``--tasks`` module name or ``.py`` path, an entry
    point's module): a worker process imports it the same way. Set by ``Registry.load_module``."""
    abortable: bool = True
    retryable: bool = False
    time_limit_s: float | None = None
    progress_units: str = ""
    check: Callable[[dict[str, Any]], None] | None = None
    retries: int = 0
    retry_backoff: tuple[float, float] = (1.0, 60.0)
    retry_on: tuple[type[BaseException], ...] = (Exception,)
    is_async: bool = field(init=False, repr=False, compare=False)
    """Whether the body is a coroutine function: it runs on the loop, else in a thread (asked once per run)."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "is_async", inspect.iscoroutinefunction(self.body))

    @property
    def max_attempts(self) -> int:
        return self.retries + 1

    @property
    def qualified_name(self) -> str:
        return f"{self.module}:{self.name}"

    @property
    def import_source(self) -> str:
        """How a worker process finds the body's module: what the node loaded, else the body's own module."""
        return self.source or self.body.__module__

    def parse_args(self, args_json: str) -> dict[str, Any]:
        """Decode and check arguments against the body's keyword parameters.

        Raises ``InvalidArgument`` for oversized, too deeply nested or malformed JSON (non-finite numbers
        included: ``limits.loads``), unknown or missing arguments and values of the wrong type, so a bad
        submission never reaches the store.
        """
        size = len(args_json.encode())
        if size > MAX_ARGS_BYTES:
            raise InvalidArgument(f"args too large: {size} bytes > {MAX_ARGS_BYTES}")
        args = limits.loads(args_json, "args") if args_json.strip() else {}
        if not isinstance(args, dict):
            raise InvalidArgument("args must be a JSON object")
        params, hints = _signature(self.body)
        known = {p.name for p in params if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)}
        unknown = sorted(set(args) - known)
        if unknown and not any(p.kind is p.VAR_KEYWORD for p in params):
            raise InvalidArgument(f"unknown argument(s) for {self.qualified_name}: {', '.join(unknown)}")
        for p in params:
            if p.name in args:
                args[p.name] = _coerce(self.qualified_name, p.name, args[p.name], hints.get(p.name))
            elif p.default is p.empty and p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD):
                raise InvalidArgument(f"missing required argument {p.name!r} for {self.qualified_name}")
        if self.check is not None:
            self.check(args)
        return args


class ResultError(ValueError):
    """A body's return value that cannot be stored: the task fails with this message."""


def encode_result(value: object) -> str:
    """A body's return value as compact JSON (UTF-8 counted, at most ``MAX_RESULT_BYTES``)."""
    if value is None:  # what most bodies return
        return "null"
    try:
        text = json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise ResultError(f"the task's return value is not JSON-serialisable: {exc}") from None
    except RecursionError:
        raise ResultError(f"the task's return value nested too deeply: the limit is {limits.MAX_JSON_DEPTH} "
                          "levels of arrays and objects") from None
    size = len(text.encode())
    if size > MAX_RESULT_BYTES:
        raise ResultError(f"the task's return value is too large: {size} bytes of JSON > {MAX_RESULT_BYTES}")
    try:  # what is stored is read back by every client (and REST's JSON encoder stops at 255 levels)
        limits.check_json_depth(text, "the task's return value")
    except InvalidArgument as exc:
        raise ResultError(exc.message) from None
    return text


@functools.cache
def _signature(body: TaskBody) -> tuple[list[inspect.Parameter], dict[str, Any]]:
    """The body's argument parameters (after ``ctx``) and type hints, computed once per body."""
    return list(inspect.signature(body).parameters.values())[1:], get_type_hints(body)


def _coerce(type_name: str, name: str, value: Any, hint: Any) -> Any:
    """Accept a JSON value for a parameter annotated with a plain scalar type."""
    ok: bool
    if hint is float:
        ok = isinstance(value, int | float) and not isinstance(value, bool)
        value = float(value) if ok else value
    elif hint is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif hint is bool:
        ok = isinstance(value, bool)
    elif hint is str:
        ok = isinstance(value, str)
    else:
        return value
    if not ok:
        raise InvalidArgument(
            f"argument {name!r} of {type_name} must be {hint.__name__}, got {type(value).__name__}"
        )
    return value


def task_type(
    module: str,
    name: str | None = None,
    *,
    abortable: bool = True,
    retryable: bool = False,
    time_limit_s: float | None = None,
    progress_units: str = "",
    check: Callable[[dict[str, Any]], None] | None = None,
    retries: int = 0,
    retry_backoff: tuple[float, float] = (1.0, 60.0),
    retry_on: tuple[type[BaseException], ...] = (Exception,),
    executor: str | BodyExecutor = "thread",
) -> Callable[[TaskBody], TaskBody]:
    """Mark ``fn(ctx, **args)`` as task type ``module:name``.

    ``retryable`` types are re-queued after a crash instead of failing with ``node restarted``;
    ``time_limit_s`` fails a run that takes longer (its thread or coroutine is abandoned/cancelled);
    ``check(args)`` validates argument values at submission and raises ``InvalidArgument``.
    ``retries``: a run that raises one of ``retry_on`` runs again, up to ``retries`` more times, after a
    capped exponential backoff with full jitter (``retry_backoff`` = (initial, max) seconds). What the
    body returns (any JSON value, at most 64 KiB) is the task's result.
    ``executor="process"`` runs the body in a worker process (``BodyExecutor``); it must be defined at the
    top level of its module, which the worker imports.
    """
    kind = body_executor(executor)
    if type(retries) is not int or retries < 0:
        raise ValueError(f"retries must be a non-negative integer, got {retries!r}")
    initial, cap = retry_backoff
    if not 0 <= initial <= cap:
        raise ValueError(f"retry_backoff must be (initial, max) with 0 <= initial <= max, got {retry_backoff!r}")
    classes: tuple[object, ...] = tuple(retry_on)  # checked at run time too: a task module need not be type-checked
    if not classes or not all(isinstance(e, type) and issubclass(e, BaseException) for e in classes):
        raise ValueError("retry_on must be a non-empty tuple of exception classes")

    def mark(fn: TaskBody) -> TaskBody:
        qualname = str(getattr(fn, "__qualname__", fn))
        if kind is BodyExecutor.PROCESS and "<locals>" in qualname:
            raise ValueError(f"{qualname}: a body with executor=\"process\" must be defined at the top level of its "
                             "module (a worker process imports it from there)")
        spec = TaskType(
            module=module, name=name or fn.__name__.replace("_", "-"), body=fn, executor=kind, abortable=abortable,
            retryable=retryable, time_limit_s=time_limit_s, progress_units=progress_units,
            check=check, retries=retries, retry_backoff=(float(initial), float(cap)), retry_on=tuple(retry_on),
        )
        setattr(fn, _MARK, spec)
        return fn

    return mark


def body_executor(value: object) -> BodyExecutor:
    """``task_type``'s ``executor`` option: ``"thread"`` or ``"process"`` (``ValueError`` naming both otherwise)."""
    if isinstance(value, BodyExecutor):
        return value
    for kind in BodyExecutor:
        if value == kind.value:
            return kind
    raise ValueError(f"executor must be \"thread\" or \"process\", got {value!r}")


def marked_type(module: ModuleType, module_name: str, type_name: str) -> TaskType | None:
    """The task type ``module_name:type_name`` marked in ``module`` (how a worker process finds a body in
    the module it imported), or None."""
    for value in vars(module).values():
        spec = getattr(value, _MARK, None)
        if isinstance(spec, TaskType) and (spec.module, spec.name) == (module_name, type_name):
            return spec
    return None


def import_task_module(spec: str) -> ModuleType:
    """The Python module ``--tasks spec`` names: a module name (importable from the Python path or the
    current folder, as ``python -m`` finds modules) or the path of a ``.py`` file. Anything that keeps
    it from loading is a ``ConfigError`` that says what (the node then exits 2)."""
    try:
        if spec.endswith(".py") or os.sep in spec:
            path = Path(spec)
            if not path.is_file():
                raise ConfigError(f"--tasks {spec}: no such file")
            name = path.stem
            file_spec = importlib.util.spec_from_file_location(name, path)
            if file_spec is None or file_spec.loader is None:
                raise ConfigError(f"--tasks {spec}: not a Python file")
            module = importlib.util.module_from_spec(file_spec)
            sys.modules[name] = module  # so its own imports of itself (and pickling) find it
            file_spec.loader.exec_module(module)
            return module
        if os.getcwd() not in sys.path and "" not in sys.path:
            sys.path.append(os.getcwd())  # after everything installed: a local file never shadows a package
        return importlib.import_module(spec)
    except ConfigError:
        raise
    except ModuleNotFoundError as exc:
        if exc.name and spec.startswith(exc.name):
            raise ConfigError(f"--tasks {spec}: no module named {spec!r} (give a module importable from the current "
                              "folder or the Python path, or the path of a .py file)") from None
        raise ConfigError(f"--tasks {spec}: cannot import it: {exc}") from None
    except Exception as exc:  # the module's own code failed: say so in one line, not a traceback
        raise ConfigError(f"--tasks {spec}: cannot import it: {type(exc).__name__}: {exc}") from None


class Registry:
    """Task types by module, as loaded at start-up."""

    def __init__(self) -> None:
        self._types: dict[tuple[str, str], TaskType] = {}
        self._middleware: list[type] = []

    def add(self, spec: TaskType) -> None:
        self._types[(spec.module, spec.name)] = spec

    def load_module(self, mod: ModuleType | str, *, source: str = "") -> int:
        """Register every marked callable of a Python module; returns how many were found. ``source`` is
        how the module was loaded (``import_task_module``'s argument; default: its name), so that a worker
        process can load it the same way."""
        if isinstance(mod, str):
            source = source or mod
            mod = importlib.import_module(mod)
        source = source or mod.__name__
        found = [replace(getattr(v, _MARK), source=source) for v in vars(mod).values() if hasattr(v, _MARK)]
        for spec in found:
            self.add(spec)
        for v in vars(mod).values():
            if isinstance(v, type) and MIDDLEWARE_MARK in vars(v) and v not in self._middleware:
                self._middleware.append(v)
        return len(found)

    def load_entry_points(self) -> None:
        for ep in entry_points(group=ENTRY_POINT_GROUP):
            try:
                self.load_module(ep.load())
            except Exception:
                logger.exception("cannot load task entry point %s", ep.name)

    def get(self, module: str, name: str) -> TaskType:
        spec = self._types.get((module, name))
        if spec is None:
            if module not in self.modules():
                raise UnknownModule(module)
            raise UnknownTaskType(module, name)
        return spec

    def find(self, module: str, name: str) -> TaskType | None:
        return self._types.get((module, name))

    def modules(self) -> set[str]:
        return {m for m, _ in self._types}

    @property
    def middleware(self) -> list[type]:
        """Middleware classes marked with ``task_middleware`` in the loaded modules, in load order."""
        return list(self._middleware)

    def all(self) -> Iterable[TaskType]:
        return sorted(self._types.values(), key=lambda t: t.qualified_name)

