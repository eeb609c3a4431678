"""Event streams of some types only (``WatchEventsRequest.types``, REST ``/events?types=``, the client's
``events(types=...)``): each carries exactly the node's events of those types, live and replayed, in
order, on every surface; an unknown type is refused with the same message everywhere."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import grpc
import httpx
import pytest

from taskward import Client, InvalidArgument
from taskward.convert import event_pb_to_dict
from taskward.pb.taskward.v1 import tasks_pb2 as pb
from tests.e2e.test_durability import start, wait_state
from tests.support.procs import TIMEOUT_MULT, NodeProc, free_port
from tests.support.rest import GatewayProc, client, expect_error
from tests.support.sse import SseFollower

WANTED = ["task.completed", "task.failed"]
UNKNOWN = ("unknown event type 'task.done'; known: task.started, task.progress, task.retrying, task.completed, "
           "task.failed, task.aborted, cron.fired")


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[NodeProc, httpx.Client, GatewayProc]]:
    root = tmp_path_factory.mktemp("event-types")
    rest = f"127.0.0.1:{free_port()}"
    node = NodeProc(root / "n1", extra=["--rest", rest])
    node.start()
    gateway = GatewayProc(root, [node])
    try:
        gateway.start()
        with client(f"http://{rest}") as http:
            yield node, http, gateway
    finally:
        assert gateway.stop() == 0, gateway.log()
        assert node.stop() == 0, node.log()


def own_replay(node: NodeProc, upto: int) -> list[dict[str, Any]]:
    """The node's whole stream from its store up to sequence ``upto``: what every filtered one is checked
    against."""
    out = []
    call = node.stub().WatchEvents(pb.WatchEventsRequest(after_sequence=0), timeout=30 * TIMEOUT_MULT)
    for ev in call:
        out.append(event_pb_to_dict(ev))
        if ev.sequence >= upto:
            break
    call.cancel()
    return out


def test_a_stream_of_some_types_carries_those_and_nothing_else(served: tuple[NodeProc, httpx.Client,
                                                                              GatewayProc]) -> None:
    node, http, gateway = served
    stub = node.stub()
    live = stub.WatchEvents(pb.WatchEventsRequest(live_only=True, types=WANTED), timeout=30 * TIMEOUT_MULT)
    assert ("taskward-events", "subscribed") in live.initial_metadata()
    ok = start(stub, "builtin", "sleep", duration=0, steps=3)  # started, 4 x progress, completed
    wait_state(stub, ok, "done")
    bad = start(stub, "builtin", "fail", error="x")
    seen = [next(live), next(live)]
    live.cancel()
    assert [(e.task_id, e.type) for e in seen] == [(ok, "task.completed"), (bad, "task.failed")]

    # Replayed, on every surface: the node's own stream with the other types left out, in its order.
    truth = [e for e in own_replay(node, seen[-1].sequence) if e["type"] in WANTED]
    assert [e["task_id"] for e in truth[-2:]] == [ok, bad] and len(truth) >= 2
    replayed = []
    for ev in stub.WatchEvents(pb.WatchEventsRequest(after_sequence=0, types=WANTED), timeout=30 * TIMEOUT_MULT):
        replayed.append(event_pb_to_dict(ev))
        if ev.task_id == bad:
            break
    assert replayed == truth

    def sse(url: str) -> list[dict[str, Any]]:
        follower = SseFollower(url).start()
        try:
            follower.wait_for(lambda fs: any(f.data["task_id"] == bad for f in fs), 20, f"{url} to reach {bad}")
        finally:
            follower.stop()
        assert all(f.event == f.data["type"] for f in follower.frames)
        return [{k: v for k, v in f.data.items() if k != "node"} for f in follower.frames]

    assert sse(f"{str(http.base_url).rstrip('/')}/events?after=0&types=task.completed,task.failed") == truth
    assert sse(f"{gateway.url}/events?after=0&types=task.completed, task.failed") == truth
    with Client([node.address]) as tw:
        got = []
        for event in tw.events(after=0, types=WANTED):
            got.append({k: v for k, v in event.items() if k != "node"})
            if event["task_id"] == bad:
                break
    assert got == truth


def test_an_unknown_event_type_is_refused_everywhere(served: tuple[NodeProc, httpx.Client, GatewayProc]) -> None:
    node, http, gateway = served
    for types, message in [(["task.done"], UNKNOWN), (["task.completed", "task.done"], UNKNOWN),
                           (["task.started"] * 101, "too many event types (101); at most 100")]:
        call = node.stub().WatchEvents(pb.WatchEventsRequest(types=types), timeout=10)
        with pytest.raises(grpc.RpcError) as err:
            next(call)
        assert (err.value.code(), err.value.details()) == (grpc.StatusCode.INVALID_ARGUMENT, message)
    expect_error(http.get("/events", params={"types": "task.completed,task.done"}), 400, UNKNOWN)
    with httpx.Client(base_url=gateway.url, timeout=10 * TIMEOUT_MULT) as via_gateway:
        expect_error(via_gateway.get("/events", params={"types": "task.done"}), 400, UNKNOWN)
    with Client([node.address]) as tw, pytest.raises(InvalidArgument) as refused:
        next(iter(tw.events(types=["task.done"])))
    assert refused.value.message == UNKNOWN
    # Nothing was left behind: a stream of every type still follows the node.
    tid = start(node.stub(), "builtin", "sleep", duration=0, steps=1)
    wait_state(node.stub(), tid, "done")
    assert tid in {e["task_id"] for e in own_replay(node, _last_sequence(node))}


def _last_sequence(node: NodeProc) -> int:
    call = node.stub().WatchEvents(pb.WatchEventsRequest(live_only=True), timeout=10)
    position = int(dict(call.initial_metadata())["taskward-events-after"])
    call.cancel()
    return position
