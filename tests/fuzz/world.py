"""One real node for a fuzz module, seeded with tasks of every kind, and a fingerprint of its store.

"State unchanged by rejected input" is checked on what the node has committed, read straight from its
SQLite files, so a rejected request is caught even when it changed something no API shows. Reading
the files costs well under a millisecond, which is what lets every rejected request be checked.

The fingerprint holds what only a request can change:

- the node's settings: both TTLs, and the per-module sequence counters, which every new root task
  advances (a task created and finished by a rejected request still shows here);
- every row of module ``test``: test tasks never move by themselves;
- the cluster store's keys: cluster tasks and idempotency keys (keys only for tasks, whose records
  move as their children progress), the cron document and its schedules.

It leaves out what moves in the background: task-type statistics, running tasks of other modules,
members, the leader key, cron firing state. So that nothing in it moves by itself either, the node
keeps finished tasks (both TTLs at their maximum, no count cap), fuzz schedules never come due while
the tests run, and ``settle()`` waits for a new cluster task's children before the next case.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import grpc

from taskward.pb.taskward.v1 import cron_pb2 as cron_pb
from taskward.pb.taskward.v1 import cron_pb2_grpc as cron_grpc
from taskward.pb.taskward.v1 import tasks_pb2 as pb
from tests.conftest import NODE_ARGS
from tests.support.procs import TIMEOUT_MULT, NodeProc

MAX_TTL = 4294967295
FUZZ_NODE_ARGS = [*NODE_ARGS, "--task-ttl", str(MAX_TTL), "--user-task-ttl", str(MAX_TTL),
                  "--retention-max-per-module", "1000000", "--sqlite-synchronous", "NORMAL"]
# 29 February only: the next slot is years away from any run of these tests.
NEVER_DUE = "0 0 29 2 *"
SCHEDULE_ID = "fuzz-leap-day"
SETTLE_S = 10.0

Fingerprint = tuple[tuple[object, ...], ...]


@dataclass
class Seeded:
    """Ids of tasks the node holds at the start, one of each kind the surfaces treat differently."""

    running_test: str = ""
    parent_test: str = ""
    child_test: str = ""
    done_test: str = ""
    failed_test: str = ""
    running_sleep: str = ""
    done_sleep: str = ""
    cluster: str = ""
    schedules: list[str] = field(default_factory=lambda: [SCHEDULE_ID])

    @property
    def ids(self) -> list[str]:
        return [self.running_test, self.parent_test, self.child_test, self.done_test, self.failed_test,
                self.running_sleep, self.done_sleep, self.cluster]


class FuzzNode:
    """A started node (``FUZZ_NODE_ARGS``), its seeded tasks and read-only views of its two stores."""

    def __init__(self, data_dir: Path) -> None:
        self.proc = NodeProc(data_dir, extra=FUZZ_NODE_ARGS)
        self.seeded = Seeded()
        self._tasks_db: sqlite3.Connection | None = None
        self._cluster_db: sqlite3.Connection | None = None

    @property
    def address(self) -> str:
        return self.proc.address

    def channel(self) -> grpc.Channel:
        return self.proc.channel()

    def start(self) -> FuzzNode:
        self.proc.start()
        self._tasks_db = sqlite3.connect(self.proc.data_dir / "taskward.sqlite3", isolation_level=None)
        self._cluster_db = sqlite3.connect(self.proc.data_dir / "cluster.sqlite3", isolation_level=None)
        self._seed()
        return self

    def stop(self) -> int | None:
        for db in (self._tasks_db, self._cluster_db):
            if db is not None:
                db.close()
        return self.proc.stop()

    def _seed(self) -> None:
        tasks, test = self.proc.stub(), self.proc.test_stub()
        s = self.seeded
        test.RegisterTestModule(pb.Empty(), timeout=10)
        s.running_test = test.CreateTestTask(pb.CreateTestTaskRequest(keyspace="ks", table="t"), timeout=10).task_id
        s.parent_test = test.CreateTestTask(pb.CreateTestTaskRequest(user_task=True), timeout=10).task_id
        s.child_test = test.CreateTestTask(pb.CreateTestTaskRequest(parent_id=s.parent_test), timeout=10).task_id
        s.done_test = test.CreateTestTask(pb.CreateTestTaskRequest(), timeout=10).task_id
        test.FinishTestTask(pb.FinishTestTaskRequest(task_id=s.done_test), timeout=10)
        s.failed_test = test.CreateTestTask(pb.CreateTestTaskRequest(), timeout=10).task_id
        test.FinishTestTask(pb.FinishTestTaskRequest(task_id=s.failed_test, error="seeded failure"), timeout=10)
        long_sleep = '{"duration": 3600, "steps": 1}'
        s.running_sleep = tasks.StartTask(pb.StartTaskRequest(module="builtin", type="sleep", args_json=long_sleep),
                                          timeout=10).task_id
        s.done_sleep = tasks.StartTask(pb.StartTaskRequest(module="builtin", type="sleep",
                                                           args_json='{"duration": 0}'), timeout=10).task_id
        tasks.WaitTask(pb.WaitTaskRequest(task_id=s.done_sleep, timeout=10), timeout=20)
        s.cluster = tasks.StartTask(pb.StartTaskRequest(module="builtin", type="sleep", args_json=long_sleep,
                                                        cluster=True), timeout=10).task_id
        cron_grpc.CronStub(self.channel()).PutSchedule(cron_pb.CronSchedule(
            id=SCHEDULE_ID, module="builtin", task_type="sleep", schedule=NEVER_DUE, args_json='{"duration": 0}'),
            timeout=10)
        self.settle(())

    # ------------------------------------------------------------------------------ the store

    @contextmanager
    def _read(self, db: sqlite3.Connection | None) -> Iterator[sqlite3.Connection]:
        assert db is not None, "not started"
        db.execute("BEGIN")
        try:
            yield db
        finally:
            db.execute("COMMIT")

    def fingerprint(self) -> Fingerprint:
        with self._read(self._tasks_db) as db:
            settings = tuple(db.execute("SELECT key, value FROM settings WHERE key NOT LIKE 'type:%' ORDER BY key"))
            test_rows = tuple(db.execute("SELECT id, state, body FROM tasks WHERE module = 'test' ORDER BY id"))
        with self._read(self._cluster_db) as db:
            kv = tuple((key, None if key.startswith("tasks/") else value) for key, value in db.execute(
                "SELECT key, value FROM kv WHERE key LIKE 'tasks/%' OR key LIKE 'idempotency/%' "
                "OR key = 'cron/doc' OR key LIKE 'cron/s/%' ORDER BY key"))
        return settings, test_rows, kv

    def explain(self, before: Fingerprint, after: Fingerprint) -> str:
        """What changed between two fingerprints, and for a moved sequence counter the newest tasks of its
        module (what a failing case shows, so that the cause can be found from the CI log alone)."""
        lines = []
        for name, old, new in zip(("settings", "test tasks", "cluster store"), before, after, strict=True):
            gone, added = set(old) - set(new), set(new) - set(old)
            lines += [f"{name}: - {row!r:.300}" for row in sorted(gone, key=repr)]
            lines += [f"{name}: + {row!r:.300}" for row in sorted(added, key=repr)]
        for key, _ in set(after[0]) - set(before[0]):
            if str(key).startswith("seq:"):
                module = str(key).split(":")[1]
                with self._read(self._tasks_db) as db:
                    rows = db.execute("SELECT body FROM tasks WHERE module = ? ORDER BY rowid DESC LIMIT 3", (module,))
                    lines += [f"newest in {module}: {body:.400}" for (body,) in rows]
        return "\n".join(lines)

    def cluster_task_ids(self, fp: Fingerprint) -> set[str]:
        return {str(key).removeprefix("tasks/") for key, _ in fp[2] if str(key).startswith("tasks/")}

    def settle(self, before: Fingerprint) -> Fingerprint:
        """The fingerprint once what an accepted request set going has happened: a new cluster task has
        started its children (each a new root task on this node, which advances a sequence counter)."""
        stub = self.proc.stub()
        fp = self.fingerprint()
        new = self.cluster_task_ids(fp) - (self.cluster_task_ids(before) if before else set())
        deadline = time.monotonic() + SETTLE_S * TIMEOUT_MULT
        for task_id in sorted(new):
            while True:
                status = stub.GetTaskStatus(pb.TaskIdRequest(task_id=task_id, keep=True), timeout=10)
                if status.stats.state in ("done", "failed") or len(status.children_ids) >= 1:
                    break
                assert time.monotonic() < deadline, f"cluster task {task_id} started no child in {SETTLE_S}s"
                time.sleep(0.005)  # the child is started by the leader's cycle; nothing to await from here
        return self.fingerprint() if new else fp

    def ttls(self) -> tuple[int, int]:
        stub = self.proc.stub()
        return (stub.GetTtl(pb.GetTtlRequest(kind=pb.TTL_KIND_TASK), timeout=10).ttl,
                stub.GetTtl(pb.GetTtlRequest(kind=pb.TTL_KIND_USER), timeout=10).ttl)

    def restore_ttls(self) -> None:
        """Back to the maximum, so no finished test task expires in the background."""
        stub = self.proc.stub()
        for kind in (pb.TTL_KIND_TASK, pb.TTL_KIND_USER):
            stub.SetTtl(pb.SetTtlRequest(kind=kind, ttl=MAX_TTL), timeout=10)

    def assert_serving(self) -> None:
        """A normal call works: a short task starts, runs and is done."""
        stub = self.proc.stub()
        tid = stub.StartTask(pb.StartTaskRequest(module="builtin", type="sleep", args_json='{"duration": 0}'),
                             timeout=10).task_id
        assert stub.WaitTask(pb.WaitTaskRequest(task_id=tid, timeout=30), timeout=40).stats.state == "done"
