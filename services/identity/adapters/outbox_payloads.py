"""What identity writes to its outbox, as the bytes the receivers decode: forwarded events for
orchestration (topic :data:`EVENTS_TOPIC`) and conversion and merge facts for analytics
(``FACTS_TOPIC``).

Every payload is built here, so the shape of what leaves identity has one home. Ids that must
deduplicate on a re-send or a re-plan are derived from what they describe; the others are new."""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any, TypeAlias

from cjo.analytics.v1 import fact_pb2
from cjo.identity.v1 import consent_pb2, event_pb2
from cjo.orchestration.v1 import orchestration_service_pb2 as orchestration_pb
from cjo_identity.adapters.segments import Transition
from cjo_identity.domain.conversions import Conversion
from cjo_identity.domain.events import Event, EventType
from cjo_identity.domain.golden import ConsentRecord, Golden, trait_values
from cjo_identity.domain.ingest import Accepted, Merge
from cjo_identity.domain.segments import ENTERED, EXITED, PROFILE_DELETED, PROFILE_MERGED
from cjo_platform.profiles import channel_proto
from cjo_platform.protobuf import dict_to_struct, to_timestamp

EVENTS_TOPIC = "orchestration.events"

# A profile's computed traits, segment ids and identifiers (type, value), as a batch left them.
ProfileState: TypeAlias = tuple[Mapping[str, Any], Iterable[str], Iterable[tuple[str, str]]]

_EVENT_TYPES = {
    EventType.TRACK: event_pb2.EVENT_TYPE_TRACK,
    EventType.IDENTIFY: event_pb2.EVENT_TYPE_IDENTIFY,
}


def event_to_proto(event: Event) -> event_pb2.Event:
    return event_pb2.Event(
        message_id=event.message_id,
        type=_EVENT_TYPES[event.type],
        name=event.name,
        identifiers=[event_pb2.Identifier(type=i.type, value=i.value)
                     for i in event.identifiers],
        properties=dict_to_struct(dict(event.properties)),
        traits=dict_to_struct(dict(event.traits)),
        timestamp=to_timestamp(event.timestamp),
        source=event.source,
    )


def consent_to_proto(record: ConsentRecord) -> consent_pb2.Consent:
    return consent_pb2.Consent(
        channel=channel_proto(record.channel), topic=record.topic,
        state=(consent_pb2.CONSENT_STATE_SUBSCRIBED if record.subscribed
               else consent_pb2.CONSENT_STATE_UNSUBSCRIBED),
        source=record.source, update_time=to_timestamp(record.time))


def _profile(golden: Golden | None, state: ProfileState | None) -> dict[str, Any]:
    """The ForwardedEvent fields describing the profile: its traits and consent from
    ``golden``, its computed traits, segments and identifiers from ``state``, for
    orchestration's ``profile`` view (cjo_platform.profiles)."""
    if golden is None:
        return {}
    computed, segments, linked = state or ({}, (), ())
    return {"profile_traits": dict_to_struct(trait_values(golden.traits)),
            "computed_traits": dict_to_struct(dict(computed)),
            "segments": [f"segments/{s}" for s in sorted(segments)],
            "consents": [consent_to_proto(c) for c in sorted(
                golden.consents.values(), key=lambda c: (c.channel, c.topic))],
            "identifiers": [event_pb2.Identifier(type=kind, value=value)
                            for kind, value in linked]}


def forwarded_event(accepted: Accepted, traceparent: str,
                    state: ProfileState | None = None) -> bytes:
    """The payload orchestration receives for an accepted event: the profile as of that event
    (traits and consent right after it, computed traits and segments after its batch)."""
    return _payload(orchestration_pb.ForwardedEvent(
        event_id=accepted.event_id,
        profile_id=accepted.profile_id,
        event=event_to_proto(accepted.event),
        traceparent=traceparent,
        **_profile(accepted.golden, state),
    ))


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
    return _payload(orchestration_pb.ForwardedEvent(
        event_id=uuid.uuid4().hex,
        profile_id=transition.profile_id,
        event=event_pb2.Event(
            message_id=f"{name}:{segment.segment_id}:{transition.profile_id}:{now.isoformat()}",
            type=event_pb2.EVENT_TYPE_TRACK, name=name,
            properties=dict_to_struct(properties),
            timestamp=to_timestamp(now), source="identity"),
        traceparent=traceparent,
        **_profile(golden, state),
    ))


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
    return _payload(orchestration_pb.ForwardedEvent(
        event_id=key, profile_id=merge.survivor_profile_id,
        event=event_pb2.Event(message_id=key, type=event_pb2.EVENT_TYPE_TRACK,
                              name=PROFILE_MERGED,
                              properties=dict_to_struct(
                                  {"merged_profile_id": merge.merged_profile_id}),
                              timestamp=to_timestamp(now), source="identity"),
        traceparent=traceparent,
        **_profile(golden, state),
    ))


def _payload(message: Any) -> bytes:
    # Messages are typed from the generated .pyi, but their base class comes from protobuf,
    # which ships no types: SerializeToString is Any to mypy.
    payload: bytes = message.SerializeToString()
    return payload
