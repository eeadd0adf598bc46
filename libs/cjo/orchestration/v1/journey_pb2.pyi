import datetime

from cjo.common.v1 import common_pb2 as _common_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class JourneyState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    JOURNEY_STATE_UNSPECIFIED: _ClassVar[JourneyState]
    JOURNEY_STATE_DRAFT: _ClassVar[JourneyState]
    JOURNEY_STATE_ACTIVE: _ClassVar[JourneyState]
    JOURNEY_STATE_ARCHIVED: _ClassVar[JourneyState]
JOURNEY_STATE_UNSPECIFIED: JourneyState
JOURNEY_STATE_DRAFT: JourneyState
JOURNEY_STATE_ACTIVE: JourneyState
JOURNEY_STATE_ARCHIVED: JourneyState

class EventTrigger(_message.Message):
    __slots__ = ("event_name",)
    EVENT_NAME_FIELD_NUMBER: _ClassVar[int]
    event_name: str
    def __init__(self, event_name: _Optional[str] = ...) -> None: ...

class SendNode(_message.Message):
    __slots__ = ("content_key", "channel", "next_node_id")
    CONTENT_KEY_FIELD_NUMBER: _ClassVar[int]
    CHANNEL_FIELD_NUMBER: _ClassVar[int]
    NEXT_NODE_ID_FIELD_NUMBER: _ClassVar[int]
    content_key: str
    channel: _common_pb2.Channel
    next_node_id: str
    def __init__(self, content_key: _Optional[str] = ..., channel: _Optional[_Union[_common_pb2.Channel, str]] = ..., next_node_id: _Optional[str] = ...) -> None: ...

class ExitNode(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class Node(_message.Message):
    __slots__ = ("id", "send", "exit")
    ID_FIELD_NUMBER: _ClassVar[int]
    SEND_FIELD_NUMBER: _ClassVar[int]
    EXIT_FIELD_NUMBER: _ClassVar[int]
    id: str
    send: SendNode
    exit: ExitNode
    def __init__(self, id: _Optional[str] = ..., send: _Optional[_Union[SendNode, _Mapping]] = ..., exit: _Optional[_Union[ExitNode, _Mapping]] = ...) -> None: ...

class Journey(_message.Message):
    __slots__ = ("name", "journey_id", "display_name", "state", "event_trigger", "nodes", "entry_node_id", "published_version", "etag", "create_time", "update_time")
    NAME_FIELD_NUMBER: _ClassVar[int]
    JOURNEY_ID_FIELD_NUMBER: _ClassVar[int]
    DISPLAY_NAME_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    EVENT_TRIGGER_FIELD_NUMBER: _ClassVar[int]
    NODES_FIELD_NUMBER: _ClassVar[int]
    ENTRY_NODE_ID_FIELD_NUMBER: _ClassVar[int]
    PUBLISHED_VERSION_FIELD_NUMBER: _ClassVar[int]
    ETAG_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    UPDATE_TIME_FIELD_NUMBER: _ClassVar[int]
    name: str
    journey_id: str
    display_name: str
    state: JourneyState
    event_trigger: EventTrigger
    nodes: _containers.RepeatedCompositeFieldContainer[Node]
    entry_node_id: str
    published_version: int
    etag: str
    create_time: _timestamp_pb2.Timestamp
    update_time: _timestamp_pb2.Timestamp
    def __init__(self, name: _Optional[str] = ..., journey_id: _Optional[str] = ..., display_name: _Optional[str] = ..., state: _Optional[_Union[JourneyState, str]] = ..., event_trigger: _Optional[_Union[EventTrigger, _Mapping]] = ..., nodes: _Optional[_Iterable[_Union[Node, _Mapping]]] = ..., entry_node_id: _Optional[str] = ..., published_version: _Optional[int] = ..., etag: _Optional[str] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., update_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...
