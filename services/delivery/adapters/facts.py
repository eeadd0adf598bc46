"""Facts for analytics about a message's final status (forwarded by cjo_platform.facts)."""

from __future__ import annotations

from datetime import datetime
from functools import lru_cache

from google.protobuf.message import DecodeError

from cjo.analytics.v1 import fact_pb2
from cjo.common.v1 import common_pb2
from cjo_delivery.adapters.contents import CHANNELS
from cjo_delivery.domain.messages import Claim, MessageStatus
from cjo_platform.experiment_ids import content_experiment_id
from cjo_platform.protobuf import to_timestamp

_FACTS = {
    MessageStatus.SENT: ("message_sent", fact_pb2.FACT_TYPE_MESSAGE_SENT),
    MessageStatus.FAILED: ("message_failed", fact_pb2.FACT_TYPE_MESSAGE_FAILED),
    MessageStatus.BOUNCED: ("message_bounced", fact_pb2.FACT_TYPE_MESSAGE_BOUNCED),
}
_CHANNEL_PROTOS = {channel: value for value, channel in CHANNELS.items()}
# The facts of one group of outcomes share their moment: converted once, not per message (a
# message field given to a constructor is copied, so the cached Timestamp is never changed).
_timestamp = lru_cache(maxsize=8)(to_timestamp)


def _rendered(claim: Claim) -> common_pb2.RenderedMessage:
    try:
        rendered: common_pb2.RenderedMessage = common_pb2.RenderedMessage.FromString(
            claim.content)
    except DecodeError:  # stored by something else: the facts go without its attributes
        rendered = common_pb2.RenderedMessage()
    return rendered


def fact_payloads(claim: Claim, status: MessageStatus, occur_time: datetime) -> list[bytes]:
    """The serialized facts for a message that reached ``status``; none when there is nothing
    to report: only final statuses are facts, and a fact is about a profile, so a message sent
    directly through the API without one is not counted.

    Each carries the message's channel, content item and variant (so channel performance
    counts every send under its variant). A SENT message with a content variant also exposes
    its person to the content item's experiment: only a sent message is an exposure (a
    suppressed, failed or bounced one showed the person nothing)."""
    if status not in _FACTS or not claim.profile_id:
        return []
    prefix, kind = _FACTS[status]
    rendered = _rendered(claim)
    # The ids are derived from the message, so a fact written twice is recorded once.
    message = fact_pb2.Fact(
        fact_id=f"{prefix}:{claim.message_id}", type=kind, profile_id=claim.profile_id,
        journey_id=claim.journey_id, enrollment_id=claim.enrollment_id,
        message_id=claim.message_id, occur_time=_timestamp(occur_time),
        channel=_CHANNEL_PROTOS[claim.channel], content_key=rendered.content_key,
        variant=rendered.variant, decision_id=claim.decision_id)
    facts = [message]
    if status is MessageStatus.SENT and rendered.variant and rendered.content_key:
        exposure = fact_pb2.Fact()
        exposure.CopyFrom(message)
        exposure.fact_id = f"experiment_exposed:{claim.message_id}"
        exposure.type = fact_pb2.FACT_TYPE_EXPERIMENT_EXPOSED
        exposure.experiment_id = content_experiment_id(rendered.content_key)
        exposure.arm = rendered.variant
        exposure.arm_weight = float(rendered.variant_weight)
        facts.append(exposure)
    return [f.SerializeToString() for f in facts]


def exposes_decision(claim: Claim, status: MessageStatus) -> bool:
    """Whether the message's first fact (:func:`fact_payloads`) tells decisioning that the
    person saw the message's decision: the SENT fact of a message with a decision id. A
    suppressed, failed or deduplicated message showed the person nothing, so it is no exposure
    (and a decision never exposed teaches nothing)."""
    return status is MessageStatus.SENT and bool(claim.decision_id) and bool(claim.profile_id)
