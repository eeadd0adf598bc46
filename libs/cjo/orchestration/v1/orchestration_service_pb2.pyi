from cjo.identity.v1 import consent_pb2 as _consent_pb2
from cjo.identity.v1 import event_pb2 as _event_pb2
from cjo.orchestration.v1 import enrollment_pb2 as _enrollment_pb2
from cjo.orchestration.v1 import journey_pb2 as _journey_pb2
from cjo.orchestration.v1 import schedule_occurrence_pb2 as _schedule_occurrence_pb2
from google.protobuf import field_mask_pb2 as _field_mask_pb2
from google.protobuf import struct_pb2 as _struct_pb2
from google.rpc import status_pb2 as _status_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class CreateJourneyRequest(_message.Message):
    __slots__ = ("journey", "request_id")
    JOURNEY_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    journey: _journey_pb2.Journey
    request_id: str
    def __init__(self, journey: _Optional[_Union[_journey_pb2.Journey, _Mapping]] = ..., request_id: _Optional[str] = ...) -> None: ...

class CreateJourneyResponse(_message.Message):
    __slots__ = ("journey",)
    JOURNEY_FIELD_NUMBER: _ClassVar[int]
    journey: _journey_pb2.Journey
    def __init__(self, journey: _Optional[_Union[_journey_pb2.Journey, _Mapping]] = ...) -> None: ...

class GetJourneyRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class GetJourneyResponse(_message.Message):
    __slots__ = ("journey",)
    JOURNEY_FIELD_NUMBER: _ClassVar[int]
    journey: _journey_pb2.Journey
    def __init__(self, journey: _Optional[_Union[_journey_pb2.Journey, _Mapping]] = ...) -> None: ...

