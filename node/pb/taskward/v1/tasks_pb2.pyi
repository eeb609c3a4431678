import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class TtlKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    TTL_KIND_TASK: _ClassVar[TtlKind]
    TTL_KIND_USER: _ClassVar[TtlKind]
TTL_KIND_TASK: TtlKind
TTL_KIND_USER: TtlKind

class Empty(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListModulesRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListModulesResponse(_message.Message):
    __slots__ = ("modules",)
    MODULES_FIELD_NUMBER: _ClassVar[int]
    modules: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, modules: _Optional[_Iterable[str]] = ...) -> None: ...

class ListTasksRequest(_message.Message):
    __slots__ = ("module", "internal", "keyspace", "table", "page_size", "page_token", "with_status")
    MODULE_FIELD_NUMBER: _ClassVar[int]
    INTERNAL_FIELD_NUMBER: _ClassVar[int]
    KEYSPACE_FIELD_NUMBER: _ClassVar[int]
    TABLE_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    WITH_STATUS_FIELD_NUMBER: _ClassVar[int]
    module: str
    internal: bool
    keyspace: str
    table: str
    page_size: int
    page_token: str
    with_status: bool
    def __init__(self, module: _Optional[str] = ..., internal: _Optional[bool] = ..., keyspace: _Optional[str] = ..., table: _Optional[str] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ..., with_status: _Optional[bool] = ...) -> None: ...

class ListTasksResponse(_message.Message):
    __slots__ = ("tasks", "next_page_token", "statuses")
    TASKS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    STATUSES_FIELD_NUMBER: _ClassVar[int]
    tasks: _containers.RepeatedCompositeFieldContainer[TaskStats]
    next_page_token: str
    statuses: _containers.RepeatedCompositeFieldContainer[TaskStatus]
    def __init__(self, tasks: _Optional[_Iterable[_Union[TaskStats, _Mapping]]] = ..., next_page_token: _Optional[str] = ..., statuses: _Optional[_Iterable[_Union[TaskStatus, _Mapping]]] = ...) -> None: ...

class TaskIdRequest(_message.Message):
    __slots__ = ("task_id", "keep")
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    KEEP_FIELD_NUMBER: _ClassVar[int]
    task_id: str
    keep: bool
    def __init__(self, task_id: _Optional[str] = ..., keep: _Optional[bool] = ...) -> None: ...

class GetTaskStatusesRequest(_message.Message):
    __slots__ = ("reads",)
    READS_FIELD_NUMBER: _ClassVar[int]
    reads: _containers.RepeatedCompositeFieldContainer[TaskIdRequest]
    def __init__(self, reads: _Optional[_Iterable[_Union[TaskIdRequest, _Mapping]]] = ...) -> None: ...

class GetTaskStatusesResponse(_message.Message):
    __slots__ = ("results",)
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[StatusResult]
    def __init__(self, results: _Optional[_Iterable[_Union[StatusResult, _Mapping]]] = ...) -> None: ...

class StatusResult(_message.Message):
    __slots__ = ("status", "code", "message")
    STATUS_FIELD_NUMBER: _ClassVar[int]
    CODE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    status: TaskStatus
    code: int
    message: str
    def __init__(self, status: _Optional[_Union[TaskStatus, _Mapping]] = ..., code: _Optional[int] = ..., message: _Optional[str] = ...) -> None: ...

class WaitTaskRequest(_message.Message):
    __slots__ = ("task_id", "timeout")
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_FIELD_NUMBER: _ClassVar[int]
    task_id: str
    timeout: float
    def __init__(self, task_id: _Optional[str] = ..., timeout: _Optional[float] = ...) -> None: ...

class AbortTaskResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class GetTtlRequest(_message.Message):
    __slots__ = ("kind",)
    KIND_FIELD_NUMBER: _ClassVar[int]
    kind: TtlKind
    def __init__(self, kind: _Optional[_Union[TtlKind, str]] = ...) -> None: ...

class SetTtlRequest(_message.Message):
    __slots__ = ("kind", "ttl")
    KIND_FIELD_NUMBER: _ClassVar[int]
    TTL_FIELD_NUMBER: _ClassVar[int]
    kind: TtlKind
    ttl: int
    def __init__(self, kind: _Optional[_Union[TtlKind, str]] = ..., ttl: _Optional[int] = ...) -> None: ...

