"""Fuzzing every gRPC method of a real node with generated request messages.

Each case is a valid request for one method (taken from a few templates that name the node's own
tasks and schedules) with zero to three fields replaced by generated values: odd Unicode, ids that are
not quite ids, huge, negative and non-finite numbers, JSON documents deep, broken or not JSON at all.
Every method the node serves is fuzzed, read from the service descriptors, so a new RPC is covered
the day it is added.

Every answer is OK with a consistent response or a status other than INTERNAL/UNKNOWN with a one-line
message; a rejected request leaves the node's store exactly as it was (``world.FuzzNode.fingerprint``);
after the run a normal call still works.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import grpc
import pytest
from google.protobuf import message_factory
from google.protobuf.descriptor import FieldDescriptor, MethodDescriptor
from google.protobuf.message import Message
from hypothesis import example, given, settings
from hypothesis import strategies as st

from taskward.pb.taskward.v1 import cron_pb2 as cron_pb
from taskward.pb.taskward.v1 import tasks_pb2 as pb
from tests.fuzz.cases import CaseCount
from tests.fuzz.messages import edited, leaf_paths
from tests.fuzz.values import FLOATS, field_value, integers, json_text, task_ids
from tests.fuzz.world import MAX_TTL, NEVER_DUE, SCHEDULE_ID, Fingerprint, FuzzNode, Seeded

pytestmark = pytest.mark.timeout(900)

UUID_RE = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
CALL_TIMEOUT_S = 10.0
WAIT_TIMEOUT_S = 0.2  # WaitTask on a running task with a long timeout: the client's deadline ends it
# What a bad request may get; INTERNAL and UNKNOWN mean the node did not know what to do with it, and
# UNAVAILABLE or UNIMPLEMENTED that it could not serve it at all.
REJECTIONS = {grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND, grpc.StatusCode.FAILED_PRECONDITION,
              grpc.StatusCode.ALREADY_EXISTS, grpc.StatusCode.OUT_OF_RANGE, grpc.StatusCode.RESOURCE_EXHAUSTED,
              grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.PERMISSION_DENIED}
TRANSPORT_MESSAGES = ("Stream removed", "Socket closed", "Received RST_STREAM", "failed to connect")
# Methods whose success changes nothing in the store (the others may, and the fingerprint is taken again).
READ_ONLY = {"ListModules", "ListTasks", "WaitTask", "GetTtl", "ListTaskTypes", "WatchEvents", "WatchEventBatches",
             "ListNodes", "WatchNodes", "GetLoad", "ListSchedules", "GetSchedule"}
# Unregistering module ``test`` drops every test task the other cases aim at: rarely.
RARE = {"UnregisterTestModule", "RegisterTestModule"}


@dataclass(frozen=True)
class Rpc:
    service: str
    method: MethodDescriptor
    request: type[Message]
    response: type[Message]

    @property
    def name(self) -> str:
        return self.method.name

    @property
    def path(self) -> str:
        return f"/{self.service}/{self.method.name}"

    def __repr__(self) -> str:  # how a failing case names it
        return f"RPCS[{self.path!r}]"


def all_rpcs() -> list[Rpc]:
    rpcs = []
    for module in (pb, cron_pb):
        for service in module.DESCRIPTOR.services_by_name.values():
            for m in service.methods:
                rpcs.append(Rpc(service.full_name, m, message_factory.GetMessageClass(m.input_type),
                                message_factory.GetMessageClass(m.output_type)))
    return rpcs


RPCS = all_rpcs()


def templates(s: Seeded) -> dict[str, list[Message]]:
    """Valid requests per method, aimed at the seeded tasks; a method without one sends its empty message."""
    sleep0, whoami = '{"duration": 0}', '{"extra": [1, "two"]}'
    schedule = cron_pb.CronSchedule(id=SCHEDULE_ID, module="builtin", task_type="sleep", schedule=NEVER_DUE,
                                    args_json=sleep0, timezone="Europe/Paris", concurrency="allow",
                                    misfire_grace_s=30)
    ids = [pb.TaskIdRequest(task_id=i, keep=True) for i in s.ids]
    starts = [
        pb.StartTaskRequest(module="builtin", type="sleep", args_json=sleep0, keyspace="ks", entity="e"),
        pb.StartTaskRequest(module="builtin", type="fail", args_json='{"error": "fuzz"}', idempotency_key="k1"),
        pb.StartTaskRequest(module="sample", type="whoami", args_json=whoami),
        pb.StartTaskRequest(module="builtin", type="sleep", args_json=sleep0, cluster=True, nodes=["n1"]),
    ]
    watches = [pb.WatchEventsRequest(after_sequence=0), pb.WatchEventsRequest(live_only=True),
               pb.WatchEventsRequest(after_sequence=2**64 - 1)]  # past SQLite's integers
    return {
        "ListTasks": [pb.ListTasksRequest(module="test"), pb.ListTasksRequest(module="builtin", with_status=True),
                      pb.ListTasksRequest(module="test", internal=True, keyspace="ks", table="t", page_size=2)],
        "GetTaskStatus": ids, "GetTaskStatusRecursive": ids,
        "GetTaskStatuses": [pb.GetTaskStatusesRequest(reads=ids), pb.GetTaskStatusesRequest(reads=ids[:2] * 2),
                            pb.GetTaskStatusesRequest(reads=ids[-1:])],
        "AbortTask": [pb.TaskIdRequest(task_id=i) for i in (s.running_sleep, s.running_test, s.cluster)],
        "WaitTask": [pb.WaitTaskRequest(task_id=i, timeout=0) for i in (s.done_sleep, s.running_test, s.cluster)],
        "GetTtl": [pb.GetTtlRequest(kind=pb.TTL_KIND_TASK), pb.GetTtlRequest(kind=pb.TTL_KIND_USER)],
        "SetTtl": [pb.SetTtlRequest(kind=pb.TTL_KIND_TASK, ttl=60), pb.SetTtlRequest(kind=pb.TTL_KIND_USER, ttl=0)],
        "Drain": [pb.DrainRequest(module="sample"), pb.DrainRequest(module="test")],
        "StartTask": starts,
        # One template of three with a cluster start, as for StartTask: each makes the case wait for its child.
        "StartTasks": [pb.StartTasksRequest(starts=[starts[0], starts[2]]), pb.StartTasksRequest(starts=starts),
                       pb.StartTasksRequest(starts=[starts[1], starts[1], starts[0]])],
        "WatchEvents": watches,
        "WatchEventBatches": watches,
        "CreateTestTask": [pb.CreateTestTaskRequest(keyspace="ks", table="t", entity="e", shard=3),
                           pb.CreateTestTaskRequest(parent_id=s.parent_test, user_task=True)],
        "UnregisterTestTask": [pb.TaskIdRequest(task_id=s.done_test)],
        "FinishTestTask": [pb.FinishTestTaskRequest(task_id=s.running_test),
                           pb.FinishTestTaskRequest(task_id=s.child_test, error="child failed")],
        "GetSchedule": [cron_pb.ScheduleIdRequest(id=SCHEDULE_ID)],
        "PutSchedule": [schedule],
        "PutSchedules": [cron_pb.PutSchedulesRequest(schedules=[schedule])],
        "DeleteSchedule": [cron_pb.ScheduleIdRequest(id=SCHEDULE_ID)],
        "SetScheduleEnabled": [cron_pb.SetScheduleEnabledRequest(id=SCHEDULE_ID, enabled=False)],
        "RunScheduleNow": [cron_pb.ScheduleIdRequest(id=SCHEDULE_ID)],
    }


def hints(s: Seeded) -> dict[str, st.SearchStrategy[Any]]:
    """Values for fields by name: near-misses of what the field means, on top of the type's edge values."""
    ids = task_ids(s.ids)
    return {
        "task_id": ids, "parent_id": ids, "cluster_parent_id": ids, "cluster_task_id": ids,
        "module": st.sampled_from(["builtin", "sample", "test", "", "nosuch", "Builtin", "builtin "]),
        "type": st.sampled_from(["sleep", "fail", "whoami", "raises", "tree", "test", "nosuch", ""]),
        "task_type": st.sampled_from(["sleep", "fail", "whoami", "test", "nosuch", ""]),
        "args_json": json_text([{"duration": 0}, {"duration": 0, "steps": 0}, {"error": ""}, {"extra": None}]),
        "schedule": st.sampled_from([NEVER_DUE, "0 0 29 2 * *", "61 0 29 2 *", "* * * *", "0 0 30 2 *",
                                     "@reboot", "@every 1s", ""]),
        "timezone": st.sampled_from(["UTC", "Europe/Paris", "", "Mars/Olympus", "../../etc/localtime", "UTC+1",
                                     "EST5EDT", "Etc/GMT+14", "Europe", "Europe/", "zoneinfo"]),
        "concurrency": st.sampled_from(["forbid", "allow", "replace", "", "FORBID", "queue"]),
        "id": st.sampled_from([SCHEDULE_ID, "fuzz-other", "", "-x", "a" * 129, "a/b"]),
        "nodes": st.lists(st.sampled_from(["n1", "n2", "", "n1 ", "-", "x" * 64]), max_size=3),
        "idempotency_key": st.sampled_from(["k1", "k2", "", "k" * 1025]),
        "ttl": st.sampled_from([0, 1, MAX_TTL, MAX_TTL + 1, -1, 2**63 - 1, -(2**63)]),
        "timeout": st.one_of(st.sampled_from([0.0, 0.001, -0.0]), FLOATS),
        "misfire_grace_s": FLOATS,
        "page_size": integers(32, False),
        "after_sequence": integers(64, False),
        "shard": st.sampled_from([0, 1, 65536, 65537, 2**32 - 1]),
    }


