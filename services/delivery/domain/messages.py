"""A message is one piece of rendered content on its way to one person on one channel.

It is stored (QUEUED) before any provider is called, so an accepted message survives a crash,
and its idempotency key makes a repeated request return the first message instead of sending
again. Lifecycle::

    QUEUED --claim--> SENDING --provider accepted--> SENT
      ^                  |  \\--permanent error or attempts used up--> FAILED
      +-- transient -----+
      +-- lease expired (the sender died mid-way) --+

A message queued while an earlier one of its profile on its channel is not final yet is HELD
behind it (a transactional one only behind a transactional one) and QUEUED (due at once) when
the last such earlier message is final: a later message never overtakes one that waits for its
retry, a consent answer, quiet hours or a frequency cap (see :func:`holds_back`).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from cjo_delivery.domain.addresses import is_plausible_email
from cjo_platform.errors import InvalidArgument, Violations
from cjo_platform.limits import (
    MAX_EMAIL_BODY_BYTES,
    MAX_ID_LENGTH,
    MAX_PROFILE_ID_LENGTH,
    check_id,
    check_topic,
)

NAME_PREFIX = "messages/"

MAX_SUBJECT_LENGTH = 998
"""RFC 5322's line limit; a longer subject is a template bug, not a message."""

MAX_ERROR_LENGTH = 1000


class Channel(StrEnum):
    EMAIL = "email"
    SMS = "sms"
    PUSH = "push"
    IN_APP = "in_app"
    WEBHOOK = "webhook"


SENDABLE_CHANNELS = frozenset(Channel)
"""Channels a provider exists for; the others are refused at the door, not queued to fail."""


class MessageStatus(StrEnum):
    QUEUED = "queued"
    SENDING = "sending"
    SENT = "sent"
    FAILED = "failed"
    SUPPRESSED = "suppressed"
    DEFERRED = "deferred"
    DELIVERED = "delivered"
    BOUNCED = "bounced"
    # Queued behind an earlier message of its profile on its channel that is not final yet.
    HELD = "held"


FINAL_STATUSES = frozenset({MessageStatus.SENT, MessageStatus.FAILED, MessageStatus.SUPPRESSED,
                            MessageStatus.DELIVERED, MessageStatus.BOUNCED})


@dataclass(frozen=True)
class EmailContent:
    subject: str
    preheader: str
    html: str
    text: str


@dataclass(frozen=True)
class NewMessage:
    """A validated send request. ``content`` is the serialized rendered message, kept as the
    caller sent it so GetMessage returns exactly what was sent."""

    idempotency_key: str
    profile_id: str
    address: str
    channel: Channel
    content: bytes
    journey_id: str
    enrollment_id: str
    topic: str = ""
    transactional: bool = False
    time_zone: str = ""
    decision_id: str = ""


@dataclass(frozen=True)
class Message:
    message_id: str
    idempotency_key: str
    profile_id: str
    address: str
    channel: Channel
    content: bytes
    journey_id: str
    enrollment_id: str
    status: MessageStatus
    attempts: int
    error: str
    provider_message_id: str
    create_time: datetime
    update_time: datetime
    topic: str = ""
    transactional: bool = False
    next_attempt_time: datetime | None = None
    provider_id: str = ""
    decision_id: str = ""


@dataclass(frozen=True)
class Accepted:
    """The answer to one send request: the stored message, and whether it existed already."""

    message: Message
    duplicate: bool


@dataclass(frozen=True)
class Claim:
    """A message a sender holds the lease of. ``attempts`` counts this attempt and doubles as a
    fencing token: an outcome is recorded only while the row still carries it, so a sender whose
    lease ran out cannot overwrite the work of the sender that took over."""

    workspace_id: str
    message_id: str
    profile_id: str
    address: str
    channel: Channel
    content: bytes
    journey_id: str
    enrollment_id: str
    attempts: int
    traceparent: str
    topic: str = ""
    transactional: bool = False
    time_zone: str = ""
    # The decisioning decision the message carries out: its SENT fact is the exposure.
    decision_id: str = ""
    # How many times its lease ran out while it was SENDING, this claim's take-over included.
    lease_expiries: int = 0
    # Whether a later message of its profile on its channel was held behind it when it was
    # claimed (messages.holds): its final outcome then releases them.
    holds: bool = False


def holds_back(earlier_transactional: bool, later_transactional: bool) -> bool:
    """Whether an unfinished message holds back a later one of its profile on its channel: a
    marketing message waits behind any, a transactional one (a receipt, a password reset) only
    behind a transactional one, never behind marketing waiting for quiet hours or a cap."""
    return earlier_transactional or not later_transactional


def held_on_queueing(new: Sequence[tuple[str, str, bool]],
                     blockers: Iterable[tuple[str, str, bool]]) -> list[bool]:
    """Whether each of the ``new`` messages (profile, channel, transactional; in queue order;
    profile "" for none) is queued HELD: behind one of the unfinished ``blockers`` (same
    form), or behind one before it in ``new``, of its profile and channel (:func:`holds_back`)."""
    earlier: dict[tuple[str, str], list[bool]] = {}
    for profile, channel, transactional in blockers:
        earlier.setdefault((profile, channel), []).append(transactional)
    held = []
    for profile, channel, transactional in new:
        if not profile:
            held.append(False)
            continue
        ahead = earlier.setdefault((profile, channel), [])
        held.append(any(holds_back(e, transactional) for e in ahead))
        ahead.append(transactional)
    return held


