"""Facts for analytics about a message's final status (forwarded by cjo_platform.facts)."""

from __future__ import annotations

from datetime import datetime

from cjo.analytics.v1 import fact_pb2
from cjo_delivery.domain.messages import Claim, MessageStatus
from cjo_platform.protobuf import to_timestamp

_FACTS = {
    MessageStatus.SENT: ("message_sent", fact_pb2.FACT_TYPE_MESSAGE_SENT),
    MessageStatus.FAILED: ("message_failed", fact_pb2.FACT_TYPE_MESSAGE_FAILED),
    MessageStatus.BOUNCED: ("message_bounced", fact_pb2.FACT_TYPE_MESSAGE_BOUNCED),
}


def fact_payload(claim: Claim, status: MessageStatus, occur_time: datetime) -> bytes | None:
    """The serialized fact for a message that reached ``status``, or None when there is nothing
    to report: only final statuses are facts, and a fact is about a profile, so a message sent
    directly through the API without one is not counted."""
    if status not in _FACTS or not claim.profile_id:
        return None
    prefix, kind = _FACTS[status]
    # The id is derived from the message, so a fact written twice is recorded once.
    payload: bytes = fact_pb2.Fact(
        fact_id=f"{prefix}:{claim.message_id}", type=kind, profile_id=claim.profile_id,
        journey_id=claim.journey_id, enrollment_id=claim.enrollment_id,
        message_id=claim.message_id, occur_time=to_timestamp(occur_time),
    ).SerializeToString()
    return payload
