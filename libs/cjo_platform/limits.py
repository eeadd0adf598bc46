"""Limits shared by every service, declared once: what the edge accepts and how wide every
service's columns are (tables build their id columns from these constants, so an id one service
accepts always fits in the next one's storage). Documented in docs/api-guide.md#limits."""

from __future__ import annotations

from collections.abc import Sized
from datetime import UTC, datetime, timedelta

from cjo_platform.errors import InvalidArgument, Violations

MAX_BATCH_ITEMS = 1000
"""Items per batch call: events, renders, messages, facts."""

MAX_CALL_PAYLOAD_BYTES = 4 * 1024 * 1024
"""Payload bytes one service-to-service batch call carries at most (an outbox forwarder's call:
the sum of its rows' payloads; a single larger row goes alone). Far below the gRPC message limit
of every cjo channel and server (``cjo_platform.rpc.client.MAX_MESSAGE_BYTES``, 32 MiB), so a
batch of large items (an identity event carries the profile's traits) is never refused for its
size."""

MAX_EVENT_BYTES = 256 * 1024
"""One event as identity's ``IngestEvents`` receives it, encoded (its properties and traits
included): a larger one fails alone with INVALID_ARGUMENT. Each event travels on as one outbox
row or bus message carrying it and the profile's traits (orchestration's ``ForwardedEvent``,
decisioning's), which must fit the event bus's message limit (NATS' ``max_payload``, 1 MiB) with
room to spare, and one such row is a fraction of a forwarder's call
(:data:`MAX_CALL_PAYLOAD_BYTES`). Far above what a tracking plan sends (tens of properties)."""

MAX_PROFILE_TRAITS_BYTES = 256 * 1024
"""A profile's traits, all of them, encoded as every event of the profile forwards them
(``ForwardedEvent.profile_traits``): an event whose traits would make its profile's larger
fails alone with INVALID_ARGUMENT (``events[i].traits``), before anything is written. With the
event itself (:data:`MAX_EVENT_BYTES`) a forwarded row stays well below the bus's 1 MiB."""

MAX_FORWARDED_PROFILE_BYTES = 768 * 1024
"""A profile as identity hands it to another service, encoded: a whole ``ForwardedEvent`` (the
event with the profile's traits, consents and identifiers) and each profile of a
``BatchGetProfiles`` answer. A profile within the limits above stays well below it (an event and
its traits, 256 KiB each), but merges join records without those checks, so a merged profile
may hold several people's traits, identifiers and consents: past this bound its copy leaves out
only what it must, what makes its size first (its oldest identifiers, its large traits, its
small traits; the newest merges, the channel-wide consents, the address, time zone, locale and
name traits and the newest identifier of each type while anything else is left) and says so
(``profile_trimmed``; :func:`cjo_platform.profiles.trim_profile`). So a forwarded row always
fits the bus's 1 MiB ``max_payload`` with its headers, and an answer carries any profile."""

MAX_EMAIL_BODY_BYTES = 5 * 1024 * 1024
"""A rendered email's HTML plus text in UTF-8 bytes: delivery refuses a larger message and
content fails a render that makes one (RENDER_FAILED), so such an email fails where its
template is, not at sending. Providers refuse much larger messages anyway (SES caps the whole
at 10 MB)."""

MAX_ID_LENGTH = 128
"""Identifiers a client chooses or one service hands to another: message ids, idempotency keys,
fact ids, request ids, external ids, experiment ids, and journey, enrollment, event and message
ids as the services that receive them store them."""

MAX_PROFILE_ID_LENGTH = MAX_ID_LENGTH
"""A profile id as every service stores it. Identity makes 32-character ids, but delivery's
``SendMessage``, orchestration's ``Enroll`` and analytics' ``RecordFacts`` take the caller's own
(an id from another system) up to this length, so every column that holds a profile id outside
identity is this wide: one long id can never stop a forwarder that carries it."""

MAX_TOPIC_LENGTH = 64
"""A message's consent topic (``newsletter``): delivery's ``SendMessage`` and a journey's send
node accept at most this many characters, the width of delivery's ``messages.topic``."""

MAX_SEGMENTS = 100
"""Segments one workspace holds (identity's ``CreateSegment`` refuses one more): every event
evaluates each of them, and a profile's memberships travel with each of its events to
orchestration (``ForwardedEvent.segments``) and into each of its enrollments."""

MAX_COMPUTED_TRAITS = 50
"""Computed traits one workspace defines (identity's settings): a profile's computed traits
travel with each of its events to orchestration (``ForwardedEvent.computed_traits``)."""

