import datetime

from cjo.common.v1 import common_pb2 as _common_pb2
from google.protobuf import duration_pb2 as _duration_pb2
from google.protobuf import struct_pb2 as _struct_pb2
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
    JOURNEY_STATE_PAUSED: _ClassVar[JourneyState]

class ReEntryPolicy(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    RE_ENTRY_POLICY_UNSPECIFIED: _ClassVar[ReEntryPolicy]
    RE_ENTRY_POLICY_NEVER: _ClassVar[ReEntryPolicy]
    RE_ENTRY_POLICY_AFTER_COOLDOWN: _ClassVar[ReEntryPolicy]
    RE_ENTRY_POLICY_ALWAYS: _ClassVar[ReEntryPolicy]

class FailurePolicy(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    FAILURE_POLICY_UNSPECIFIED: _ClassVar[FailurePolicy]
    FAILURE_POLICY_EXIT: _ClassVar[FailurePolicy]
    FAILURE_POLICY_CONTINUE: _ClassVar[FailurePolicy]
JOURNEY_STATE_UNSPECIFIED: JourneyState
JOURNEY_STATE_DRAFT: JourneyState
JOURNEY_STATE_ACTIVE: JourneyState
JOURNEY_STATE_ARCHIVED: JourneyState
JOURNEY_STATE_PAUSED: JourneyState
RE_ENTRY_POLICY_UNSPECIFIED: ReEntryPolicy
RE_ENTRY_POLICY_NEVER: ReEntryPolicy
RE_ENTRY_POLICY_AFTER_COOLDOWN: ReEntryPolicy
RE_ENTRY_POLICY_ALWAYS: ReEntryPolicy
FAILURE_POLICY_UNSPECIFIED: FailurePolicy
FAILURE_POLICY_EXIT: FailurePolicy
FAILURE_POLICY_CONTINUE: FailurePolicy

class EventTrigger(_message.Message):
    __slots__ = ("event_name", "filter")
    EVENT_NAME_FIELD_NUMBER: _ClassVar[int]
    FILTER_FIELD_NUMBER: _ClassVar[int]
    event_name: str
    filter: str
    def __init__(self, event_name: _Optional[str] = ..., filter: _Optional[str] = ...) -> None: ...

class SegmentTrigger(_message.Message):
    __slots__ = ("segment_id",)
    SEGMENT_ID_FIELD_NUMBER: _ClassVar[int]
    segment_id: str
    def __init__(self, segment_id: _Optional[str] = ...) -> None: ...

class ApiTrigger(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ScheduledTrigger(_message.Message):
    __slots__ = ("segment_id", "at", "cron", "time_zone", "start_time", "end_time")
    SEGMENT_ID_FIELD_NUMBER: _ClassVar[int]
    AT_FIELD_NUMBER: _ClassVar[int]
    CRON_FIELD_NUMBER: _ClassVar[int]
    TIME_ZONE_FIELD_NUMBER: _ClassVar[int]
    START_TIME_FIELD_NUMBER: _ClassVar[int]
    END_TIME_FIELD_NUMBER: _ClassVar[int]
    segment_id: str
    at: _timestamp_pb2.Timestamp
    cron: str
    time_zone: str
    start_time: _timestamp_pb2.Timestamp
    end_time: _timestamp_pb2.Timestamp
    def __init__(self, segment_id: _Optional[str] = ..., at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., cron: _Optional[str] = ..., time_zone: _Optional[str] = ..., start_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., end_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class Goal(_message.Message):
    __slots__ = ("event_name", "filter", "window", "exit_on_goal")
    EVENT_NAME_FIELD_NUMBER: _ClassVar[int]
    FILTER_FIELD_NUMBER: _ClassVar[int]
    WINDOW_FIELD_NUMBER: _ClassVar[int]
    EXIT_ON_GOAL_FIELD_NUMBER: _ClassVar[int]
    event_name: str
    filter: str
    window: _duration_pb2.Duration
    exit_on_goal: bool
    def __init__(self, event_name: _Optional[str] = ..., filter: _Optional[str] = ..., window: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., exit_on_goal: _Optional[bool] = ...) -> None: ...

class ExitCriterion(_message.Message):
    __slots__ = ("event_name", "filter")
    EVENT_NAME_FIELD_NUMBER: _ClassVar[int]
    FILTER_FIELD_NUMBER: _ClassVar[int]
    event_name: str
    filter: str
    def __init__(self, event_name: _Optional[str] = ..., filter: _Optional[str] = ...) -> None: ...

class SendNode(_message.Message):
    __slots__ = ("content_key", "channel", "next_node_id", "content_version", "channel_preference", "on_failure", "topic", "transactional")
    CONTENT_KEY_FIELD_NUMBER: _ClassVar[int]
    CHANNEL_FIELD_NUMBER: _ClassVar[int]
    NEXT_NODE_ID_FIELD_NUMBER: _ClassVar[int]
    CONTENT_VERSION_FIELD_NUMBER: _ClassVar[int]
    CHANNEL_PREFERENCE_FIELD_NUMBER: _ClassVar[int]
    ON_FAILURE_FIELD_NUMBER: _ClassVar[int]
    TOPIC_FIELD_NUMBER: _ClassVar[int]
    TRANSACTIONAL_FIELD_NUMBER: _ClassVar[int]
    content_key: str
    channel: _common_pb2.Channel
    next_node_id: str
    content_version: int
    channel_preference: _containers.RepeatedScalarFieldContainer[_common_pb2.Channel]
    on_failure: FailurePolicy
    topic: str
    transactional: bool
    def __init__(self, content_key: _Optional[str] = ..., channel: _Optional[_Union[_common_pb2.Channel, str]] = ..., next_node_id: _Optional[str] = ..., content_version: _Optional[int] = ..., channel_preference: _Optional[_Iterable[_Union[_common_pb2.Channel, str]]] = ..., on_failure: _Optional[_Union[FailurePolicy, str]] = ..., topic: _Optional[str] = ..., transactional: _Optional[bool] = ...) -> None: ...

class EventWait(_message.Message):
    __slots__ = ("event_name", "filter", "timeout", "event_next_node_id", "timeout_next_node_id", "any_message")
    EVENT_NAME_FIELD_NUMBER: _ClassVar[int]
    FILTER_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_FIELD_NUMBER: _ClassVar[int]
    EVENT_NEXT_NODE_ID_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_NEXT_NODE_ID_FIELD_NUMBER: _ClassVar[int]
    ANY_MESSAGE_FIELD_NUMBER: _ClassVar[int]
    event_name: str
    filter: str
    timeout: _duration_pb2.Duration
    event_next_node_id: str
    timeout_next_node_id: str
    any_message: bool
    def __init__(self, event_name: _Optional[str] = ..., filter: _Optional[str] = ..., timeout: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., event_next_node_id: _Optional[str] = ..., timeout_next_node_id: _Optional[str] = ..., any_message: _Optional[bool] = ...) -> None: ...

class LocalTimeWait(_message.Message):
    __slots__ = ("hour", "minute", "weekdays", "default_time_zone")
    HOUR_FIELD_NUMBER: _ClassVar[int]
    MINUTE_FIELD_NUMBER: _ClassVar[int]
    WEEKDAYS_FIELD_NUMBER: _ClassVar[int]
    DEFAULT_TIME_ZONE_FIELD_NUMBER: _ClassVar[int]
    hour: int
    minute: int
    weekdays: _containers.RepeatedScalarFieldContainer[int]
    default_time_zone: str
    def __init__(self, hour: _Optional[int] = ..., minute: _Optional[int] = ..., weekdays: _Optional[_Iterable[int]] = ..., default_time_zone: _Optional[str] = ...) -> None: ...

class WaitNode(_message.Message):
    __slots__ = ("duration", "local_time", "event", "best_time", "next_node_id")
    DURATION_FIELD_NUMBER: _ClassVar[int]
    LOCAL_TIME_FIELD_NUMBER: _ClassVar[int]
    EVENT_FIELD_NUMBER: _ClassVar[int]
    BEST_TIME_FIELD_NUMBER: _ClassVar[int]
    NEXT_NODE_ID_FIELD_NUMBER: _ClassVar[int]
    duration: _duration_pb2.Duration
    local_time: LocalTimeWait
    event: EventWait
    best_time: BestTimeWait
    next_node_id: str
    def __init__(self, duration: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., local_time: _Optional[_Union[LocalTimeWait, _Mapping]] = ..., event: _Optional[_Union[EventWait, _Mapping]] = ..., best_time: _Optional[_Union[BestTimeWait, _Mapping]] = ..., next_node_id: _Optional[str] = ...) -> None: ...

class BranchCondition(_message.Message):
    __slots__ = ("condition", "next_node_id")
    CONDITION_FIELD_NUMBER: _ClassVar[int]
    NEXT_NODE_ID_FIELD_NUMBER: _ClassVar[int]
    condition: str
    next_node_id: str
    def __init__(self, condition: _Optional[str] = ..., next_node_id: _Optional[str] = ...) -> None: ...

class BranchNode(_message.Message):
    __slots__ = ("conditions", "else_next_node_id")
    CONDITIONS_FIELD_NUMBER: _ClassVar[int]
    ELSE_NEXT_NODE_ID_FIELD_NUMBER: _ClassVar[int]
    conditions: _containers.RepeatedCompositeFieldContainer[BranchCondition]
    else_next_node_id: str
    def __init__(self, conditions: _Optional[_Iterable[_Union[BranchCondition, _Mapping]]] = ..., else_next_node_id: _Optional[str] = ...) -> None: ...

class SplitArm(_message.Message):
    __slots__ = ("name", "percent", "next_node_id", "control")
    NAME_FIELD_NUMBER: _ClassVar[int]
    PERCENT_FIELD_NUMBER: _ClassVar[int]
    NEXT_NODE_ID_FIELD_NUMBER: _ClassVar[int]
    CONTROL_FIELD_NUMBER: _ClassVar[int]
    name: str
    percent: int
    next_node_id: str
    control: bool
    def __init__(self, name: _Optional[str] = ..., percent: _Optional[int] = ..., next_node_id: _Optional[str] = ..., control: _Optional[bool] = ...) -> None: ...

class SplitNode(_message.Message):
    __slots__ = ("arms", "optimize", "min_control_percent")
    ARMS_FIELD_NUMBER: _ClassVar[int]
    OPTIMIZE_FIELD_NUMBER: _ClassVar[int]
    MIN_CONTROL_PERCENT_FIELD_NUMBER: _ClassVar[int]
    arms: _containers.RepeatedCompositeFieldContainer[SplitArm]
    optimize: bool
    min_control_percent: int
    def __init__(self, arms: _Optional[_Iterable[_Union[SplitArm, _Mapping]]] = ..., optimize: _Optional[bool] = ..., min_control_percent: _Optional[int] = ...) -> None: ...

class DecideNode(_message.Message):
    __slots__ = ("decision_point", "channel", "next_node_id", "no_action_next_node_id", "on_failure")
    DECISION_POINT_FIELD_NUMBER: _ClassVar[int]
    CHANNEL_FIELD_NUMBER: _ClassVar[int]
    NEXT_NODE_ID_FIELD_NUMBER: _ClassVar[int]
    NO_ACTION_NEXT_NODE_ID_FIELD_NUMBER: _ClassVar[int]
    ON_FAILURE_FIELD_NUMBER: _ClassVar[int]
    decision_point: str
    channel: _common_pb2.Channel
    next_node_id: str
    no_action_next_node_id: str
    on_failure: FailurePolicy
    def __init__(self, decision_point: _Optional[str] = ..., channel: _Optional[_Union[_common_pb2.Channel, str]] = ..., next_node_id: _Optional[str] = ..., no_action_next_node_id: _Optional[str] = ..., on_failure: _Optional[_Union[FailurePolicy, str]] = ...) -> None: ...

class BestTimeWait(_message.Message):
    __slots__ = ("channel", "max_delay")
    CHANNEL_FIELD_NUMBER: _ClassVar[int]
    MAX_DELAY_FIELD_NUMBER: _ClassVar[int]
    channel: _common_pb2.Channel
    max_delay: _duration_pb2.Duration
    def __init__(self, channel: _Optional[_Union[_common_pb2.Channel, str]] = ..., max_delay: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ...) -> None: ...

class UpdateProfileNode(_message.Message):
    __slots__ = ("traits", "next_node_id")
    TRAITS_FIELD_NUMBER: _ClassVar[int]
    NEXT_NODE_ID_FIELD_NUMBER: _ClassVar[int]
    traits: _struct_pb2.Struct
    next_node_id: str
    def __init__(self, traits: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., next_node_id: _Optional[str] = ...) -> None: ...

class ExitNode(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class Node(_message.Message):
    __slots__ = ("id", "send", "exit", "wait", "branch", "split", "update_profile", "decide")
    ID_FIELD_NUMBER: _ClassVar[int]
    SEND_FIELD_NUMBER: _ClassVar[int]
    EXIT_FIELD_NUMBER: _ClassVar[int]
    WAIT_FIELD_NUMBER: _ClassVar[int]
    BRANCH_FIELD_NUMBER: _ClassVar[int]
    SPLIT_FIELD_NUMBER: _ClassVar[int]
    UPDATE_PROFILE_FIELD_NUMBER: _ClassVar[int]
    DECIDE_FIELD_NUMBER: _ClassVar[int]
    id: str
    send: SendNode
    exit: ExitNode
    wait: WaitNode
    branch: BranchNode
    split: SplitNode
    update_profile: UpdateProfileNode
    decide: DecideNode
    def __init__(self, id: _Optional[str] = ..., send: _Optional[_Union[SendNode, _Mapping]] = ..., exit: _Optional[_Union[ExitNode, _Mapping]] = ..., wait: _Optional[_Union[WaitNode, _Mapping]] = ..., branch: _Optional[_Union[BranchNode, _Mapping]] = ..., split: _Optional[_Union[SplitNode, _Mapping]] = ..., update_profile: _Optional[_Union[UpdateProfileNode, _Mapping]] = ..., decide: _Optional[_Union[DecideNode, _Mapping]] = ...) -> None: ...

class Journey(_message.Message):
    __slots__ = ("name", "journey_id", "display_name", "state", "event_trigger", "segment_trigger", "api_trigger", "scheduled_trigger", "nodes", "entry_node_id", "published_version", "etag", "create_time", "update_time", "re_entry", "re_entry_cooldown", "goal", "exit_criteria", "error_count", "last_error", "last_error_time", "unpublished_changes")
    NAME_FIELD_NUMBER: _ClassVar[int]
    JOURNEY_ID_FIELD_NUMBER: _ClassVar[int]
    DISPLAY_NAME_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    EVENT_TRIGGER_FIELD_NUMBER: _ClassVar[int]
    SEGMENT_TRIGGER_FIELD_NUMBER: _ClassVar[int]
    API_TRIGGER_FIELD_NUMBER: _ClassVar[int]
    SCHEDULED_TRIGGER_FIELD_NUMBER: _ClassVar[int]
    NODES_FIELD_NUMBER: _ClassVar[int]
    ENTRY_NODE_ID_FIELD_NUMBER: _ClassVar[int]
    PUBLISHED_VERSION_FIELD_NUMBER: _ClassVar[int]
    ETAG_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    UPDATE_TIME_FIELD_NUMBER: _ClassVar[int]
    RE_ENTRY_FIELD_NUMBER: _ClassVar[int]
    RE_ENTRY_COOLDOWN_FIELD_NUMBER: _ClassVar[int]
    GOAL_FIELD_NUMBER: _ClassVar[int]
    EXIT_CRITERIA_FIELD_NUMBER: _ClassVar[int]
    ERROR_COUNT_FIELD_NUMBER: _ClassVar[int]
    LAST_ERROR_FIELD_NUMBER: _ClassVar[int]
    LAST_ERROR_TIME_FIELD_NUMBER: _ClassVar[int]
    UNPUBLISHED_CHANGES_FIELD_NUMBER: _ClassVar[int]
    name: str
    journey_id: str
    display_name: str
    state: JourneyState
    event_trigger: EventTrigger
    segment_trigger: SegmentTrigger
    api_trigger: ApiTrigger
    scheduled_trigger: ScheduledTrigger
    nodes: _containers.RepeatedCompositeFieldContainer[Node]
    entry_node_id: str
    published_version: int
    etag: str
    create_time: _timestamp_pb2.Timestamp
    update_time: _timestamp_pb2.Timestamp
    re_entry: ReEntryPolicy
    re_entry_cooldown: _duration_pb2.Duration
    goal: Goal
    exit_criteria: _containers.RepeatedCompositeFieldContainer[ExitCriterion]
    error_count: int
    last_error: str
    last_error_time: _timestamp_pb2.Timestamp
    unpublished_changes: bool
    def __init__(self, name: _Optional[str] = ..., journey_id: _Optional[str] = ..., display_name: _Optional[str] = ..., state: _Optional[_Union[JourneyState, str]] = ..., event_trigger: _Optional[_Union[EventTrigger, _Mapping]] = ..., segment_trigger: _Optional[_Union[SegmentTrigger, _Mapping]] = ..., api_trigger: _Optional[_Union[ApiTrigger, _Mapping]] = ..., scheduled_trigger: _Optional[_Union[ScheduledTrigger, _Mapping]] = ..., nodes: _Optional[_Iterable[_Union[Node, _Mapping]]] = ..., entry_node_id: _Optional[str] = ..., published_version: _Optional[int] = ..., etag: _Optional[str] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., update_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., re_entry: _Optional[_Union[ReEntryPolicy, str]] = ..., re_entry_cooldown: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., goal: _Optional[_Union[Goal, _Mapping]] = ..., exit_criteria: _Optional[_Iterable[_Union[ExitCriterion, _Mapping]]] = ..., error_count: _Optional[int] = ..., last_error: _Optional[str] = ..., last_error_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., unpublished_changes: _Optional[bool] = ...) -> None: ...
