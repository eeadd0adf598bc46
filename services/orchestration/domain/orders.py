"""The I/O a walk asks of the step worker (a send, a profile update) and the answers it gets.

An order carries a key derived from (enrollment, node, visit), so a retried or replayed step
asks its peer for the same thing again and the peer acts once.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from cjo_orchestration.domain.journeys import Channel
from cjo_platform.profiles import identifier_values


@dataclass(frozen=True)
class SendOrder:
    """A send the worker must perform before the enrollment can move on."""

    node_id: str
    visit: int
    content_key: str
    channel: Channel
    address: str
    idempotency_key: str
    content_version: int = 0
    topic: str = ""  # the send node's consent topic, on whichever channel was chosen
    transactional: bool = False
    decision_id: str = ""  # a decide node's decision, carried on the message
    decision_action: str = ""  # ... and the action it chose


@dataclass(frozen=True)
class ProfileOrder:
    """Traits the worker must set through identity (an identify event whose message id is the
    derived key, so identity applies it once however often it is retried)."""

    node_id: str
    visit: int
    traits: Mapping[str, Any]
    identifiers: tuple[tuple[str, str], ...]
    idempotency_key: str


@dataclass(frozen=True)
class DecideOrder:
    """A decision the worker must ask decisioning for (a decide node's action, an optimising
    split's arm). ``request_id`` is the step's derived key, so a retried or replayed step gets
    the decision it got the first time."""

    node_id: str
    visit: int
    decision_point: str
    request_id: str
    channel: Channel | None = None  # the decide node's channel; None: any
    split: bool = False  # an optimising split's arm (nothing to send), not a decide node


@dataclass(frozen=True)
class SendTimeOrder:
    """A best-time wait's question to decisioning: when to reach this person, at the latest
    ``deadline`` (arrival + max_delay)."""

    node_id: str
    visit: int
    channel: Channel | None
    deadline: datetime
    max_delay: timedelta


Order = SendOrder | ProfileOrder | DecideOrder | SendTimeOrder


@dataclass(frozen=True)
class Sent:
    message_id: str


@dataclass(frozen=True)
class Rejected:
    """A permanent failure: retrying cannot help (unknown content, no address...)."""

    detail: str
    # The journey's own definition is at fault (its content failed to render): the journey
    # counts the error, besides the enrollment that records it.
    journey_error: bool = False


@dataclass(frozen=True)
class Deferred:
    """A transient failure: the same order (same idempotency key) is tried again later."""

    detail: str


@dataclass(frozen=True)
class Decided:
    """Decisioning's answer to a DecideOrder, carried out: ``action`` "" when no action was
    eligible; for a decide node, the message that sent the action's content (``message_id``,
    ``channel``, ``content_key``)."""

    decision_id: str
    action: str = ""
    message_id: str = ""
    channel: Channel | None = None
    content_key: str = ""


@dataclass(frozen=True)
class SendTimeFound:
    """Decisioning's answer to a SendTimeOrder: when to send, and where it came from."""

    send_time: datetime
    source: str = ""


@dataclass(frozen=True)
class Unavailable:
    """Decisioning could not answer (down, busy): not the enrollment's trouble. The step waits
    a backoff per workspace and asks again, never charged an attempt."""

    detail: str


SendResult = Sent | Rejected | Deferred | Decided | SendTimeFound | Unavailable


def send_key(enrollment_id: str, node_id: str, visit: int) -> str:
    """Delivery's idempotency key: a retried or replayed step never sends twice."""
    return f"{enrollment_id}:{node_id}:{visit}"


# Which trait holds a profile's address on each channel, and the identifier type that stands in
# when the trait is missing (a login sent only as an identifier); in-app and webhook need none.
ADDRESS_TRAITS = {Channel.EMAIL: "email", Channel.SMS: "phone", Channel.PUSH: "push_token"}
ADDRESS_IDENTIFIERS = {Channel.EMAIL: "email", Channel.SMS: "phone", Channel.PUSH: "push_token"}
# Identifier types an update_profile node hands identity, strongest first.
UPDATE_IDENTIFIERS = ("user_id", "email", "phone", "anonymous_id")


def recipient_address(channel: Channel, view: Mapping[str, Any]) -> str:
    """Where a send on ``channel`` goes: the profile's address trait, else the identifier of that
    type identity linked last (the profile view's ``identifiers``); "" when it has neither."""
    trait = ADDRESS_TRAITS.get(channel)
    if trait is None:
        return "-"  # delivery addresses in-app and webhook messages by profile
    value = view.get(trait)
    if isinstance(value, str) and value.strip():
        return value.strip()
    linked = identifier_values(view, ADDRESS_IDENTIFIERS[channel])
    return linked[-1].strip() if linked else ""


def identity_identifiers(view: Mapping[str, Any]) -> tuple[tuple[str, str], ...]:
    """Identifiers identity resolves an update of this profile by: of each type of
    :data:`UPDATE_IDENTIFIERS`, the profile's identifier identity linked last (the view's
    ``identifiers``; a copy of a profile past identity's bound always keeps it), then its
    user_id / email / phone traits: 7 at most, within the 20 an event may carry (a profile
    merged from many people holds more, and an event with all of them was refused)."""
    found: dict[tuple[str, str], None] = {}
    for kind in UPDATE_IDENTIFIERS:
        values = identifier_values(view, kind)
        if values:
            found[(kind, values[-1].strip())] = None
    for kind in ("user_id", "email", "phone"):
        trait = view.get(kind)
        if isinstance(trait, str) and trait.strip():
            found[(kind, trait.strip())] = None
    return tuple(found)
