import datetime

from cjo.common.v1 import common_pb2 as _common_pb2
from google.protobuf import duration_pb2 as _duration_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ActionContent(_message.Message):
    __slots__ = ("channel", "content_key")
    CHANNEL_FIELD_NUMBER: _ClassVar[int]
    CONTENT_KEY_FIELD_NUMBER: _ClassVar[int]
    channel: _common_pb2.Channel
    content_key: str
    def __init__(self, channel: _Optional[_Union[_common_pb2.Channel, str]] = ..., content_key: _Optional[str] = ...) -> None: ...

class ContactLimit(_message.Message):
    __slots__ = ("max_exposures", "period")
    MAX_EXPOSURES_FIELD_NUMBER: _ClassVar[int]
    PERIOD_FIELD_NUMBER: _ClassVar[int]
    max_exposures: int
    period: _duration_pb2.Duration
    def __init__(self, max_exposures: _Optional[int] = ..., period: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ...) -> None: ...

class Action(_message.Message):
    __slots__ = ("name", "key", "display_name", "contents", "value", "eligibility", "start_time", "end_time", "contact_limits", "budget", "lever", "mandatory", "transactional", "topic", "tags", "etag", "create_time", "update_time")
    NAME_FIELD_NUMBER: _ClassVar[int]
    KEY_FIELD_NUMBER: _ClassVar[int]
    DISPLAY_NAME_FIELD_NUMBER: _ClassVar[int]
    CONTENTS_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    ELIGIBILITY_FIELD_NUMBER: _ClassVar[int]
    START_TIME_FIELD_NUMBER: _ClassVar[int]
    END_TIME_FIELD_NUMBER: _ClassVar[int]
    CONTACT_LIMITS_FIELD_NUMBER: _ClassVar[int]
    BUDGET_FIELD_NUMBER: _ClassVar[int]
    LEVER_FIELD_NUMBER: _ClassVar[int]
    MANDATORY_FIELD_NUMBER: _ClassVar[int]
    TRANSACTIONAL_FIELD_NUMBER: _ClassVar[int]
    TOPIC_FIELD_NUMBER: _ClassVar[int]
    TAGS_FIELD_NUMBER: _ClassVar[int]
    ETAG_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    UPDATE_TIME_FIELD_NUMBER: _ClassVar[int]
    name: str
    key: str
    display_name: str
    contents: _containers.RepeatedCompositeFieldContainer[ActionContent]
    value: float
    eligibility: str
    start_time: _timestamp_pb2.Timestamp
    end_time: _timestamp_pb2.Timestamp
    contact_limits: _containers.RepeatedCompositeFieldContainer[ContactLimit]
    budget: int
    lever: float
    mandatory: bool
    transactional: bool
    topic: str
    tags: _containers.RepeatedScalarFieldContainer[str]
    etag: str
    create_time: _timestamp_pb2.Timestamp
    update_time: _timestamp_pb2.Timestamp
    def __init__(self, name: _Optional[str] = ..., key: _Optional[str] = ..., display_name: _Optional[str] = ..., contents: _Optional[_Iterable[_Union[ActionContent, _Mapping]]] = ..., value: _Optional[float] = ..., eligibility: _Optional[str] = ..., start_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., end_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., contact_limits: _Optional[_Iterable[_Union[ContactLimit, _Mapping]]] = ..., budget: _Optional[int] = ..., lever: _Optional[float] = ..., mandatory: _Optional[bool] = ..., transactional: _Optional[bool] = ..., topic: _Optional[str] = ..., tags: _Optional[_Iterable[str]] = ..., etag: _Optional[str] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., update_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...
