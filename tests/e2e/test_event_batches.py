"""``WatchEventBatches``: the events of ``WatchEvents``, in the same order, with the same initial metadata
and errors, several to a message (a replayed page, or what one commit published), at most 256."""

from __future__ import annotations

import json

import grpc
import pytest

from taskward.events import BATCH_MAX_EVENTS, EPOCH_KEY, NODE_KEY, POSITION_KEY, SUBSCRIBED
from taskward.pb.taskward.v1 import tasks_pb2 as pb
from tests.support.procs import TIMEOUT_MULT, NodeProc

T = 30 * TIMEOUT_MULT
SLEEP0 = pb.StartTaskRequest(module="builtin", type="sleep", args_json=json.dumps({"duration": 0, "steps": 1}))

Seen = tuple[int, str, str]


def start_many(node: NodeProc, n: int) -> set[str]:
    ids: set[str] = set()
    while len(ids) < n:
        resp = node.stub().StartTasks(pb.StartTasksRequest(starts=[SLEEP0] * min(100, n - len(ids))), timeout=T)
        assert all(r.code == 0 for r in resp.results), resp
        ids |= {r.task_id for r in resp.results}
    return ids


def until_completed(messages: object, ids: set[str], *, batched: bool) -> tuple[list[Seen], list[int]]:
    """Read a stream until every task of ``ids`` has completed on it: (every event, each message's size)."""
    seen: list[Seen] = []
    sizes: list[int] = []
    left = set(ids)
    for msg in messages:  # type: ignore[attr-defined]
        events = list(msg.events) if batched else [msg]
        sizes.append(len(events))
        for ev in events:
            seen.append((ev.sequence, ev.type, ev.task_id))
            if ev.type == "task.completed":
                left.discard(ev.task_id)
        if not left:
            messages.cancel()  # type: ignore[attr-defined]
            return seen, sizes
    raise AssertionError(f"stream ended with {len(left)} tasks not completed")


def test_replay_carries_the_same_events_in_the_same_order_in_messages_of_at_most_256(node: NodeProc) -> None:
    ids = start_many(node, 300)
    stub = node.stub()
    one, sizes_one = until_completed(stub.WatchEvents(pb.WatchEventsRequest(after_sequence=0), timeout=T), ids,
                                     batched=False)
    many, sizes = until_completed(stub.WatchEventBatches(pb.WatchEventsRequest(after_sequence=0), timeout=T), ids,
                                  batched=True)
    assert many == one and len(one) >= 600  # started and completed, each task
    assert set(sizes_one) == {1}
    assert sizes[0] == BATCH_MAX_EVENTS == 256 and max(sizes) == 256 and min(sizes) >= 1
    # Sequence numbers strictly increase: nothing repeated, nothing out of order.
    assert [s for s, _, _ in many] == sorted({s for s, _, _ in many})


def test_live_events_of_one_commit_share_a_message_and_types_filter_them(node: NodeProc) -> None:
    stub = node.stub()
    every = stub.WatchEventBatches(pb.WatchEventsRequest(live_only=True), timeout=T)
    finishing = stub.WatchEventBatches(pb.WatchEventsRequest(live_only=True, types=["task.completed"]), timeout=T)
    assert SUBSCRIBED in every.initial_metadata() and SUBSCRIBED in finishing.initial_metadata()
    ids = start_many(node, 200)
    live, sizes = until_completed(every, ids, batched=True)
    done, _ = until_completed(finishing, ids, batched=True)
    assert max(sizes) > 1, sizes  # a call of 100 starts commits together
    assert {t for _, t, _ in live} == {"task.started", "task.progress", "task.completed"}
    assert done == [e for e in live if e[1] == "task.completed"]
    replayed, _ = until_completed(stub.WatchEvents(pb.WatchEventsRequest(after_sequence=live[0][0] - 1), timeout=T),
                                  ids, batched=False)
    assert live == replayed[:len(live)]


def test_the_same_initial_metadata_as_watch_events(node: NodeProc) -> None:
    stub = node.stub()
    for req in (pb.WatchEventsRequest(live_only=True), pb.WatchEventsRequest(after_sequence=0)):
        one, many = stub.WatchEvents(req, timeout=T), stub.WatchEventBatches(req, timeout=T)
        try:
            md_one, md_many = dict(one.initial_metadata()), dict(many.initial_metadata())
        finally:
            one.cancel()
            many.cancel()
        keys = {SUBSCRIBED[0], POSITION_KEY, NODE_KEY, EPOCH_KEY}
        assert keys <= set(md_many) and {k: md_many[k] for k in keys} == {k: md_one[k] for k in keys}


KNOWN = "task.started, task.progress, task.retrying, task.completed, task.failed, task.aborted, cron.fired"


@pytest.mark.parametrize(("types", "message"), [
    (["task.finished"], f"unknown event type 'task.finished'; known: {KNOWN}"),
    (["x" * 200], f"unknown event type '{'x' * 64}...'; known: {KNOWN}"),
    (["task.completed"] * 101, "too many event types (101); at most 100"),
])
def test_a_bad_request_is_refused_as_watch_events_refuses_it(node: NodeProc, types: list[str], message: str) -> None:
    stub = node.stub()
    before = stub.ListTasks(pb.ListTasksRequest(module="builtin"), timeout=T)
    answers = []
    for method in (stub.WatchEvents, stub.WatchEventBatches):
        with pytest.raises(grpc.RpcError) as err:
            next(iter(method(pb.WatchEventsRequest(types=types), timeout=T)))
        answers.append((err.value.code(), err.value.details()))
    assert answers == [(grpc.StatusCode.INVALID_ARGUMENT, message)] * 2
    assert stub.ListTasks(pb.ListTasksRequest(module="builtin"), timeout=T) == before