_PHONE = re.compile(r"\+[1-9][0-9]{6,14}")
"""E.164: a plus, a country code and at most 15 digits in all."""


def validate_send(*, idempotency_key: str, profile_id: str, address: str,
                  channel: Channel | None, email: EmailContent | None, journey_id: str,
                  enrollment_id: str, body: str | None = None, topic: str = "",
                  time_zone: str = "", time_zone_known: bool = True,
                  decision_id: str = "") -> Violations:
    """Every problem of one send request, with field paths of SendMessageRequest."""
    problems = Violations()
    if problems.check(bool(idempotency_key), "idempotency_key", "is required"):
        problems.check(len(idempotency_key) <= MAX_ID_LENGTH, "idempotency_key",
                       f"at most {MAX_ID_LENGTH} characters")
    check_id(problems, "recipient.profile_id", profile_id, max_length=MAX_PROFILE_ID_LENGTH)
    problems.check(len(journey_id) <= MAX_ID_LENGTH, "journey_id",
                   f"at most {MAX_ID_LENGTH} characters")
    problems.check(len(enrollment_id) <= MAX_ID_LENGTH, "enrollment_id",
                   f"at most {MAX_ID_LENGTH} characters")
    problems.check(len(decision_id) <= MAX_ID_LENGTH, "decision_id",
                   f"at most {MAX_ID_LENGTH} characters")
    if channel is not Channel.IN_APP:  # the inbox is addressed by profile
        problems.check(bool(address), "recipient.address", "is required")
    check_topic(problems, "topic", topic)
    if time_zone:
        problems.check(time_zone_known, "time_zone", "is not an IANA time zone")
    if not problems.check(channel is not None, "content.channel", "is required"):
        return problems
    if channel is Channel.IN_APP:
        problems.check(bool(profile_id), "recipient.profile_id",
                       "is required for CHANNEL_IN_APP: the inbox is the profile's")
    if channel is not Channel.EMAIL:
        _validate_other(channel, address, body, problems)
        return problems
    if address:
        problems.check(is_plausible_email(address), "recipient.address",
                       "is not a valid email address")
    if email is None:
        problems.add("content.email", "is required for CHANNEL_EMAIL")
    else:
        _validate_email(email, problems)
    return problems


_BODIES = {Channel.SMS: "content.sms", Channel.PUSH: "content.push",
           Channel.WEBHOOK: "content.webhook", Channel.IN_APP: "content.in_app"}


def _validate_other(channel: Channel | None, address: str, body: str | None,
                    problems: Violations) -> None:
    """``body`` is the channel's main text (SMS text, push title + body, webhook JSON), None
    when the rendered message carries another channel's body."""
    assert channel is not None
    if channel is Channel.SMS and address:
        problems.check(bool(_PHONE.fullmatch(address)), "recipient.address",
                       "must be a phone number in E.164 form, e.g. +14155550100")
    elif address:
        problems.check(len(address) <= 320 and address.isprintable() and " " not in address,
                       "recipient.address", "must be one printable token of at most 320 "
                       "characters")
    field = _BODIES[channel]
    if body is None:
        problems.add(field, f"is required for CHANNEL_{channel.value.upper()}")
    elif problems.check(bool(body.strip()), field, "must not be empty"):
        problems.check(len(body.encode()) <= MAX_EMAIL_BODY_BYTES, field,
                       f"at most {MAX_EMAIL_BODY_BYTES} bytes")


def _validate_email(email: EmailContent, problems: Violations) -> None:
    if problems.check(bool(email.subject.strip()), "content.email.subject", "is required"):
        problems.check("\r" not in email.subject and "\n" not in email.subject,
                       "content.email.subject", "must be a single line")
        problems.check(len(email.subject) <= MAX_SUBJECT_LENGTH, "content.email.subject",
                       f"at most {MAX_SUBJECT_LENGTH} characters")
    problems.check("\r" not in email.preheader and "\n" not in email.preheader,
                   "content.email.preheader", "must be a single line")
    if problems.check(bool(email.html.strip() or email.text.strip()), "content.email",
                      "needs an html or a text body"):
        size = len(email.html.encode()) + len(email.text.encode())
        problems.check(size <= MAX_EMAIL_BODY_BYTES, "content.email",
                       f"html and text together at most {MAX_EMAIL_BODY_BYTES} bytes")


def message_name(message_id: str) -> str:
    return f"{NAME_PREFIX}{message_id}"


def message_id_of(name: str, field: str = "name") -> str:
    message_id = name.removeprefix(NAME_PREFIX)
    if (not name.startswith(NAME_PREFIX) or not message_id or "/" in message_id
            or len(message_id) > MAX_ID_LENGTH):
        raise InvalidArgument.one(field, "must be messages/{message_id}")
    return message_id


def truncate_error(text: str) -> str:
    text = " ".join(text.split())  # provider answers span lines; one line reads better
    return text if len(text) <= MAX_ERROR_LENGTH else text[: MAX_ERROR_LENGTH - 1] + "…"