def field_strategy(field: FieldDescriptor, named: dict[str, st.SearchStrategy[Any]]) -> st.SearchStrategy[Any]:
    if field.type == FieldDescriptor.TYPE_MESSAGE:
        raise TypeError(field.full_name)
    one = st.one_of(named[field.name], field_value(field)) if field.name in named else field_value(field)
    if field.is_repeated:
        return named[field.name] if field.name in named else st.lists(one, max_size=3)
    return one


def cases(rpc: Rpc, made: list[Message], named: dict[str, st.SearchStrategy[Any]]
          ) -> st.SearchStrategy[tuple[Rpc, Message]]:
    """A template of ``rpc`` with up to three fields replaced. Strategies are built once, here: building
    them per case costs more than the call the case makes."""
    edits = [st.tuples(st.just(path), field_strategy(path[-1], named))
             for path in leaf_paths(rpc.request.DESCRIPTOR)]
    template = st.sampled_from(made) if made else st.just(rpc.request())
    edit_lists = st.lists(st.one_of(edits), max_size=3) if edits else st.just([])
    return st.tuples(template, edit_lists).map(lambda t: (rpc, edited(*t)))


@dataclass
class Answer:
    code: grpc.StatusCode
    message: str
    response: Any = None


def invoke(channel: grpc.Channel, rpc: Rpc, req: Message) -> Answer:
    timeout = WAIT_TIMEOUT_S if rpc.name == "WaitTask" else CALL_TIMEOUT_S
    if rpc.method.server_streaming:
        stream = channel.unary_stream(rpc.path, request_serializer=rpc.request.SerializeToString,
                                      response_deserializer=rpc.response.FromString)(req, timeout=timeout)
        stream.initial_metadata()  # sent once the stream is set up, or with the error that ends it
        if not stream.done():
            stream.cancel()
            return Answer(grpc.StatusCode.OK, "")
        return Answer(stream.code(), stream.details() or "")
    unary = channel.unary_unary(rpc.path, request_serializer=rpc.request.SerializeToString,
                                response_deserializer=rpc.response.FromString)
    try:
        return Answer(grpc.StatusCode.OK, "", unary(req, timeout=timeout))
    except grpc.RpcError as exc:
        assert isinstance(exc, grpc.Call)
        return Answer(exc.code(), exc.details() or "")


