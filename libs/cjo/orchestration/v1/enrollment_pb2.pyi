import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class EnrollmentState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ENROLLMENT_STATE_UNSPECIFIED: _ClassVar[EnrollmentState]
    ENROLLMENT_STATE_ACTIVE: _ClassVar[EnrollmentState]
    ENROLLMENT_STATE_COMPLETED: _ClassVar[EnrollmentState]
    ENROLLMENT_STATE_FAILED: _ClassVar[EnrollmentState]
    ENROLLMENT_STATE_EXITED: _ClassVar[EnrollmentState]

class StepOutcome(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    STEP_OUTCOME_UNSPECIFIED: _ClassVar[StepOutcome]
    STEP_OUTCOME_SUCCEEDED: _ClassVar[StepOutcome]
    STEP_OUTCOME_FAILED: _ClassVar[StepOutcome]
    STEP_OUTCOME_WAITING: _ClassVar[StepOutcome]
ENROLLMENT_STATE_UNSPECIFIED: EnrollmentState
ENROLLMENT_STATE_ACTIVE: EnrollmentState
ENROLLMENT_STATE_COMPLETED: EnrollmentState
ENROLLMENT_STATE_FAILED: EnrollmentState
ENROLLMENT_STATE_EXITED: EnrollmentState
STEP_OUTCOME_UNSPECIFIED: StepOutcome
STEP_OUTCOME_SUCCEEDED: StepOutcome
STEP_OUTCOME_FAILED: StepOutcome
STEP_OUTCOME_WAITING: StepOutcome

class Step(_message.Message):
    __slots__ = ("node_id", "visit", "outcome", "detail", "time")
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    VISIT_FIELD_NUMBER: _ClassVar[int]
    OUTCOME_FIELD_NUMBER: _ClassVar[int]
    DETAIL_FIELD_NUMBER: _ClassVar[int]
    TIME_FIELD_NUMBER: _ClassVar[int]
    node_id: str
    visit: int
    outcome: StepOutcome
    detail: str
    time: _timestamp_pb2.Timestamp
    def __init__(self, node_id: _Optional[str] = ..., visit: _Optional[int] = ..., outcome: _Optional[_Union[StepOutcome, str]] = ..., detail: _Optional[str] = ..., time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class Enrollment(_message.Message):
    __slots__ = ("name", "enrollment_id", "journey_id", "journey_version", "profile_id", "state", "current_node_id", "steps", "create_time", "update_time", "exit_reason", "goal_time", "due_time", "last_error")
    NAME_FIELD_NUMBER: _ClassVar[int]
    ENROLLMENT_ID_FIELD_NUMBER: _ClassVar[int]
    JOURNEY_ID_FIELD_NUMBER: _ClassVar[int]
    JOURNEY_VERSION_FIELD_NUMBER: _ClassVar[int]
    PROFILE_ID_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    CURRENT_NODE_ID_FIELD_NUMBER: _ClassVar[int]
    STEPS_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    UPDATE_TIME_FIELD_NUMBER: _ClassVar[int]
    EXIT_REASON_FIELD_NUMBER: _ClassVar[int]
    GOAL_TIME_FIELD_NUMBER: _ClassVar[int]
    DUE_TIME_FIELD_NUMBER: _ClassVar[int]
    LAST_ERROR_FIELD_NUMBER: _ClassVar[int]
    name: str
    enrollment_id: str
    journey_id: str
    journey_version: int
    profile_id: str
    state: EnrollmentState
    current_node_id: str
    steps: _containers.RepeatedCompositeFieldContainer[Step]
    create_time: _timestamp_pb2.Timestamp
    update_time: _timestamp_pb2.Timestamp
    exit_reason: str
    goal_time: _timestamp_pb2.Timestamp
    due_time: _timestamp_pb2.Timestamp
    last_error: str
    def __init__(self, name: _Optional[str] = ..., enrollment_id: _Optional[str] = ..., journey_id: _Optional[str] = ..., journey_version: _Optional[int] = ..., profile_id: _Optional[str] = ..., state: _Optional[_Union[EnrollmentState, str]] = ..., current_node_id: _Optional[str] = ..., steps: _Optional[_Iterable[_Union[Step, _Mapping]]] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., update_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., exit_reason: _Optional[str] = ..., goal_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., due_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., last_error: _Optional[str] = ...) -> None: ...
