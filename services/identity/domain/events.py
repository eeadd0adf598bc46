"""Events as sources send them, and what makes one acceptable."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from cjo_identity.domain.identifiers import (
    BUILT_IN_TYPES,
    EMAIL,
    PHONE,
    Identifier,
    parse_identifier,
)
from cjo_platform.errors import InvalidArgument, Violations
from cjo_platform.limits import MAX_ID_LENGTH, check_topic

MAX_NAME_LENGTH = 128
MAX_SOURCE_LENGTH = 64
MAX_IDENTIFIERS = 20
_ID_TOO_LONG = f"at most {MAX_ID_LENGTH} characters"
_NAME_TOO_LONG = f"at most {MAX_NAME_LENGTH} characters"
_SOURCE_TOO_LONG = f"at most {MAX_SOURCE_LENGTH} characters"
_IDENTIFIERS_COUNT = f"must hold 1 to {MAX_IDENTIFIERS} identifiers"
# Track events with these names record consent; properties {"channel": ..., "topic": ...}.
SUBSCRIBED = "subscribed"
UNSUBSCRIBED = "unsubscribed"
CONSENT_CHANNELS = ("email", "sms", "push", "in_app", "webhook")


class EventType(StrEnum):
    TRACK = "track"
    IDENTIFY = "identify"


@dataclass(frozen=True)
class Event:
    message_id: str
    type: EventType
    name: str
    identifiers: tuple[Identifier, ...]  # normalised, without repeats
    properties: Mapping[str, Any]
    traits: Mapping[str, Any]
    timestamp: datetime  # when it happened at the source
    source: str
    # Set when the sender named the profile (then ``identifiers`` is empty): the event goes to
    # it without resolution.
    profile_id: str = ""
    # The time the sender gave when ``timestamp`` replaced it (corrected_time); None when
    # ``timestamp`` is the sender's own. Kept for the record, never used to order writes.
    original_timestamp: datetime | None = None


@dataclass(frozen=True)
class StoredEvent:
    event_id: str
    profile_id: str
    event: Event
    receive_time: datetime


def parse_event(*, message_id: str, event_type: EventType | None, name: str,
                identifiers: Sequence[tuple[str, str]], properties: Mapping[str, Any],
                traits: Mapping[str, Any], timestamp: datetime | None, source: str,
                now: datetime, known_types: frozenset[str] = frozenset(BUILT_IN_TYPES),
                phone_region: str = "", profile_id: str = "") -> Event:
    """A valid, normalised event; raises InvalidArgument naming every bad field (paths are
    relative to the event, e.g. ``identifiers[0].type``). The time defaults to ``now``. With
    ``profile_id`` the event names its profile and carries no identifiers."""
    # Checked inline, the messages made once: this runs for every event of every batch, and a
    # call with a formatted message per check cost more than the checks.
    problems = Violations()
    if not message_id:
        problems.add("message_id", "is required")
    if len(message_id) > MAX_ID_LENGTH:
        problems.add("message_id", _ID_TOO_LONG)
    if event_type is None:
        problems.add("type", "is required")
    if event_type is EventType.TRACK and not name:
        problems.add("name", "is required for track events")
    if len(name) > MAX_NAME_LENGTH:
        problems.add("name", _NAME_TOO_LONG)
    if len(source) > MAX_SOURCE_LENGTH:
        problems.add("source", _SOURCE_TOO_LONG)
    if profile_id:
        if len(profile_id) > MAX_ID_LENGTH:
            problems.add("profile_id", _ID_TOO_LONG)
        if identifiers:
            problems.add("identifiers", "must be empty when profile_id is set")
    elif not 1 <= len(identifiers) <= MAX_IDENTIFIERS:
        problems.add("identifiers", _IDENTIFIERS_COUNT)
    parsed = [parse_identifier(kind, value, problems, f"identifiers[{index}]",
                               known_types=known_types, phone_region=phone_region)
              for index, (kind, value) in enumerate(identifiers)]
    # An email or phone given as a trait identifies the person too (so that, e.g., an
    # unsubscribe that delivery reports by email address reaches the profile). A trait value
    # that is not a valid identifier stays a plain trait.
    for kind in (EMAIL, PHONE):
        value = traits.get(kind)
        if isinstance(value, str) and value.strip() and kind in known_types:
            parsed.append(parse_identifier(kind, value, Violations(), known_types=known_types,
                                           phone_region=phone_region))
    if event_type is EventType.TRACK and name in (SUBSCRIBED, UNSUBSCRIBED):
        problems.check(properties.get("channel") in CONSENT_CHANNELS, "properties.channel",
                       f"must be one of {', '.join(CONSENT_CHANNELS)} for {name} events")
        topic = properties.get("topic", "")
        if problems.check(topic is None or isinstance(topic, str), "properties.topic",
                          "must be a string") and topic:
            # The same limit as every send's topic: a longer one could be stored but never
            # named by a message, so it would silently stop nothing.
            check_topic(problems, "properties.topic", topic)
    if problems or event_type is None:
        raise InvalidArgument(problems.items)
    return Event(
        message_id=message_id, type=event_type, name=name,
        identifiers=tuple(dict.fromkeys(i for i in parsed if i is not None)),
        properties=properties, traits=traits,
        timestamp=timestamp or now, source=source, profile_id=profile_id,
    )


# How far ahead of the receive time an event's own time may be: clocks drift, and a browser's
# may be set wrong. CJO_IDENTITY_MAX_CLOCK_SKEW_SECONDS.
DEFAULT_MAX_CLOCK_SKEW = timedelta(minutes=5)


def corrected_time(event: Event, received: datetime, max_skew: timedelta,
                   untrusted: bool = False) -> Event:
    """``event`` with a time it may have. Traits and consent resolve by the newest time, so an
    event dated in the future would beat every real write until that date (an unsubscribe
    delivery reports at its receive time would lose to a "subscribed" dated next year). As with
    Segment's sentAt/receivedAt correction: a time more than ``max_skew`` ahead of ``received``
    becomes ``received``. An ``untrusted`` sender's (a publishable key's: anyone can use it)
    is always ``received``. The sent time is kept as ``original_timestamp`` (when it was not
    already ``received``: the default of an event sent without one)."""
    if (untrusted or event.timestamp > received + max_skew) and event.timestamp != received:
        return replace(event, timestamp=received, original_timestamp=event.timestamp)
    return event
