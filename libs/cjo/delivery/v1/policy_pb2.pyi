from cjo.common.v1 import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class FrequencyCap(_message.Message):
    __slots__ = ("channel", "max_messages", "window_seconds")
    CHANNEL_FIELD_NUMBER: _ClassVar[int]
    MAX_MESSAGES_FIELD_NUMBER: _ClassVar[int]
    WINDOW_SECONDS_FIELD_NUMBER: _ClassVar[int]
    channel: _common_pb2.Channel
    max_messages: int
    window_seconds: int
    def __init__(self, channel: _Optional[_Union[_common_pb2.Channel, str]] = ..., max_messages: _Optional[int] = ..., window_seconds: _Optional[int] = ...) -> None: ...

class QuietHours(_message.Message):
    __slots__ = ("start", "end", "default_time_zone")
    START_FIELD_NUMBER: _ClassVar[int]
    END_FIELD_NUMBER: _ClassVar[int]
    DEFAULT_TIME_ZONE_FIELD_NUMBER: _ClassVar[int]
    start: str
    end: str
    default_time_zone: str
    def __init__(self, start: _Optional[str] = ..., end: _Optional[str] = ..., default_time_zone: _Optional[str] = ...) -> None: ...

class DeliveryPolicy(_message.Message):
    __slots__ = ("name", "frequency_caps", "quiet_hours")
    NAME_FIELD_NUMBER: _ClassVar[int]
    FREQUENCY_CAPS_FIELD_NUMBER: _ClassVar[int]
    QUIET_HOURS_FIELD_NUMBER: _ClassVar[int]
    name: str
    frequency_caps: _containers.RepeatedCompositeFieldContainer[FrequencyCap]
    quiet_hours: QuietHours
    def __init__(self, name: _Optional[str] = ..., frequency_caps: _Optional[_Iterable[_Union[FrequencyCap, _Mapping]]] = ..., quiet_hours: _Optional[_Union[QuietHours, _Mapping]] = ...) -> None: ...
