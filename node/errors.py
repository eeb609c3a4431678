"""One error tree for every surface.

Each class carries its gRPC status code and HTTP status, and builds its fixed user-facing message in
``__init__``, so gRPC, REST, RESP and the CLI all say exactly the same thing. Each surface maps this
tree once (a servicer decorator, one exception handler); anything outside it is a bug and becomes
INTERNAL / 500.
"""

from __future__ import annotations

from typing import ClassVar

import grpc

HTTP_FOR_GRPC: dict[grpc.StatusCode, int] = {
    grpc.StatusCode.NOT_FOUND: 400,  # ScyllaDB's REST API answers 400 for an unknown task id
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.FAILED_PRECONDITION: 403,
    grpc.StatusCode.DEADLINE_EXCEEDED: 408,
    grpc.StatusCode.UNAUTHENTICATED: 401,
    grpc.StatusCode.PERMISSION_DENIED: 403,
    grpc.StatusCode.UNIMPLEMENTED: 404,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
    grpc.StatusCode.UNAVAILABLE: 503,
}
"""The one table from gRPC status to REST status, for errors raised here and for a node's gRPC answers
that REST passes on: REST says exactly what gRPC said. Anything else is 500."""

CODE_BY_VALUE: dict[int, grpc.StatusCode] = {c.value[0]: c for c in grpc.StatusCode}
"""A status code from the number that names it (a ``StartResult.code``, a context's code as grpc gives it)."""

MAX_STATUS_MESSAGE_BYTES = 2048
"""The most UTF-8 bytes of a message sent as a gRPC status. A message quotes what the client sent (an id,
a module name), and gRPC carries it in a trailer, percent-encoded, which a client refuses beyond 16 KiB:
an unbounded quote turned a NOT_FOUND into the client's own RESOURCE_EXHAUSTED "Stream removed"."""


