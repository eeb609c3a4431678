import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class CronSchedule(_message.Message):
    __slots__ = ("id", "module", "task_type", "schedule", "args_json", "enabled", "timezone", "cluster", "concurrency", "misfire_grace_s")
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
    def __init__(self, id: _Optional[str] = ..., module: _Optional[str] = ..., task_type: _Optional[str] = ..., schedule: _Optional[str] = ..., args_json: _Optional[str] = ..., enabled: _Optional[bool] = ..., timezone: _Optional[str] = ..., cluster: _Optional[bool] = ..., concurrency: _Optional[str] = ..., misfire_grace_s: _Optional[float] = ...) -> None: ...

class CronHistoryEntry(_message.Message):
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
    at: _timestamp_pb2.Timestamp
    count: int
    def __init__(self, slot: _Optional[int] = ..., outcome: _Optional[str] = ..., reason: _Optional[str] = ..., task_id: _Optional[str] = ..., node: _Optional[str] = ..., at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., count: _Optional[int] = ...) -> None: ...

class ScheduleStatus(_message.Message):
    __slots__ = ("schedule", "next_fire_time", "last_slot", "last_task_id", "last_task_state", "last_node", "history")
    SCHEDULE_FIELD_NUMBER: _ClassVar[int]
    NEXT_FIRE_TIME_FIELD_NUMBER: _ClassVar[int]
    LAST_SLOT_FIELD_NUMBER: _ClassVar[int]
    LAST_TASK_ID_FIELD_NUMBER: _ClassVar[int]
    LAST_TASK_STATE_FIELD_NUMBER: _ClassVar[int]
    LAST_NODE_FIELD_NUMBER: _ClassVar[int]
    HISTORY_FIELD_NUMBER: _ClassVar[int]
    schedule: CronSchedule
    next_fire_time: _timestamp_pb2.Timestamp
    last_slot: int
    last_task_id: str
    last_task_state: str
    last_node: str
    history: _containers.RepeatedCompositeFieldContainer[CronHistoryEntry]
    def __init__(self, schedule: _Optional[_Union[CronSchedule, _Mapping]] = ..., next_fire_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., last_slot: _Optional[int] = ..., last_task_id: _Optional[str] = ..., last_task_state: _Optional[str] = ..., last_node: _Optional[str] = ..., history: _Optional[_Iterable[_Union[CronHistoryEntry, _Mapping]]] = ...) -> None: ...

class ListSchedulesRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ScheduleList(_message.Message):
    __slots__ = ("schedules",)
    SCHEDULES_FIELD_NUMBER: _ClassVar[int]
    schedules: _containers.RepeatedCompositeFieldContainer[ScheduleStatus]
    def __init__(self, schedules: _Optional[_Iterable[_Union[ScheduleStatus, _Mapping]]] = ...) -> None: ...

class PutSchedulesRequest(_message.Message):
    __slots__ = ("schedules",)
    SCHEDULES_FIELD_NUMBER: _ClassVar[int]
    schedules: _containers.RepeatedCompositeFieldContainer[CronSchedule]
    def __init__(self, schedules: _Optional[_Iterable[_Union[CronSchedule, _Mapping]]] = ...) -> None: ...

class ScheduleIdRequest(_message.Message):
    __slots__ = ("id",)
    ID_FIELD_NUMBER: _ClassVar[int]
    id: str
    def __init__(self, id: _Optional[str] = ...) -> None: ...

class SetScheduleEnabledRequest(_message.Message):
    __slots__ = ("id", "enabled")
    ID_FIELD_NUMBER: _ClassVar[int]
    ENABLED_FIELD_NUMBER: _ClassVar[int]
    id: str
    enabled: bool
    def __init__(self, id: _Optional[str] = ..., enabled: _Optional[bool] = ...) -> None: ...

class DeleteScheduleResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class RunNowResponse(_message.Message):
    __slots__ = ("task_id", "node")
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    NODE_FIELD_NUMBER: _ClassVar[int]
    task_id: str
    node: str
    def __init__(self, task_id: _Optional[str] = ..., node: _Optional[str] = ...) -> None: ...
