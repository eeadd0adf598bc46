from cjo.decisioning.v1 import decision_point_pb2 as _decision_point_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class TargetPolicy(_message.Message):
    __slots__ = ("uniform_random", "always_action", "greedy", "alternative")
    UNIFORM_RANDOM_FIELD_NUMBER: _ClassVar[int]
    ALWAYS_ACTION_FIELD_NUMBER: _ClassVar[int]
    GREEDY_FIELD_NUMBER: _ClassVar[int]
    ALTERNATIVE_FIELD_NUMBER: _ClassVar[int]
    uniform_random: UniformRandomPolicy
    always_action: str
    greedy: GreedyPolicy
    alternative: AlternativePolicy
    def __init__(self, uniform_random: _Optional[_Union[UniformRandomPolicy, _Mapping]] = ..., always_action: _Optional[str] = ..., greedy: _Optional[_Union[GreedyPolicy, _Mapping]] = ..., alternative: _Optional[_Union[AlternativePolicy, _Mapping]] = ...) -> None: ...

class UniformRandomPolicy(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class GreedyPolicy(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class AlternativePolicy(_message.Message):
    __slots__ = ("arbitration", "levers", "values", "exploration")
    class LeversEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    class ValuesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    ARBITRATION_FIELD_NUMBER: _ClassVar[int]
    LEVERS_FIELD_NUMBER: _ClassVar[int]
    VALUES_FIELD_NUMBER: _ClassVar[int]
    EXPLORATION_FIELD_NUMBER: _ClassVar[int]
    arbitration: _decision_point_pb2.Arbitration
    levers: _containers.ScalarMap[str, float]
    values: _containers.ScalarMap[str, float]
    exploration: _decision_point_pb2.Exploration
    def __init__(self, arbitration: _Optional[_Union[_decision_point_pb2.Arbitration, _Mapping]] = ..., levers: _Optional[_Mapping[str, float]] = ..., values: _Optional[_Mapping[str, float]] = ..., exploration: _Optional[_Union[_decision_point_pb2.Exploration, _Mapping]] = ...) -> None: ...

class Estimate(_message.Message):
    __slots__ = ("value", "lower", "upper", "standard_error")
    VALUE_FIELD_NUMBER: _ClassVar[int]
    LOWER_FIELD_NUMBER: _ClassVar[int]
    UPPER_FIELD_NUMBER: _ClassVar[int]
    STANDARD_ERROR_FIELD_NUMBER: _ClassVar[int]
    value: float
    lower: float
    upper: float
    standard_error: float
    def __init__(self, value: _Optional[float] = ..., lower: _Optional[float] = ..., upper: _Optional[float] = ..., standard_error: _Optional[float] = ...) -> None: ...
