"""The profile view: what a condition's ``profile`` (CEL) and a template's ``profile.*``
(Liquid) see of a person, built in one place for every service.

The profile's traits sit flat at the top (``profile.email``), beside four reserved keys:

- ``computed``: the computed traits, by name (``profile.computed.orders_30d``);
- ``segments``: the ids of the segments the profile is a member of
  (``'vip' in profile.segments``);
- ``consent``: what the person said per channel (``profile.consent.email``) and per
  ``channel/topic`` (``profile.consent['email/newsletter']``): "subscribed", "unsubscribed" or,
  for a channel nobody said anything about, "unknown". Identity's segment conditions read the
  same shape as their ``consent`` variable (:func:`consent_view`);
- ``identifiers``: the identifiers that resolve to the profile, by type, each a list of values
  in the order identity linked them (``profile.identifiers.email``,
  ``'ada@example.com' in profile.identifiers.email``; a type the profile has none of is absent:
  ``has(profile.identifiers.phone)``).

A trait named like a reserved key is shadowed by it in the view (the profile keeps it; read it
through identity's GetProfile).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from google.protobuf import struct_pb2
from google.protobuf.message import Message

from cjo.common.v1 import common_pb2
from cjo.identity.v1 import consent_pb2, profile_pb2
from cjo_platform.protobuf import struct_to_dict

# The channels consent is recorded for; every one is present in a consent view.
CONSENT_CHANNELS = ("email", "sms", "push", "in_app", "webhook")
COMPUTED = "computed"
SEGMENTS = "segments"
CONSENT = "consent"
IDENTIFIERS = "identifiers"
RESERVED_KEYS = frozenset({COMPUTED, SEGMENTS, CONSENT, IDENTIFIERS})
SUBSCRIBED = "subscribed"
UNSUBSCRIBED = "unsubscribed"
UNKNOWN = "unknown"


def consent_view(records: Iterable[tuple[str, str, bool]]) -> dict[str, str]:
    """``{channel: state, "channel/topic": state}`` from (channel, topic, subscribed) records.
    Every channel is present, so ``consent.email == "unknown"`` works without ``has()``."""
    consent: dict[str, str] = dict.fromkeys(CONSENT_CHANNELS, UNKNOWN)
    for channel, topic, subscribed in records:
        consent[f"{channel}/{topic}" if topic else channel] = (
            SUBSCRIBED if subscribed else UNSUBSCRIBED)
    return consent


def identifiers_view(identifiers: Iterable[tuple[str, str]]) -> dict[str, list[str]]:
    """``{type: [value, ...]}`` from (type, value) pairs, values in the order given (identity's:
    the order it linked them), each once."""
    found: dict[str, list[str]] = {}
    for kind, value in identifiers:
        values = found.setdefault(kind, [])
        if value not in values:
            values.append(value)
    return found


def profile_view(traits: Mapping[str, Any], computed: Mapping[str, Any] | None = None,
                 segments: Iterable[str] = (),
                 consent: Mapping[str, str] | None = None,
                 identifiers: Iterable[tuple[str, str]] = ()) -> dict[str, Any]:
    """The view of a profile: its traits at the top, then the reserved keys (which win over a
    trait of the same name)."""
    return {**traits, COMPUTED: dict(computed or {}), SEGMENTS: sorted(set(segments)),
            CONSENT: dict(consent) if consent is not None else consent_view(()),
            IDENTIFIERS: identifiers_view(identifiers)}


def identifier_values(view: Mapping[str, Any], kind: str) -> list[str]:
    """The profile's identifiers of type ``kind`` (oldest first), from its view."""
    held = view.get(IDENTIFIERS)
    values = held.get(kind) if isinstance(held, Mapping) else None
    return [v for v in values if isinstance(v, str) and v.strip()] if isinstance(
        values, list) else []


def with_traits(view: Mapping[str, Any], traits: Mapping[str, Any]) -> dict[str, Any]:
    """``view`` after ``traits`` were set on the profile (the reserved keys stay)."""
    return {**view, **{k: v for k, v in traits.items() if k not in RESERVED_KEYS}}


# --- from the identity protos -------------------------------------------------------------------


_CHANNEL_NAMES: dict[int, str] = {
    number: name.removeprefix("CHANNEL_").lower() for name, number in common_pb2.Channel.items()}


def channel_name(channel: int) -> str:
    """``CHANNEL_IN_APP`` -> ``in_app`` (looked up: every profile read converts its consents)."""
    name: str | None = _CHANNEL_NAMES.get(channel)
    if name is None:  # not in these protos: Name raises as it did
        return str(common_pb2.Channel.Name(channel)).removeprefix("CHANNEL_").lower()
    return name


def channel_proto(name: str) -> common_pb2.Channel:
    """``in_app`` -> ``CHANNEL_IN_APP``."""
    value: common_pb2.Channel = common_pb2.Channel.Value(f"CHANNEL_{name.upper()}")
    return value


