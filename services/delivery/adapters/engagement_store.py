"""Records an engagement in one transaction: the message's status, the suppression list, an
event for identity and a fact for analytics, both through the outbox."""

from __future__ import annotations

from datetime import datetime

from google.protobuf.struct_pb2 import Struct
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from cjo.analytics.v1 import fact_pb2
from cjo.common.v1 import common_pb2
from cjo.identity.v1 import event_pb2
from cjo_delivery.adapters import repository
from cjo_delivery.adapters.consent import _CHANNELS
from cjo_delivery.adapters.tables import messages
from cjo_delivery.domain.engagement import (
    Engagement,
    EngagementKind,
    status_after,
    suppresses,
)
from cjo_delivery.domain.messages import Channel, MessageStatus
from cjo_platform.db.outbox import Outbox
from cjo_platform.facts import FACTS_TOPIC
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
_IDENTIFIER_TYPES = {Channel.EMAIL: "email", Channel.SMS: "phone", Channel.PUSH: "device_id"}

m = messages.c


def record_engagement(session: Session, outbox: Outbox, engagement: Engagement,
                      now: datetime) -> bool:
    """False when the message does not exist (in the token's workspace)."""
    row = session.execute(select(
        m.status, m.profile_id, m.address, m.channel, m.topic, m.journey_id, m.enrollment_id,
        m.traceparent, m.content).where(
        m.workspace_id == engagement.workspace_id,
        m.message_id == engagement.message_id)).first()
    if row is None:
        return False
    channel = Channel(row.channel)
    current = MessageStatus(row.status)
    new = status_after(current, engagement.kind)
    if new is not current:
        session.execute(update(messages).where(
            m.workspace_id == engagement.workspace_id, m.message_id == engagement.message_id,
            m.status == current.value).values(status=new.value, update_time=now,
                                              **({"error": engagement.reason[:1000]}
                                                 if engagement.reason else {})))
    if suppresses(engagement.kind):
        repository.suppress(session, [(engagement.workspace_id, channel.value, row.address,
                                       f"{engagement.kind.value}: {engagement.reason}")], now)
    identifier = _IDENTIFIER_TYPES.get(channel)
    if identifier is not None:
        properties = Struct()
        properties.update({"channel": channel.value, "message_id": engagement.message_id,
                           **({"topic": row.topic} if row.topic else {}),
                           **({"journey_id": row.journey_id} if row.journey_id else {}),
                           **({"url": engagement.url} if engagement.url else {})})
        event = event_pb2.Event(
            message_id=f"cjo-delivery:{engagement.engagement_id}",
            type=event_pb2.EVENT_TYPE_TRACK, name=engagement.event_name(channel),
            identifiers=[event_pb2.Identifier(type=identifier, value=row.address)],
            properties=properties, timestamp=to_timestamp(now), source="cjo-delivery")
        outbox.add(session, IDENTITY_EVENTS_TOPIC, engagement.workspace_id,
                   [(event.SerializeToString(), row.traceparent)])
    kind = _FACTS.get(engagement.kind)
    if kind is not None and row.profile_id:
        rendered = common_pb2.RenderedMessage.FromString(row.content)
        fact = fact_pb2.Fact(
            fact_id=f"message_{engagement.engagement_id}", type=kind, profile_id=row.profile_id,
            journey_id=row.journey_id, enrollment_id=row.enrollment_id,
            message_id=engagement.message_id, occur_time=to_timestamp(now),
            channel=_CHANNELS[channel], content_key=rendered.content_key,
            variant=rendered.variant)
        outbox.add(session, FACTS_TOPIC, engagement.workspace_id,
                   [(fact.SerializeToString(), row.traceparent)])
    return True