def check_rejection(rpc: Rpc, req: Message, answer: Answer) -> None:
    assert answer.code in REJECTIONS, f"{rpc.name}({req}) -> {answer.code.name}: {answer.message}"
    if answer.code is grpc.StatusCode.DEADLINE_EXCEEDED:
        assert rpc.name == "WaitTask", f"{rpc.name}({req}) did not answer within {CALL_TIMEOUT_S}s"
        return  # the node's own timeout, or the client's deadline on a wait without one
    assert answer.message.strip(), f"{rpc.name} -> {answer.code.name} without a message"
    assert "Traceback" not in answer.message and len(answer.message) <= 4096, answer.message
    # the node's own verdict, not the transport's (a status it could not deliver)
    assert not answer.message.startswith(TRANSPORT_MESSAGES), f"{rpc.name}({req}) -> {answer.message}"


class Model:
    """What the fuzzed node's answers must agree with: the TTLs the accepted calls set."""

    def __init__(self, node: FuzzNode) -> None:
        self.node = node
        self.ttl = dict(zip((pb.TTL_KIND_TASK, pb.TTL_KIND_USER), node.ttls(), strict=True))

    def check_started(self, name: str, req: Any, task_id: str) -> None:
        assert UUID_RE.fullmatch(task_id), (req, task_id)
        cluster = name == "StartTask" and (req.cluster or len(req.nodes) > 0)
        asked = req.cluster_task_id if cluster else req.task_id  # the id a client may choose
        # a known idempotency key answers the id of the task it started first, whatever id is asked now
        assert not asked or getattr(req, "idempotency_key", "") or task_id == asked, (req, task_id)

    def kind(self, req: Any) -> int:
        return pb.TTL_KIND_USER if req.kind == pb.TTL_KIND_USER else pb.TTL_KIND_TASK

    def check_ok(self, rpc: Rpc, req: Any, resp: Any) -> None:
        name = rpc.name
        if name in ("StartTask", "CreateTestTask"):
            self.check_started(name, req, resp.task_id)
        elif name == "StartTasks":
            assert len(resp.results) == len(req.starts), (req, resp)
            for start, result in zip(req.starts, resp.results, strict=True):
                if result.code:  # answered as StartTask answers an error: a code and a clear message, no id
                    assert not result.task_id and result.message.strip(), result
                    assert "Traceback" not in result.message and len(result.message) <= 4096, result
                    assert result.code != grpc.StatusCode.INTERNAL.value[0], (start, result)
                else:
                    self.check_started("StartTask", start, result.task_id)
        elif name in ("GetTaskStatus", "WaitTask"):
            assert resp.stats.task_id == req.task_id
        elif name == "GetTaskStatuses":
            assert len(resp.results) == len(req.reads), (req, resp)
            for read, result in zip(req.reads, resp.results, strict=True):
                if result.code:  # answered as GetTaskStatus answers an error: a code and a clear message
                    assert not result.HasField("status") and result.message.strip(), result
                    assert "Traceback" not in result.message and len(result.message) <= 4096, result
                    assert result.code != grpc.StatusCode.INTERNAL.value[0], (read, result)
                else:
                    assert result.status.stats.task_id == read.task_id, (read, result)
        elif name == "GetTaskStatusRecursive":
            assert resp.statuses[0].stats.task_id == req.task_id
        elif name == "ListTasks":
            for t in resp.tasks:
                assert UUID_RE.fullmatch(t.task_id)
                assert not req.keyspace or t.keyspace == req.keyspace
                assert not req.table or t.table == req.table
        elif name == "GetTtl":
            assert resp.ttl == self.ttl[self.kind(req)], (req, resp, self.ttl)
        elif name == "SetTtl":
            assert resp.previous == self.ttl[self.kind(req)] and 0 <= req.ttl <= MAX_TTL, (req, resp, self.ttl)
            self.node.restore_ttls()  # so that no finished test task expires in the background


