from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class MemberRecord(_message.Message):
    __slots__ = ("id", "address", "version", "started_at", "instance")
    ID_FIELD_NUMBER: _ClassVar[int]
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    STARTED_AT_FIELD_NUMBER: _ClassVar[int]
    INSTANCE_FIELD_NUMBER: _ClassVar[int]
    id: str
    address: str
    version: str
    started_at: float
    instance: str
    def __init__(self, id: _Optional[str] = ..., address: _Optional[str] = ..., version: _Optional[str] = ..., started_at: _Optional[float] = ..., instance: _Optional[str] = ...) -> None: ...

class LeaderRecord(_message.Message):
    __slots__ = ("node_id", "instance", "term")
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    INSTANCE_FIELD_NUMBER: _ClassVar[int]
    TERM_FIELD_NUMBER: _ClassVar[int]
    node_id: str
    instance: str
    term: int
    def __init__(self, node_id: _Optional[str] = ..., instance: _Optional[str] = ..., term: _Optional[int] = ...) -> None: ...

class ClusterChild(_message.Message):
    __slots__ = ("node", "task_id", "state", "error", "progress_completed", "progress_total", "attempt", "down_since", "start_time", "end_time", "result_json")
    NODE_FIELD_NUMBER: _ClassVar[int]
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    PROGRESS_COMPLETED_FIELD_NUMBER: _ClassVar[int]
    PROGRESS_TOTAL_FIELD_NUMBER: _ClassVar[int]
    ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    DOWN_SINCE_FIELD_NUMBER: _ClassVar[int]
    START_TIME_FIELD_NUMBER: _ClassVar[int]
    END_TIME_FIELD_NUMBER: _ClassVar[int]
    RESULT_JSON_FIELD_NUMBER: _ClassVar[int]
    node: str
    task_id: str
    state: str
    error: str
    progress_completed: float
    progress_total: float
    attempt: int
    down_since: float
    start_time: float
    end_time: float
    result_json: str
    def __init__(self, node: _Optional[str] = ..., task_id: _Optional[str] = ..., state: _Optional[str] = ..., error: _Optional[str] = ..., progress_completed: _Optional[float] = ..., progress_total: _Optional[float] = ..., attempt: _Optional[int] = ..., down_since: _Optional[float] = ..., start_time: _Optional[float] = ..., end_time: _Optional[float] = ..., result_json: _Optional[str] = ...) -> None: ...

class ClusterTaskRecord(_message.Message):
    __slots__ = ("id", "module", "type", "args_json", "state", "error", "aborted", "abort_requested", "created_at", "start_time", "end_time", "target_nodes", "children", "idempotency_key", "keyspace", "table", "entity", "is_abortable", "progress_units")
    ID_FIELD_NUMBER: _ClassVar[int]
    MODULE_FIELD_NUMBER: _ClassVar[int]
    TYPE_FIELD_NUMBER: _ClassVar[int]
    ARGS_JSON_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    ABORTED_FIELD_NUMBER: _ClassVar[int]
    ABORT_REQUESTED_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    START_TIME_FIELD_NUMBER: _ClassVar[int]
    END_TIME_FIELD_NUMBER: _ClassVar[int]
    TARGET_NODES_FIELD_NUMBER: _ClassVar[int]
    CHILDREN_FIELD_NUMBER: _ClassVar[int]
    IDEMPOTENCY_KEY_FIELD_NUMBER: _ClassVar[int]
    KEYSPACE_FIELD_NUMBER: _ClassVar[int]
    TABLE_FIELD_NUMBER: _ClassVar[int]
    ENTITY_FIELD_NUMBER: _ClassVar[int]
    IS_ABORTABLE_FIELD_NUMBER: _ClassVar[int]
    PROGRESS_UNITS_FIELD_NUMBER: _ClassVar[int]
    id: str
    module: str
    type: str
    args_json: str
    state: str
    error: str
    aborted: bool
    abort_requested: bool
    created_at: float
    start_time: float
    end_time: float
    target_nodes: _containers.RepeatedScalarFieldContainer[str]
    children: _containers.RepeatedCompositeFieldContainer[ClusterChild]
    idempotency_key: str
    keyspace: str
    table: str
    entity: str
    is_abortable: bool
    progress_units: str
    def __init__(self, id: _Optional[str] = ..., module: _Optional[str] = ..., type: _Optional[str] = ..., args_json: _Optional[str] = ..., state: _Optional[str] = ..., error: _Optional[str] = ..., aborted: _Optional[bool] = ..., abort_requested: _Optional[bool] = ..., created_at: _Optional[float] = ..., start_time: _Optional[float] = ..., end_time: _Optional[float] = ..., target_nodes: _Optional[_Iterable[str]] = ..., children: _Optional[_Iterable[_Union[ClusterChild, _Mapping]]] = ..., idempotency_key: _Optional[str] = ..., keyspace: _Optional[str] = ..., table: _Optional[str] = ..., entity: _Optional[str] = ..., is_abortable: _Optional[bool] = ..., progress_units: _Optional[str] = ...) -> None: ...

