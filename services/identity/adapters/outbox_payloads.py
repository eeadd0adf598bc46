"""What identity writes to its outbox, as the bytes the receivers decode: forwarded events for
orchestration (topic :data:`EVENTS_TOPIC`) and conversion and merge facts for analytics
(``FACTS_TOPIC``).

Every payload is built here, so the shape of what leaves identity has one home. Ids that must
deduplicate on a re-send or a re-plan are derived from what they describe; the others are new."""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any, TypeAlias

from google.protobuf import struct_pb2

from cjo.analytics.v1 import fact_pb2
from cjo.identity.v1 import consent_pb2, event_pb2
from cjo.orchestration.v1 import orchestration_service_pb2 as orchestration_pb
from cjo_identity.adapters.segments import Transition
from cjo_identity.domain.conversions import Conversion
from cjo_identity.domain.events import Event, EventType
from cjo_identity.domain.golden import ConsentRecord, Golden, trait_values
from cjo_identity.domain.ingest import Accepted, Merge
from cjo_identity.domain.segments import ENTERED, EXITED, PROFILE_DELETED, PROFILE_MERGED
from cjo_platform.limits import MAX_FORWARDED_PROFILE_BYTES
from cjo_platform.logging import LogOnce, get_logger
from cjo_platform.profiles import FORWARDED_TRIM_FIELDS, channel_proto, trim_profile
from cjo_platform.protobuf import dict_to_struct, fill_struct, set_timestamp, to_timestamp

log = get_logger(__name__)

EVENTS_TOPIC = "orchestration.events"

# Profiles past the bound logged lately: each is logged once an hour, not at every event.
_logged = LogOnce(3600.0)

# A profile's computed traits, segment ids and identifiers (type, value), as a batch left them.
ProfileState: TypeAlias = tuple[Mapping[str, Any], Iterable[str], Iterable[tuple[str, str]]]

_EVENT_TYPES = {
    EventType.TRACK: event_pb2.EVENT_TYPE_TRACK,
    EventType.IDENTIFY: event_pb2.EVENT_TYPE_IDENTIFY,
}


def event_to_proto(event: Event) -> event_pb2.Event:
    proto = event_pb2.Event()
    _fill_event(proto, event)
    return proto


def _fill_event(proto: event_pb2.Event, event: Event) -> None:
    """``event`` written into ``proto`` in place (a message built and then copied into its
    parent costs that copy; these run once per accepted event)."""
    proto.message_id = event.message_id
    proto.type = _EVENT_TYPES[event.type]
    proto.name = event.name
    for identifier in event.identifiers:
        proto.identifiers.add(type=identifier.type, value=identifier.value)
    _fill_struct(proto.properties, event.properties)
    _fill_struct(proto.traits, event.traits)
    set_timestamp(proto.timestamp, event.timestamp.astimezone(UTC))
    proto.source = event.source


def _fill_struct(struct: struct_pb2.Struct, value: Mapping[str, Any]) -> None:
    struct.SetInParent()  # set, even when empty
    if value:
        fill_struct(struct, value)


def traits_size(golden: Golden) -> int:
    """Bytes ``golden``'s traits take encoded, as every forwarded event of the profile carries
    them (``profile_traits``)."""
    struct = struct_pb2.Struct()
    _fill_struct(struct, trait_values(golden.traits))
    size: int = struct.ByteSize()
    return size


def consent_to_proto(record: ConsentRecord) -> consent_pb2.Consent:
    return consent_pb2.Consent(
        channel=channel_proto(record.channel), topic=record.topic,
        state=(consent_pb2.CONSENT_STATE_SUBSCRIBED if record.subscribed
               else consent_pb2.CONSENT_STATE_UNSUBSCRIBED),
        source=record.source, update_time=to_timestamp(record.time))


def _fill_profile(message: orchestration_pb.ForwardedEvent, golden: Golden | None,
                  state: ProfileState | None) -> None:
    """The ForwardedEvent fields describing the profile: its traits and consent from
    ``golden``, its computed traits, segments and identifiers from ``state``, for
    orchestration's ``profile`` view (cjo_platform.profiles). Nothing without ``golden``."""
    if golden is None:
        return
    computed, segments, linked = state or ({}, (), ())
    _fill_struct(message.profile_traits, trait_values(golden.traits))
    _fill_struct(message.computed_traits, computed)
    message.segments.extend([f"segments/{s}" for s in sorted(segments)])
    message.consents.extend([consent_to_proto(c) for c in sorted(
        golden.consents.values(), key=lambda c: (c.channel, c.topic))])
    for kind, value in linked:
        message.identifiers.add(type=kind, value=value)


def forwarded_event(accepted: Accepted, traceparent: str,
                    state: ProfileState | None = None) -> bytes:
    """The payload orchestration receives for an accepted event: the profile as of that event
    (traits and consent right after it, computed traits and segments after its batch)."""
    message = orchestration_pb.ForwardedEvent(
        event_id=accepted.event_id, profile_id=accepted.profile_id, traceparent=traceparent)
    _fill_event(message.event, accepted.event)
    _fill_profile(message, accepted.golden, state)
    return _forwarded(message)


