"""``executor=`` on task types, and the protocol a node speaks with its worker processes (in-process: no
worker is started here; tests/e2e/test_process_executor.py runs real ones)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from taskward.context import TaskContext
from taskward.errors import ChildFailed, InvalidArgument, TaskNotFound
from taskward.procpool import protocol
from taskward.procpool.protocol import (
    MAX_FRAME_BYTES,
    Finished,
    Init,
    Log,
    Outcome,
    Progress,
    ProtocolError,
    RemoteException,
    Reply,
    Run,
    Signal,
    SignalKind,
    SpawnChild,
    WaitChild,
    WireError,
)
from taskward.registry import BodyExecutor, Registry, task_type


@task_type("unit", "in-thread")
def in_thread(ctx: TaskContext) -> None: ...


@task_type("unit", "in-process", executor="process")
def in_process(ctx: TaskContext, *, n: int = 1) -> int:
    return n


@task_type("unit", "async-in-process", executor=BodyExecutor.PROCESS)
async def async_in_process(ctx: TaskContext) -> None: ...


def test_executor_is_thread_by_default_or_process_when_asked() -> None:
    r = Registry()
    assert r.load_module(__name__) == 3
    assert r.get("unit", "in-thread").executor is BodyExecutor.THREAD
    assert r.get("unit", "in-process").executor is BodyExecutor.PROCESS
    assert r.get("unit", "async-in-process").executor is BodyExecutor.PROCESS
    assert r.get("unit", "in-process").import_source == __name__  # what a worker imports


@pytest.mark.parametrize("bad", ["fork", "Process", "", None, 1])
def test_any_other_executor_is_refused_when_the_module_loads(bad: Any) -> None:
    with pytest.raises(ValueError) as info:
        task_type("unit", "bad", executor=bad)
    assert str(info.value) == f'executor must be "thread" or "process", got {bad!r}'


def test_a_process_body_must_be_importable_from_its_module() -> None:
    def nested(ctx: TaskContext) -> None: ...

    with pytest.raises(ValueError) as info:
        task_type("unit", "nested", executor="process")(nested)
    assert str(info.value) == (
        "test_a_process_body_must_be_importable_from_its_module.<locals>.nested: a body with "
        'executor="process" must be defined at the top level of its module (a worker process imports it from there)')
    task_type("unit", "nested")(nested)  # in a thread it may live anywhere


def test_the_source_is_how_the_node_loaded_the_module() -> None:
    r = Registry()
    r.load_module(__import__(__name__, fromlist=["x"]), source="tests/unit/test_process_executor_unit.py")
    assert r.get("unit", "in-process").import_source == "tests/unit/test_process_executor_unit.py"
    r = Registry()
    r.load_module("taskward.builtin_tasks")
    assert r.get("builtin", "sleep").import_source == "taskward.builtin_tasks"


EVERY_MESSAGE: list[protocol.Message] = [
    Init(sys_path=["/a", ""], log_level=20, preload=["tests.support.sample_tasks"]),
    Run(call=1, task_id="t", module="m", type_name="x", source="pkg.mod", args_json='{"a":[1,{"b":"ü"}]}',
        aborted=False),
    Reply(call=1, request=2, value_json='"id"'),
    Reply(call=1, request=3, error=WireError.of(TaskNotFound("t"))),
    Signal(call=1, kind=SignalKind.ABANDON),
    Progress(call=1, done=1.0, total=3.0, message="batch 1"),
    Log(call=0, logger="pkg.mod", level=30, message="careful"),
    SpawnChild(call=1, request=4, module="m", type_name="y", args_json="{}"),
    WaitChild(call=1, request=5, child_id="c"),
    Finished(call=1, outcome=Outcome.DONE, result_json="[1,2]"),
    Finished(call=1, outcome=Outcome.FAILED, error=WireError.of(ValueError("boom", 3))),
]


@pytest.mark.parametrize("msg", EVERY_MESSAGE, ids=lambda m: type(m).__name__)
def test_every_message_survives_a_frame(msg: protocol.Message) -> None:
    frame = protocol.encode(msg)
    assert protocol.frame_length(frame[:4]) == len(frame) - 4
    decode = protocol.decode_to_worker if isinstance(msg, Init | Run | Reply | Signal) else protocol.decode_to_node
    assert decode(frame[4:]) == msg


@pytest.mark.parametrize(("payload", "why"), [
    (b'{"op":"progress","call":1,"done":"1","total":2.0,"message":""}', "Progress.done has the wrong type (str)"),
    (b'{"op":"progress","call":true,"done":1,"total":2.0,"message":""}', "Progress.call has the wrong type (bool)"),
    (b'{"op":"progress","call":1,"done":1,"total":2}', "Progress without message"),
    (b'{"op":"log","call":0,"logger":"x","level":20,"message":"m","extra":1}', "Log has no field(s) extra"),
    (b'{"op":"finished","call":1,"outcome":"maybe"}', "Finished.outcome has the wrong type (str)"),
    (b'{"op":"run","call":1}', "unknown message 'run'"),  # a node's message, not a worker's
    (b'{"op":["log"],"call":1}', "unknown message \"['log']\""),
    (b'{"op":"finished","call":1,"outcome":"failed","error":{"exc_type":"x","message":"m","args":[[[]]]}}',
     "a frame nested deeper than 4 levels"),
    (b"[1]", "a frame that is not a JSON object"),
    (b"\xff", "a frame that is not UTF-8 JSON"),
])
def test_a_frame_that_is_not_a_message_is_refused(payload: bytes, why: str) -> None:
    with pytest.raises(ProtocolError) as info:
        protocol.decode_to_node(payload)
    assert str(info.value).startswith(why), str(info.value)


def test_frames_are_bounded_both_ways() -> None:
    with pytest.raises(ProtocolError, match=f"larger than {MAX_FRAME_BYTES}"):
        protocol.frame_length((MAX_FRAME_BYTES + 1).to_bytes(4, "big"))
    with pytest.raises(ProtocolError, match=f"larger than {MAX_FRAME_BYTES}"):
        protocol.encode(Log(call=0, logger="x", level=20, message="x" * MAX_FRAME_BYTES))


class LocalError(ConnectionError):
    pass


def test_an_exception_crosses_with_its_class_message_and_attributes() -> None:
    child = WireError.of(ChildFailed("c1", "boom", qualified_type="m:t")).exception()
    assert isinstance(child, ChildFailed)
    assert (str(child), child.child_id, child.error) == ("child c1 (m:t) failed: boom", "c1", "boom")
    local = WireError.of(LocalError("reset", 104)).exception()
    assert isinstance(local, LocalError) and local.args == ("reset", 104)
    invalid = WireError.of(InvalidArgument("no")).exception()
    assert isinstance(invalid, InvalidArgument) and invalid.message == "no"


def test_an_exception_of_a_class_not_loaded_here_is_named_not_imported() -> None:
    wire = WireError(exc_type="some.module.nobody.imported:Gone", message="it went", args=["it went"])
    exc = wire.exception()
    assert isinstance(exc, RemoteException) and (exc.exc_type, str(exc)) == ("some.module.nobody.imported:Gone",
                                                                           "it went")
    assert WireError(exc_type="builtins:print", message="not a class").exception().args == ("not a class",)


def test_an_error_with_unencodable_arguments_keeps_its_message() -> None:
    wire = WireError.of(KeyError(object))
    assert wire.args == [wire.message] and json.loads(json.dumps(wire.args)) == wire.args
    assert WireError.of(RuntimeError()).message == "RuntimeError"
