import datetime

from cjo.common.v1 import common_pb2 as _common_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ConsentState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    CONSENT_STATE_UNSPECIFIED: _ClassVar[ConsentState]
    CONSENT_STATE_SUBSCRIBED: _ClassVar[ConsentState]
    CONSENT_STATE_UNSUBSCRIBED: _ClassVar[ConsentState]
    CONSENT_STATE_UNKNOWN: _ClassVar[ConsentState]
CONSENT_STATE_UNSPECIFIED: ConsentState
CONSENT_STATE_SUBSCRIBED: ConsentState
CONSENT_STATE_UNSUBSCRIBED: ConsentState
CONSENT_STATE_UNKNOWN: ConsentState

class Consent(_message.Message):
    __slots__ = ("channel", "topic", "state", "source", "update_time")
    CHANNEL_FIELD_NUMBER: _ClassVar[int]
    TOPIC_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    UPDATE_TIME_FIELD_NUMBER: _ClassVar[int]
    channel: _common_pb2.Channel
    topic: str
    state: ConsentState
    source: str
    update_time: _timestamp_pb2.Timestamp
    def __init__(self, channel: _Optional[_Union[_common_pb2.Channel, str]] = ..., topic: _Optional[str] = ..., state: _Optional[_Union[ConsentState, str]] = ..., source: _Optional[str] = ..., update_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class ConsentQuery(_message.Message):
    __slots__ = ("profile_id", "channel", "topic")
    PROFILE_ID_FIELD_NUMBER: _ClassVar[int]
    CHANNEL_FIELD_NUMBER: _ClassVar[int]
    TOPIC_FIELD_NUMBER: _ClassVar[int]
    profile_id: str
    channel: _common_pb2.Channel
    topic: str
    def __init__(self, profile_id: _Optional[str] = ..., channel: _Optional[_Union[_common_pb2.Channel, str]] = ..., topic: _Optional[str] = ...) -> None: ...

class ConsentDecision(_message.Message):
    __slots__ = ("state", "allowed", "reason")
    STATE_FIELD_NUMBER: _ClassVar[int]
    ALLOWED_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    state: ConsentState
    allowed: bool
    reason: str
    def __init__(self, state: _Optional[_Union[ConsentState, str]] = ..., allowed: _Optional[bool] = ..., reason: _Optional[str] = ...) -> None: ...