class TtlResponse(_message.Message):
    __slots__ = ("ttl", "previous")
    TTL_FIELD_NUMBER: _ClassVar[int]
    PREVIOUS_FIELD_NUMBER: _ClassVar[int]
    ttl: int
    previous: int
    def __init__(self, ttl: _Optional[int] = ..., previous: _Optional[int] = ...) -> None: ...

class DrainRequest(_message.Message):
    __slots__ = ("module",)
    MODULE_FIELD_NUMBER: _ClassVar[int]
    module: str
    def __init__(self, module: _Optional[str] = ...) -> None: ...

class DrainResponse(_message.Message):
    __slots__ = ("unregistered",)
    UNREGISTERED_FIELD_NUMBER: _ClassVar[int]
    unregistered: int
    def __init__(self, unregistered: _Optional[int] = ...) -> None: ...

class StartTaskRequest(_message.Message):
    __slots__ = ("module", "type", "args_json", "idempotency_key", "keyspace", "table", "entity", "cluster", "nodes", "cluster_parent_id", "cluster_task_id", "task_id")
    MODULE_FIELD_NUMBER: _ClassVar[int]
    TYPE_FIELD_NUMBER: _ClassVar[int]
    ARGS_JSON_FIELD_NUMBER: _ClassVar[int]
    IDEMPOTENCY_KEY_FIELD_NUMBER: _ClassVar[int]
    KEYSPACE_FIELD_NUMBER: _ClassVar[int]
    TABLE_FIELD_NUMBER: _ClassVar[int]
    ENTITY_FIELD_NUMBER: _ClassVar[int]
    CLUSTER_FIELD_NUMBER: _ClassVar[int]
    NODES_FIELD_NUMBER: _ClassVar[int]
    CLUSTER_PARENT_ID_FIELD_NUMBER: _ClassVar[int]
    CLUSTER_TASK_ID_FIELD_NUMBER: _ClassVar[int]
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    module: str
    type: str
    args_json: str
    idempotency_key: str
    keyspace: str
    table: str
    entity: str
    cluster: bool
    nodes: _containers.RepeatedScalarFieldContainer[str]
    cluster_parent_id: str
    cluster_task_id: str
    task_id: str
    def __init__(self, module: _Optional[str] = ..., type: _Optional[str] = ..., args_json: _Optional[str] = ..., idempotency_key: _Optional[str] = ..., keyspace: _Optional[str] = ..., table: _Optional[str] = ..., entity: _Optional[str] = ..., cluster: _Optional[bool] = ..., nodes: _Optional[_Iterable[str]] = ..., cluster_parent_id: _Optional[str] = ..., cluster_task_id: _Optional[str] = ..., task_id: _Optional[str] = ...) -> None: ...

class StartTaskResponse(_message.Message):
    __slots__ = ("task_id",)
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    task_id: str
    def __init__(self, task_id: _Optional[str] = ...) -> None: ...

class StartTasksRequest(_message.Message):
    __slots__ = ("starts",)
    STARTS_FIELD_NUMBER: _ClassVar[int]
    starts: _containers.RepeatedCompositeFieldContainer[StartTaskRequest]
    def __init__(self, starts: _Optional[_Iterable[_Union[StartTaskRequest, _Mapping]]] = ...) -> None: ...

class StartTasksResponse(_message.Message):
    __slots__ = ("results",)
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[StartResult]
    def __init__(self, results: _Optional[_Iterable[_Union[StartResult, _Mapping]]] = ...) -> None: ...

class StartResult(_message.Message):
    __slots__ = ("task_id", "code", "message")
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    CODE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    task_id: str
    code: int
    message: str
    def __init__(self, task_id: _Optional[str] = ..., code: _Optional[int] = ..., message: _Optional[str] = ...) -> None: ...

class CreateTestTaskRequest(_message.Message):
    __slots__ = ("task_id", "shard", "parent_id", "keyspace", "table", "entity", "user_task")
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    SHARD_FIELD_NUMBER: _ClassVar[int]
    PARENT_ID_FIELD_NUMBER: _ClassVar[int]
    KEYSPACE_FIELD_NUMBER: _ClassVar[int]
    TABLE_FIELD_NUMBER: _ClassVar[int]
    ENTITY_FIELD_NUMBER: _ClassVar[int]
    USER_TASK_FIELD_NUMBER: _ClassVar[int]
    task_id: str
    shard: int
    parent_id: str
    keyspace: str
    table: str
    entity: str
    user_task: bool
    def __init__(self, task_id: _Optional[str] = ..., shard: _Optional[int] = ..., parent_id: _Optional[str] = ..., keyspace: _Optional[str] = ..., table: _Optional[str] = ..., entity: _Optional[str] = ..., user_task: _Optional[bool] = ...) -> None: ...

