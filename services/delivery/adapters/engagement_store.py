"""What recording an engagement reads and writes: the engaged message, its status, and the
payloads of the event for identity and the fact for analytics (service_layer/engagement.py
puts them together in one transaction)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from google.protobuf.struct_pb2 import Struct
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from cjo.analytics.v1 import fact_pb2
from cjo.common.v1 import common_pb2
from cjo.identity.v1 import event_pb2
from cjo_delivery.adapters.consent import _CHANNELS
from cjo_delivery.adapters.tables import messages
from cjo_delivery.domain.engagement import Engagement, EngagementKind
from cjo_delivery.domain.messages import Channel, MessageStatus
from cjo_platform.engagement import ENROLLMENT_ID, JOURNEY_ID, MESSAGE_ID
from cjo_platform.protobuf import to_timestamp

IDENTITY_EVENTS_TOPIC = "identity.events"
"""Outbox topic of engagement events for identity (forwarded with IngestEvents)."""

_FACTS = {
    EngagementKind.OPENED: fact_pb2.FACT_TYPE_MESSAGE_OPENED,
    EngagementKind.CLICKED: fact_pb2.FACT_TYPE_MESSAGE_CLICKED,
    EngagementKind.UNSUBSCRIBED: fact_pb2.FACT_TYPE_MESSAGE_UNSUBSCRIBED,
    EngagementKind.DELIVERED: fact_pb2.FACT_TYPE_MESSAGE_DELIVERED,
    EngagementKind.BOUNCED: fact_pb2.FACT_TYPE_MESSAGE_BOUNCED,
}
# A message sent to no profile (SendMessage to a bare address) tells identity by its address;
# a push token is no identifier of identity's, so its engagement has nowhere to go.
_IDENTIFIER_TYPES = {Channel.EMAIL: "email", Channel.SMS: "phone"}

m = messages.c


@dataclass(frozen=True)
class EngagedMessage:
    status: MessageStatus
    profile_id: str
    address: str
    channel: Channel
    topic: str
    journey_id: str
    enrollment_id: str
    traceparent: str
    content: bytes
    decision_id: str = ""


def engaged_message(session: Session, engagement: Engagement) -> EngagedMessage | None:
    """The message ``engagement`` is about, in the engagement's workspace; None if none."""
    row = session.execute(select(
        m.status, m.profile_id, m.address, m.channel, m.topic, m.journey_id, m.enrollment_id,
        m.traceparent, m.content, m.decision_id).where(
        m.workspace_id == engagement.workspace_id,
        m.message_id == engagement.message_id)).first()
    if row is None:
        return None
    return EngagedMessage(MessageStatus(row.status), row.profile_id, row.address,
                          Channel(row.channel), row.topic, row.journey_id, row.enrollment_id,
                          row.traceparent, row.content, row.decision_id)


def change_status(session: Session, engagement: Engagement, current: MessageStatus,
                  new: MessageStatus, now: datetime) -> None:
    """``current`` -> ``new``, unless the status moved on meanwhile."""
    session.execute(update(messages).where(
        m.workspace_id == engagement.workspace_id, m.message_id == engagement.message_id,
        m.status == current.value).values(status=new.value, update_time=now,
                                          **({"error": engagement.reason[:1000]}
                                             if engagement.reason else {})))


def event_payload(engagement: Engagement, message: EngagedMessage, now: datetime
                  ) -> bytes | None:
    """The serialized event telling identity about the engagement, on the profile the message
    was sent to: named by its id, never looked up by the address, which another profile may
    share (a family's email, a reused device token). A message sent to no profile is named by
    its address where that is an identifier (email, SMS); None otherwise."""
    identifier = _IDENTIFIER_TYPES.get(message.channel)
    if not message.profile_id and identifier is None:
        return None
    properties = Struct()
    # The journey and enrollment that sent the message: an event wait on an engagement holds
    # only for its own enrollment's message (cjo_platform.engagement).
    properties.update({"channel": message.channel.value, MESSAGE_ID: engagement.message_id,
                       **({"topic": message.topic} if message.topic else {}),
                       **({JOURNEY_ID: message.journey_id} if message.journey_id else {}),
                       **({ENROLLMENT_ID: message.enrollment_id}
                          if message.enrollment_id else {}),
                       **({"url": engagement.url} if engagement.url else {})})
    event: bytes = event_pb2.Event(
        message_id=f"cjo-delivery:{engagement.engagement_id}",
        type=event_pb2.EVENT_TYPE_TRACK, name=engagement.event_name(message.channel),
        profile_id=message.profile_id,
        identifiers=([] if message.profile_id or identifier is None
                     else [event_pb2.Identifier(type=identifier, value=message.address)]),
        properties=properties, timestamp=to_timestamp(now),
        source="cjo-delivery").SerializeToString()
    return event


def fact_payload(engagement: Engagement, message: EngagedMessage, now: datetime
                 ) -> bytes | None:
    """The serialized fact for analytics; None for a kind that is no fact or a message
    without a profile."""
    kind = _FACTS.get(engagement.kind)
    if kind is None or not message.profile_id:
        return None
    rendered = common_pb2.RenderedMessage.FromString(message.content)
    payload: bytes = fact_pb2.Fact(
        fact_id=f"message_{engagement.engagement_id}", type=kind,
        profile_id=message.profile_id, journey_id=message.journey_id,
        enrollment_id=message.enrollment_id, message_id=engagement.message_id,
        occur_time=to_timestamp(now), channel=_CHANNELS[message.channel],
        content_key=rendered.content_key, variant=rendered.variant,
        decision_id=message.decision_id).SerializeToString()
    return payload


def learns_send_times(engagement: Engagement) -> bool:
    """Opens and clicks go to decisioning too (with or without a decision): the hours a person
    engages are what best send times are learned from."""
    return engagement.kind in (EngagementKind.OPENED, EngagementKind.CLICKED)
