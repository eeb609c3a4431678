"""The protocol between a node and its worker processes (task types with ``executor="process"``).

Each worker has one connection to its node (a socket pair made when the worker starts) carrying
length-prefixed frames: four bytes of length, big-endian, then a UTF-8 JSON object whose ``op`` names
the message. What comes from task code (arguments, results, a child's arguments) travels as JSON
*text* inside a frame, so a frame nests only a few levels whatever a body hands over, and the node
checks that text with the same functions as any other input (``taskward.limits``).

node → worker: ``Init`` (once, first), ``Run`` (one call), ``Reply`` (to a request), ``Signal``
(abort requested, or the run was abandoned by its time limit or a shutdown).
worker → node: ``Progress``, ``Log``, the requests ``SpawnChild`` and ``WaitChild``, and ``Finished``
(the call's outcome).

A worker runs one call at a time; every message names its call, so a message about a call that has
ended is recognised and dropped. Requests carry a number their reply repeats, so a body's threads may
have several in flight.
"""

from __future__ import annotations

import dataclasses
import json
import struct
import sys
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, ClassVar, get_type_hints

from taskward.errors import TaskwardError
from taskward.limits import json_depth

MAX_FRAME_BYTES = 1024 * 1024
"""Largest frame either side sends or accepts. Arguments and results are at most 64 KiB of JSON (six times
that escaped inside a frame, at worst), log lines and error messages are cut well below it."""
MAX_FRAME_DEPTH = 4
"""A frame nests objects only this deep (a ``Finished`` with an error and its attributes is 3)."""
MAX_MESSAGE_CHARS = 4096
"""Error messages and exception arguments are cut to this (a task's error is stored at most this long)."""
MAX_LOG_CHARS = 16 * 1024
MAX_ERROR_ARGS = 8
HEADER = struct.Struct(">I")

Scalar = str | int | float | bool | None


class ProtocolError(ValueError):
    """A frame that is not one of the messages below (or too large): the connection cannot be trusted further."""


class SignalKind(Enum):
    ABORT = "abort"
    """An abort was requested: ``check_aborted()`` raises ``TaskAborted`` from now on."""
    ABANDON = "abandon"
    """The node gave up on the run (time limit, shutdown): every context call raises, and the worker is
    stopped if the body does not return soon."""


class Outcome(Enum):
    DONE = "done"
    FAILED = "failed"
    ABORTED = "aborted"


@dataclass(frozen=True, slots=True, kw_only=True)
class WireError:
    """An exception crossing the connection: its class (``module:qualname``), the message ``str()`` gave
    where it was raised, its arguments when they are plain values, and the attributes the error tree's
    classes carry (``ChildFailed.child_id``, ...)."""

    exc_type: str
    message: str
    args: list[Scalar] = field(default_factory=list)
    attrs: dict[str, Scalar] = field(default_factory=dict)

    @classmethod
    def of(cls, exc: BaseException) -> WireError:
        kind = type(exc)
        message = (str(exc) or kind.__name__)[:MAX_MESSAGE_CHARS]
        args = [_short(a) for a in exc.args[:MAX_ERROR_ARGS] if _scalar(a)]
        if len(args) != len(exc.args):
            args = [message]
        attrs: dict[str, Scalar] = {}
        if isinstance(exc, TaskwardError):
            attrs = {k: _short(v) for k, v in vars(exc).items()
                     if not k.startswith("_") and k != "message" and _scalar(v)}
        return cls(exc_type=f"{kind.__module__}:{kind.__qualname__}", message=message, args=args, attrs=attrs)

    def exception(self) -> BaseException:
        """The exception again, of its own class when this process has loaded that class (it imports nothing
        for it), else a ``RemoteException`` naming it. ``str()`` of it may differ from ``message`` for a class
        that formats its own; ``message`` is what the other side saw."""
        kind = _loaded_class(self.exc_type)
        if kind is not None:
            try:
                if issubclass(kind, TaskwardError):
                    err: BaseException = kind.from_message(self.message)
                    for name, value in self.attrs.items():
                        setattr(err, name, value)
                    return err
                err = kind.__new__(kind)
                err.args = tuple(self.args)
                return err
            except Exception:  # a class whose instances cannot be made this way: named, not rebuilt
                pass
        return RemoteException(self.exc_type, self.message)


