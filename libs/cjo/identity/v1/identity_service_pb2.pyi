from cjo.identity.v1 import consent_pb2 as _consent_pb2
from cjo.identity.v1 import event_pb2 as _event_pb2
from cjo.identity.v1 import identity_settings_pb2 as _identity_settings_pb2
from cjo.identity.v1 import profile_pb2 as _profile_pb2
from cjo.identity.v1 import segment_pb2 as _segment_pb2
from google.protobuf import field_mask_pb2 as _field_mask_pb2
from google.rpc import status_pb2 as _status_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class IngestEventsRequest(_message.Message):
    __slots__ = ("events",)
    EVENTS_FIELD_NUMBER: _ClassVar[int]
    events: _containers.RepeatedCompositeFieldContainer[_event_pb2.Event]
    def __init__(self, events: _Optional[_Iterable[_Union[_event_pb2.Event, _Mapping]]] = ...) -> None: ...

class IngestEventResult(_message.Message):
    __slots__ = ("status", "event_id", "profile_id", "duplicate")
    STATUS_FIELD_NUMBER: _ClassVar[int]
    EVENT_ID_FIELD_NUMBER: _ClassVar[int]
    PROFILE_ID_FIELD_NUMBER: _ClassVar[int]
    DUPLICATE_FIELD_NUMBER: _ClassVar[int]
    status: _status_pb2.Status
    event_id: str
    profile_id: str
    duplicate: bool
    def __init__(self, status: _Optional[_Union[_status_pb2.Status, _Mapping]] = ..., event_id: _Optional[str] = ..., profile_id: _Optional[str] = ..., duplicate: _Optional[bool] = ...) -> None: ...

class IngestEventsResponse(_message.Message):
    __slots__ = ("results",)
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[IngestEventResult]
    def __init__(self, results: _Optional[_Iterable[_Union[IngestEventResult, _Mapping]]] = ...) -> None: ...

class GetProfileRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class GetProfileResponse(_message.Message):
    __slots__ = ("profile",)
    PROFILE_FIELD_NUMBER: _ClassVar[int]
    profile: _profile_pb2.Profile
    def __init__(self, profile: _Optional[_Union[_profile_pb2.Profile, _Mapping]] = ...) -> None: ...

class BatchGetProfilesRequest(_message.Message):
    __slots__ = ("names",)
    NAMES_FIELD_NUMBER: _ClassVar[int]
    names: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, names: _Optional[_Iterable[str]] = ...) -> None: ...

class BatchGetProfileResult(_message.Message):
    __slots__ = ("status", "profile", "profile_trimmed")
    STATUS_FIELD_NUMBER: _ClassVar[int]
    PROFILE_FIELD_NUMBER: _ClassVar[int]
    PROFILE_TRIMMED_FIELD_NUMBER: _ClassVar[int]
    status: _status_pb2.Status
    profile: _profile_pb2.Profile
    profile_trimmed: bool
    def __init__(self, status: _Optional[_Union[_status_pb2.Status, _Mapping]] = ..., profile: _Optional[_Union[_profile_pb2.Profile, _Mapping]] = ..., profile_trimmed: _Optional[bool] = ...) -> None: ...

class BatchGetProfilesResponse(_message.Message):
    __slots__ = ("results",)
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[BatchGetProfileResult]
    def __init__(self, results: _Optional[_Iterable[_Union[BatchGetProfileResult, _Mapping]]] = ...) -> None: ...

class LookupProfileRequest(_message.Message):
    __slots__ = ("identifier",)
    IDENTIFIER_FIELD_NUMBER: _ClassVar[int]
    identifier: _event_pb2.Identifier
    def __init__(self, identifier: _Optional[_Union[_event_pb2.Identifier, _Mapping]] = ...) -> None: ...