MAX_WORKSPACE_ID_LENGTH = 64
"""Width of every ``workspace_id`` column (identity's rule for a workspace id allows 63)."""

MAX_NESTING = 32
"""Levels of nesting in a request (each message, Struct and list is one level): deeper is
refused by the validation layer, well before protobuf's own decoding limit (100)."""

MAX_WINDOW = timedelta(days=3650)
"""The longest time window or delay a service should accept where a duration is added to or
subtracted from a date (computed-trait windows, attribution windows, waits): 10 years, far
beyond any use and far from the limits of date arithmetic (year 1 to 9999), so the arithmetic
never overflows. A service may allow less (a wait: 366 days)."""

EARLIEST_TIME = datetime(1970, 1, 1, tzinfo=UTC)
LATEST_TIME = datetime(2200, 1, 1, tzinfo=UTC)
"""Instants a person plans (a schedule's times) lie between these: wide enough for any use, and
far from the limits of date arithmetic (years 1 and 9999), so stepping a cron expression or
adding a window from them never overflows. (The validation layer allows protobuf's whole
range; a service narrows it where it computes with the time.)"""


def storable_text(text: str, max_length: int) -> str:
    """``text`` as every database can store it in a column of ``max_length`` characters: NUL
    (which PostgreSQL refuses in text) written as ``\\0`` and a longer text cut, ending in
    "…". For what a service records from elsewhere: an error quoting the bad input, a key."""
    text = text.replace("\x00", "\\0")
    return text if len(text) <= max_length else text[:max_length - 1] + "…"


def check_batch(items: Sized, field: str) -> None:
    """Refuse an empty or oversized batch as a whole, naming the field."""
    if not 1 <= len(items) <= MAX_BATCH_ITEMS:
        raise InvalidArgument.one(
            field, f"must hold 1 to {MAX_BATCH_ITEMS} items, got {len(items)}")


def check_encoded_size(size: int, maximum: int) -> None:
    """Refuse an item whose encoded ``size`` exceeds ``maximum`` bytes (the item itself is the
    field: a batch names it ``events[3]``)."""
    if size > maximum:
        raise InvalidArgument.one(
            "", f"at most {maximum // 1024} KiB encoded, got {size:,} bytes")


def check_id(problems: Violations, field: str, value: str, *, required: bool = False,
             max_length: int = MAX_ID_LENGTH) -> bool:
    """Record a problem with the id ``value`` of ``field`` (missing when ``required``, longer
    than ``max_length``); True when there is none."""
    if not value:
        return problems.check(not required, field, "is required")
    return problems.check(len(value) <= max_length, field, f"at most {max_length} characters")


def describe(span: timedelta) -> str:
    """``10 years (3,650 days)``, ``366 days``, ``90 minutes``: a limit as people read it."""
    seconds = int(span.total_seconds())
    if seconds == 1:
        return "1 second"
    if seconds % 86400 == 0:
        days = seconds // 86400
        if days % 365 == 0 and days >= 3650:
            return f"{days // 365} years ({days:,} days)"
        return f"{days:,} days"
    if seconds % 60 == 0:
        return f"{seconds // 60:,} minutes"
    return f"{seconds:,} seconds"


def check_topic(problems: Violations, field: str, topic: str) -> bool:
    """Record a problem with the consent topic ``topic`` of ``field`` (empty: the channel as a
    whole); True when there is none."""
    return problems.check(len(topic) <= MAX_TOPIC_LENGTH, field,
                          f"at most {MAX_TOPIC_LENGTH} characters")


def check_duration(problems: Violations, field: str, value: timedelta | None, *,
                   minimum: timedelta = timedelta(seconds=1),
                   maximum: timedelta = MAX_WINDOW, required: bool = True) -> bool:
    """Record a problem with the duration ``value`` of ``field`` (None is unset): outside
    ``minimum``..``maximum``, or unset when ``required``. True when there is none."""
    if value is None:
        return problems.check(not required, field, "is required")
    return problems.check(minimum <= value <= maximum, field,
                          f"must be {describe(minimum)} to {describe(maximum)}")


def check_time(problems: Violations, field: str, value: datetime | None, *,
               earliest: datetime = EARLIEST_TIME, latest: datetime = LATEST_TIME) -> bool:
    """Record a problem with the instant ``value`` of ``field`` (None is unset and fine) when
    it lies outside ``earliest``..``latest``. True when there is none."""
    if value is None:
        return True
    return problems.check(earliest <= value <= latest, field,
                          f"must be between {earliest:%Y-%m-%d} and {latest:%Y-%m-%d}")
