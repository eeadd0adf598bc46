import datetime

from cjo.common.v1 import common_pb2 as _common_pb2
from cjo.decisioning.v1 import action_pb2 as _action_pb2
from google.protobuf import struct_pb2 as _struct_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class IneligibilityReason(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    INELIGIBILITY_REASON_UNSPECIFIED: _ClassVar[IneligibilityReason]
    INELIGIBILITY_REASON_ELIGIBILITY_RULE: _ClassVar[IneligibilityReason]
    INELIGIBILITY_REASON_ELIGIBILITY_ERROR: _ClassVar[IneligibilityReason]
    INELIGIBILITY_REASON_NOT_ACTIVE: _ClassVar[IneligibilityReason]
    INELIGIBILITY_REASON_CONTACT_LIMIT: _ClassVar[IneligibilityReason]
    INELIGIBILITY_REASON_BUDGET_EXHAUSTED: _ClassVar[IneligibilityReason]
    INELIGIBILITY_REASON_NO_CONTENT_FOR_CHANNEL: _ClassVar[IneligibilityReason]
    INELIGIBILITY_REASON_ARBITRATION_ERROR: _ClassVar[IneligibilityReason]
    INELIGIBILITY_REASON_ACTION_DELETED: _ClassVar[IneligibilityReason]

class DecisionOutcome(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    DECISION_OUTCOME_UNSPECIFIED: _ClassVar[DecisionOutcome]
    DECISION_OUTCOME_PENDING: _ClassVar[DecisionOutcome]
    DECISION_OUTCOME_EXPOSED: _ClassVar[DecisionOutcome]
    DECISION_OUTCOME_REWARDED: _ClassVar[DecisionOutcome]
    DECISION_OUTCOME_NOT_REWARDED: _ClassVar[DecisionOutcome]
    DECISION_OUTCOME_NO_ACTION: _ClassVar[DecisionOutcome]
INELIGIBILITY_REASON_UNSPECIFIED: IneligibilityReason
INELIGIBILITY_REASON_ELIGIBILITY_RULE: IneligibilityReason
INELIGIBILITY_REASON_ELIGIBILITY_ERROR: IneligibilityReason
INELIGIBILITY_REASON_NOT_ACTIVE: IneligibilityReason
INELIGIBILITY_REASON_CONTACT_LIMIT: IneligibilityReason
INELIGIBILITY_REASON_BUDGET_EXHAUSTED: IneligibilityReason
INELIGIBILITY_REASON_NO_CONTENT_FOR_CHANNEL: IneligibilityReason
INELIGIBILITY_REASON_ARBITRATION_ERROR: IneligibilityReason
INELIGIBILITY_REASON_ACTION_DELETED: IneligibilityReason
DECISION_OUTCOME_UNSPECIFIED: DecisionOutcome
DECISION_OUTCOME_PENDING: DecisionOutcome
DECISION_OUTCOME_EXPOSED: DecisionOutcome
DECISION_OUTCOME_REWARDED: DecisionOutcome
DECISION_OUTCOME_NOT_REWARDED: DecisionOutcome
DECISION_OUTCOME_NO_ACTION: DecisionOutcome

class DecisionContext(_message.Message):
    __slots__ = ("channel", "attributes", "time", "journey_id", "enrollment_id", "node_id")
    CHANNEL_FIELD_NUMBER: _ClassVar[int]
    ATTRIBUTES_FIELD_NUMBER: _ClassVar[int]
    TIME_FIELD_NUMBER: _ClassVar[int]
    JOURNEY_ID_FIELD_NUMBER: _ClassVar[int]
    ENROLLMENT_ID_FIELD_NUMBER: _ClassVar[int]
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    channel: _common_pb2.Channel
    attributes: _struct_pb2.Struct
    time: _timestamp_pb2.Timestamp
    journey_id: str
    enrollment_id: str
    node_id: str
    def __init__(self, channel: _Optional[_Union[_common_pb2.Channel, str]] = ..., attributes: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., journey_id: _Optional[str] = ..., enrollment_id: _Optional[str] = ..., node_id: _Optional[str] = ...) -> None: ...

class RankedAction(_message.Message):
    __slots__ = ("action", "propensity", "score", "pick_probability", "value", "lever", "context_weight", "contents", "mandatory", "transactional", "topic", "control")
    ACTION_FIELD_NUMBER: _ClassVar[int]
    PROPENSITY_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    PICK_PROBABILITY_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    LEVER_FIELD_NUMBER: _ClassVar[int]
    CONTEXT_WEIGHT_FIELD_NUMBER: _ClassVar[int]
    CONTENTS_FIELD_NUMBER: _ClassVar[int]
    MANDATORY_FIELD_NUMBER: _ClassVar[int]
    TRANSACTIONAL_FIELD_NUMBER: _ClassVar[int]
    TOPIC_FIELD_NUMBER: _ClassVar[int]
    CONTROL_FIELD_NUMBER: _ClassVar[int]
    action: str
    propensity: float
    score: float
    pick_probability: float
    value: float
    lever: float
    context_weight: float
    contents: _containers.RepeatedCompositeFieldContainer[_action_pb2.ActionContent]
    mandatory: bool
    transactional: bool
    topic: str
    control: bool
    def __init__(self, action: _Optional[str] = ..., propensity: _Optional[float] = ..., score: _Optional[float] = ..., pick_probability: _Optional[float] = ..., value: _Optional[float] = ..., lever: _Optional[float] = ..., context_weight: _Optional[float] = ..., contents: _Optional[_Iterable[_Union[_action_pb2.ActionContent, _Mapping]]] = ..., mandatory: _Optional[bool] = ..., transactional: _Optional[bool] = ..., topic: _Optional[str] = ..., control: _Optional[bool] = ...) -> None: ...

class IneligibleAction(_message.Message):
    __slots__ = ("action", "reason", "detail")
    ACTION_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    DETAIL_FIELD_NUMBER: _ClassVar[int]
    action: str
    reason: IneligibilityReason
    detail: str
    def __init__(self, action: _Optional[str] = ..., reason: _Optional[_Union[IneligibilityReason, str]] = ..., detail: _Optional[str] = ...) -> None: ...

class Decision(_message.Message):
    __slots__ = ("name", "decision_id", "decision_point", "profile_id", "actions", "ineligible", "decide_time", "outcome", "expose_time", "reward_time", "context")
    NAME_FIELD_NUMBER: _ClassVar[int]
    DECISION_ID_FIELD_NUMBER: _ClassVar[int]
    DECISION_POINT_FIELD_NUMBER: _ClassVar[int]
    PROFILE_ID_FIELD_NUMBER: _ClassVar[int]
    ACTIONS_FIELD_NUMBER: _ClassVar[int]
    INELIGIBLE_FIELD_NUMBER: _ClassVar[int]
    DECIDE_TIME_FIELD_NUMBER: _ClassVar[int]
    OUTCOME_FIELD_NUMBER: _ClassVar[int]
    EXPOSE_TIME_FIELD_NUMBER: _ClassVar[int]
    REWARD_TIME_FIELD_NUMBER: _ClassVar[int]
    CONTEXT_FIELD_NUMBER: _ClassVar[int]
    name: str
    decision_id: str
    decision_point: str
    profile_id: str
    actions: _containers.RepeatedCompositeFieldContainer[RankedAction]
    ineligible: _containers.RepeatedCompositeFieldContainer[IneligibleAction]
    decide_time: _timestamp_pb2.Timestamp
    outcome: DecisionOutcome
    expose_time: _timestamp_pb2.Timestamp
    reward_time: _timestamp_pb2.Timestamp
    context: DecisionContext
    def __init__(self, name: _Optional[str] = ..., decision_id: _Optional[str] = ..., decision_point: _Optional[str] = ..., profile_id: _Optional[str] = ..., actions: _Optional[_Iterable[_Union[RankedAction, _Mapping]]] = ..., ineligible: _Optional[_Iterable[_Union[IneligibleAction, _Mapping]]] = ..., decide_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., outcome: _Optional[_Union[DecisionOutcome, str]] = ..., expose_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., reward_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., context: _Optional[_Union[DecisionContext, _Mapping]] = ...) -> None: ...
