"""Cluster-wide cron on a real node (alone, on its embedded store), through REST, gRPC and the CLI.

The node's scheduler runs on an accelerated clock (``--cron-test-clock EPOCH:SPEED``, the test-only
setting), so ``* * * * *`` fires every 60/SPEED real seconds; expressions are still five-field cron.
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest

from taskward import Client, RunSkipped
from taskward.pb.taskward.v1 import cron_pb2 as cpb
from taskward.pb.taskward.v1 import cron_pb2_grpc as cron_grpc
from taskward.pb.taskward.v1 import tasks_pb2 as pb
from tests.support.procs import REPO, TIMEOUT_MULT, NodeProc, free_port, poll, taskward_cmd
from tests.support.rest import client, expect_error

SPEED = 30.0  # one minute of cron time every two real seconds


class CronNode:
    def __init__(self, node: NodeProc, rest: httpx.Client, epoch: float) -> None:
        self.node, self.rest, self.epoch = node, rest, epoch

    def real(self, t: float) -> float:
        """The wall-clock time at which the accelerated clock reads ``t``."""
        return self.epoch + (t - self.epoch) / SPEED

    def doc(self) -> dict[str, Any]:
        resp = self.rest.get("/cron")
        assert resp.status_code == 200, resp.text
        body: dict[str, Any] = resp.json()
        return body

    def put(self, schedules: list[dict[str, Any]]) -> httpx.Response:
        return self.rest.put("/cron", json={"schedules": schedules})

    def cron(self) -> cron_grpc.CronStub:
        return cron_grpc.CronStub(self.node.channel())


@pytest.fixture(scope="module")
def cron_node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CronNode]:
    epoch = time.time()
    rest = f"127.0.0.1:{free_port()}"
    node = NodeProc(tmp_path_factory.mktemp("cron") / "n1",
                    extra=["--rest", rest, "--cron-test-clock", f"{epoch}:{SPEED}",
                           "--tasks", "tests.support.aeordb_tasks"])
    node.start()
    try:
        with client(f"http://{rest}") as c:
            yield CronNode(node, c, epoch)
    finally:
        assert node.stop() == 0, node.log()


@pytest.fixture
def clean(cron_node: CronNode) -> CronNode:
    assert cron_node.put([]).status_code == 200
    return cron_node


def sleep_every_minute(sid: str, **kw: Any) -> dict[str, Any]:
    return {"id": sid, "task_type": "sleep", "schedule": "* * * * *", "args": {"duration": 0.05, "steps": 1},
            "enabled": True, **kw}


def test_a_schedule_fires_each_minute_as_a_root_user_task(clean: CronNode) -> None:
    c = clean
    resp = c.put([sleep_every_minute("tick")])
    assert resp.status_code == 200, resp.text
    (entry,) = resp.json()["schedules"]
    assert (entry["id"], entry["module"], entry["timezone"], entry["concurrency"], entry["misfire_grace_s"],
            entry["cluster"], entry["history"]) == ("tick", "builtin", "UTC", "forbid", 60.0, False, [])
    assert entry["next_fire_time"].endswith(":00Z")

    def fired_twice() -> dict[str, Any] | None:
        d = c.rest.get("/cron/tick").json()
        fired = [h for h in d["history"] if h["outcome"] == "fired"]
        return d if len(fired) >= 2 and d["last_task_state"] == "done" else None

    d = poll(fired_twice, 20, "two firings of tick")
    fired = [h for h in d["history"] if h["outcome"] == "fired"]
    assert [h["node"] for h in fired] == ["n1"] * len(fired)
    assert d["last_task_id"] == fired[0]["task_id"] and d["last_slot"] == fired[0]["slot"]
    # Fired tasks are root, non-internal user tasks with the schedule's id as their entity, started on time.
    listed = {t.task_id: t for t in c.node.stub().ListTasks(pb.ListTasksRequest(module="builtin")).tasks}
    for h in fired:
        t = listed[h["task_id"]]
        assert (t.entity, t.kind) == ("tick", "node")
        st = c.node.stub().GetTaskStatus(pb.TaskIdRequest(task_id=h["task_id"], keep=True))
        assert st.parent_id == "none" and json.loads(st.args_json) == {"duration": 0.05, "steps": 1}
        slot = time.mktime(time.strptime(h["slot"], "%Y-%m-%dT%H:%M:%SZ")) - time.timezone
        delay = st.created_at.seconds + st.created_at.nanos / 1e9 - c.real(slot)
        assert 0 <= delay <= 1.0 * TIMEOUT_MULT, (h, delay)  # firing jitter, in real seconds


def test_cron_fired_events_are_on_the_stream(clean: CronNode) -> None:
    c = clean
    assert c.put([sleep_every_minute("evt", concurrency="allow")]).status_code == 200
    stream = c.node.stub().WatchEvents(pb.WatchEventsRequest(live_only=True), timeout=15 * TIMEOUT_MULT)
    try:
        for ev in stream:
            if ev.type == "cron.fired" and ev.schedule_id == "evt":
                assert ev.slot % 60 == 0 and ev.task_id and "schedule evt slot" in ev.message
                break
    finally:
        stream.cancel()


BAD_DOCUMENTS = [
    ([sleep_every_minute("a", schedule="61 * * * *")], "schedule 'a': schedule '61 * * * *' is not a valid cron "
                                                       "expression"),
    ([sleep_every_minute("a", schedule="* * * * * *")],
     "schedule 'a': schedule '* * * * * *' has 6 fields: expected five (minute hour day-of-month month day-of-week)"),
    ([sleep_every_minute("a", schedule="")], "schedule 'a': empty schedule: expected five cron fields "
                                             "(minute hour day month weekday)"),
    ([sleep_every_minute("ok"), sleep_every_minute("b", task_type="nope")],
     "schedule 'b': task type 'nope' not found in any module"),
    ([sleep_every_minute("a", module="nomod")], "schedule 'a': module nomod not found"),
    ([sleep_every_minute("a", timezone="Mars/Base")],
     "schedule 'a': unknown time zone 'Mars/Base': expected an IANA name such as Europe/Berlin"),
    ([sleep_every_minute("a"), sleep_every_minute("a")], "schedule 'a': duplicate id in the document"),
    ([sleep_every_minute("a", args=[1])], "schedule 'a': field 'args' must be a JSON object"),
    ([sleep_every_minute("a", args={"duration": "long"})],
     "schedule 'a': argument 'duration' of builtin:sleep must be float, got str"),
    ([sleep_every_minute("a", enabled="yes")], "schedule 'a': field 'enabled' must be true or false"),
    ([sleep_every_minute("a", colour="blue")], "schedule 'a': unknown field(s) colour"),
    ([{"task_type": "fail", "schedule": "@daily"}],
     "schedule #1: invalid id '': expected [A-Za-z0-9][A-Za-z0-9._:-]{0,127}"),
    ([{"id": "f", "task_type": "fail", "schedule": "@daily"}],
     "schedule 'f': task type 'fail' is in several modules (aeordb, builtin): name the module"),
    ([sleep_every_minute(f"s{i}") for i in range(10_001)], "too many schedules: 10001 > 10000"),
]


@pytest.mark.parametrize(("schedules", "message"), BAD_DOCUMENTS,
                         ids=[m.split(": ", 1)[-1][:40] for _, m in BAD_DOCUMENTS])
def test_a_bad_document_is_refused_whole_and_changes_nothing(clean: CronNode, schedules: list[dict[str, Any]],
                                                             message: str) -> None:
    c = clean
    assert c.put([sleep_every_minute("keep", schedule="@daily")]).status_code == 200
    before = c.doc()
    body = json.dumps({"schedules": schedules})
    if len(body) > 1024 * 1024:
        resp = c.rest.put("/cron", content=body, headers={"content-type": "application/json"})
        expect_error(resp, 413, "request body larger than 1048576 bytes")
        resp = c.cron().PutSchedules  # the same document over gRPC (4 MiB) reaches the node's own check
        with pytest.raises(grpc.RpcError) as err:
            resp(cpb.PutSchedulesRequest(schedules=[cpb.CronSchedule(id=s["id"], task_type="sleep",
                                                                     schedule="@daily") for s in schedules]))
        assert (err.value.code(), err.value.details()) == (grpc.StatusCode.INVALID_ARGUMENT, message)
    else:
        expect_error(c.put(schedules), 400, message)
    assert c.doc() == before


def test_bad_requests_to_single_schedules(clean: CronNode) -> None:
    c = clean
    expect_error(c.rest.get("/cron/none"), 400, "schedule none not found")
    expect_error(c.rest.post("/cron/none/run-now"), 400, "schedule none not found")
    expect_error(c.rest.delete("/cron/none"), 400, "schedule none not found")
    expect_error(c.rest.put("/cron/x", json={"id": "y", "task_type": "gc", "schedule": "@daily"}), 400,
                 "schedule 'y': the body's id differs from the path's ('x')")
    expect_error(c.rest.put("/cron", json=[]), 400, 'the request body must be {"schedules": [...]}')
    expect_error(c.rest.put("/cron", content=b"{", headers={"content-type": "application/json"}), 400)
    with pytest.raises(grpc.RpcError) as err:
        c.cron().GetSchedule(cpb.ScheduleIdRequest(id="none"))
    assert (err.value.code(), err.value.details()) == (grpc.StatusCode.NOT_FOUND, "schedule none not found")
    assert c.doc() == {"schedules": []}


def test_single_schedule_lifecycle_over_rest(clean: CronNode) -> None:
    c = clean
    resp = c.rest.put("/cron/gc", json={"task_type": "gc", "schedule": "0 3 * * *", "timezone": "Europe/Berlin"})
    assert resp.status_code == 200, resp.text
    assert (resp.json()["module"], resp.json()["timezone"]) == ("aeordb", "Europe/Berlin")
    off = c.rest.post("/cron/gc/disable").json()
    assert (off["enabled"], off["next_fire_time"]) == (False, None)
    on = c.rest.post("/cron/gc/enable").json()
    assert on["enabled"] and on["next_fire_time"]
    run = c.rest.post("/cron/gc/run-now").json()
    assert run["node"] == "n1"
    done = c.node.stub().WaitTask(pb.WaitTaskRequest(task_id=run["task_id"], timeout=10), timeout=15)
    assert (done.stats.state, done.stats.entity) == ("done", "gc")
    h = c.rest.get("/cron/gc").json()["history"][0]
    assert (h["outcome"], h["reason"], h["task_id"]) == ("fired", "run now", run["task_id"])
    assert c.rest.delete("/cron/gc").status_code == 200
    assert c.doc() == {"schedules": []}
    # AeorDB's path is the same document.
    same = c.rest.put("/.config/cron.json", json={"schedules": [{"id": "nightly-gc", "task_type": "gc",
                                                                   "schedule": "0 3 * * *", "args": {},
                                                                   "enabled": True}]})
    assert same.status_code == 200 and c.rest.get("/.config/cron.json").json() == c.doc()
    # What a GET returns can be written back as it is.
    assert c.put(c.doc()["schedules"]).status_code == 200


def test_forbid_skips_while_the_previous_run_goes_on(clean: CronNode) -> None:
    c = clean
    slow = sleep_every_minute("slow", args={"duration": 5.0 * 60 / SPEED, "steps": 1})  # five cron minutes
    assert c.put([slow]).status_code == 200

    def skipped() -> dict[str, Any] | None:
        d = c.rest.get("/cron/slow").json()
        return d if any(h["outcome"] == "skipped" for h in d["history"]) else None

    d = poll(skipped, 20, "a skipped slot")
    skip = next(h for h in d["history"] if h["outcome"] == "skipped")
    fired = next(h for h in d["history"] if h["outcome"] == "fired")
    assert skip["reason"] == f"forbid: task {fired['task_id']} of the same type and arguments is still running"


def test_a_run_now_its_policy_skips_says_so_everywhere_and_starts_nothing(clean: CronNode) -> None:
    c = clean
    slow = {**sleep_every_minute("held", args={"duration": 600, "steps": 1}), "enabled": False}
    assert c.put([slow]).status_code == 200
    first = c.rest.post("/cron/held/run-now")
    assert first.status_code == 200, first.text
    running = first.json()["task_id"]
    before = c.rest.get("/cron/held").json()
    reason = f"forbid: task {running} of the same type and arguments is still running"
    message = f"schedule held not fired: {reason}"

    def fired() -> list[str]:
        return [t.task_id for t in c.node.stub().ListTasks(pb.ListTasksRequest(module="builtin")).tasks
                if t.entity == "held"]

    assert fired() == [running]

    expect_error(c.rest.post("/cron/held/run-now"), 409, message)
    with pytest.raises(grpc.RpcError) as err:
        c.cron().RunScheduleNow(cpb.ScheduleIdRequest(id="held"))
    assert (err.value.code(), err.value.details()) == (grpc.StatusCode.FAILED_PRECONDITION, message)
    cli = subprocess.run([*taskward_cmd(), "cron", "-p", str(c.node.port), "run-now", "held"], capture_output=True,
                         text=True, cwd=REPO, timeout=30 * TIMEOUT_MULT, check=False)
    assert (cli.returncode, cli.stdout, cli.stderr) == (1, "", f"error: {message}\n")
    with Client([c.node.address]) as tw, pytest.raises(RunSkipped) as skipped:
        tw.run_schedule_now("held")
    assert skipped.value.message == message

    after = c.rest.get("/cron/held").json()
    # Nothing started; the three skips are history, the schedule's state is as it was.
    assert fired() == [running]
    assert [(h["outcome"], h["reason"]) for h in after["history"][:4]] == [("skipped", reason)] * 4
    assert after["history"][4:] == before["history"]
    assert {k: after[k] for k in ("last_task_id", "last_slot", "enabled")} == \
        {k: before[k] for k in ("last_task_id", "last_slot", "enabled")}
    c.node.stub().AbortTask(pb.TaskIdRequest(task_id=running))


def test_cli_cron(clean: CronNode, tmp_path: Path) -> None:
    c = clean
    doc = tmp_path / "cron.json"
    doc.write_text(json.dumps({"schedules": [{"id": "nightly-gc", "task_type": "gc", "schedule": "0 3 * * *"},
                                             {"id": "hourly", "task_type": "reindex", "schedule": "@hourly",
                                              "args": {"path": "/data/"}}]}))
    cli = ["cron", "-p", str(c.node.port)]

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*taskward_cmd(), *cli, *args], capture_output=True, text=True, cwd=REPO,
                              timeout=30 * TIMEOUT_MULT, check=False)

    done = run("set", "--file", str(doc))
    assert (done.returncode, done.stdout, done.stderr) == (0, "2 schedule(s) in force\n", "")
    listed = run("list")
    header, *rows = listed.stdout.splitlines()
    assert header.split()[:4] == ["id", "module", "task_type", "schedule"] and len(rows) == 2
    assert json.loads(run("list", "--json").stdout) == c.doc()
    got = run("get", "hourly")
    assert "task_type: reindex" in got.stdout and "args: {\"path\": \"/data/\"}" in got.stdout
    assert run("disable", "hourly").stdout.startswith("hourly disabled; next fire time: None")
    # allow: the schedule fires every 10 s of this test's clock and runs 1 s; under forbid a run-now that
    # meets its own slot's run is skipped (no task id), which is not what this step checks.
    assert run("set", "one", "--type", "sleep", "--schedule", "*/5 * * * *", "--arg", "duration=1",
               "--timezone", "Asia/Tokyo", "--concurrency", "allow").returncode == 0
    assert c.rest.get("/cron/one").json()["timezone"] == "Asia/Tokyo"
    task_id = run("run-now", "one").stdout.strip()
    assert len(task_id) == 36
    assert run("delete", "one").returncode == 0
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"schedules": [{"id": "x", "task_type": "gc", "schedule": "61 * * * *"}]}))
    before = c.doc()
    refused = run("set", "--file", str(bad))
    assert (refused.returncode, refused.stdout, refused.stderr) == (
        1, "", "error: schedule 'x': schedule '61 * * * *' is not a valid cron expression\n")
    missing = run("get", "nope")
    assert (missing.returncode, missing.stderr) == (1, "error: schedule nope not found\n")
    unreadable = run("set", "--file", str(tmp_path / "absent.json"))
    assert unreadable.returncode == 1 and unreadable.stderr.startswith("error: cannot read ")
    assert c.doc() == before


# ---------------------------------------------------------------- AeorDB's task API


def test_aeordb_task_api(clean: CronNode) -> None:
    c = clean
    started = c.rest.post("/admin/tasks/reindex", json={"path": "/data/", "files": 200, "batch_s": 0.01})
    assert started.status_code == 200 and set(started.json()) == {"id"}
    tid = started.json()["id"]

    def running() -> dict[str, Any] | None:
        for t in c.rest.get("/admin/tasks").json()["tasks"]:
            if t["id"] == tid and t["status"] == "running" and t.get("progress", {}).get("indexed_count", 0) > 0:
                return dict(t)
        return None

    t = poll(running, 10, "the reindex to report progress")
    assert (t["task_type"], t["args"], t["status"]) == ("reindex", {"path": "/data/", "files": 200, "batch_s": 0.01},
                                                        "running")
    assert isinstance(t["created_at"], int) and abs(t["created_at"] / 1000 - time.time()) < 60
    p = t["progress"]
    assert set(p) == {"task_id", "task_type", "progress", "eta_ms", "indexed_count", "total_count", "message"}
    assert (p["task_id"], p["task_type"], p["total_count"]) == (tid, "reindex", 200)
    assert 0 < p["progress"] < 1 and p["message"].startswith("indexed ")
    cancelled = c.rest.post(f"/admin/tasks/{tid}/cancel")
    assert (cancelled.status_code, cancelled.json()) == (200, {"id": tid})
    c.node.stub().WaitTask(pb.WaitTaskRequest(task_id=tid, timeout=10), timeout=15)
    listed = {x["id"]: x for x in c.rest.get("/admin/tasks").json()["tasks"]}
    assert listed[tid]["status"] == "cancelled" and "progress" not in listed[tid]
    gc = c.rest.post("/admin/tasks/gc").json()["id"]
    c.node.stub().WaitTask(pb.WaitTaskRequest(task_id=gc, timeout=10), timeout=15)
    assert {x["id"]: x for x in c.rest.get("/admin/tasks").json()["tasks"]}[gc]["status"] == "completed"


def test_aeordb_bad_requests(clean: CronNode) -> None:
    c = clean
    before = {t["id"] for t in c.rest.get("/admin/tasks").json()["tasks"]}
    expect_error(c.rest.post("/admin/tasks/fail"), 400,
                 "task type 'fail' is in several modules (aeordb, builtin): use POST /tasks/{module}/{type}")
    expect_error(c.rest.post("/admin/tasks/nope"), 400, "task type 'nope' not found in any module")
    expect_error(c.rest.post("/admin/tasks/reindex", json=[1]), 400,
                 "the request body must be a JSON object of task arguments")
    expect_error(c.rest.post("/admin/tasks/reindex", json={"files": "many"}), 400,
                 "argument 'files' of aeordb:reindex must be int, got str")
    expect_error(c.rest.post("/admin/tasks/not-a-uuid/cancel"), 400)
    expect_error(c.rest.post("/admin/tasks/00000000-0000-4000-8000-000000000000/cancel"), 400,
                 "task with id 00000000-0000-4000-8000-000000000000 not found")
    assert {t["id"] for t in c.rest.get("/admin/tasks").json()["tasks"]} == before