_SAID = (consent_pb2.CONSENT_STATE_SUBSCRIBED, consent_pb2.CONSENT_STATE_UNSUBSCRIBED)


def consent_from_proto(consents: Iterable[consent_pb2.Consent]) -> dict[str, str]:
    return consent_view(
        (channel_name(c.channel), c.topic, c.state == consent_pb2.CONSENT_STATE_SUBSCRIBED)
        for c in consents if c.state in _SAID)


def segment_id(name: str) -> str:
    """``segments/{id}`` -> ``id`` (an id given bare stays as it is)."""
    return name.removeprefix("segments/")


def view_from_proto(profile: profile_pb2.Profile) -> dict[str, Any]:
    """The view of a profile identity answered (GetProfile, BatchGetProfiles)."""
    return profile_view(struct_to_dict(profile.traits), struct_to_dict(profile.computed_traits),
                        (segment_id(s) for s in profile.segments),
                        consent_from_proto(profile.consents),
                        ((i.type, i.value) for i in profile.identifiers))


def fill_view_struct(into: struct_pb2.Struct, profile: profile_pb2.Profile,
                     view: Mapping[str, Any]) -> None:
    """Set ``into`` (a request's Struct: a render's context) to ``view``, the view
    :func:`view_from_proto` made of ``profile`` and not changed since, copying identity's
    traits and computed traits as they came (a copy of the messages) instead of building every
    value again from the dict (``Struct.update``: about half the time, more with more traits);
    the other reserved keys come from ``view``."""
    into.CopyFrom(profile.traits)
    into.fields[COMPUTED].struct_value.CopyFrom(profile.computed_traits)
    for key in (SEGMENTS, CONSENT, IDENTIFIERS):
        into[key] = view[key]


# --- bounded copies (limits.MAX_FORWARDED_PROFILE_BYTES) -----------------------------------------

LARGE_TRAIT_BYTES = 1024
"""A trait at least this large (encoded, with its provenance) is one that makes a profile's size:
a bounded copy leaves such traits out, unless the oldest identifiers alone cover the excess.
Smaller traits go only when neither covers it, those of :data:`KEPT_TRAITS` last of all."""

KEPT_TRAITS = frozenset({"email", "phone", "push_token", "timezone", "time_zone", "locale",
                         "first_name", "last_name"})
"""Traits a bounded copy leaves out only as a last resort, whatever their size: those the
services read by name (a send's address: review rbigrow3 HIGH, the person's time zone, their
locale) and a greeting's names."""
KEPT_MERGES = 100
"""The newest ``merged_from`` entries a bounded copy always keeps (while anything else is left
to leave out): orchestration holds a profile's steps back for a merge made in the last
``merge_wait_limit`` (10 minutes by default) whose event has not reached it yet, reading the
recent entries only."""

# The fields :func:`trim_profile` may shorten in identity's copies of a profile: a ``Profile``
# (BatchGetProfiles' answers; its Struct ``traits``) and a ``ForwardedEvent`` (its
# ``profile_traits``; it carries no merges).
PROFILE_TRIM_FIELDS = {"provenance": "trait_provenance", "identifiers": "identifiers",
                       "merges": "merged_from", "consents": "consents"}
FORWARDED_TRIM_FIELDS = {"identifiers": "identifiers", "consents": "consents"}


def _entry_bytes(size: int) -> int:
    """What an element of ``size`` bytes takes in its repeated (or map) field: its tag (one
    byte: every field trimmed is numbered below 16) and its length, a varint."""
    return 1 + (size.bit_length() + 6) // 7 + size if size else 2