class ListJourneysRequest(_message.Message):
    __slots__ = ("page_size", "page_token")
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    page_size: int
    page_token: str
    def __init__(self, page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListJourneysResponse(_message.Message):
    __slots__ = ("journeys", "next_page_token")
    JOURNEYS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    journeys: _containers.RepeatedCompositeFieldContainer[_journey_pb2.Journey]
    next_page_token: str
    def __init__(self, journeys: _Optional[_Iterable[_Union[_journey_pb2.Journey, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class UpdateJourneyRequest(_message.Message):
    __slots__ = ("journey", "update_mask", "request_id")
    JOURNEY_FIELD_NUMBER: _ClassVar[int]
    UPDATE_MASK_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    journey: _journey_pb2.Journey
    update_mask: _field_mask_pb2.FieldMask
    request_id: str
    def __init__(self, journey: _Optional[_Union[_journey_pb2.Journey, _Mapping]] = ..., update_mask: _Optional[_Union[_field_mask_pb2.FieldMask, _Mapping]] = ..., request_id: _Optional[str] = ...) -> None: ...

class UpdateJourneyResponse(_message.Message):
    __slots__ = ("journey",)
    JOURNEY_FIELD_NUMBER: _ClassVar[int]
    journey: _journey_pb2.Journey
    def __init__(self, journey: _Optional[_Union[_journey_pb2.Journey, _Mapping]] = ...) -> None: ...

class PublishJourneyRequest(_message.Message):
    __slots__ = ("name", "request_id")
    NAME_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    name: str
    request_id: str
    def __init__(self, name: _Optional[str] = ..., request_id: _Optional[str] = ...) -> None: ...

class PublishJourneyResponse(_message.Message):
    __slots__ = ("journey",)
    JOURNEY_FIELD_NUMBER: _ClassVar[int]
    journey: _journey_pb2.Journey
    def __init__(self, journey: _Optional[_Union[_journey_pb2.Journey, _Mapping]] = ...) -> None: ...

class PauseJourneyRequest(_message.Message):
    __slots__ = ("name", "request_id")
    NAME_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    name: str
    request_id: str
    def __init__(self, name: _Optional[str] = ..., request_id: _Optional[str] = ...) -> None: ...

class PauseJourneyResponse(_message.Message):
    __slots__ = ("journey",)
    JOURNEY_FIELD_NUMBER: _ClassVar[int]
    journey: _journey_pb2.Journey
    def __init__(self, journey: _Optional[_Union[_journey_pb2.Journey, _Mapping]] = ...) -> None: ...

class ResumeJourneyRequest(_message.Message):
    __slots__ = ("name", "request_id")
    NAME_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    name: str
    request_id: str
    def __init__(self, name: _Optional[str] = ..., request_id: _Optional[str] = ...) -> None: ...

class ResumeJourneyResponse(_message.Message):
    __slots__ = ("journey",)
    JOURNEY_FIELD_NUMBER: _ClassVar[int]
    journey: _journey_pb2.Journey
    def __init__(self, journey: _Optional[_Union[_journey_pb2.Journey, _Mapping]] = ...) -> None: ...

class EnrollRequest(_message.Message):
    __slots__ = ("journey", "profile_id", "profile_traits", "properties", "request_id")
    JOURNEY_FIELD_NUMBER: _ClassVar[int]
    PROFILE_ID_FIELD_NUMBER: _ClassVar[int]
    PROFILE_TRAITS_FIELD_NUMBER: _ClassVar[int]
    PROPERTIES_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    journey: str
    profile_id: str
    profile_traits: _struct_pb2.Struct
    properties: _struct_pb2.Struct
    request_id: str
    def __init__(self, journey: _Optional[str] = ..., profile_id: _Optional[str] = ..., profile_traits: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., properties: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., request_id: _Optional[str] = ...) -> None: ...

class EnrollResponse(_message.Message):
    __slots__ = ("enrollment", "skip_reason")
    ENROLLMENT_FIELD_NUMBER: _ClassVar[int]
    SKIP_REASON_FIELD_NUMBER: _ClassVar[int]
    enrollment: _enrollment_pb2.Enrollment
    skip_reason: str
    def __init__(self, enrollment: _Optional[_Union[_enrollment_pb2.Enrollment, _Mapping]] = ..., skip_reason: _Optional[str] = ...) -> None: ...

class ArchiveJourneyRequest(_message.Message):
    __slots__ = ("name", "request_id")
    NAME_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    name: str
    request_id: str
    def __init__(self, name: _Optional[str] = ..., request_id: _Optional[str] = ...) -> None: ...

class ArchiveJourneyResponse(_message.Message):
    __slots__ = ("journey",)
    JOURNEY_FIELD_NUMBER: _ClassVar[int]
    journey: _journey_pb2.Journey
    def __init__(self, journey: _Optional[_Union[_journey_pb2.Journey, _Mapping]] = ...) -> None: ...

class ForwardedEvent(_message.Message):
    __slots__ = ("event_id", "profile_id", "event", "profile_traits", "traceparent", "computed_traits", "segments", "consents", "identifiers", "profile_trimmed")
    EVENT_ID_FIELD_NUMBER: _ClassVar[int]
    PROFILE_ID_FIELD_NUMBER: _ClassVar[int]
    EVENT_FIELD_NUMBER: _ClassVar[int]
    PROFILE_TRAITS_FIELD_NUMBER: _ClassVar[int]
    TRACEPARENT_FIELD_NUMBER: _ClassVar[int]
    COMPUTED_TRAITS_FIELD_NUMBER: _ClassVar[int]
    SEGMENTS_FIELD_NUMBER: _ClassVar[int]
    CONSENTS_FIELD_NUMBER: _ClassVar[int]
    IDENTIFIERS_FIELD_NUMBER: _ClassVar[int]
    PROFILE_TRIMMED_FIELD_NUMBER: _ClassVar[int]
    event_id: str
    profile_id: str
    event: _event_pb2.Event
    profile_traits: _struct_pb2.Struct
    traceparent: str
    computed_traits: _struct_pb2.Struct
    segments: _containers.RepeatedScalarFieldContainer[str]
    consents: _containers.RepeatedCompositeFieldContainer[_consent_pb2.Consent]
    identifiers: _containers.RepeatedCompositeFieldContainer[_event_pb2.Identifier]
    profile_trimmed: bool
    def __init__(self, event_id: _Optional[str] = ..., profile_id: _Optional[str] = ..., event: _Optional[_Union[_event_pb2.Event, _Mapping]] = ..., profile_traits: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., traceparent: _Optional[str] = ..., computed_traits: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., segments: _Optional[_Iterable[str]] = ..., consents: _Optional[_Iterable[_Union[_consent_pb2.Consent, _Mapping]]] = ..., identifiers: _Optional[_Iterable[_Union[_event_pb2.Identifier, _Mapping]]] = ..., profile_trimmed: _Optional[bool] = ...) -> None: ...

class HandleEventsRequest(_message.Message):
    __slots__ = ("events",)
    EVENTS_FIELD_NUMBER: _ClassVar[int]
    events: _containers.RepeatedCompositeFieldContainer[ForwardedEvent]
    def __init__(self, events: _Optional[_Iterable[_Union[ForwardedEvent, _Mapping]]] = ...) -> None: ...

class HandleEventResult(_message.Message):
    __slots__ = ("status", "duplicate")
    STATUS_FIELD_NUMBER: _ClassVar[int]
    DUPLICATE_FIELD_NUMBER: _ClassVar[int]
    status: _status_pb2.Status
    duplicate: bool
    def __init__(self, status: _Optional[_Union[_status_pb2.Status, _Mapping]] = ..., duplicate: _Optional[bool] = ...) -> None: ...

class HandleEventsResponse(_message.Message):
    __slots__ = ("results",)
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[HandleEventResult]
    def __init__(self, results: _Optional[_Iterable[_Union[HandleEventResult, _Mapping]]] = ...) -> None: ...

class GetEnrollmentRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class GetEnrollmentResponse(_message.Message):
    __slots__ = ("enrollment",)
    ENROLLMENT_FIELD_NUMBER: _ClassVar[int]
    enrollment: _enrollment_pb2.Enrollment
    def __init__(self, enrollment: _Optional[_Union[_enrollment_pb2.Enrollment, _Mapping]] = ...) -> None: ...

class ListEnrollmentsRequest(_message.Message):
    __slots__ = ("parent", "profile_id", "page_size", "page_token")
    PARENT_FIELD_NUMBER: _ClassVar[int]
    PROFILE_ID_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    parent: str
    profile_id: str
    page_size: int
    page_token: str
    def __init__(self, parent: _Optional[str] = ..., profile_id: _Optional[str] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListEnrollmentsResponse(_message.Message):
    __slots__ = ("enrollments", "next_page_token")
    ENROLLMENTS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    enrollments: _containers.RepeatedCompositeFieldContainer[_enrollment_pb2.Enrollment]
    next_page_token: str
    def __init__(self, enrollments: _Optional[_Iterable[_Union[_enrollment_pb2.Enrollment, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class GetScheduleOccurrenceRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class GetScheduleOccurrenceResponse(_message.Message):
    __slots__ = ("occurrence",)
    OCCURRENCE_FIELD_NUMBER: _ClassVar[int]
    occurrence: _schedule_occurrence_pb2.ScheduleOccurrence
    def __init__(self, occurrence: _Optional[_Union[_schedule_occurrence_pb2.ScheduleOccurrence, _Mapping]] = ...) -> None: ...

class ListScheduleOccurrencesRequest(_message.Message):
    __slots__ = ("parent", "page_size", "page_token", "state")
    PARENT_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    parent: str
    page_size: int
    page_token: str
    state: _schedule_occurrence_pb2.ScheduleOccurrence.State
    def __init__(self, parent: _Optional[str] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ..., state: _Optional[_Union[_schedule_occurrence_pb2.ScheduleOccurrence.State, str]] = ...) -> None: ...

class ListScheduleOccurrencesResponse(_message.Message):
    __slots__ = ("occurrences", "next_page_token")
    OCCURRENCES_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    occurrences: _containers.RepeatedCompositeFieldContainer[_schedule_occurrence_pb2.ScheduleOccurrence]
    next_page_token: str
    def __init__(self, occurrences: _Optional[_Iterable[_Union[_schedule_occurrence_pb2.ScheduleOccurrence, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...