class CronDocRecord(_message.Message):
    __slots__ = ("generation",)
    GENERATION_FIELD_NUMBER: _ClassVar[int]
    generation: str
    def __init__(self, generation: _Optional[str] = ...) -> None: ...

class CronScheduleRecord(_message.Message):
    __slots__ = ("id", "module", "task_type", "schedule", "args_json", "enabled", "timezone", "cluster", "concurrency", "misfire_grace_s", "since")
    ID_FIELD_NUMBER: _ClassVar[int]
    MODULE_FIELD_NUMBER: _ClassVar[int]
    TASK_TYPE_FIELD_NUMBER: _ClassVar[int]
    SCHEDULE_FIELD_NUMBER: _ClassVar[int]
    ARGS_JSON_FIELD_NUMBER: _ClassVar[int]
    ENABLED_FIELD_NUMBER: _ClassVar[int]
    TIMEZONE_FIELD_NUMBER: _ClassVar[int]
    CLUSTER_FIELD_NUMBER: _ClassVar[int]
    CONCURRENCY_FIELD_NUMBER: _ClassVar[int]
    MISFIRE_GRACE_S_FIELD_NUMBER: _ClassVar[int]
    SINCE_FIELD_NUMBER: _ClassVar[int]
    id: str
    module: str
    task_type: str
    schedule: str
    args_json: str
    enabled: bool
    timezone: str
    cluster: bool
    concurrency: str
    misfire_grace_s: float
    since: float
    def __init__(self, id: _Optional[str] = ..., module: _Optional[str] = ..., task_type: _Optional[str] = ..., schedule: _Optional[str] = ..., args_json: _Optional[str] = ..., enabled: _Optional[bool] = ..., timezone: _Optional[str] = ..., cluster: _Optional[bool] = ..., concurrency: _Optional[str] = ..., misfire_grace_s: _Optional[float] = ..., since: _Optional[float] = ...) -> None: ...

class CronHistoryRecord(_message.Message):
    __slots__ = ("slot", "outcome", "reason", "task_id", "node", "at", "count")
    SLOT_FIELD_NUMBER: _ClassVar[int]
    OUTCOME_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    NODE_FIELD_NUMBER: _ClassVar[int]
    AT_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    slot: int
    outcome: str
    reason: str
    task_id: str
    node: str
    at: float
    count: int
    def __init__(self, slot: _Optional[int] = ..., outcome: _Optional[str] = ..., reason: _Optional[str] = ..., task_id: _Optional[str] = ..., node: _Optional[str] = ..., at: _Optional[float] = ..., count: _Optional[int] = ...) -> None: ...

class CronStateRecord(_message.Message):
    __slots__ = ("last_slot", "last_task_id", "last_node", "last_cluster", "start_pending", "pending_args_json", "history")
    LAST_SLOT_FIELD_NUMBER: _ClassVar[int]
    LAST_TASK_ID_FIELD_NUMBER: _ClassVar[int]
    LAST_NODE_FIELD_NUMBER: _ClassVar[int]
    LAST_CLUSTER_FIELD_NUMBER: _ClassVar[int]
    START_PENDING_FIELD_NUMBER: _ClassVar[int]
    PENDING_ARGS_JSON_FIELD_NUMBER: _ClassVar[int]
    HISTORY_FIELD_NUMBER: _ClassVar[int]
    last_slot: int
    last_task_id: str
    last_node: str
    last_cluster: bool
    start_pending: bool
    pending_args_json: str
    history: _containers.RepeatedCompositeFieldContainer[CronHistoryRecord]
    def __init__(self, last_slot: _Optional[int] = ..., last_task_id: _Optional[str] = ..., last_node: _Optional[str] = ..., last_cluster: _Optional[bool] = ..., start_pending: _Optional[bool] = ..., pending_args_json: _Optional[str] = ..., history: _Optional[_Iterable[_Union[CronHistoryRecord, _Mapping]]] = ...) -> None: ...
