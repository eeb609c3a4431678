"""Roles, the operations they allow, and which call of which surface is which operation: in one place.

A token has one role; roles are ordered, each allowing everything the one below it does (DESIGN §10):

- ``read``: listings, status, recursive status, wait, events, metrics, nodes, ttl and cron reads;
- ``operate``: + start, abort, cron run-now;
- ``admin``: + ttl and user ttl set, drain, cron writes, the test API;
- ``node``: + the internal fields of a start (``cluster_parent_id``, ``cluster_task_id``, ``task_id``) and the
  calls only nodes make to each other.

Every surface maps its call (a gRPC method, a REST route, a RESP command) to an ``Operation`` through the
tables below and asks ``allows``; nothing else decides a role. Keeping the three tables here, next to the
operations, is what lets a reviewer see the whole policy at once, and lets a unit test check that every
method and route the code serves is in a table (a new one is refused until it is placed here).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


class Role(enum.IntEnum):
    """Ordered: a role allows what every smaller one does."""

    READ = 1
    OPERATE = 2
    ADMIN = 3
    NODE = 4

    @property
    def label(self) -> str:
        """The spelling in tokens files, messages and the audit log."""
        return self.name.lower()

    @classmethod
    def parse(cls, text: str) -> Role:
        """``read``/``operate``/``admin``/``node``; ``ValueError`` naming the choices otherwise."""
        for role in cls:
            if role.label == text:
                return role
        raise ValueError(f"unknown role {text!r} (expected {', '.join(r.label for r in cls)})")


@dataclass(frozen=True, slots=True)
class Operation:
    """What a call does, as far as permissions and the audit log care: its name (in messages and the
    audit log), the least role allowed to do it, and whether it changes state (then it is audited)."""

    name: str
    role: Role
    mutating: bool = False


# ---------------------------------------------------------------- operations

LIST_MODULES = Operation("modules.list", Role.READ)
LIST_TASKS = Operation("tasks.list", Role.READ)
TASK_STATUS = Operation("task.status", Role.READ)
TASK_STATUS_RECURSIVE = Operation("task.status_recursive", Role.READ)
TASK_WAIT = Operation("task.wait", Role.READ)
TTL_GET = Operation("ttl.get", Role.READ)
TASK_TYPES = Operation("task_types.list", Role.READ)
EVENTS = Operation("events.watch", Role.READ)
NODES = Operation("nodes.list", Role.READ)
METRICS = Operation("metrics", Role.READ)
CRON_READ = Operation("cron.read", Role.READ)

TASK_START = Operation("task.start", Role.OPERATE, mutating=True)
TASK_ABORT = Operation("task.abort", Role.OPERATE, mutating=True)
CRON_RUN_NOW = Operation("cron.run_now", Role.OPERATE, mutating=True)

TTL_SET = Operation("ttl.set", Role.ADMIN, mutating=True)
DRAIN = Operation("drain", Role.ADMIN, mutating=True)
CRON_WRITE = Operation("cron.write", Role.ADMIN, mutating=True)
TEST_API = Operation("test_api", Role.ADMIN, mutating=True)

TASK_START_INTERNAL = Operation("task.start_internal", Role.NODE, mutating=True)
"""A start that sets fields only nodes set: the leader's child of a cluster task (``cluster_parent_id``), a
forwarded cluster start (``cluster_task_id``), the cron leader's start under an id it committed (``task_id``).
A client that could set ``cluster_parent_id`` would exempt its tasks from the retention caps."""
INTERNAL_START_FIELDS = ("cluster_parent_id", "cluster_task_id", "task_id")
"""Fields of ``StartTaskRequest`` that make a start ``TASK_START_INTERNAL``."""
NODE_LOAD = Operation("node.load", Role.NODE)
"""How busy a node is: asked only by the cron leader (and by a joining node to check its token)."""

UNLISTED = Operation("unlisted", Role.ADMIN)
"""A method or route missing from the tables below: allowed to admins only, so a forgotten entry fails
closed (and the unit tests name it)."""
AUTHENTICATE = Operation("authenticate", Role.READ)
"""Not a call of its own: the name failed authentications are audited under."""


def allows(role: Role, op: Operation) -> bool:
    return role >= op.role


def denial(role: Role, op: Operation) -> str:
    """What a refused caller is told (after ``permission denied: ``)."""
    return f"{op.name} needs role {op.role.label}, the token has role {role.label}"


# ---------------------------------------------------------------- gRPC: full method name -> operation

_TM = "/taskward.v1.TaskManager/"
_TEST = "/taskward.v1.TestApi/"
_CRON = "/taskward.v1.Cron/"

GRPC_METHODS: dict[str, Operation] = {
    _TM + "ListModules": LIST_MODULES,
    _TM + "ListTasks": LIST_TASKS,
    _TM + "GetTaskStatus": TASK_STATUS,
    _TM + "GetTaskStatuses": TASK_STATUS,  # as GetTaskStatus, read by read
    _TM + "GetTaskStatusRecursive": TASK_STATUS_RECURSIVE,
    _TM + "AbortTask": TASK_ABORT,
    _TM + "WaitTask": TASK_WAIT,
    _TM + "GetTtl": TTL_GET,
    _TM + "SetTtl": TTL_SET,
    _TM + "Drain": DRAIN,
    _TM + "StartTask": TASK_START,  # with an internal field set: TASK_START_INTERNAL (the servicer checks)
    _TM + "StartTasks": TASK_START,  # as StartTask, item by item: one internal start makes the call internal
    _TM + "ListTaskTypes": TASK_TYPES,
    _TM + "WatchEvents": EVENTS,
    _TM + "WatchEventBatches": EVENTS,
    _TM + "ListNodes": NODES,
    _TM + "WatchNodes": NODES,
    _TM + "GetLoad": NODE_LOAD,
    _TEST + "RegisterTestModule": TEST_API,
    _TEST + "UnregisterTestModule": TEST_API,
    _TEST + "CreateTestTask": TEST_API,
    _TEST + "UnregisterTestTask": TEST_API,
    _TEST + "FinishTestTask": TEST_API,
    _CRON + "ListSchedules": CRON_READ,
    _CRON + "GetSchedule": CRON_READ,
    _CRON + "PutSchedules": CRON_WRITE,
    _CRON + "PutSchedule": CRON_WRITE,
    _CRON + "DeleteSchedule": CRON_WRITE,
    _CRON + "SetScheduleEnabled": CRON_WRITE,
    _CRON + "RunScheduleNow": CRON_RUN_NOW,
}
GRPC_OPEN_PREFIXES = ("/grpc.health.v1.Health/", "/grpc.reflection.")
"""Health checks and reflection need no token: probes carry none, and neither reveals task state."""


# ---------------------------------------------------------------- REST: (method, route template) -> operation

REST_ROUTES: dict[tuple[str, str], Operation] = {
    ("GET", "/task_manager/list_modules"): LIST_MODULES,
    ("GET", "/task_manager/list_module_tasks/{module:path}"): LIST_TASKS,
    ("GET", "/task_manager/task_status/{task_id:path}"): TASK_STATUS,
    ("GET", "/task_manager/task_status_recursive/{task_id:path}"): TASK_STATUS_RECURSIVE,
    ("POST", "/task_manager/abort_task/{task_id:path}"): TASK_ABORT,
    ("GET", "/task_manager/wait_task/{task_id:path}"): TASK_WAIT,
    ("GET", "/task_manager/ttl"): TTL_GET,
    ("POST", "/task_manager/ttl"): TTL_SET,
    ("GET", "/task_manager/user_ttl"): TTL_GET,
    ("POST", "/task_manager/user_ttl"): TTL_SET,
    ("POST", "/task_manager/drain/{module:path}"): DRAIN,
    ("POST", "/task_manager_test/test_module"): TEST_API,
    ("DELETE", "/task_manager_test/test_module"): TEST_API,
    ("POST", "/task_manager_test/test_task"): TEST_API,
    ("DELETE", "/task_manager_test/test_task"): TEST_API,
    ("POST", "/task_manager_test/finish_test_task/{task_id:path}"): TEST_API,
    ("POST", "/tasks/{module}/{type_name:path}"): TASK_START,
    ("GET", "/cluster/nodes"): NODES,
    ("GET", "/cluster/nodes/stream"): NODES,
    ("GET", "/task_types"): TASK_TYPES,
    ("GET", "/tasks/{module}"): LIST_TASKS,
    ("GET", "/events"): EVENTS,
    ("GET", "/metrics"): METRICS,
    ("GET", "/cron"): CRON_READ,
    ("PUT", "/cron"): CRON_WRITE,
    ("GET", "/.config/cron.json"): CRON_READ,
    ("PUT", "/.config/cron.json"): CRON_WRITE,
    ("GET", "/cron/{schedule_id}"): CRON_READ,
    ("PUT", "/cron/{schedule_id}"): CRON_WRITE,
    ("DELETE", "/cron/{schedule_id}"): CRON_WRITE,
    ("POST", "/cron/{schedule_id}/enable"): CRON_WRITE,
    ("POST", "/cron/{schedule_id}/disable"): CRON_WRITE,
    ("POST", "/cron/{schedule_id}/run-now"): CRON_RUN_NOW,
    ("GET", "/admin/tasks"): LIST_TASKS,
    ("POST", "/admin/tasks/{task_type}"): TASK_START,
    ("POST", "/admin/tasks/{task_id}/cancel"): TASK_ABORT,
}
REST_OPEN_ROUTES = frozenset({"/health", "/docs", "/docs/assets/{name}", "/openapi.json", "/ui", "/ui/", "/ui/{name}"})
"""Routes served without a token (the REST middleware's ``OPEN_PATHS`` are their paths): probes, the API's
own documentation and the dashboard's files, none of which holds task state (the dashboard asks for a token
and sends it on the API calls it makes)."""


# ---------------------------------------------------------------- RESP: command (lowercase, "|" subcommand)

RESP_COMMANDS: dict[str, Operation] = {
    "task.admin|list": TASK_TYPES,
    "task.admin|help": TASK_TYPES,
}
"""Commands that touch task state. The connection's own commands (HELLO, AUTH, PING, COMMAND, QUIT) need
only an authenticated connection, as in Redis."""
