"""The I/O a walk asks of the step worker (a send, a profile update) and the answers it gets.

An order carries a key derived from (enrollment, node, visit), so a retried or replayed step
asks its peer for the same thing again and the peer acts once.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
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


@dataclass(frozen=True)
class ProfileOrder:
    """Traits the worker must set through identity (an identify event whose message id is the
    derived key, so identity applies it once however often it is retried)."""

    node_id: str
    visit: int
    traits: Mapping[str, Any]
    identifiers: tuple[tuple[str, str], ...]
    idempotency_key: str


Order = SendOrder | ProfileOrder


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


SendResult = Sent | Rejected | Deferred


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
    """Identifiers identity resolves an update of this profile by: the profile's own identifiers
    (the view's ``identifiers``), then its user_id / email / phone traits."""
    found: dict[tuple[str, str], None] = {}
    for kind in UPDATE_IDENTIFIERS:
        for value in identifier_values(view, kind):
            found[(kind, value.strip())] = None
    for kind in ("user_id", "email", "phone"):
        trait = view.get(kind)
        if isinstance(trait, str) and trait.strip():
            found[(kind, trait.strip())] = None
    return tuple(found)