def trim_profile(message: Message, bound: int, traits: str, *, provenance: str = "",
                 identifiers: str = "", merges: str = "", consents: str = "") -> bool:
    """Bound ``message`` (a ``ForwardedEvent``, a ``Profile``), in place, to ``bound`` bytes
    encoded, for a profile grown past the limits by merges: it leaves out, one element at a
    time, only what it must, what makes the size and what its readers miss least first. Returns
    whether anything was left out; a message within the bound costs one ``ByteSize``.

    Its fields by name: the Struct ``traits`` (a trait's entry in the map ``provenance`` goes
    with it) and the repeated ``identifiers`` (in link order), ``merges`` (``merged_from``,
    oldest first) and ``consents``; a field not named is never touched. In turn, each step
    only while the copy is past the bound:

    1. the oldest identifiers, keeping the newest of each type (a send's address falls back to
       it, an update_profile node resolves the profile by it), but only when they can cover
       the excess (review rbigrow3: a template's 4 KB cart went while old identifiers made
       the size);
    2. the large traits (:data:`LARGE_TRAIT_BYTES` and more), largest first;
    3. the oldest identifiers as in 1, when they cover what is left;
    4. the other traits, largest first, but those of :data:`KEPT_TRAITS`;
    5. the oldest identifiers as in 1, whatever they cover;
    6. the oldest merges, keeping the newest :data:`KEPT_MERGES` (orchestration's merge wait
       reads them), then the consents to a topic, the oldest said first: the channel-wide
       consents (``profile.consent.email``, at most one per channel) stay;
    7. the traits of :data:`KEPT_TRAITS` (an address, a time zone, a locale, names);
    8. whatever is left, so the bound holds: the rest of the identifiers, merges and consents,
       oldest first (a copy of a profile with hundreds of identifier types).

    Ties go by trait name and list position: the same profile is always cut the same way.
    """
    excess = message.ByteSize() - bound
    if excess <= 0:
        return False
    struct = getattr(message, traits).fields
    held = getattr(message, provenance) if provenance else None
    by_size = sorted(((_trait_bytes(key, value, held), key) for key, value in struct.items()),
                     reverse=True)
    large = [trait for trait in by_size if trait[0] >= LARGE_TRAIT_BYTES]
    small = [trait for trait in by_size[len(large):] if trait[1] not in KEPT_TRAITS]
    older = _older_identifiers(message, identifiers)
    excess = _drop_elements(message, bound, identifiers, older, excess, covering=True)
    excess = _drop_traits(message, bound, struct, held, large, excess)
    excess = _drop_elements(message, bound, identifiers,
                            _older_identifiers(message, identifiers), excess, covering=True)
    excess = _drop_traits(message, bound, struct, held, small, excess)
    excess = _drop_elements(message, bound, identifiers,
                            _older_identifiers(message, identifiers), excess)
    if merges:
        count = len(getattr(message, merges))
        excess = _drop_elements(message, bound, merges, range(count - KEPT_MERGES), excess)
    if consents:
        items = getattr(message, consents)
        on_topics = sorted((i for i, c in enumerate(items) if c.topic),
                           key=lambda i: (items[i].update_time.seconds,
                                          items[i].update_time.nanos, i))
        excess = _drop_elements(message, bound, consents, on_topics, excess)
    excess = _drop_traits(message, bound, struct, held,
                          [t for t in by_size[len(large):] if t[1] in KEPT_TRAITS], excess)
    for field in (identifiers, merges, consents):
        if field:
            excess = _drop_elements(message, bound, field,
                                    range(len(getattr(message, field))), excess)
    return True


def _trait_bytes(key: str, value: Message, held: Any) -> int:
    """What a trait takes in a copy, its provenance included: its map entries (key and value,
    each with its tag and length)."""
    key_bytes = _entry_bytes(len(key.encode()))
    size = _entry_bytes(key_bytes + _entry_bytes(value.ByteSize()))
    if held is not None and key in held:
        size += _entry_bytes(key_bytes + _entry_bytes(held[key].ByteSize()))
    return size


def _drop_traits(message: Message, bound: int, struct: Any, held: Any,
                 candidates: Sequence[tuple[int, str]], excess: int) -> int:
    """Leave out the traits ``candidates`` ((size, key), in that order) one at a time until
    ``message`` fits ``bound``; returns the excess left (0 or less: it fits)."""
    dropped = False
    for size, key in candidates:
        if excess <= 0:
            break
        del struct[key]
        if held is not None and key in held:
            del held[key]
        dropped = True
        excess -= size
        if excess <= 0:  # the nested Struct's length may have shrunk too: measure
            excess = message.ByteSize() - bound
    # Measured: what a trait freed is counted without the Struct's own shorter length.
    return message.ByteSize() - bound if dropped and excess > 0 else excess


def _older_identifiers(message: Message, field: str) -> list[int]:
    """The positions of the identifiers of ``field`` (in link order) but the last of each
    type; none without a field."""
    if not field:
        return []
    items = getattr(message, field)
    newest = {item.type: index for index, item in enumerate(items)}
    kept = set(newest.values())
    return [index for index in range(len(items)) if index not in kept]


def _drop_elements(message: Message, bound: int, field: str, order: Iterable[int],
                   excess: int, covering: bool = False) -> int:
    """Leave out the elements of the repeated field ``field`` at the positions ``order``, in
    that order, one at a time until ``message`` fits ``bound`` (``covering``: none unless they
    can all together cover ``excess``). The others keep their order. Returns the excess
    left."""
    if excess <= 0 or not field:
        return excess
    items = getattr(message, field)
    sizes = [(index, _entry_bytes(items[index].ByteSize())) for index in order]
    if not sizes or (covering and sum(size for _, size in sizes) < excess):
        return excess
    dropped: list[int] = []
    for index, size in sizes:
        dropped.append(index)
        excess -= size
        if excess <= 0:
            break
    # Deleted in runs of neighbours, from the end, so the positions still ahead hold.
    dropped.sort()
    end = len(dropped)
    while end:
        start = end - 1
        while start and dropped[start - 1] == dropped[start] - 1:
            start -= 1
        del items[dropped[start]:dropped[end - 1] + 1]
        end = start
    return int(message.ByteSize()) - bound