def status_message(message: str) -> str:
    """``message`` as a gRPC status carries it: whole when short, else its start and end (the fixed
    wording is on both sides of the quoted input) around a note of how much was left out."""
    data = message.encode()
    if len(data) <= MAX_STATUS_MESSAGE_BYTES:
        return message
    head = data[:MAX_STATUS_MESSAGE_BYTES * 3 // 4].decode(errors="ignore")
    tail = data[-MAX_STATUS_MESSAGE_BYTES // 8:].decode(errors="ignore")
    return f"{head} ...[{len(message) - len(head) - len(tail)} characters left out]... {tail}"


def http_status_for(code: grpc.StatusCode) -> int:
    return HTTP_FOR_GRPC.get(code, 500)


class TaskwardError(Exception):
    """Root of every error a client may see. A class names its gRPC code; its REST status follows from
    ``HTTP_FOR_GRPC`` unless ``http_override`` says otherwise (a REST-only condition such as 413).

    The same classes are raised on both sides of the wire: a node raises them, and the client library
    (``taskward.Client``) raises them again from the status a node answered (``from_status``), so an
    application catches ``taskward.TaskNotFound`` whichever node, surface or process said it."""

    grpc_code: ClassVar[grpc.StatusCode] = grpc.StatusCode.INTERNAL
    http_override: ClassVar[int | None] = None

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    @classmethod
    def from_message(cls, message: str) -> TaskwardError:
        """An instance carrying a message received from elsewhere (its fixed wording is already in it)."""
        err = cls.__new__(cls)
        TaskwardError.__init__(err, message)
        return err

    @property
    def code(self) -> grpc.StatusCode:
        """The gRPC status code to answer with (or that a node answered, for one raised by a client)."""
        code: grpc.StatusCode = self.__dict__.get("_code", self.grpc_code)
        return code

    @property
    def http_status(self) -> int:
        return self.http_override or http_status_for(self.code)


class InvalidArgument(TaskwardError):
    """Malformed ids, bad parameters, wrong argument types, oversized payloads."""

    grpc_code = grpc.StatusCode.INVALID_ARGUMENT


class MalformedTaskId(InvalidArgument):
    def __init__(self, task_id: str) -> None:
        super().__init__(f"malformed task id {task_id!r}: expected a canonical lowercase UUID")
        self.task_id = task_id


class UnknownModule(InvalidArgument):
    """ScyllaDB answers 400 for an unknown module, so this is an argument error, not NOT_FOUND."""

    def __init__(self, module: str) -> None:
        super().__init__(f"module {module} not found")
        self.module = module


class UnknownTaskType(InvalidArgument):
    def __init__(self, module: str, type_name: str) -> None:
        super().__init__(f"task type {module}:{type_name} not found")


class IdempotencyConflict(InvalidArgument):
    def __init__(self, key: str) -> None:
        super().__init__(f"idempotency key {key!r} was already used with different arguments")


class TaskNotFound(TaskwardError):
    grpc_code = grpc.StatusCode.NOT_FOUND

    def __init__(self, task_id: str) -> None:
        super().__init__(f"task with id {task_id} not found")
        self.task_id = task_id


class ScheduleNotFound(TaskwardError):
    grpc_code = grpc.StatusCode.NOT_FOUND  # REST: 400, as for an unknown task id

    def __init__(self, schedule_id: str) -> None:
        super().__init__(f"schedule {schedule_id} not found")
        self.schedule_id = schedule_id


class RunSkipped(TaskwardError):
    """A run-now the schedule's concurrency policy skipped (``forbid`` while its previous task still
    runs): nothing started, and the skip is in the schedule's history. REST 409: the schedule's state,
    not the request, is what stands in the way."""

    grpc_code = grpc.StatusCode.FAILED_PRECONDITION
    http_override = 409

    def __init__(self, schedule_id: str, reason: str) -> None:
        super().__init__(f"schedule {schedule_id} not fired: {reason}")
        self.schedule_id = schedule_id


class NotAbortable(TaskwardError):
    grpc_code = grpc.StatusCode.FAILED_PRECONDITION

    def __init__(self, task_id: str) -> None:
        super().__init__(f"Task with id {task_id} is not abortable")
        self.task_id = task_id


class WaitTimeout(TaskwardError, TimeoutError):
    """Also a ``TimeoutError``, so ``handle.wait(timeout=...)`` callers catch what Python code expects."""

    grpc_code = grpc.StatusCode.DEADLINE_EXCEEDED

    def __init__(self, task_id: str, timeout_s: float) -> None:
        super().__init__(f"timed out after {timeout_s:g}s waiting for task {task_id}")


class TestApiDisabled(TaskwardError):
    grpc_code = grpc.StatusCode.UNIMPLEMENTED

    def __init__(self) -> None:
        super().__init__("the test API is disabled; start the node with --enable-test-api")


class Unavailable(TaskwardError):
    """The node, the cluster store or every listed node cannot answer now; the call may succeed later."""

    grpc_code = grpc.StatusCode.UNAVAILABLE


class StoreUnavailable(Unavailable):
    """The node's own database refused a write (locked by another process past the busy timeout, disk
    full, I/O error): the transition did not happen, and the node goes on with the next one."""

    def __init__(self, detail: str) -> None:
        super().__init__(f"the node's store cannot write now: {detail}")


class NoNodeReachable(Unavailable):
    """Every listed node answered UNAVAILABLE (or could not be asked); REST answers 503."""


class ShuttingDown(Unavailable):
    def __init__(self) -> None:
        super().__init__("node is shutting down")


class Unauthenticated(TaskwardError):
    grpc_code = grpc.StatusCode.UNAUTHENTICATED

    def __init__(self) -> None:
        super().__init__("missing or wrong bearer token")


class PermissionDenied(TaskwardError):
    """Authenticated, but the token's role does not allow the call."""

    grpc_code = grpc.StatusCode.PERMISSION_DENIED

    def __init__(self, what: str) -> None:
        super().__init__(f"permission denied: {what}")


class AuthRateLimited(TaskwardError):
    """An address that failed to authenticate too often is refused, without its token being checked, until
    its window ends (REST 429 with ``Retry-After``; RESP ``ERR`` with the same words)."""

    grpc_code = grpc.StatusCode.RESOURCE_EXHAUSTED

    def __init__(self, host: str, retry_after_s: int) -> None:
        super().__init__(f"too many failed authentication attempts from {host}: try again in {retry_after_s} s")
        self.retry_after_s = retry_after_s


class ConfigError(TaskwardError):
    """Raised at start-up for invalid configuration; never reaches a client."""

    def __init__(self, message: str) -> None:
        super().__init__(message)


class DataDirError(ConfigError):
    """A data dir the node cannot trust: it refuses to start (exit 2) rather than join with bad state."""


class TokenRefused(ConfigError):
    """The cluster's members refuse this node's bearer token: it does not join."""


class TaskAborted(Exception):
    """Raised inside a task body by ``ctx.check_aborted()``; not a client-facing error."""


class ChildFailed(TaskwardError):
    """Raised in a body by ``ctx.wait_child(child)`` when the child failed or was aborted. Unhandled, it fails
    the parent with this message, which names the child."""

    def __init__(self, child_id: str, error: str, *, qualified_type: str = "") -> None:
        what = f"child {child_id}" + (f" ({qualified_type})" if qualified_type else "")
        super().__init__(f"{what} failed: {error}")
        self.child_id = child_id
        self.error = error


class TaskFailed(TaskwardError):
    """Raised by the client's ``wait``/``result`` when the task ended failed or aborted: ``error`` is the
    task's error and ``status`` its final status (a ``taskward.TaskStatus``)."""

    def __init__(self, task_id: str, error: str, status: object) -> None:
        super().__init__(f"task {task_id} failed: {error}")
        self.task_id = task_id
        self.error = error
        self.status = status


class CoordinatorUnavailable(Unavailable):
    """The cluster store cannot be reached or has no quorum: cluster writes are refused."""

    def __init__(self, detail: str = "") -> None:
        super().__init__("cluster store unavailable" + (f": {detail}" if detail else ""))


class UnknownNode(TaskwardError):
    grpc_code = grpc.StatusCode.NOT_FOUND

    def __init__(self, node_id: str) -> None:
        super().__init__(f"node {node_id} is not a live member of the cluster")
        self.node_id = node_id


_FOR_STATUS: dict[grpc.StatusCode, type[TaskwardError]] = {
    grpc.StatusCode.NOT_FOUND: TaskNotFound,
    grpc.StatusCode.INVALID_ARGUMENT: InvalidArgument,
    grpc.StatusCode.FAILED_PRECONDITION: NotAbortable,
    grpc.StatusCode.DEADLINE_EXCEEDED: WaitTimeout,
    grpc.StatusCode.UNAVAILABLE: Unavailable,
    grpc.StatusCode.UNAUTHENTICATED: Unauthenticated,
    grpc.StatusCode.PERMISSION_DENIED: PermissionDenied,
    grpc.StatusCode.UNIMPLEMENTED: TestApiDisabled,
}


def from_status(code: grpc.StatusCode, message: str) -> TaskwardError:
    """The error a node answered with ``code``, raised again on the calling side with its message.

    A NOT_FOUND that names a schedule or a node (the wording is fixed above) is that error, not
    ``TaskNotFound``; a code outside the tree is a plain ``TaskwardError`` that keeps the code."""
    cls = _FOR_STATUS.get(code)
    if code == grpc.StatusCode.NOT_FOUND and message.startswith("schedule "):
        cls = ScheduleNotFound
    elif code == grpc.StatusCode.FAILED_PRECONDITION and message.startswith("schedule "):
        cls = RunSkipped
    elif code == grpc.StatusCode.NOT_FOUND and message.startswith("node "):
        cls = UnknownNode
    if cls is None:
        err = TaskwardError(message)
        err.__dict__["_code"] = code
        return err
    return cls.from_message(message)