class LookupProfileResponse(_message.Message):
    __slots__ = ("profile",)
    PROFILE_FIELD_NUMBER: _ClassVar[int]
    profile: _profile_pb2.Profile
    def __init__(self, profile: _Optional[_Union[_profile_pb2.Profile, _Mapping]] = ...) -> None: ...

class ListProfileEventsRequest(_message.Message):
    __slots__ = ("parent", "page_size", "page_token")
    PARENT_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    parent: str
    page_size: int
    page_token: str
    def __init__(self, parent: _Optional[str] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListProfileEventsResponse(_message.Message):
    __slots__ = ("events", "next_page_token")
    EVENTS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    events: _containers.RepeatedCompositeFieldContainer[_event_pb2.StoredEvent]
    next_page_token: str
    def __init__(self, events: _Optional[_Iterable[_Union[_event_pb2.StoredEvent, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class BatchCheckConsentRequest(_message.Message):
    __slots__ = ("queries",)
    QUERIES_FIELD_NUMBER: _ClassVar[int]
    queries: _containers.RepeatedCompositeFieldContainer[_consent_pb2.ConsentQuery]
    def __init__(self, queries: _Optional[_Iterable[_Union[_consent_pb2.ConsentQuery, _Mapping]]] = ...) -> None: ...

class BatchCheckConsentResult(_message.Message):
    __slots__ = ("status", "decision")
    STATUS_FIELD_NUMBER: _ClassVar[int]
    DECISION_FIELD_NUMBER: _ClassVar[int]
    status: _status_pb2.Status
    decision: _consent_pb2.ConsentDecision
    def __init__(self, status: _Optional[_Union[_status_pb2.Status, _Mapping]] = ..., decision: _Optional[_Union[_consent_pb2.ConsentDecision, _Mapping]] = ...) -> None: ...

class BatchCheckConsentResponse(_message.Message):
    __slots__ = ("results",)
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[BatchCheckConsentResult]
    def __init__(self, results: _Optional[_Iterable[_Union[BatchCheckConsentResult, _Mapping]]] = ...) -> None: ...

class GetIdentitySettingsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class GetIdentitySettingsResponse(_message.Message):
    __slots__ = ("settings",)
    SETTINGS_FIELD_NUMBER: _ClassVar[int]
    settings: _identity_settings_pb2.IdentitySettings
    def __init__(self, settings: _Optional[_Union[_identity_settings_pb2.IdentitySettings, _Mapping]] = ...) -> None: ...

class UpdateIdentitySettingsRequest(_message.Message):
    __slots__ = ("settings", "request_id")
    SETTINGS_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    settings: _identity_settings_pb2.IdentitySettings
    request_id: str
    def __init__(self, settings: _Optional[_Union[_identity_settings_pb2.IdentitySettings, _Mapping]] = ..., request_id: _Optional[str] = ...) -> None: ...

class UpdateIdentitySettingsResponse(_message.Message):
    __slots__ = ("settings",)
    SETTINGS_FIELD_NUMBER: _ClassVar[int]
    settings: _identity_settings_pb2.IdentitySettings
    def __init__(self, settings: _Optional[_Union[_identity_settings_pb2.IdentitySettings, _Mapping]] = ...) -> None: ...

class ListProfilesRequest(_message.Message):
    __slots__ = ("filter", "page_size", "page_token")
    FILTER_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    filter: str
    page_size: int
    page_token: str
    def __init__(self, filter: _Optional[str] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListProfilesResponse(_message.Message):
    __slots__ = ("profiles", "next_page_token")
    PROFILES_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    profiles: _containers.RepeatedCompositeFieldContainer[_profile_pb2.Profile]
    next_page_token: str
    def __init__(self, profiles: _Optional[_Iterable[_Union[_profile_pb2.Profile, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class CreateSegmentRequest(_message.Message):
    __slots__ = ("segment", "request_id")
    SEGMENT_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    segment: _segment_pb2.Segment
    request_id: str
    def __init__(self, segment: _Optional[_Union[_segment_pb2.Segment, _Mapping]] = ..., request_id: _Optional[str] = ...) -> None: ...

class CreateSegmentResponse(_message.Message):
    __slots__ = ("segment",)
    SEGMENT_FIELD_NUMBER: _ClassVar[int]
    segment: _segment_pb2.Segment
    def __init__(self, segment: _Optional[_Union[_segment_pb2.Segment, _Mapping]] = ...) -> None: ...

class GetSegmentRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class GetSegmentResponse(_message.Message):
    __slots__ = ("segment",)
    SEGMENT_FIELD_NUMBER: _ClassVar[int]
    segment: _segment_pb2.Segment
    def __init__(self, segment: _Optional[_Union[_segment_pb2.Segment, _Mapping]] = ...) -> None: ...

class ListSegmentsRequest(_message.Message):
    __slots__ = ("page_size", "page_token")
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    page_size: int
    page_token: str
    def __init__(self, page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListSegmentsResponse(_message.Message):
    __slots__ = ("segments", "next_page_token")
    SEGMENTS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    segments: _containers.RepeatedCompositeFieldContainer[_segment_pb2.Segment]
    next_page_token: str
    def __init__(self, segments: _Optional[_Iterable[_Union[_segment_pb2.Segment, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class UpdateSegmentRequest(_message.Message):
    __slots__ = ("segment", "update_mask", "request_id")
    SEGMENT_FIELD_NUMBER: _ClassVar[int]
    UPDATE_MASK_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    segment: _segment_pb2.Segment
    update_mask: _field_mask_pb2.FieldMask
    request_id: str
    def __init__(self, segment: _Optional[_Union[_segment_pb2.Segment, _Mapping]] = ..., update_mask: _Optional[_Union[_field_mask_pb2.FieldMask, _Mapping]] = ..., request_id: _Optional[str] = ...) -> None: ...

class UpdateSegmentResponse(_message.Message):
    __slots__ = ("segment",)
    SEGMENT_FIELD_NUMBER: _ClassVar[int]
    segment: _segment_pb2.Segment
    def __init__(self, segment: _Optional[_Union[_segment_pb2.Segment, _Mapping]] = ...) -> None: ...

class DeleteSegmentRequest(_message.Message):
    __slots__ = ("name", "request_id")
    NAME_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    name: str
    request_id: str
    def __init__(self, name: _Optional[str] = ..., request_id: _Optional[str] = ...) -> None: ...

class DeleteSegmentResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListSegmentMembersRequest(_message.Message):
    __slots__ = ("parent", "page_size", "page_token")
    PARENT_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    parent: str
    page_size: int
    page_token: str
    def __init__(self, parent: _Optional[str] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListSegmentMembersResponse(_message.Message):
    __slots__ = ("profile_ids", "next_page_token")
    PROFILE_IDS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    profile_ids: _containers.RepeatedScalarFieldContainer[str]
    next_page_token: str
    def __init__(self, profile_ids: _Optional[_Iterable[str]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class DeleteProfileRequest(_message.Message):
    __slots__ = ("name", "block_identifiers", "request_id")
    NAME_FIELD_NUMBER: _ClassVar[int]
    BLOCK_IDENTIFIERS_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    name: str
    block_identifiers: bool
    request_id: str
    def __init__(self, name: _Optional[str] = ..., block_identifiers: _Optional[bool] = ..., request_id: _Optional[str] = ...) -> None: ...

class DeleteProfileResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ExportProfileRequest(_message.Message):
    __slots__ = ("name", "page_token")
    NAME_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    name: str
    page_token: str
    def __init__(self, name: _Optional[str] = ..., page_token: _Optional[str] = ...) -> None: ...

class ExportProfileResponse(_message.Message):
    __slots__ = ("json", "next_page_token")
    JSON_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    json: str
    next_page_token: str
    def __init__(self, json: _Optional[str] = ..., next_page_token: _Optional[str] = ...) -> None: ...
