"""What happens to a claimed message after a provider call: its status transitions (retried
under cjo_platform.backoff.RetryPolicy). Pure: the sender feeds in the outcome, the time and a
random source."""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Protocol

from cjo_delivery.domain.messages import (
    FINAL_STATUSES,
    Channel,
    EmailContent,
    MessageStatus,
    truncate_error,
)
from cjo_platform.backoff import RetryPolicy


@dataclass(frozen=True)
class OutgoingEmail:
    """An email ready for a provider. ``message_id`` is cjo's id; providers derive a stable
    Message-ID header from it so a repeated delivery can be recognised by the receiver."""

    message_id: str
    to: str
    subject: str
    preheader: str
    html: str
    text: str
    unsubscribe_url: str = ""


@dataclass(frozen=True)
class PushContent:
    title: str
    body: str
    deep_link: str
    image_url: str
    data: dict[str, str]


@dataclass(frozen=True)
class OutgoingMessage:
    """A message of any channel ready for a provider; exactly the field of its channel is set.
    ``unsubscribe_url`` is the one-click unsubscribe link of email, when tracking is on."""

    message_id: str
    channel: Channel
    to: str
    email: EmailContent | None = None
    sms_text: str = ""
    push: PushContent | None = None
    webhook_body: str = ""
    unsubscribe_url: str = ""
    in_app: bytes | None = None  # the serialized RenderedInApp, stored as rendered
    workspace_id: str = ""
    journey_id: str = ""

    def as_email(self) -> OutgoingEmail:
        assert self.email is not None
        e = self.email
        return OutgoingEmail(message_id=self.message_id, to=self.to, subject=e.subject,
                             preheader=e.preheader, html=e.html, text=e.text,
                             unsubscribe_url=self.unsubscribe_url)


class ProviderError(Exception):
    """A provider did not take the message. ``transient`` says whether trying again later can
    succeed (server down, 4xx) or not (5xx: the address or content is refused for good).
    ``bounce`` marks a permanent refusal of the address itself (no such mailbox, number or
    device): the address is then suppressed. ``retry_after`` is the provider's own request to
    wait (HTTP 429 Retry-After), in seconds. ``unsupported`` says this provider can never take
    the message (it lacks a capability the message needs, such as SMTPUTF8) while another
    provider of the channel may: the message moves on to the next provider, and fails for good
    only when none takes it."""

    def __init__(self, message: str, *, transient: bool, bounce: bool = False,
                 retry_after: float | None = None, unsupported: bool = False) -> None:
        super().__init__(message)
        self.message = message
        self.transient = transient
        self.bounce = bounce
        self.retry_after = retry_after
        self.unsupported = unsupported


class Provider(Protocol):
    async def send(self, message: OutgoingMessage) -> str:
        """Hand ``message`` over; returns the provider's id for it, or raises ProviderError."""
        ...

    async def close(self) -> None:
        """Release connections; called once when the provider is replaced or at shutdown."""
        ...


class EmailProvider(Protocol):
    async def send(self, email: OutgoingEmail) -> str:
        """Hand ``email`` over; returns the provider's id for it, or raises ProviderError."""
        ...

    async def close(self) -> None:
        """Release connections; called once at shutdown."""
        ...


@dataclass(frozen=True)
class Transition:
    """The new state of a claimed message. ``error`` None keeps the stored error."""

    status: MessageStatus
    attempts: int
    next_attempt_time: datetime | None
    error: str | None
    provider_message_id: str
    provider_id: str = ""

    @property
    def is_final(self) -> bool:
        return self.status in FINAL_STATUSES


# The longest provider message id a message keeps (messages.provider_message_id).
MAX_PROVIDER_MESSAGE_ID_LENGTH = 256


def after_success(attempts: int, provider_message_id: str, provider_id: str = "") -> Transition:
    """SENT. A provider id longer than the column holds is not kept (cut, it would match no
    report by that id anyway; stored, PostgreSQL would refuse the whole record, leaving every
    message recorded with it SENDING, to be sent again when the lease runs out)."""
    if len(provider_message_id) > MAX_PROVIDER_MESSAGE_ID_LENGTH:
        provider_message_id = ""
    return Transition(MessageStatus.SENT, attempts, None, "", provider_message_id, provider_id)


# What a message's minimal record says instead of an error text the database refused.
UNSTORED_ERROR = "the error text could not be stored; see the delivery log"


def minimal(transition: Transition) -> Transition:
    """``transition`` with only what the message's state needs (status, attempts, when it is
    due): what is recorded when the database refused the whole one (a provider's id or error
    text it cannot store). The provider message id and provider are left out, an error text is
    replaced by :data:`UNSTORED_ERROR` (the log keeps the real one)."""
    error = transition.error
    return Transition(transition.status, transition.attempts, transition.next_attempt_time,
                      UNSTORED_ERROR if error else error, "")


def after_failure(attempts: int, error: ProviderError, policy: RetryPolicy, now: datetime,
                  rng: random.Random) -> Transition:
    text = truncate_error(error.message)
    if error.transient and not policy.exhausted(attempts):
        wait = policy.delay(attempts, rng)
        if error.retry_after is not None:  # the provider said how long; never come back sooner
            wait = max(wait, timedelta(seconds=error.retry_after))
        return Transition(MessageStatus.QUEUED, attempts, now + wait, text, "")
    if error.bounce:
        return Transition(MessageStatus.BOUNCED, attempts, None, text, "")
    return Transition(MessageStatus.FAILED, attempts, None, text, "")


def leases_ran_out(attempts: int, times: int) -> Transition:
    """FAILED, not sent again: the message's lease ran out ``times`` times in a row with no
    outcome recorded (its sender stopped mid-way, or the database refused the outcome: the
    delivery log says which), each time after a provider may have taken it. No provider is
    called now, so this attempt is not counted."""
    return Transition(MessageStatus.FAILED, attempts - 1, None, truncate_error(
        f"not sent again: its lease ran out {times} times in a row with no outcome recorded "
        f"(its sender stopped, or the database refused the outcome: see the delivery log); it "
        f"may have been delivered"), "")


def suppressed(attempts: int, reason: str) -> Transition:
    """Not sent by policy; the attempt was not a provider call, so it is not counted."""
    return Transition(MessageStatus.SUPPRESSED, attempts - 1, None, truncate_error(reason), "")


def deferred(attempts: int, until: datetime, reason: str) -> Transition:
    return Transition(MessageStatus.DEFERRED, attempts - 1, until, truncate_error(reason), "")


def rate_limited(attempts: int, until: datetime) -> Transition:
    """Every provider that could take the message is at its rate limit: queued again, due when
    a token is there, and the attempt is not counted (no provider was called)."""
    return Transition(MessageStatus.QUEUED, attempts - 1, until, None, "")


def released(attempts: int, now: datetime) -> Transition:
    """A claimed message the sender gave back unsent (shutting down): due again at once, and the
    attempt it never made is not counted."""
    return Transition(MessageStatus.QUEUED, attempts - 1, now, None, "")
