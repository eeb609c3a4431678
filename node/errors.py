"""One error tree for every surface.

Each class carries its gRPC status code and HTTP status, and builds its fixed user-facing message in
``__init__``, so gRPC, REST, RESP and the CLI all say exactly the same thing. Each surface maps this
tree once (a servicer decorator, one exception handler); anything outside it is a bug and becomes
INTERNAL / 500.
"""

from __future__ import annotations

from typing import ClassVar

import grpc


class TaskwardError(Exception):
    """Root of every error a client may see."""

    grpc_code: ClassVar[grpc.StatusCode] = grpc.StatusCode.INTERNAL
    http_status: ClassVar[int] = 500
    retryable: ClassVar[bool] = False

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidArgument(TaskwardError):
    """Malformed ids, bad parameters, wrong argument types, oversized payloads."""

    grpc_code = grpc.StatusCode.INVALID_ARGUMENT
    http_status = 400


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
    http_status = 400  # ScyllaDB's REST API answers 400 for unknown ids

    def __init__(self, task_id: str) -> None:
        super().__init__(f"task with id {task_id} not found")
        self.task_id = task_id


class NotAbortable(TaskwardError):
    grpc_code = grpc.StatusCode.FAILED_PRECONDITION
    http_status = 403

    def __init__(self, task_id: str) -> None:
        super().__init__(f"Task with id {task_id} is not abortable")
        self.task_id = task_id


class WaitTimeout(TaskwardError):
    grpc_code = grpc.StatusCode.DEADLINE_EXCEEDED
    http_status = 408

    def __init__(self, task_id: str, timeout_s: float) -> None:
        super().__init__(f"timed out after {timeout_s:g}s waiting for task {task_id}")


class TestApiDisabled(TaskwardError):
    grpc_code = grpc.StatusCode.UNIMPLEMENTED
    http_status = 404

    def __init__(self) -> None:
        super().__init__("the test API is disabled; start the node with --enable-test-api")


class ShuttingDown(TaskwardError):
    grpc_code = grpc.StatusCode.UNAVAILABLE
    http_status = 503
    retryable = True

    def __init__(self) -> None:
        super().__init__("node is shutting down")


class Unauthenticated(TaskwardError):
    grpc_code = grpc.StatusCode.UNAUTHENTICATED
    http_status = 401

    def __init__(self) -> None:
        super().__init__("missing or wrong bearer token")


class ConfigError(TaskwardError):
    """Raised at start-up for invalid configuration; never reaches a client."""

    def __init__(self, message: str) -> None:
        super().__init__(message)


class TaskAborted(Exception):
    """Raised inside a task body by ``ctx.check_aborted()``; not a client-facing error."""


class CoordinatorUnavailable(TaskwardError):
    """The cluster store cannot be reached or has no quorum: cluster writes are refused."""

    grpc_code = grpc.StatusCode.UNAVAILABLE
    http_status = 503
    retryable = True

    def __init__(self, detail: str = "") -> None:
        super().__init__("cluster store unavailable" + (f": {detail}" if detail else ""))


class UnknownNode(TaskwardError):
    grpc_code = grpc.StatusCode.NOT_FOUND
    http_status = 400

    def __init__(self, node_id: str) -> None:
        super().__init__(f"node {node_id} is not a live member of the cluster")
        self.node_id = node_id
