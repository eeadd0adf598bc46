"""What happens to a claimed message after a provider call: the retry policy and the status
transitions. Pure: the sender feeds in the outcome, the time and a random source."""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Protocol

from cjo_delivery.domain.messages import MessageStatus, truncate_error


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


class ProviderError(Exception):
    """A provider did not take the message. ``transient`` says whether trying again later can
    succeed (server down, 4xx) or not (5xx: the address or content is refused for good)."""

    def __init__(self, message: str, *, transient: bool) -> None:
        super().__init__(message)
        self.message = message
        self.transient = transient


class EmailProvider(Protocol):
    async def send(self, email: OutgoingEmail) -> str:
        """Hand ``email`` over; returns the provider's id for it, or raises ProviderError."""
        ...

    async def close(self) -> None:
        """Release connections; called once at shutdown."""
        ...


@dataclass(frozen=True)
class RetryPolicy:
    max_attempts: int = 5
    base_delay: timedelta = timedelta(seconds=30)
    max_delay: timedelta = timedelta(hours=1)

    def delay(self, attempt: int, rng: random.Random) -> timedelta:
        """Wait after failed attempt number ``attempt`` (1-based): exponential, capped, with
        "equal jitter" — half fixed, half random — so a server that comes back is not hit by
        every queued message in the same instant, yet no retry comes almost immediately."""
        ceiling = min(self.max_delay, self.base_delay * (2 ** max(attempt - 1, 0)))
        return ceiling / 2 + (ceiling / 2) * rng.random()


@dataclass(frozen=True)
class Transition:
    """The new state of a claimed message. ``error`` None keeps the stored error."""

    status: MessageStatus
    attempts: int
    next_attempt_time: datetime | None
    error: str | None
    provider_message_id: str

    @property
    def is_final(self) -> bool:
        return self.status in (MessageStatus.SENT, MessageStatus.FAILED)


def after_success(attempts: int, provider_message_id: str) -> Transition:
    return Transition(MessageStatus.SENT, attempts, None, "", provider_message_id)


def after_failure(attempts: int, error: ProviderError, policy: RetryPolicy, now: datetime,
                  rng: random.Random) -> Transition:
    text = truncate_error(error.message)
    if error.transient and attempts < policy.max_attempts:
        return Transition(MessageStatus.QUEUED, attempts, now + policy.delay(attempts, rng), text,
                          "")
    return Transition(MessageStatus.FAILED, attempts, None, text, "")


def released(attempts: int, now: datetime) -> Transition:
    """A claimed message the sender gave back unsent (shutting down): due again at once, and the
    attempt it never made is not counted."""
    return Transition(MessageStatus.QUEUED, attempts - 1, now, None, "")