class RemoteException(Exception):
    """An exception raised in the other process, of a class this one has not loaded."""

    def __init__(self, exc_type: str, message: str) -> None:
        super().__init__(message)
        self.exc_type = exc_type


def _short(value: Scalar) -> Scalar:
    return value[:MAX_MESSAGE_CHARS] if isinstance(value, str) else value


def _loaded_class(path: str) -> type[BaseException] | None:
    module_name, _, qualname = path.partition(":")
    obj: object = sys.modules.get(module_name)
    for part in qualname.split("."):
        obj = getattr(obj, part, None)
    return obj if isinstance(obj, type) and issubclass(obj, BaseException) else None


# ---------------------------------------------------------------------- node → worker


@dataclass(frozen=True, slots=True, kw_only=True)
class Init:
    """First frame to a new worker: the node's import path, its log level (the worker sends only records
    at or above it), and the task modules to import before the first call."""

    op: ClassVar[str] = "init"
    sys_path: list[str]
    log_level: int
    preload: list[str]


@dataclass(frozen=True, slots=True, kw_only=True)
class Run:
    """Run the body of ``module:type_name`` (found in ``source``, as ``TaskType.import_source``) with
    ``args_json`` (checked by the node); ``aborted``: an abort was requested before it started."""

    op: ClassVar[str] = "run"
    call: int
    task_id: str
    module: str
    type_name: str
    source: str
    args_json: str
    aborted: bool


@dataclass(frozen=True, slots=True, kw_only=True)
class Reply:
    """The answer to request ``request`` of call ``call``: ``value_json``, or ``error``."""

    op: ClassVar[str] = "reply"
    call: int
    request: int
    value_json: str = "null"
    error: WireError | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Signal:
    op: ClassVar[str] = "signal"
    call: int
    kind: SignalKind


# ---------------------------------------------------------------------- worker → node


@dataclass(frozen=True, slots=True, kw_only=True)
class Progress:
    """``ctx.report_progress`` (checked in the worker already; the node checks again)."""

    op: ClassVar[str] = "progress"
    call: int
    done: float
    total: float
    message: str


@dataclass(frozen=True, slots=True, kw_only=True)
class Log:
    """A log record of the worker (``call`` 0 when no call runs), for the node to log as its own."""

    op: ClassVar[str] = "log"
    call: int
    logger: str
    level: int
    message: str


@dataclass(frozen=True, slots=True, kw_only=True)
class SpawnChild:
    op: ClassVar[str] = "spawn_child"
    call: int
    request: int
    module: str
    type_name: str
    args_json: str


@dataclass(frozen=True, slots=True, kw_only=True)
class WaitChild:
    op: ClassVar[str] = "wait_child"
    call: int
    request: int
    child_id: str


@dataclass(frozen=True, slots=True, kw_only=True)
class Finished:
    """How the call ended: ``result_json`` for ``DONE`` (encoded and checked by ``encode_result`` in the
    worker), ``error`` for ``FAILED``."""

    op: ClassVar[str] = "finished"
    call: int
    outcome: Outcome
    result_json: str = "null"
    error: WireError | None = None


ToWorker = Init | Run | Reply | Signal
ToNode = Progress | Log | SpawnChild | WaitChild | Finished
Message = ToWorker | ToNode
_TO_WORKER: dict[str, type[ToWorker]] = {c.op: c for c in (Init, Run, Reply, Signal)}
_TO_NODE: dict[str, type[ToNode]] = {c.op: c for c in (Progress, Log, SpawnChild, WaitChild, Finished)}


# ---------------------------------------------------------------------- frames


def encode(msg: Message) -> bytes:
    """``msg`` as one frame (header included); ``ProtocolError`` if it would be larger than ``MAX_FRAME_BYTES``."""
    body = {"op": msg.op, **{f.name: _to_wire(getattr(msg, f.name)) for f in dataclasses.fields(msg)}}
    payload = json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode()
    if len(payload) > MAX_FRAME_BYTES:
        raise ProtocolError(f"a {msg.op} message of {len(payload)} bytes is larger than {MAX_FRAME_BYTES}")
    return HEADER.pack(len(payload)) + payload