class FinishTestTaskRequest(_message.Message):
    __slots__ = ("task_id", "error")
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    task_id: str
    error: str
    def __init__(self, task_id: _Optional[str] = ..., error: _Optional[str] = ...) -> None: ...

class ChildRef(_message.Message):
    __slots__ = ("task_id", "node", "address")
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    NODE_FIELD_NUMBER: _ClassVar[int]
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    task_id: str
    node: str
    address: str
    def __init__(self, task_id: _Optional[str] = ..., node: _Optional[str] = ..., address: _Optional[str] = ...) -> None: ...

class TaskStats(_message.Message):
    __slots__ = ("task_id", "type", "kind", "scope", "state", "sequence_number", "keyspace", "table", "entity", "shard", "start_time", "end_time")
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    TYPE_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    SCOPE_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    SEQUENCE_NUMBER_FIELD_NUMBER: _ClassVar[int]
    KEYSPACE_FIELD_NUMBER: _ClassVar[int]
    TABLE_FIELD_NUMBER: _ClassVar[int]
    ENTITY_FIELD_NUMBER: _ClassVar[int]
    SHARD_FIELD_NUMBER: _ClassVar[int]
    START_TIME_FIELD_NUMBER: _ClassVar[int]
    END_TIME_FIELD_NUMBER: _ClassVar[int]
    task_id: str
    type: str
    kind: str
    scope: str
    state: str
    sequence_number: int
    keyspace: str
    table: str
    entity: str
    shard: int
    start_time: _timestamp_pb2.Timestamp
    end_time: _timestamp_pb2.Timestamp
    def __init__(self, task_id: _Optional[str] = ..., type: _Optional[str] = ..., kind: _Optional[str] = ..., scope: _Optional[str] = ..., state: _Optional[str] = ..., sequence_number: _Optional[int] = ..., keyspace: _Optional[str] = ..., table: _Optional[str] = ..., entity: _Optional[str] = ..., shard: _Optional[int] = ..., start_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., end_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class TaskStatus(_message.Message):
    __slots__ = ("stats", "is_abortable", "error", "aborted", "parent_id", "progress_units", "progress_total", "progress_completed", "children_ids", "progress_fraction", "eta_ms", "module", "progress_message", "stale", "args_json", "created_at", "result_json", "attempt", "max_attempts", "next_attempt_at")
    STATS_FIELD_NUMBER: _ClassVar[int]
    IS_ABORTABLE_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    ABORTED_FIELD_NUMBER: _ClassVar[int]
    PARENT_ID_FIELD_NUMBER: _ClassVar[int]
    PROGRESS_UNITS_FIELD_NUMBER: _ClassVar[int]
    PROGRESS_TOTAL_FIELD_NUMBER: _ClassVar[int]
    PROGRESS_COMPLETED_FIELD_NUMBER: _ClassVar[int]
    CHILDREN_IDS_FIELD_NUMBER: _ClassVar[int]
    PROGRESS_FRACTION_FIELD_NUMBER: _ClassVar[int]
    ETA_MS_FIELD_NUMBER: _ClassVar[int]
    MODULE_FIELD_NUMBER: _ClassVar[int]
    PROGRESS_MESSAGE_FIELD_NUMBER: _ClassVar[int]
    STALE_FIELD_NUMBER: _ClassVar[int]
    ARGS_JSON_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    RESULT_JSON_FIELD_NUMBER: _ClassVar[int]
    ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    MAX_ATTEMPTS_FIELD_NUMBER: _ClassVar[int]
    NEXT_ATTEMPT_AT_FIELD_NUMBER: _ClassVar[int]
    stats: TaskStats
    is_abortable: bool
    error: str
    aborted: bool
    parent_id: str
    progress_units: str
    progress_total: float
    progress_completed: float
    children_ids: _containers.RepeatedCompositeFieldContainer[ChildRef]
    progress_fraction: float
    eta_ms: int
    module: str
    progress_message: str
    stale: bool
    args_json: str
    created_at: _timestamp_pb2.Timestamp
    result_json: str
    attempt: int
    max_attempts: int
    next_attempt_at: _timestamp_pb2.Timestamp
    def __init__(self, stats: _Optional[_Union[TaskStats, _Mapping]] = ..., is_abortable: _Optional[bool] = ..., error: _Optional[str] = ..., aborted: _Optional[bool] = ..., parent_id: _Optional[str] = ..., progress_units: _Optional[str] = ..., progress_total: _Optional[float] = ..., progress_completed: _Optional[float] = ..., children_ids: _Optional[_Iterable[_Union[ChildRef, _Mapping]]] = ..., progress_fraction: _Optional[float] = ..., eta_ms: _Optional[int] = ..., module: _Optional[str] = ..., progress_message: _Optional[str] = ..., stale: _Optional[bool] = ..., args_json: _Optional[str] = ..., created_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., result_json: _Optional[str] = ..., attempt: _Optional[int] = ..., max_attempts: _Optional[int] = ..., next_attempt_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class TaskStatusList(_message.Message):
    __slots__ = ("statuses",)
    STATUSES_FIELD_NUMBER: _ClassVar[int]
    statuses: _containers.RepeatedCompositeFieldContainer[TaskStatus]
    def __init__(self, statuses: _Optional[_Iterable[_Union[TaskStatus, _Mapping]]] = ...) -> None: ...

class ListTaskTypesRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class TaskTypeInfo(_message.Message):
    __slots__ = ("name", "running", "completed", "started_at", "last_run", "module", "type", "params", "abortable", "extra_args")
    NAME_FIELD_NUMBER: _ClassVar[int]
    RUNNING_FIELD_NUMBER: _ClassVar[int]
    COMPLETED_FIELD_NUMBER: _ClassVar[int]
    STARTED_AT_FIELD_NUMBER: _ClassVar[int]
    LAST_RUN_FIELD_NUMBER: _ClassVar[int]
    MODULE_FIELD_NUMBER: _ClassVar[int]
    TYPE_FIELD_NUMBER: _ClassVar[int]
    PARAMS_FIELD_NUMBER: _ClassVar[int]
    ABORTABLE_FIELD_NUMBER: _ClassVar[int]
    EXTRA_ARGS_FIELD_NUMBER: _ClassVar[int]
    name: str
    running: bool
    completed: bool
    started_at: int
    last_run: int
    module: str
    type: str
    params: _containers.RepeatedCompositeFieldContainer[TaskParam]
    abortable: bool
    extra_args: bool
    def __init__(self, name: _Optional[str] = ..., running: _Optional[bool] = ..., completed: _Optional[bool] = ..., started_at: _Optional[int] = ..., last_run: _Optional[int] = ..., module: _Optional[str] = ..., type: _Optional[str] = ..., params: _Optional[_Iterable[_Union[TaskParam, _Mapping]]] = ..., abortable: _Optional[bool] = ..., extra_args: _Optional[bool] = ...) -> None: ...

class TaskParam(_message.Message):
    __slots__ = ("name", "type", "required", "default_json")
    NAME_FIELD_NUMBER: _ClassVar[int]
    TYPE_FIELD_NUMBER: _ClassVar[int]
    REQUIRED_FIELD_NUMBER: _ClassVar[int]
    DEFAULT_JSON_FIELD_NUMBER: _ClassVar[int]
    name: str
    type: str
    required: bool
    default_json: str
    def __init__(self, name: _Optional[str] = ..., type: _Optional[str] = ..., required: _Optional[bool] = ..., default_json: _Optional[str] = ...) -> None: ...

class ListTaskTypesResponse(_message.Message):
    __slots__ = ("types",)
    TYPES_FIELD_NUMBER: _ClassVar[int]
    types: _containers.RepeatedCompositeFieldContainer[TaskTypeInfo]
    def __init__(self, types: _Optional[_Iterable[_Union[TaskTypeInfo, _Mapping]]] = ...) -> None: ...

class WatchEventsRequest(_message.Message):
    __slots__ = ("after_sequence", "live_only", "cluster_children_only", "types")
    AFTER_SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    LIVE_ONLY_FIELD_NUMBER: _ClassVar[int]
    CLUSTER_CHILDREN_ONLY_FIELD_NUMBER: _ClassVar[int]
    TYPES_FIELD_NUMBER: _ClassVar[int]
    after_sequence: int
    live_only: bool
    cluster_children_only: bool
    types: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, after_sequence: _Optional[int] = ..., live_only: _Optional[bool] = ..., cluster_children_only: _Optional[bool] = ..., types: _Optional[_Iterable[str]] = ...) -> None: ...

class Event(_message.Message):
    __slots__ = ("sequence", "type", "task_id", "module", "task_type", "time", "progress_completed", "progress_total", "message", "error", "cluster_parent_id", "schedule_id", "slot", "attempt", "next_attempt_at", "result_json")
    SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    TYPE_FIELD_NUMBER: _ClassVar[int]
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    MODULE_FIELD_NUMBER: _ClassVar[int]
    TASK_TYPE_FIELD_NUMBER: _ClassVar[int]
    TIME_FIELD_NUMBER: _ClassVar[int]
    PROGRESS_COMPLETED_FIELD_NUMBER: _ClassVar[int]
    PROGRESS_TOTAL_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    CLUSTER_PARENT_ID_FIELD_NUMBER: _ClassVar[int]
    SCHEDULE_ID_FIELD_NUMBER: _ClassVar[int]
    SLOT_FIELD_NUMBER: _ClassVar[int]
    ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    NEXT_ATTEMPT_AT_FIELD_NUMBER: _ClassVar[int]
    RESULT_JSON_FIELD_NUMBER: _ClassVar[int]
    sequence: int
    type: str
    task_id: str
    module: str
    task_type: str
    time: _timestamp_pb2.Timestamp
    progress_completed: float
    progress_total: float
    message: str
    error: str
    cluster_parent_id: str
    schedule_id: str
    slot: int
    attempt: int
    next_attempt_at: _timestamp_pb2.Timestamp
    result_json: str
    def __init__(self, sequence: _Optional[int] = ..., type: _Optional[str] = ..., task_id: _Optional[str] = ..., module: _Optional[str] = ..., task_type: _Optional[str] = ..., time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., progress_completed: _Optional[float] = ..., progress_total: _Optional[float] = ..., message: _Optional[str] = ..., error: _Optional[str] = ..., cluster_parent_id: _Optional[str] = ..., schedule_id: _Optional[str] = ..., slot: _Optional[int] = ..., attempt: _Optional[int] = ..., next_attempt_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., result_json: _Optional[str] = ...) -> None: ...

class EventBatch(_message.Message):
    __slots__ = ("events",)
    EVENTS_FIELD_NUMBER: _ClassVar[int]
    events: _containers.RepeatedCompositeFieldContainer[Event]
    def __init__(self, events: _Optional[_Iterable[_Union[Event, _Mapping]]] = ...) -> None: ...

class GetLoadRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class LoadResponse(_message.Message):
    __slots__ = ("running", "queued")
    RUNNING_FIELD_NUMBER: _ClassVar[int]
    QUEUED_FIELD_NUMBER: _ClassVar[int]
    running: int
    queued: int
    def __init__(self, running: _Optional[int] = ..., queued: _Optional[int] = ...) -> None: ...

class ListNodesRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class NodeInfo(_message.Message):
    __slots__ = ("id", "address", "alive", "leader", "version", "started_at")
    ID_FIELD_NUMBER: _ClassVar[int]
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    ALIVE_FIELD_NUMBER: _ClassVar[int]
    LEADER_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    STARTED_AT_FIELD_NUMBER: _ClassVar[int]
    id: str
    address: str
    alive: bool
    leader: bool
    version: str
    started_at: _timestamp_pb2.Timestamp
    def __init__(self, id: _Optional[str] = ..., address: _Optional[str] = ..., alive: _Optional[bool] = ..., leader: _Optional[bool] = ..., version: _Optional[str] = ..., started_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class ListNodesResponse(_message.Message):
    __slots__ = ("nodes", "stale")
    NODES_FIELD_NUMBER: _ClassVar[int]
    STALE_FIELD_NUMBER: _ClassVar[int]
    nodes: _containers.RepeatedCompositeFieldContainer[NodeInfo]
    stale: bool
    def __init__(self, nodes: _Optional[_Iterable[_Union[NodeInfo, _Mapping]]] = ..., stale: _Optional[bool] = ...) -> None: ...
