import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class FactType(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    FACT_TYPE_UNSPECIFIED: _ClassVar[FactType]
    FACT_TYPE_JOURNEY_ENTERED: _ClassVar[FactType]
    FACT_TYPE_MESSAGE_REQUESTED: _ClassVar[FactType]
    FACT_TYPE_MESSAGE_SENT: _ClassVar[FactType]
    FACT_TYPE_MESSAGE_FAILED: _ClassVar[FactType]
    FACT_TYPE_JOURNEY_EXITED: _ClassVar[FactType]
FACT_TYPE_UNSPECIFIED: FactType
FACT_TYPE_JOURNEY_ENTERED: FactType
FACT_TYPE_MESSAGE_REQUESTED: FactType
FACT_TYPE_MESSAGE_SENT: FactType
FACT_TYPE_MESSAGE_FAILED: FactType
FACT_TYPE_JOURNEY_EXITED: FactType

class Fact(_message.Message):
    __slots__ = ("fact_id", "type", "profile_id", "journey_id", "enrollment_id", "message_id", "occur_time")
    FACT_ID_FIELD_NUMBER: _ClassVar[int]
    TYPE_FIELD_NUMBER: _ClassVar[int]
    PROFILE_ID_FIELD_NUMBER: _ClassVar[int]
    JOURNEY_ID_FIELD_NUMBER: _ClassVar[int]
    ENROLLMENT_ID_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_ID_FIELD_NUMBER: _ClassVar[int]
    OCCUR_TIME_FIELD_NUMBER: _ClassVar[int]
    fact_id: str
    type: FactType
    profile_id: str
    journey_id: str
    enrollment_id: str
    message_id: str
    occur_time: _timestamp_pb2.Timestamp
    def __init__(self, fact_id: _Optional[str] = ..., type: _Optional[_Union[FactType, str]] = ..., profile_id: _Optional[str] = ..., journey_id: _Optional[str] = ..., enrollment_id: _Optional[str] = ..., message_id: _Optional[str] = ..., occur_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...