def conversion_fact(accepted: Accepted, conversion: Conversion) -> bytes:
    """The payload analytics records for a conversion; its id follows from the event's, so a
    re-sent fact is recorded once."""
    return _payload(fact_pb2.Fact(
        fact_id=f"identity.conversion:{accepted.event_id}",
        type=fact_pb2.FACT_TYPE_CONVERTED,
        profile_id=accepted.profile_id,
        occur_time=to_timestamp(accepted.event.timestamp),
        revenue=conversion.revenue,
        currency=conversion.currency,
        # The same purchase may also be a journey's goal (orchestration sends the event id
        # too): analytics counts the conversion once.
        source_event_id=accepted.event_id,
    ))


def merge_fact(merge: Merge, now: datetime) -> bytes:
    """The payload telling analytics that ``merged_profile_id`` is the survivor's person now, so
    its reports count both ids' facts once, on the survivor. A profile is merged away once: the
    id follows from the pair, so a re-sent or re-planned merge is recorded once."""
    return _payload(fact_pb2.Fact(
        fact_id=f"identity.merge:{merge.merged_profile_id}:{merge.survivor_profile_id}",
        type=fact_pb2.FACT_TYPE_PROFILE_MERGED,
        profile_id=merge.merged_profile_id,
        survivor_profile_id=merge.survivor_profile_id,
        occur_time=to_timestamp(now),
    ))


def segment_event(transition: Transition, golden: Golden, now: datetime,
                  traceparent: str, reason: str = "", state: ProfileState | None = None) -> bytes:
    """The payload telling orchestration a profile entered or left a segment (``reason``: why it
    left, when not because its condition stopped holding, e.g. "segment_deleted")."""
    segment = transition.segment
    name = ENTERED if transition.entered else EXITED
    properties = {"segment_id": segment.segment_id, "segment_name": segment.display_name}
    if reason:
        properties["reason"] = reason
    message = orchestration_pb.ForwardedEvent(
        event_id=uuid.uuid4().hex,
        profile_id=transition.profile_id,
        event=event_pb2.Event(
            message_id=f"{name}:{segment.segment_id}:{transition.profile_id}:{now.isoformat()}",
            type=event_pb2.EVENT_TYPE_TRACK, name=name,
            properties=dict_to_struct(properties),
            timestamp=to_timestamp(now), source="identity"),
        traceparent=traceparent)
    _fill_profile(message, golden, state)
    return _forwarded(message)


def erasure_event(profile_id: str, now: datetime, traceparent: str) -> bytes:
    """The payload telling other services to drop their copies of a profile."""
    return _payload(orchestration_pb.ForwardedEvent(
        event_id=uuid.uuid4().hex, profile_id=profile_id,
        event=event_pb2.Event(message_id=f"{PROFILE_DELETED}:{profile_id}",
                              type=event_pb2.EVENT_TYPE_TRACK, name=PROFILE_DELETED,
                              timestamp=to_timestamp(now), source="identity"),
        traceparent=traceparent,
    ))


def merge_event(merge: Merge, golden: Golden | None, now: datetime, traceparent: str,
                state: ProfileState | None = None) -> bytes:
    """The payload telling orchestration that ``merged_profile_id`` is now part of the
    survivor, so enrollments of the merged profile follow the person. A profile is merged away
    once, so ids derived from the pair make a re-sent or re-planned merge deduplicate."""
    key = f"{PROFILE_MERGED}:{merge.merged_profile_id}:{merge.survivor_profile_id}"
    message = orchestration_pb.ForwardedEvent(
        event_id=key, profile_id=merge.survivor_profile_id,
        event=event_pb2.Event(message_id=key, type=event_pb2.EVENT_TYPE_TRACK,
                              name=PROFILE_MERGED,
                              properties=dict_to_struct(
                                  {"merged_profile_id": merge.merged_profile_id}),
                              timestamp=to_timestamp(now), source="identity"),
        traceparent=traceparent)
    _fill_profile(message, golden, state)
    return _forwarded(message)


def _forwarded(message: orchestration_pb.ForwardedEvent) -> bytes:
    """The payload of a ForwardedEvent, bounded (:data:`MAX_FORWARDED_PROFILE_BYTES`): a
    profile grown past the limits by merges travels without what makes its size, flagged
    ``profile_trimmed``. The bound is checked on the encoding made anyway: a profile within the
    limits costs nothing more."""
    payload = _payload(message)
    if len(payload) <= MAX_FORWARDED_PROFILE_BYTES:
        return payload
    message.profile_trimmed = True  # counted in the bound
    trim_profile(message, MAX_FORWARDED_PROFILE_BYTES, "profile_traits", **FORWARDED_TRIM_FIELDS)
    trimmed = _payload(message)
    if _logged(message.profile_id):
        log.warning("a profile past the limits (grown by merges) is forwarded without some of "
                    "its traits or identifiers (logged once an hour per profile)",
                    profile=message.profile_id, event_id=message.event_id,
                    encoded_bytes=len(payload), forwarded_bytes=len(trimmed),
                    traits_kept=len(message.profile_traits.fields),
                    identifiers_kept=len(message.identifiers),
                    limit_bytes=MAX_FORWARDED_PROFILE_BYTES)
    return trimmed


def _payload(message: Any) -> bytes:
    # Messages are typed from the generated .pyi, but their base class comes from protobuf,
    # which ships no types: SerializeToString is Any to mypy.
    payload: bytes = message.SerializeToString()
    return payload
