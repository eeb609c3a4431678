"""Pydantic models that document the REST answers in OpenAPI (``/docs``).

They are documentation only: handlers return pre-rendered JSON built by ``taskward.convert`` (the field
names and time format of the task model), so no answer is re-validated on the hot path.
"""

from __future__ import annotations

from pydantic import BaseModel, Field


class ErrorBody(BaseModel):
    message: str = Field(examples=["task with id 2f1c0d4e-0000-4000-8000-000000000000 not found"])
    code: int = Field(examples=[400])


class ChildRef(BaseModel):
    task_id: str
    node: str = Field(description="node id of the node that runs the child")
    address: str = Field(description="that node's gRPC host:port")


class TaskStats(BaseModel):
    task_id: str
    type: str
    kind: str = Field(description="node or cluster")
    scope: str
    state: str = Field(description="created, running, done or failed")
    sequence_number: int
    keyspace: str
    table: str
    entity: str
    shard: int
    start_time: str = Field(examples=["2024-01-01T00:00:00Z"])
    end_time: str = Field(examples=["1970-01-01T00:00:00Z"])


class TaskStatus(TaskStats):
    id: str = Field(description="same as task_id (ScyllaDB's field name)")
    is_abortable: bool
    error: str
    parent_id: str = Field(description='"none" for a root')
    progress_units: str
    progress_total: float
    progress_completed: float
    progress_fraction: float
    eta_ms: int | None = Field(default=None, description="absent while unknown")
    children_ids: list[ChildRef]
    aborted: bool
    module: str
    result: object = Field(default=None, description="what the task returned (any JSON value); null until done")
    attempt: int = Field(default=1, description="the attempt running or next to run (1-based)")
    max_attempts: int = Field(default=1, description="retries + 1")
    next_attempt_at: str | None = Field(default=None, description="when a pending retry runs; absent when none")


class NodeInfo(BaseModel):
    id: str
    address: str
    alive: bool
    leader: bool
    version: str
    started_at: str


ERRORS: dict[int | str, dict[str, object]] = {
    400: {"model": ErrorBody, "description": "unknown or malformed id, unknown module, bad parameter"},
    401: {"model": ErrorBody, "description": "missing or wrong bearer token (when auth is on)"},
    403: {"model": ErrorBody, "description": "permission denied: the token's role does not allow the call"},
    429: {"model": ErrorBody, "description": "too many failed authentication attempts from this address"},
    503: {"model": ErrorBody, "description": "no listed node reachable"},
}


def errors(*extra: int) -> dict[int | str, dict[str, object]]:
    more = {
        403: {"model": ErrorBody, "description": "task not abortable, or permission denied (the token's role)"},
        404: {"model": ErrorBody, "description": "test API disabled on the node"},
        408: {"model": ErrorBody, "description": "wait timed out"},
        409: {"model": ErrorBody, "description": "not fired: the schedule's concurrency policy skipped the run"},
        413: {"model": ErrorBody, "description": "body over 1 MiB"},
    }
    return {**ERRORS, **{k: more[k] for k in extra}}
