import datetime

from cjo.identity.v1 import consent_pb2 as _consent_pb2
from cjo.identity.v1 import event_pb2 as _event_pb2
from google.protobuf import struct_pb2 as _struct_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Profile(_message.Message):
    __slots__ = ("name", "profile_id", "identifiers", "traits", "create_time", "update_time", "merged_from", "trait_provenance", "consents", "computed_traits", "segments")
    class TraitProvenanceEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: TraitProvenance
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[TraitProvenance, _Mapping]] = ...) -> None: ...
    NAME_FIELD_NUMBER: _ClassVar[int]
    PROFILE_ID_FIELD_NUMBER: _ClassVar[int]
    IDENTIFIERS_FIELD_NUMBER: _ClassVar[int]
    TRAITS_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    UPDATE_TIME_FIELD_NUMBER: _ClassVar[int]
    MERGED_FROM_FIELD_NUMBER: _ClassVar[int]
    TRAIT_PROVENANCE_FIELD_NUMBER: _ClassVar[int]
    CONSENTS_FIELD_NUMBER: _ClassVar[int]
    COMPUTED_TRAITS_FIELD_NUMBER: _ClassVar[int]
    SEGMENTS_FIELD_NUMBER: _ClassVar[int]
    name: str
    profile_id: str
    identifiers: _containers.RepeatedCompositeFieldContainer[_event_pb2.Identifier]
    traits: _struct_pb2.Struct
    create_time: _timestamp_pb2.Timestamp
    update_time: _timestamp_pb2.Timestamp
    merged_from: _containers.RepeatedCompositeFieldContainer[ProfileMerge]
    trait_provenance: _containers.MessageMap[str, TraitProvenance]
    consents: _containers.RepeatedCompositeFieldContainer[_consent_pb2.Consent]
    computed_traits: _struct_pb2.Struct
    segments: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, name: _Optional[str] = ..., profile_id: _Optional[str] = ..., identifiers: _Optional[_Iterable[_Union[_event_pb2.Identifier, _Mapping]]] = ..., traits: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., update_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., merged_from: _Optional[_Iterable[_Union[ProfileMerge, _Mapping]]] = ..., trait_provenance: _Optional[_Mapping[str, TraitProvenance]] = ..., consents: _Optional[_Iterable[_Union[_consent_pb2.Consent, _Mapping]]] = ..., computed_traits: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., segments: _Optional[_Iterable[str]] = ...) -> None: ...

class TraitProvenance(_message.Message):
    __slots__ = ("source", "event_time", "message_id")
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    EVENT_TIME_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_ID_FIELD_NUMBER: _ClassVar[int]
    source: str
    event_time: _timestamp_pb2.Timestamp
    message_id: str
    def __init__(self, source: _Optional[str] = ..., event_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., message_id: _Optional[str] = ...) -> None: ...

class ProfileMerge(_message.Message):
    __slots__ = ("merged_profile_id", "survivor_profile_id", "identifier", "message_id", "merge_time")
    MERGED_PROFILE_ID_FIELD_NUMBER: _ClassVar[int]
    SURVIVOR_PROFILE_ID_FIELD_NUMBER: _ClassVar[int]
    IDENTIFIER_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_ID_FIELD_NUMBER: _ClassVar[int]
    MERGE_TIME_FIELD_NUMBER: _ClassVar[int]
    merged_profile_id: str
    survivor_profile_id: str
    identifier: _event_pb2.Identifier
    message_id: str
    merge_time: _timestamp_pb2.Timestamp
    def __init__(self, merged_profile_id: _Optional[str] = ..., survivor_profile_id: _Optional[str] = ..., identifier: _Optional[_Union[_event_pb2.Identifier, _Mapping]] = ..., message_id: _Optional[str] = ..., merge_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...
