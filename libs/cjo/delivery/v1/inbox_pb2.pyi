import datetime

from cjo.common.v1 import common_pb2 as _common_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class InboxState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    INBOX_STATE_UNSPECIFIED: _ClassVar[InboxState]
    INBOX_STATE_UNREAD: _ClassVar[InboxState]
    INBOX_STATE_READ: _ClassVar[InboxState]
    INBOX_STATE_DISMISSED: _ClassVar[InboxState]
INBOX_STATE_UNSPECIFIED: InboxState
INBOX_STATE_UNREAD: InboxState
INBOX_STATE_READ: InboxState
INBOX_STATE_DISMISSED: InboxState

class InboxMessage(_message.Message):
    __slots__ = ("name", "message_id", "profile_id", "content", "state", "journey_id", "create_time", "update_time")
    NAME_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_ID_FIELD_NUMBER: _ClassVar[int]
    PROFILE_ID_FIELD_NUMBER: _ClassVar[int]
    CONTENT_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    JOURNEY_ID_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    UPDATE_TIME_FIELD_NUMBER: _ClassVar[int]
    name: str
    message_id: str
    profile_id: str
    content: _common_pb2.RenderedInApp
    state: InboxState
    journey_id: str
    create_time: _timestamp_pb2.Timestamp
    update_time: _timestamp_pb2.Timestamp
    def __init__(self, name: _Optional[str] = ..., message_id: _Optional[str] = ..., profile_id: _Optional[str] = ..., content: _Optional[_Union[_common_pb2.RenderedInApp, _Mapping]] = ..., state: _Optional[_Union[InboxState, str]] = ..., journey_id: _Optional[str] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., update_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...
