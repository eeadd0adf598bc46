"""The events delivery emits (through identity) when a person engages with a message, and the
properties that tie each to its message: one definition for delivery, which names them, and
orchestration, whose event waits on them hold by default only for the journey's own message.

A delivery engagement event carries ``message_id`` and ``channel``, and, for a message a journey
sent, ``journey_id`` and ``enrollment_id`` (plus ``topic`` and, for a click, ``url``)."""

from __future__ import annotations

ENGAGEMENT_CHANNELS = ("email", "sms", "push", "in_app", "webhook")
"""Delivery's channels (cjo.common.v1.Channel), as the event names spell them."""

EVENT_NAME_TEMPLATES = {
    "opened": "{channel}_opened",
    "clicked": "link_clicked",
    "unsubscribed": "unsubscribed",
    "delivered": "{channel}_delivered",
    "bounced": "{channel}_bounced",
    "complained": "{channel}_complained",
}
"""Each engagement kind's event name; ``{channel}`` is the message's channel."""

MESSAGE_EVENT_NAMES = frozenset(
    template.format(channel=channel)
    for kind, template in EVENT_NAME_TEMPLATES.items() if kind != "unsubscribed"
    for channel in ENGAGEMENT_CHANNELS)
"""The engagement events that are about one message: ``email_opened``, ``link_clicked``,
``sms_delivered``, ``push_bounced`` ... Not ``unsubscribed``: that is a change of consent,
whichever way it came (a message's link, a preference page, an app's own event), and identity
records it as such."""

MESSAGE_ID = "message_id"
JOURNEY_ID = "journey_id"
ENROLLMENT_ID = "enrollment_id"
"""Property names of an engagement event that name its message, and the journey and enrollment
that sent it."""


def is_message_event(event_name: str) -> bool:
    """Whether ``event_name`` is an engagement with one message (:data:`MESSAGE_EVENT_NAMES`)."""
    return event_name in MESSAGE_EVENT_NAMES
