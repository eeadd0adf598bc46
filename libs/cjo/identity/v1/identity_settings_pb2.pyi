import datetime

from cjo.common.v1 import common_pb2 as _common_pb2
from cjo.identity.v1 import backfill_pb2 as _backfill_pb2
from google.protobuf import duration_pb2 as _duration_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Survivorship(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    SURVIVORSHIP_UNSPECIFIED: _ClassVar[Survivorship]
    SURVIVORSHIP_LATEST: _ClassVar[Survivorship]
    SURVIVORSHIP_FIRST: _ClassVar[Survivorship]
    SURVIVORSHIP_SOURCE_PRIORITY: _ClassVar[Survivorship]
    SURVIVORSHIP_UNION: _ClassVar[Survivorship]

class ComputedAggregation(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    COMPUTED_AGGREGATION_UNSPECIFIED: _ClassVar[ComputedAggregation]
    COMPUTED_AGGREGATION_COUNT: _ClassVar[ComputedAggregation]
    COMPUTED_AGGREGATION_SUM: _ClassVar[ComputedAggregation]
    COMPUTED_AGGREGATION_LAST_TIME: _ClassVar[ComputedAggregation]
SURVIVORSHIP_UNSPECIFIED: Survivorship
SURVIVORSHIP_LATEST: Survivorship
SURVIVORSHIP_FIRST: Survivorship
SURVIVORSHIP_SOURCE_PRIORITY: Survivorship
SURVIVORSHIP_UNION: Survivorship
COMPUTED_AGGREGATION_UNSPECIFIED: ComputedAggregation
COMPUTED_AGGREGATION_COUNT: ComputedAggregation
COMPUTED_AGGREGATION_SUM: ComputedAggregation
COMPUTED_AGGREGATION_LAST_TIME: ComputedAggregation

class IdentifierTypeRule(_message.Message):
    __slots__ = ("type", "limit", "blocked_values")
    TYPE_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    BLOCKED_VALUES_FIELD_NUMBER: _ClassVar[int]
    type: str
    limit: int
    blocked_values: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, type: _Optional[str] = ..., limit: _Optional[int] = ..., blocked_values: _Optional[_Iterable[str]] = ...) -> None: ...

class TraitRule(_message.Message):
    __slots__ = ("trait", "survivorship", "source_priority")
    TRAIT_FIELD_NUMBER: _ClassVar[int]
    SURVIVORSHIP_FIELD_NUMBER: _ClassVar[int]
    SOURCE_PRIORITY_FIELD_NUMBER: _ClassVar[int]
    trait: str
    survivorship: Survivorship
    source_priority: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, trait: _Optional[str] = ..., survivorship: _Optional[_Union[Survivorship, str]] = ..., source_priority: _Optional[_Iterable[str]] = ...) -> None: ...

class ChannelConsentDefault(_message.Message):
    __slots__ = ("channel", "opt_in")
    CHANNEL_FIELD_NUMBER: _ClassVar[int]
    OPT_IN_FIELD_NUMBER: _ClassVar[int]
    channel: _common_pb2.Channel
    opt_in: bool
    def __init__(self, channel: _Optional[_Union[_common_pb2.Channel, str]] = ..., opt_in: _Optional[bool] = ...) -> None: ...

