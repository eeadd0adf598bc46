import datetime

from cjo.common.v1 import common_pb2 as _common_pb2
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
    FACT_TYPE_NODE_VISITED: _ClassVar[FactType]
    FACT_TYPE_MESSAGE_DELIVERED: _ClassVar[FactType]
    FACT_TYPE_MESSAGE_OPENED: _ClassVar[FactType]
    FACT_TYPE_MESSAGE_CLICKED: _ClassVar[FactType]
    FACT_TYPE_MESSAGE_BOUNCED: _ClassVar[FactType]
    FACT_TYPE_MESSAGE_UNSUBSCRIBED: _ClassVar[FactType]
    FACT_TYPE_GOAL_REACHED: _ClassVar[FactType]
    FACT_TYPE_CONVERTED: _ClassVar[FactType]
    FACT_TYPE_EXPERIMENT_EXPOSED: _ClassVar[FactType]
    FACT_TYPE_PROFILE_MERGED: _ClassVar[FactType]
    FACT_TYPE_NODE_FAILED: _ClassVar[FactType]
FACT_TYPE_UNSPECIFIED: FactType
FACT_TYPE_JOURNEY_ENTERED: FactType
FACT_TYPE_MESSAGE_REQUESTED: FactType
FACT_TYPE_MESSAGE_SENT: FactType
FACT_TYPE_MESSAGE_FAILED: FactType
FACT_TYPE_JOURNEY_EXITED: FactType
FACT_TYPE_NODE_VISITED: FactType
FACT_TYPE_MESSAGE_DELIVERED: FactType
FACT_TYPE_MESSAGE_OPENED: FactType
FACT_TYPE_MESSAGE_CLICKED: FactType
FACT_TYPE_MESSAGE_BOUNCED: FactType
FACT_TYPE_MESSAGE_UNSUBSCRIBED: FactType
FACT_TYPE_GOAL_REACHED: FactType
FACT_TYPE_CONVERTED: FactType
FACT_TYPE_EXPERIMENT_EXPOSED: FactType
FACT_TYPE_PROFILE_MERGED: FactType
FACT_TYPE_NODE_FAILED: FactType

class Fact(_message.Message):
    __slots__ = ("fact_id", "type", "profile_id", "journey_id", "enrollment_id", "message_id", "occur_time", "journey_version", "node_id", "channel", "content_key", "variant", "experiment_id", "arm", "control", "arm_weight", "revenue", "currency", "exit_reason", "survivor_profile_id", "conversion_deadline", "visit_sequence", "source_event_id", "decision_id")
    FACT_ID_FIELD_NUMBER: _ClassVar[int]
    TYPE_FIELD_NUMBER: _ClassVar[int]
    PROFILE_ID_FIELD_NUMBER: _ClassVar[int]
    JOURNEY_ID_FIELD_NUMBER: _ClassVar[int]
    ENROLLMENT_ID_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_ID_FIELD_NUMBER: _ClassVar[int]
    OCCUR_TIME_FIELD_NUMBER: _ClassVar[int]
    JOURNEY_VERSION_FIELD_NUMBER: _ClassVar[int]
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    CHANNEL_FIELD_NUMBER: _ClassVar[int]
    CONTENT_KEY_FIELD_NUMBER: _ClassVar[int]
    VARIANT_FIELD_NUMBER: _ClassVar[int]
    EXPERIMENT_ID_FIELD_NUMBER: _ClassVar[int]
    ARM_FIELD_NUMBER: _ClassVar[int]
    CONTROL_FIELD_NUMBER: _ClassVar[int]
    ARM_WEIGHT_FIELD_NUMBER: _ClassVar[int]
    REVENUE_FIELD_NUMBER: _ClassVar[int]
    CURRENCY_FIELD_NUMBER: _ClassVar[int]
    EXIT_REASON_FIELD_NUMBER: _ClassVar[int]
    SURVIVOR_PROFILE_ID_FIELD_NUMBER: _ClassVar[int]
    CONVERSION_DEADLINE_FIELD_NUMBER: _ClassVar[int]
    VISIT_SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    SOURCE_EVENT_ID_FIELD_NUMBER: _ClassVar[int]
    DECISION_ID_FIELD_NUMBER: _ClassVar[int]
    fact_id: str
    type: FactType
    profile_id: str
    journey_id: str
    enrollment_id: str
    message_id: str
    occur_time: _timestamp_pb2.Timestamp
    journey_version: int
    node_id: str
    channel: _common_pb2.Channel
    content_key: str
    variant: str
    experiment_id: str
    arm: str
    control: bool
    arm_weight: float
    revenue: float
    currency: str
    exit_reason: str
    survivor_profile_id: str
    conversion_deadline: _timestamp_pb2.Timestamp
    visit_sequence: int
    source_event_id: str
    decision_id: str
    def __init__(self, fact_id: _Optional[str] = ..., type: _Optional[_Union[FactType, str]] = ..., profile_id: _Optional[str] = ..., journey_id: _Optional[str] = ..., enrollment_id: _Optional[str] = ..., message_id: _Optional[str] = ..., occur_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., journey_version: _Optional[int] = ..., node_id: _Optional[str] = ..., channel: _Optional[_Union[_common_pb2.Channel, str]] = ..., content_key: _Optional[str] = ..., variant: _Optional[str] = ..., experiment_id: _Optional[str] = ..., arm: _Optional[str] = ..., control: _Optional[bool] = ..., arm_weight: _Optional[float] = ..., revenue: _Optional[float] = ..., currency: _Optional[str] = ..., exit_reason: _Optional[str] = ..., survivor_profile_id: _Optional[str] = ..., conversion_deadline: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., visit_sequence: _Optional[int] = ..., source_event_id: _Optional[str] = ..., decision_id: _Optional[str] = ...) -> None: ...
