import datetime

from google.protobuf import duration_pb2 as _duration_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ExplorationMethod(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    EXPLORATION_METHOD_UNSPECIFIED: _ClassVar[ExplorationMethod]
    EXPLORATION_METHOD_THOMPSON: _ClassVar[ExplorationMethod]
    EXPLORATION_METHOD_EPSILON_GREEDY: _ClassVar[ExplorationMethod]
    EXPLORATION_METHOD_GREEDY: _ClassVar[ExplorationMethod]
    EXPLORATION_METHOD_UNIFORM_RANDOM: _ClassVar[ExplorationMethod]

class ExposureMode(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    EXPOSURE_MODE_UNSPECIFIED: _ClassVar[ExposureMode]
    EXPOSURE_MODE_REPORTED: _ClassVar[ExposureMode]
    EXPOSURE_MODE_ON_DECIDE: _ClassVar[ExposureMode]
EXPLORATION_METHOD_UNSPECIFIED: ExplorationMethod
EXPLORATION_METHOD_THOMPSON: ExplorationMethod
EXPLORATION_METHOD_EPSILON_GREEDY: ExplorationMethod
EXPLORATION_METHOD_GREEDY: ExplorationMethod
EXPLORATION_METHOD_UNIFORM_RANDOM: ExplorationMethod
EXPOSURE_MODE_UNSPECIFIED: ExposureMode
EXPOSURE_MODE_REPORTED: ExposureMode
EXPOSURE_MODE_ON_DECIDE: ExposureMode

class Arbitration(_message.Message):
    __slots__ = ("formula", "context_weight")
    FORMULA_FIELD_NUMBER: _ClassVar[int]
    CONTEXT_WEIGHT_FIELD_NUMBER: _ClassVar[int]
    formula: str
    context_weight: str
    def __init__(self, formula: _Optional[str] = ..., context_weight: _Optional[str] = ...) -> None: ...

class Exploration(_message.Message):
    __slots__ = ("method", "epsilon")
    METHOD_FIELD_NUMBER: _ClassVar[int]
    EPSILON_FIELD_NUMBER: _ClassVar[int]
    method: ExplorationMethod
    epsilon: float
    def __init__(self, method: _Optional[_Union[ExplorationMethod, str]] = ..., epsilon: _Optional[float] = ...) -> None: ...

class Model(_message.Message):
    __slots__ = ("non_contextual", "features", "prior_propensity")
    NON_CONTEXTUAL_FIELD_NUMBER: _ClassVar[int]
    FEATURES_FIELD_NUMBER: _ClassVar[int]
    PRIOR_PROPENSITY_FIELD_NUMBER: _ClassVar[int]
    non_contextual: bool
    features: _containers.RepeatedScalarFieldContainer[str]
    prior_propensity: float
    def __init__(self, non_contextual: _Optional[bool] = ..., features: _Optional[_Iterable[str]] = ..., prior_propensity: _Optional[float] = ...) -> None: ...

class Reward(_message.Message):
    __slots__ = ("event_name", "filter", "window")
    EVENT_NAME_FIELD_NUMBER: _ClassVar[int]
    FILTER_FIELD_NUMBER: _ClassVar[int]
    WINDOW_FIELD_NUMBER: _ClassVar[int]
    event_name: str
    filter: str
    window: _duration_pb2.Duration
    def __init__(self, event_name: _Optional[str] = ..., filter: _Optional[str] = ..., window: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ...) -> None: ...

class DecisionPoint(_message.Message):
    __slots__ = ("name", "key", "display_name", "actions", "arbitration", "max_actions", "exploration", "model", "reward", "exposure", "control_action", "min_control_share", "error_count", "last_error", "last_error_time", "etag", "create_time", "update_time")
    NAME_FIELD_NUMBER: _ClassVar[int]
    KEY_FIELD_NUMBER: _ClassVar[int]
    DISPLAY_NAME_FIELD_NUMBER: _ClassVar[int]
    ACTIONS_FIELD_NUMBER: _ClassVar[int]
    ARBITRATION_FIELD_NUMBER: _ClassVar[int]
    MAX_ACTIONS_FIELD_NUMBER: _ClassVar[int]
    EXPLORATION_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    REWARD_FIELD_NUMBER: _ClassVar[int]
    EXPOSURE_FIELD_NUMBER: _ClassVar[int]
    CONTROL_ACTION_FIELD_NUMBER: _ClassVar[int]
    MIN_CONTROL_SHARE_FIELD_NUMBER: _ClassVar[int]
    ERROR_COUNT_FIELD_NUMBER: _ClassVar[int]
    LAST_ERROR_FIELD_NUMBER: _ClassVar[int]
    LAST_ERROR_TIME_FIELD_NUMBER: _ClassVar[int]
    ETAG_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    UPDATE_TIME_FIELD_NUMBER: _ClassVar[int]
    name: str
    key: str
    display_name: str
    actions: _containers.RepeatedScalarFieldContainer[str]
    arbitration: Arbitration
    max_actions: int
    exploration: Exploration
    model: Model
    reward: Reward
    exposure: ExposureMode
    control_action: str
    min_control_share: float
    error_count: int
    last_error: str
    last_error_time: _timestamp_pb2.Timestamp
    etag: str
    create_time: _timestamp_pb2.Timestamp
    update_time: _timestamp_pb2.Timestamp
    def __init__(self, name: _Optional[str] = ..., key: _Optional[str] = ..., display_name: _Optional[str] = ..., actions: _Optional[_Iterable[str]] = ..., arbitration: _Optional[_Union[Arbitration, _Mapping]] = ..., max_actions: _Optional[int] = ..., exploration: _Optional[_Union[Exploration, _Mapping]] = ..., model: _Optional[_Union[Model, _Mapping]] = ..., reward: _Optional[_Union[Reward, _Mapping]] = ..., exposure: _Optional[_Union[ExposureMode, str]] = ..., control_action: _Optional[str] = ..., min_control_share: _Optional[float] = ..., error_count: _Optional[int] = ..., last_error: _Optional[str] = ..., last_error_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., etag: _Optional[str] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., update_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...