class IdentitySettings(_message.Message):
    __slots__ = ("default_phone_region", "identifier_types", "trait_rules", "consent_defaults", "update_time", "computed_traits", "conversion_events", "computed_traits_backfill", "identity_verification")
    DEFAULT_PHONE_REGION_FIELD_NUMBER: _ClassVar[int]
    IDENTIFIER_TYPES_FIELD_NUMBER: _ClassVar[int]
    TRAIT_RULES_FIELD_NUMBER: _ClassVar[int]
    CONSENT_DEFAULTS_FIELD_NUMBER: _ClassVar[int]
    UPDATE_TIME_FIELD_NUMBER: _ClassVar[int]
    COMPUTED_TRAITS_FIELD_NUMBER: _ClassVar[int]
    CONVERSION_EVENTS_FIELD_NUMBER: _ClassVar[int]
    COMPUTED_TRAITS_BACKFILL_FIELD_NUMBER: _ClassVar[int]
    IDENTITY_VERIFICATION_FIELD_NUMBER: _ClassVar[int]
    default_phone_region: str
    identifier_types: _containers.RepeatedCompositeFieldContainer[IdentifierTypeRule]
    trait_rules: _containers.RepeatedCompositeFieldContainer[TraitRule]
    consent_defaults: _containers.RepeatedCompositeFieldContainer[ChannelConsentDefault]
    update_time: _timestamp_pb2.Timestamp
    computed_traits: _containers.RepeatedCompositeFieldContainer[ComputedTrait]
    conversion_events: _containers.RepeatedCompositeFieldContainer[ConversionEvent]
    computed_traits_backfill: _backfill_pb2.Backfill
    identity_verification: IdentityVerification
    def __init__(self, default_phone_region: _Optional[str] = ..., identifier_types: _Optional[_Iterable[_Union[IdentifierTypeRule, _Mapping]]] = ..., trait_rules: _Optional[_Iterable[_Union[TraitRule, _Mapping]]] = ..., consent_defaults: _Optional[_Iterable[_Union[ChannelConsentDefault, _Mapping]]] = ..., update_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., computed_traits: _Optional[_Iterable[_Union[ComputedTrait, _Mapping]]] = ..., conversion_events: _Optional[_Iterable[_Union[ConversionEvent, _Mapping]]] = ..., computed_traits_backfill: _Optional[_Union[_backfill_pb2.Backfill, _Mapping]] = ..., identity_verification: _Optional[_Union[IdentityVerification, _Mapping]] = ...) -> None: ...

class IdentityVerification(_message.Message):
    __slots__ = ("required", "secret", "secret_set")
    REQUIRED_FIELD_NUMBER: _ClassVar[int]
    SECRET_FIELD_NUMBER: _ClassVar[int]
    SECRET_SET_FIELD_NUMBER: _ClassVar[int]
    required: bool
    secret: str
    secret_set: bool
    def __init__(self, required: _Optional[bool] = ..., secret: _Optional[str] = ..., secret_set: _Optional[bool] = ...) -> None: ...

class ConversionEvent(_message.Message):
    __slots__ = ("event_name", "revenue_property", "currency_property", "currency")
    EVENT_NAME_FIELD_NUMBER: _ClassVar[int]
    REVENUE_PROPERTY_FIELD_NUMBER: _ClassVar[int]
    CURRENCY_PROPERTY_FIELD_NUMBER: _ClassVar[int]
    CURRENCY_FIELD_NUMBER: _ClassVar[int]
    event_name: str
    revenue_property: str
    currency_property: str
    currency: str
    def __init__(self, event_name: _Optional[str] = ..., revenue_property: _Optional[str] = ..., currency_property: _Optional[str] = ..., currency: _Optional[str] = ...) -> None: ...

class ComputedTrait(_message.Message):
    __slots__ = ("name", "aggregation", "event_name", "property", "window")
    NAME_FIELD_NUMBER: _ClassVar[int]
    AGGREGATION_FIELD_NUMBER: _ClassVar[int]
    EVENT_NAME_FIELD_NUMBER: _ClassVar[int]
    PROPERTY_FIELD_NUMBER: _ClassVar[int]
    WINDOW_FIELD_NUMBER: _ClassVar[int]
    name: str
    aggregation: ComputedAggregation
    event_name: str
    property: str
    window: _duration_pb2.Duration
    def __init__(self, name: _Optional[str] = ..., aggregation: _Optional[_Union[ComputedAggregation, str]] = ..., event_name: _Optional[str] = ..., property: _Optional[str] = ..., window: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ...) -> None: ...
