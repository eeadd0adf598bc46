import datetime

from cjo.analytics.v1 import fact_pb2 as _fact_pb2
from cjo.common.v1 import common_pb2 as _common_pb2
from cjo.decisioning.v1 import action_pb2 as _action_pb2
from cjo.decisioning.v1 import decision_pb2 as _decision_pb2
from cjo.decisioning.v1 import decision_point_pb2 as _decision_point_pb2
from cjo.decisioning.v1 import evaluation_pb2 as _evaluation_pb2
from cjo.orchestration.v1 import orchestration_service_pb2 as _orchestration_service_pb2
from google.protobuf import duration_pb2 as _duration_pb2
from google.protobuf import field_mask_pb2 as _field_mask_pb2
from google.protobuf import struct_pb2 as _struct_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.rpc import status_pb2 as _status_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ForwardedStream(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    FORWARDED_STREAM_UNSPECIFIED: _ClassVar[ForwardedStream]
    FORWARDED_STREAM_EVENTS: _ClassVar[ForwardedStream]

class SendTimeSource(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    SEND_TIME_SOURCE_UNSPECIFIED: _ClassVar[SendTimeSource]
    SEND_TIME_SOURCE_PROFILE: _ClassVar[SendTimeSource]
    SEND_TIME_SOURCE_POPULATION: _ClassVar[SendTimeSource]
    SEND_TIME_SOURCE_DEFAULT: _ClassVar[SendTimeSource]
FORWARDED_STREAM_UNSPECIFIED: ForwardedStream
FORWARDED_STREAM_EVENTS: ForwardedStream
SEND_TIME_SOURCE_UNSPECIFIED: SendTimeSource
SEND_TIME_SOURCE_PROFILE: SendTimeSource
SEND_TIME_SOURCE_POPULATION: SendTimeSource
SEND_TIME_SOURCE_DEFAULT: SendTimeSource

class CreateActionRequest(_message.Message):
    __slots__ = ("action", "request_id")
    ACTION_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    action: _action_pb2.Action
    request_id: str
    def __init__(self, action: _Optional[_Union[_action_pb2.Action, _Mapping]] = ..., request_id: _Optional[str] = ...) -> None: ...

class CreateActionResponse(_message.Message):
    __slots__ = ("action",)
    ACTION_FIELD_NUMBER: _ClassVar[int]
    action: _action_pb2.Action
    def __init__(self, action: _Optional[_Union[_action_pb2.Action, _Mapping]] = ...) -> None: ...

class GetActionRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class GetActionResponse(_message.Message):
    __slots__ = ("action",)
    ACTION_FIELD_NUMBER: _ClassVar[int]
    action: _action_pb2.Action
    def __init__(self, action: _Optional[_Union[_action_pb2.Action, _Mapping]] = ...) -> None: ...

class ListActionsRequest(_message.Message):
    __slots__ = ("page_size", "page_token")
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    page_size: int
    page_token: str
    def __init__(self, page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListActionsResponse(_message.Message):
    __slots__ = ("actions", "next_page_token")
    ACTIONS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    actions: _containers.RepeatedCompositeFieldContainer[_action_pb2.Action]
    next_page_token: str
    def __init__(self, actions: _Optional[_Iterable[_Union[_action_pb2.Action, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class UpdateActionRequest(_message.Message):
    __slots__ = ("action", "update_mask", "allow_missing", "request_id")
    ACTION_FIELD_NUMBER: _ClassVar[int]
    UPDATE_MASK_FIELD_NUMBER: _ClassVar[int]
    ALLOW_MISSING_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    action: _action_pb2.Action
    update_mask: _field_mask_pb2.FieldMask
    allow_missing: bool
    request_id: str
    def __init__(self, action: _Optional[_Union[_action_pb2.Action, _Mapping]] = ..., update_mask: _Optional[_Union[_field_mask_pb2.FieldMask, _Mapping]] = ..., allow_missing: _Optional[bool] = ..., request_id: _Optional[str] = ...) -> None: ...

class UpdateActionResponse(_message.Message):
    __slots__ = ("action",)
    ACTION_FIELD_NUMBER: _ClassVar[int]
    action: _action_pb2.Action
    def __init__(self, action: _Optional[_Union[_action_pb2.Action, _Mapping]] = ...) -> None: ...

class DeleteActionRequest(_message.Message):
    __slots__ = ("name", "etag", "request_id")
    NAME_FIELD_NUMBER: _ClassVar[int]
    ETAG_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    name: str
    etag: str
    request_id: str
    def __init__(self, name: _Optional[str] = ..., etag: _Optional[str] = ..., request_id: _Optional[str] = ...) -> None: ...

class DeleteActionResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class CreateDecisionPointRequest(_message.Message):
    __slots__ = ("decision_point", "request_id")
    DECISION_POINT_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    decision_point: _decision_point_pb2.DecisionPoint
    request_id: str
    def __init__(self, decision_point: _Optional[_Union[_decision_point_pb2.DecisionPoint, _Mapping]] = ..., request_id: _Optional[str] = ...) -> None: ...

class CreateDecisionPointResponse(_message.Message):
    __slots__ = ("decision_point",)
    DECISION_POINT_FIELD_NUMBER: _ClassVar[int]
    decision_point: _decision_point_pb2.DecisionPoint
    def __init__(self, decision_point: _Optional[_Union[_decision_point_pb2.DecisionPoint, _Mapping]] = ...) -> None: ...

class GetDecisionPointRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class GetDecisionPointResponse(_message.Message):
    __slots__ = ("decision_point",)
    DECISION_POINT_FIELD_NUMBER: _ClassVar[int]
    decision_point: _decision_point_pb2.DecisionPoint
    def __init__(self, decision_point: _Optional[_Union[_decision_point_pb2.DecisionPoint, _Mapping]] = ...) -> None: ...

class ListDecisionPointsRequest(_message.Message):
    __slots__ = ("page_size", "page_token")
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    page_size: int
    page_token: str
    def __init__(self, page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListDecisionPointsResponse(_message.Message):
    __slots__ = ("decision_points", "next_page_token")
    DECISION_POINTS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    decision_points: _containers.RepeatedCompositeFieldContainer[_decision_point_pb2.DecisionPoint]
    next_page_token: str
    def __init__(self, decision_points: _Optional[_Iterable[_Union[_decision_point_pb2.DecisionPoint, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class UpdateDecisionPointRequest(_message.Message):
    __slots__ = ("decision_point", "update_mask", "allow_missing", "request_id")
    DECISION_POINT_FIELD_NUMBER: _ClassVar[int]
    UPDATE_MASK_FIELD_NUMBER: _ClassVar[int]
    ALLOW_MISSING_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    decision_point: _decision_point_pb2.DecisionPoint
    update_mask: _field_mask_pb2.FieldMask
    allow_missing: bool
    request_id: str
    def __init__(self, decision_point: _Optional[_Union[_decision_point_pb2.DecisionPoint, _Mapping]] = ..., update_mask: _Optional[_Union[_field_mask_pb2.FieldMask, _Mapping]] = ..., allow_missing: _Optional[bool] = ..., request_id: _Optional[str] = ...) -> None: ...

class UpdateDecisionPointResponse(_message.Message):
    __slots__ = ("decision_point",)
    DECISION_POINT_FIELD_NUMBER: _ClassVar[int]
    decision_point: _decision_point_pb2.DecisionPoint
    def __init__(self, decision_point: _Optional[_Union[_decision_point_pb2.DecisionPoint, _Mapping]] = ...) -> None: ...

class DeleteDecisionPointRequest(_message.Message):
    __slots__ = ("name", "etag", "request_id")
    NAME_FIELD_NUMBER: _ClassVar[int]
    ETAG_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    name: str
    etag: str
    request_id: str
    def __init__(self, name: _Optional[str] = ..., etag: _Optional[str] = ..., request_id: _Optional[str] = ...) -> None: ...

class DeleteDecisionPointResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class DecideRequest(_message.Message):
    __slots__ = ("decision_point", "profile_id", "profile", "context", "request_id")
    DECISION_POINT_FIELD_NUMBER: _ClassVar[int]
    PROFILE_ID_FIELD_NUMBER: _ClassVar[int]
    PROFILE_FIELD_NUMBER: _ClassVar[int]
    CONTEXT_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    decision_point: str
    profile_id: str
    profile: _struct_pb2.Struct
    context: _decision_pb2.DecisionContext
    request_id: str
    def __init__(self, decision_point: _Optional[str] = ..., profile_id: _Optional[str] = ..., profile: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., context: _Optional[_Union[_decision_pb2.DecisionContext, _Mapping]] = ..., request_id: _Optional[str] = ...) -> None: ...

class DecideResponse(_message.Message):
    __slots__ = ("decision",)
    DECISION_FIELD_NUMBER: _ClassVar[int]
    decision: _decision_pb2.Decision
    def __init__(self, decision: _Optional[_Union[_decision_pb2.Decision, _Mapping]] = ...) -> None: ...

class DecideItem(_message.Message):
    __slots__ = ("profile_id", "profile", "context", "request_id")
    PROFILE_ID_FIELD_NUMBER: _ClassVar[int]
    PROFILE_FIELD_NUMBER: _ClassVar[int]
    CONTEXT_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    profile_id: str
    profile: _struct_pb2.Struct
    context: _decision_pb2.DecisionContext
    request_id: str
    def __init__(self, profile_id: _Optional[str] = ..., profile: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., context: _Optional[_Union[_decision_pb2.DecisionContext, _Mapping]] = ..., request_id: _Optional[str] = ...) -> None: ...

class BatchDecideRequest(_message.Message):
    __slots__ = ("decision_point", "items", "context")
    DECISION_POINT_FIELD_NUMBER: _ClassVar[int]
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    CONTEXT_FIELD_NUMBER: _ClassVar[int]
    decision_point: str
    items: _containers.RepeatedCompositeFieldContainer[DecideItem]
    context: _decision_pb2.DecisionContext
    def __init__(self, decision_point: _Optional[str] = ..., items: _Optional[_Iterable[_Union[DecideItem, _Mapping]]] = ..., context: _Optional[_Union[_decision_pb2.DecisionContext, _Mapping]] = ...) -> None: ...

class DecideResult(_message.Message):
    __slots__ = ("status", "decision")
    STATUS_FIELD_NUMBER: _ClassVar[int]
    DECISION_FIELD_NUMBER: _ClassVar[int]
    status: _status_pb2.Status
    decision: _decision_pb2.Decision
    def __init__(self, status: _Optional[_Union[_status_pb2.Status, _Mapping]] = ..., decision: _Optional[_Union[_decision_pb2.Decision, _Mapping]] = ...) -> None: ...

class BatchDecideResponse(_message.Message):
    __slots__ = ("results",)
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[DecideResult]
    def __init__(self, results: _Optional[_Iterable[_Union[DecideResult, _Mapping]]] = ...) -> None: ...

class GetDecisionRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class GetDecisionResponse(_message.Message):
    __slots__ = ("decision",)
    DECISION_FIELD_NUMBER: _ClassVar[int]
    decision: _decision_pb2.Decision
    def __init__(self, decision: _Optional[_Union[_decision_pb2.Decision, _Mapping]] = ...) -> None: ...

class ListDecisionsRequest(_message.Message):
    __slots__ = ("profile_id", "page_size", "page_token")
    PROFILE_ID_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    profile_id: str
    page_size: int
    page_token: str
    def __init__(self, profile_id: _Optional[str] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListDecisionsResponse(_message.Message):
    __slots__ = ("decisions", "next_page_token")
    DECISIONS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    decisions: _containers.RepeatedCompositeFieldContainer[_decision_pb2.Decision]
    next_page_token: str
    def __init__(self, decisions: _Optional[_Iterable[_Union[_decision_pb2.Decision, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class Exposure(_message.Message):
    __slots__ = ("decision_id", "expose_time")
    DECISION_ID_FIELD_NUMBER: _ClassVar[int]
    EXPOSE_TIME_FIELD_NUMBER: _ClassVar[int]
    decision_id: str
    expose_time: _timestamp_pb2.Timestamp
    def __init__(self, decision_id: _Optional[str] = ..., expose_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class RecordExposuresRequest(_message.Message):
    __slots__ = ("exposures",)
    EXPOSURES_FIELD_NUMBER: _ClassVar[int]
    exposures: _containers.RepeatedCompositeFieldContainer[Exposure]
    def __init__(self, exposures: _Optional[_Iterable[_Union[Exposure, _Mapping]]] = ...) -> None: ...

class RecordExposureResult(_message.Message):
    __slots__ = ("status", "duplicate")
    STATUS_FIELD_NUMBER: _ClassVar[int]
    DUPLICATE_FIELD_NUMBER: _ClassVar[int]
    status: _status_pb2.Status
    duplicate: bool
    def __init__(self, status: _Optional[_Union[_status_pb2.Status, _Mapping]] = ..., duplicate: _Optional[bool] = ...) -> None: ...

class RecordExposuresResponse(_message.Message):
    __slots__ = ("results",)
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[RecordExposureResult]
    def __init__(self, results: _Optional[_Iterable[_Union[RecordExposureResult, _Mapping]]] = ...) -> None: ...

class RecordEventsRequest(_message.Message):
    __slots__ = ("events",)
    EVENTS_FIELD_NUMBER: _ClassVar[int]
    events: _containers.RepeatedCompositeFieldContainer[_orchestration_service_pb2.ForwardedEvent]
    def __init__(self, events: _Optional[_Iterable[_Union[_orchestration_service_pb2.ForwardedEvent, _Mapping]]] = ...) -> None: ...

class RecordEventResult(_message.Message):
    __slots__ = ("status", "duplicate")
    STATUS_FIELD_NUMBER: _ClassVar[int]
    DUPLICATE_FIELD_NUMBER: _ClassVar[int]
    status: _status_pb2.Status
    duplicate: bool
    def __init__(self, status: _Optional[_Union[_status_pb2.Status, _Mapping]] = ..., duplicate: _Optional[bool] = ...) -> None: ...

class RecordEventsResponse(_message.Message):
    __slots__ = ("results",)
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[RecordEventResult]
    def __init__(self, results: _Optional[_Iterable[_Union[RecordEventResult, _Mapping]]] = ...) -> None: ...

class RecordMessageFactsRequest(_message.Message):
    __slots__ = ("facts",)
    FACTS_FIELD_NUMBER: _ClassVar[int]
    facts: _containers.RepeatedCompositeFieldContainer[_fact_pb2.Fact]
    def __init__(self, facts: _Optional[_Iterable[_Union[_fact_pb2.Fact, _Mapping]]] = ...) -> None: ...

class RecordMessageFactResult(_message.Message):
    __slots__ = ("status", "duplicate")
    STATUS_FIELD_NUMBER: _ClassVar[int]
    DUPLICATE_FIELD_NUMBER: _ClassVar[int]
    status: _status_pb2.Status
    duplicate: bool
    def __init__(self, status: _Optional[_Union[_status_pb2.Status, _Mapping]] = ..., duplicate: _Optional[bool] = ...) -> None: ...

class RecordMessageFactsResponse(_message.Message):
    __slots__ = ("results",)
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[RecordMessageFactResult]
    def __init__(self, results: _Optional[_Iterable[_Union[RecordMessageFactResult, _Mapping]]] = ...) -> None: ...

class WorkspaceWatermark(_message.Message):
    __slots__ = ("workspace_id", "delivered_before")
    WORKSPACE_ID_FIELD_NUMBER: _ClassVar[int]
    DELIVERED_BEFORE_FIELD_NUMBER: _ClassVar[int]
    workspace_id: str
    delivered_before: _timestamp_pb2.Timestamp
    def __init__(self, workspace_id: _Optional[str] = ..., delivered_before: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class RecordForwardingWatermarkRequest(_message.Message):
    __slots__ = ("stream", "delivered_before", "behind_workspaces")
    STREAM_FIELD_NUMBER: _ClassVar[int]
    DELIVERED_BEFORE_FIELD_NUMBER: _ClassVar[int]
    BEHIND_WORKSPACES_FIELD_NUMBER: _ClassVar[int]
    stream: ForwardedStream
    delivered_before: _timestamp_pb2.Timestamp
    behind_workspaces: _containers.RepeatedCompositeFieldContainer[WorkspaceWatermark]
    def __init__(self, stream: _Optional[_Union[ForwardedStream, str]] = ..., delivered_before: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., behind_workspaces: _Optional[_Iterable[_Union[WorkspaceWatermark, _Mapping]]] = ...) -> None: ...

class RecordForwardingWatermarkResponse(_message.Message):
    __slots__ = ("delivered_before",)
    DELIVERED_BEFORE_FIELD_NUMBER: _ClassVar[int]
    delivered_before: _timestamp_pb2.Timestamp
    def __init__(self, delivered_before: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class GetSendTimesRequest(_message.Message):
    __slots__ = ("profile_ids", "channel", "earliest_time", "max_delay")
    PROFILE_IDS_FIELD_NUMBER: _ClassVar[int]
    CHANNEL_FIELD_NUMBER: _ClassVar[int]
    EARLIEST_TIME_FIELD_NUMBER: _ClassVar[int]
    MAX_DELAY_FIELD_NUMBER: _ClassVar[int]
    profile_ids: _containers.RepeatedScalarFieldContainer[str]
    channel: _common_pb2.Channel
    earliest_time: _timestamp_pb2.Timestamp
    max_delay: _duration_pb2.Duration
    def __init__(self, profile_ids: _Optional[_Iterable[str]] = ..., channel: _Optional[_Union[_common_pb2.Channel, str]] = ..., earliest_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., max_delay: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ...) -> None: ...

class SendTime(_message.Message):
    __slots__ = ("profile_id", "send_time", "source", "observations")
    PROFILE_ID_FIELD_NUMBER: _ClassVar[int]
    SEND_TIME_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    OBSERVATIONS_FIELD_NUMBER: _ClassVar[int]
    profile_id: str
    send_time: _timestamp_pb2.Timestamp
    source: SendTimeSource
    observations: int
    def __init__(self, profile_id: _Optional[str] = ..., send_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., source: _Optional[_Union[SendTimeSource, str]] = ..., observations: _Optional[int] = ...) -> None: ...

class GetSendTimesResponse(_message.Message):
    __slots__ = ("send_times",)
    SEND_TIMES_FIELD_NUMBER: _ClassVar[int]
    send_times: _containers.RepeatedCompositeFieldContainer[SendTime]
    def __init__(self, send_times: _Optional[_Iterable[_Union[SendTime, _Mapping]]] = ...) -> None: ...

class EvaluatePolicyRequest(_message.Message):
    __slots__ = ("decision_point", "policy", "start_time", "end_time", "confidence_level")
    DECISION_POINT_FIELD_NUMBER: _ClassVar[int]
    POLICY_FIELD_NUMBER: _ClassVar[int]
    START_TIME_FIELD_NUMBER: _ClassVar[int]
    END_TIME_FIELD_NUMBER: _ClassVar[int]
    CONFIDENCE_LEVEL_FIELD_NUMBER: _ClassVar[int]
    decision_point: str
    policy: _evaluation_pb2.TargetPolicy
    start_time: _timestamp_pb2.Timestamp
    end_time: _timestamp_pb2.Timestamp
    confidence_level: float
    def __init__(self, decision_point: _Optional[str] = ..., policy: _Optional[_Union[_evaluation_pb2.TargetPolicy, _Mapping]] = ..., start_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., end_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., confidence_level: _Optional[float] = ...) -> None: ...

class EvaluatePolicyResponse(_message.Message):
    __slots__ = ("decisions", "uncovered", "logged", "ips", "snips", "doubly_robust", "effective_sample_size", "pending", "uncovered_reasons", "expected_effective_sample_size", "max_weight", "unsupported_share", "warnings", "reliable")
    class UncoveredReasonsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    DECISIONS_FIELD_NUMBER: _ClassVar[int]
    UNCOVERED_FIELD_NUMBER: _ClassVar[int]
    LOGGED_FIELD_NUMBER: _ClassVar[int]
    IPS_FIELD_NUMBER: _ClassVar[int]
    SNIPS_FIELD_NUMBER: _ClassVar[int]
    DOUBLY_ROBUST_FIELD_NUMBER: _ClassVar[int]
    EFFECTIVE_SAMPLE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PENDING_FIELD_NUMBER: _ClassVar[int]
    UNCOVERED_REASONS_FIELD_NUMBER: _ClassVar[int]
    EXPECTED_EFFECTIVE_SAMPLE_SIZE_FIELD_NUMBER: _ClassVar[int]
    MAX_WEIGHT_FIELD_NUMBER: _ClassVar[int]
    UNSUPPORTED_SHARE_FIELD_NUMBER: _ClassVar[int]
    WARNINGS_FIELD_NUMBER: _ClassVar[int]
    RELIABLE_FIELD_NUMBER: _ClassVar[int]
    decisions: int
    uncovered: int
    logged: _evaluation_pb2.Estimate
    ips: _evaluation_pb2.Estimate
    snips: _evaluation_pb2.Estimate
    doubly_robust: _evaluation_pb2.Estimate
    effective_sample_size: float
    pending: int
    uncovered_reasons: _containers.ScalarMap[str, int]
    expected_effective_sample_size: float
    max_weight: float
    unsupported_share: float
    warnings: _containers.RepeatedScalarFieldContainer[str]
    reliable: bool
    def __init__(self, decisions: _Optional[int] = ..., uncovered: _Optional[int] = ..., logged: _Optional[_Union[_evaluation_pb2.Estimate, _Mapping]] = ..., ips: _Optional[_Union[_evaluation_pb2.Estimate, _Mapping]] = ..., snips: _Optional[_Union[_evaluation_pb2.Estimate, _Mapping]] = ..., doubly_robust: _Optional[_Union[_evaluation_pb2.Estimate, _Mapping]] = ..., effective_sample_size: _Optional[float] = ..., pending: _Optional[int] = ..., uncovered_reasons: _Optional[_Mapping[str, int]] = ..., expected_effective_sample_size: _Optional[float] = ..., max_weight: _Optional[float] = ..., unsupported_share: _Optional[float] = ..., warnings: _Optional[_Iterable[str]] = ..., reliable: _Optional[bool] = ...) -> None: ...

class GetDecisionReportRequest(_message.Message):
    __slots__ = ("decision_point", "start_time", "end_time", "bucket")
    DECISION_POINT_FIELD_NUMBER: _ClassVar[int]
    START_TIME_FIELD_NUMBER: _ClassVar[int]
    END_TIME_FIELD_NUMBER: _ClassVar[int]
    BUCKET_FIELD_NUMBER: _ClassVar[int]
    decision_point: str
    start_time: _timestamp_pb2.Timestamp
    end_time: _timestamp_pb2.Timestamp
    bucket: _duration_pb2.Duration
    def __init__(self, decision_point: _Optional[str] = ..., start_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., end_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., bucket: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ...) -> None: ...

class ActionReport(_message.Message):
    __slots__ = ("action", "decisions", "exposures", "rewards", "failures", "share", "posterior_mean", "posterior_lower", "posterior_upper", "mean_propensity", "pending")
    ACTION_FIELD_NUMBER: _ClassVar[int]
    DECISIONS_FIELD_NUMBER: _ClassVar[int]
    EXPOSURES_FIELD_NUMBER: _ClassVar[int]
    REWARDS_FIELD_NUMBER: _ClassVar[int]
    FAILURES_FIELD_NUMBER: _ClassVar[int]
    SHARE_FIELD_NUMBER: _ClassVar[int]
    POSTERIOR_MEAN_FIELD_NUMBER: _ClassVar[int]
    POSTERIOR_LOWER_FIELD_NUMBER: _ClassVar[int]
    POSTERIOR_UPPER_FIELD_NUMBER: _ClassVar[int]
    MEAN_PROPENSITY_FIELD_NUMBER: _ClassVar[int]
    PENDING_FIELD_NUMBER: _ClassVar[int]
    action: str
    decisions: int
    exposures: int
    rewards: int
    failures: int
    share: float
    posterior_mean: float
    posterior_lower: float
    posterior_upper: float
    mean_propensity: float
    pending: int
    def __init__(self, action: _Optional[str] = ..., decisions: _Optional[int] = ..., exposures: _Optional[int] = ..., rewards: _Optional[int] = ..., failures: _Optional[int] = ..., share: _Optional[float] = ..., posterior_mean: _Optional[float] = ..., posterior_lower: _Optional[float] = ..., posterior_upper: _Optional[float] = ..., mean_propensity: _Optional[float] = ..., pending: _Optional[int] = ...) -> None: ...

class ActionShare(_message.Message):
    __slots__ = ("action", "decisions", "share")
    ACTION_FIELD_NUMBER: _ClassVar[int]
    DECISIONS_FIELD_NUMBER: _ClassVar[int]
    SHARE_FIELD_NUMBER: _ClassVar[int]
    action: str
    decisions: int
    share: float
    def __init__(self, action: _Optional[str] = ..., decisions: _Optional[int] = ..., share: _Optional[float] = ...) -> None: ...

class TrafficBucket(_message.Message):
    __slots__ = ("start_time", "decisions", "actions")
    START_TIME_FIELD_NUMBER: _ClassVar[int]
    DECISIONS_FIELD_NUMBER: _ClassVar[int]
    ACTIONS_FIELD_NUMBER: _ClassVar[int]
    start_time: _timestamp_pb2.Timestamp
    decisions: int
    actions: _containers.RepeatedCompositeFieldContainer[ActionShare]
    def __init__(self, start_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., decisions: _Optional[int] = ..., actions: _Optional[_Iterable[_Union[ActionShare, _Mapping]]] = ...) -> None: ...

class GetDecisionReportResponse(_message.Message):
    __slots__ = ("decisions", "no_action", "actions", "buckets", "rewards_delivered_before")
    DECISIONS_FIELD_NUMBER: _ClassVar[int]
    NO_ACTION_FIELD_NUMBER: _ClassVar[int]
    ACTIONS_FIELD_NUMBER: _ClassVar[int]
    BUCKETS_FIELD_NUMBER: _ClassVar[int]
    REWARDS_DELIVERED_BEFORE_FIELD_NUMBER: _ClassVar[int]
    decisions: int
    no_action: int
    actions: _containers.RepeatedCompositeFieldContainer[ActionReport]
    buckets: _containers.RepeatedCompositeFieldContainer[TrafficBucket]
    rewards_delivered_before: _timestamp_pb2.Timestamp
    def __init__(self, decisions: _Optional[int] = ..., no_action: _Optional[int] = ..., actions: _Optional[_Iterable[_Union[ActionReport, _Mapping]]] = ..., buckets: _Optional[_Iterable[_Union[TrafficBucket, _Mapping]]] = ..., rewards_delivered_before: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...