def frame_length(header: bytes) -> int:
    """The payload length a header announces; ``ProtocolError`` beyond ``MAX_FRAME_BYTES``."""
    (length,) = HEADER.unpack(header)
    if length > MAX_FRAME_BYTES:
        raise ProtocolError(f"a frame of {length} bytes is larger than {MAX_FRAME_BYTES}")
    return int(length)


def decode_to_node(payload: bytes) -> ToNode:
    """A frame's payload from a worker, checked field by field."""
    msg: ToNode = _decode(payload, _TO_NODE)
    return msg


def decode_to_worker(payload: bytes) -> ToWorker:
    msg: ToWorker = _decode(payload, _TO_WORKER)
    return msg


def _to_wire(value: object) -> object:
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, WireError):
        return {f.name: getattr(value, f.name) for f in dataclasses.fields(value)}
    return value


def _decode(payload: bytes, kinds: dict[str, type[Any]]) -> Any:
    try:
        text = payload.decode()
        if text.count("{") + text.count("[") > MAX_FRAME_DEPTH and json_depth(text) > MAX_FRAME_DEPTH:
            raise ProtocolError(f"a frame nested deeper than {MAX_FRAME_DEPTH} levels")
        raw = json.loads(text)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ProtocolError(f"a frame that is not UTF-8 JSON: {exc}") from None
    if not isinstance(raw, dict):
        raise ProtocolError("a frame that is not a JSON object")
    op = raw.pop("op", None)
    kind = kinds.get(op) if isinstance(op, str) else None
    if kind is None:
        raise ProtocolError(f"unknown message {str(op)[:40]!r}")
    return _build(kind, raw)


def _build(kind: type[Any], raw: dict[str, Any]) -> Any:
    hints = _hints(kind)
    unknown = set(raw) - set(hints)
    if unknown:
        raise ProtocolError(f"{kind.__name__} has no field(s) {', '.join(sorted(unknown))[:200]}")
    values = {}
    for f in dataclasses.fields(kind):
        if f.name in raw:
            values[f.name] = _field(kind, f.name, raw[f.name], hints[f.name])
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise ProtocolError(f"{kind.__name__} without {f.name}")
    return kind(**values)


_HINTS: dict[type[Any], dict[str, Any]] = {}


def _hints(kind: type[Any]) -> dict[str, Any]:
    """The fields' types, resolved once per message class."""
    hints = _HINTS.get(kind)
    if hints is None:
        resolved = get_type_hints(kind)
        hints = _HINTS[kind] = {f.name: resolved[f.name] for f in dataclasses.fields(kind)}
    return hints


def _field(kind: type[Any], name: str, value: object, hint: Any) -> object:
    """``value`` as field ``name`` of ``kind`` wants it, or ``ProtocolError``."""
    ok: bool
    if hint is float:
        ok = isinstance(value, int | float) and not isinstance(value, bool)
        value = float(value) if ok else value  # type: ignore[arg-type]  # checked just above
    elif hint is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif hint in (str, bool):
        ok = isinstance(value, hint)
    elif isinstance(hint, type) and issubclass(hint, Enum):
        try:
            return hint(value)
        except ValueError:
            ok = False
    elif hint == list[str]:
        ok = isinstance(value, list) and all(isinstance(v, str) for v in value)
    elif hint == list[Scalar]:
        ok = isinstance(value, list) and all(_scalar(v) for v in value)
    elif hint == dict[str, Scalar]:
        ok = isinstance(value, dict) and all(_scalar(v) for v in value.values())
    elif hint == WireError | None:
        if value is None:
            return None
        if not isinstance(value, dict):
            raise ProtocolError(f"{kind.__name__}.{name} is not an object")
        return _build(WireError, value)
    else:  # pragma: no cover - a field type this function does not know is a bug here
        raise TypeError(f"no check for {kind.__name__}.{name}: {hint!r}")
    if not ok:
        raise ProtocolError(f"{kind.__name__}.{name} has the wrong type ({type(value).__name__})")
    return value


def _scalar(value: object) -> bool:
    return value is None or isinstance(value, str | int | float | bool)
