import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ScheduleOccurrence(_message.Message):
    __slots__ = ("name", "occurrence_id", "journey_id", "journey_version", "fire_time", "state", "start_time", "finish_time", "enrolled_count", "not_enrolled_count", "page_count", "attempts", "detail", "create_time")
    class State(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        STATE_UNSPECIFIED: _ClassVar[ScheduleOccurrence.State]
        STATE_PENDING: _ClassVar[ScheduleOccurrence.State]
        STATE_RUNNING: _ClassVar[ScheduleOccurrence.State]
        STATE_DONE: _ClassVar[ScheduleOccurrence.State]
        STATE_MISSED: _ClassVar[ScheduleOccurrence.State]
        STATE_SKIPPED: _ClassVar[ScheduleOccurrence.State]
        STATE_CANCELLED: _ClassVar[ScheduleOccurrence.State]
        STATE_FAILED: _ClassVar[ScheduleOccurrence.State]
    STATE_UNSPECIFIED: ScheduleOccurrence.State
    STATE_PENDING: ScheduleOccurrence.State
    STATE_RUNNING: ScheduleOccurrence.State
    STATE_DONE: ScheduleOccurrence.State
    STATE_MISSED: ScheduleOccurrence.State
    STATE_SKIPPED: ScheduleOccurrence.State
    STATE_CANCELLED: ScheduleOccurrence.State
    STATE_FAILED: ScheduleOccurrence.State
    NAME_FIELD_NUMBER: _ClassVar[int]
    OCCURRENCE_ID_FIELD_NUMBER: _ClassVar[int]
    JOURNEY_ID_FIELD_NUMBER: _ClassVar[int]
    JOURNEY_VERSION_FIELD_NUMBER: _ClassVar[int]
    FIRE_TIME_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    START_TIME_FIELD_NUMBER: _ClassVar[int]
    FINISH_TIME_FIELD_NUMBER: _ClassVar[int]
    ENROLLED_COUNT_FIELD_NUMBER: _ClassVar[int]
    NOT_ENROLLED_COUNT_FIELD_NUMBER: _ClassVar[int]
    PAGE_COUNT_FIELD_NUMBER: _ClassVar[int]
    ATTEMPTS_FIELD_NUMBER: _ClassVar[int]
    DETAIL_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    name: str
    occurrence_id: str
    journey_id: str
    journey_version: int
    fire_time: _timestamp_pb2.Timestamp
    state: ScheduleOccurrence.State
    start_time: _timestamp_pb2.Timestamp
    finish_time: _timestamp_pb2.Timestamp
    enrolled_count: int
    not_enrolled_count: int
    page_count: int
    attempts: int
    detail: str
    create_time: _timestamp_pb2.Timestamp
    def __init__(self, name: _Optional[str] = ..., occurrence_id: _Optional[str] = ..., journey_id: _Optional[str] = ..., journey_version: _Optional[int] = ..., fire_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., state: _Optional[_Union[ScheduleOccurrence.State, str]] = ..., start_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., finish_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., enrolled_count: _Optional[int] = ..., not_enrolled_count: _Optional[int] = ..., page_count: _Optional[int] = ..., attempts: _Optional[int] = ..., detail: _Optional[str] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...