def weighted_rpcs() -> list[Rpc]:
    return [r for r in RPCS for _ in range(1 if r.name in RARE else 6)]


@pytest.fixture(scope="module")
def fuzz_node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FuzzNode]:
    node = FuzzNode(tmp_path_factory.mktemp("fuzz-grpc") / "n1").start()
    try:
        yield node
    finally:
        code = node.stop()
    assert code == 0, f"node did not stop cleanly ({code}):\n{node.proc.log()}"


def test_every_method_answers_every_request(fuzz_node: FuzzNode) -> None:
    count = CaseCount("grpc")
    made, named = templates(fuzz_node.seeded), hints(fuzz_node.seeded)
    channel = fuzz_node.channel()
    model = Model(fuzz_node)
    state: dict[str, Fingerprint] = {"fp": fuzz_node.fingerprint()}
    by_name = {r.name: r for r in RPCS}
    case = st.one_of([cases(rpc, made.get(rpc.name, []), named) for rpc in weighted_rpcs()])

    def run(rpc: Rpc, req: Message) -> None:
        count.add()
        before = state["fp"]
        answer = invoke(channel, rpc, req)
        if answer.code is grpc.StatusCode.OK:
            model.check_ok(rpc, req, answer.response)
            if rpc.name not in READ_ONLY:
                state["fp"] = fuzz_node.settle(before)
                return
        else:
            check_rejection(rpc, req, answer)
        after = fuzz_node.fingerprint()
        assert after == before, (f"{rpc.name}({req}) -> {answer.code.name} {answer.message!r:.200} changed the "
                                 f"store:\n{fuzz_node.explain(before, after)}")

    @settings(max_examples=4_500)
    @given(cases=st.lists(case, min_size=1, max_size=4))
    @example(cases=[(by_name["StartTask"], pb.StartTaskRequest(module="builtin", type="sleep",
                                                               args_json='{"duration": 1e400}'))])
    @example(cases=[(by_name["WaitTask"], pb.WaitTaskRequest(task_id=fuzz_node.seeded.done_sleep,
                                                             timeout=float("nan")))])
    # A message quoting a 20 KB id outgrew gRPC's trailer limit: the client saw RESOURCE_EXHAUSTED.
    @example(cases=[(by_name["DeleteSchedule"], cron_pb.ScheduleIdRequest(id="k" * 20_000))])
    # A time zone naming a folder of the zone database ("Europe") or too long a file name was INTERNAL.
    @example(cases=[(by_name["PutSchedule"], cron_pb.CronSchedule(
        id=SCHEDULE_ID, module="builtin", task_type="sleep", schedule=NEVER_DUE, timezone=zone))
        for zone in ("Europe", "é" * 513)])
    def each(cases: list[tuple[Rpc, Message]]) -> None:
        for rpc, req in cases:
            run(rpc, req)

    each()
    count.check()
    fuzz_node.assert_serving()


def test_drain_keeps_the_children_of_cluster_tasks(fuzz_node: FuzzNode) -> None:
    """Found by the fuzz above (a rejected case saw a sequence counter move): a drain unregistered a
    cluster task's finished child before the leader had read its outcome, so the leader, finding it gone,
    ran it again. Children of cluster tasks leave by expiry only."""
    stub = fuzz_node.proc.stub()
    cluster_id = stub.StartTask(pb.StartTaskRequest(module="sample", type="whoami", cluster=True),
                                timeout=10).task_id
    assert stub.WaitTask(pb.WaitTaskRequest(task_id=cluster_id, timeout=30), timeout=40).stats.state == "done"
    child = stub.GetTaskStatus(pb.TaskIdRequest(task_id=cluster_id, keep=True), timeout=10).children_ids[0]
    stub.Drain(pb.DrainRequest(module="sample"), timeout=10)
    status = stub.GetTaskStatus(pb.TaskIdRequest(task_id=child.task_id, keep=True), timeout=10)
    assert status.stats.state == "done" and status.stats.task_id == child.task_id
