from cjo.analytics.v1 import fact_pb2 as _fact_pb2
from cjo.analytics.v1 import reports_pb2 as _reports_pb2
from google.rpc import status_pb2 as _status_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class RecordFactsRequest(_message.Message):
    __slots__ = ("facts",)
    FACTS_FIELD_NUMBER: _ClassVar[int]
    facts: _containers.RepeatedCompositeFieldContainer[_fact_pb2.Fact]
    def __init__(self, facts: _Optional[_Iterable[_Union[_fact_pb2.Fact, _Mapping]]] = ...) -> None: ...

class RecordFactResult(_message.Message):
    __slots__ = ("status", "duplicate")
    STATUS_FIELD_NUMBER: _ClassVar[int]
    DUPLICATE_FIELD_NUMBER: _ClassVar[int]
    status: _status_pb2.Status
    duplicate: bool
    def __init__(self, status: _Optional[_Union[_status_pb2.Status, _Mapping]] = ..., duplicate: _Optional[bool] = ...) -> None: ...

class RecordFactsResponse(_message.Message):
    __slots__ = ("results",)
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[RecordFactResult]
    def __init__(self, results: _Optional[_Iterable[_Union[RecordFactResult, _Mapping]]] = ...) -> None: ...

class GetJourneyReportRequest(_message.Message):
    __slots__ = ("journey",)
    JOURNEY_FIELD_NUMBER: _ClassVar[int]
    journey: str
    def __init__(self, journey: _Optional[str] = ...) -> None: ...

class FactCount(_message.Message):
    __slots__ = ("type", "count", "profiles")
    TYPE_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    PROFILES_FIELD_NUMBER: _ClassVar[int]
    type: _fact_pb2.FactType
    count: int
    profiles: int
    def __init__(self, type: _Optional[_Union[_fact_pb2.FactType, str]] = ..., count: _Optional[int] = ..., profiles: _Optional[int] = ...) -> None: ...

class JourneyReport(_message.Message):
    __slots__ = ("journey", "counts")
    JOURNEY_FIELD_NUMBER: _ClassVar[int]
    COUNTS_FIELD_NUMBER: _ClassVar[int]
    journey: str
    counts: _containers.RepeatedCompositeFieldContainer[FactCount]
    def __init__(self, journey: _Optional[str] = ..., counts: _Optional[_Iterable[_Union[FactCount, _Mapping]]] = ...) -> None: ...

class GetJourneyReportResponse(_message.Message):
    __slots__ = ("report",)
    REPORT_FIELD_NUMBER: _ClassVar[int]
    report: JourneyReport
    def __init__(self, report: _Optional[_Union[JourneyReport, _Mapping]] = ...) -> None: ...
