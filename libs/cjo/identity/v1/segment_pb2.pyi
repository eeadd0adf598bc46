import datetime

from cjo.identity.v1 import backfill_pb2 as _backfill_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class SegmentState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    SEGMENT_STATE_UNSPECIFIED: _ClassVar[SegmentState]
    SEGMENT_STATE_ACTIVE: _ClassVar[SegmentState]
    SEGMENT_STATE_INVALID: _ClassVar[SegmentState]
SEGMENT_STATE_UNSPECIFIED: SegmentState
SEGMENT_STATE_ACTIVE: SegmentState
SEGMENT_STATE_INVALID: SegmentState

class Segment(_message.Message):
    __slots__ = ("name", "segment_id", "display_name", "condition", "member_count", "create_time", "state", "error_count", "consecutive_error_count", "last_error", "last_error_time", "last_error_profile_id", "update_time", "etag", "backfill")
    NAME_FIELD_NUMBER: _ClassVar[int]
    SEGMENT_ID_FIELD_NUMBER: _ClassVar[int]
    DISPLAY_NAME_FIELD_NUMBER: _ClassVar[int]
    CONDITION_FIELD_NUMBER: _ClassVar[int]
    MEMBER_COUNT_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    ERROR_COUNT_FIELD_NUMBER: _ClassVar[int]
    CONSECUTIVE_ERROR_COUNT_FIELD_NUMBER: _ClassVar[int]
    LAST_ERROR_FIELD_NUMBER: _ClassVar[int]
    LAST_ERROR_TIME_FIELD_NUMBER: _ClassVar[int]
    LAST_ERROR_PROFILE_ID_FIELD_NUMBER: _ClassVar[int]
    UPDATE_TIME_FIELD_NUMBER: _ClassVar[int]
    ETAG_FIELD_NUMBER: _ClassVar[int]
    BACKFILL_FIELD_NUMBER: _ClassVar[int]
    name: str
    segment_id: str
    display_name: str
    condition: str
    member_count: int
    create_time: _timestamp_pb2.Timestamp
    state: SegmentState
    error_count: int
    consecutive_error_count: int
    last_error: str
    last_error_time: _timestamp_pb2.Timestamp
    last_error_profile_id: str
    update_time: _timestamp_pb2.Timestamp
    etag: str
    backfill: _backfill_pb2.Backfill
    def __init__(self, name: _Optional[str] = ..., segment_id: _Optional[str] = ..., display_name: _Optional[str] = ..., condition: _Optional[str] = ..., member_count: _Optional[int] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., state: _Optional[_Union[SegmentState, str]] = ..., error_count: _Optional[int] = ..., consecutive_error_count: _Optional[int] = ..., last_error: _Optional[str] = ..., last_error_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., last_error_profile_id: _Optional[str] = ..., update_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., etag: _Optional[str] = ..., backfill: _Optional[_Union[_backfill_pb2.Backfill, _Mapping]] = ...) -> None: ...
