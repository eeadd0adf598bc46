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
a bounded copy leaves such traits out before touching its lists only when they alone cover the
excess. Smaller traits (an address, a name) go only when nothing else is left to leave out."""


def _entry_bytes(size: int) -> int:
    """What an element of ``size`` bytes takes in its repeated (or map) field: its tag (one
    byte: every field trimmed is numbered below 16) and its length, a varint."""
    return 1 + (size.bit_length() + 6) // 7 + size if size else 2


def trim_profile(message: Message, bound: int, traits: str,
                 lists: Sequence[tuple[str, bool, str]] = (), provenance: str = "") -> bool:
    """Bound ``message`` (a ``ForwardedEvent``, a ``Profile``), in place, to ``bound`` bytes
    encoded, for a profile grown past the limits by merges, leaving out what makes its size and
    what its readers miss least. Returns whether anything was left out; a message within the
    bound costs one ``ByteSize``.

    The Struct field ``traits`` (its entries in the map field ``provenance`` go with them) and
    the repeated fields ``lists``, each ``(field, oldest_first, kept_per)``: its elements are
    left out from its start (``oldest_first``: lists kept in link order) or its end, except the
    newest element per value of the attribute ``kept_per`` (the newest identifier of each
    type: a send's address falls back to it, an update of the profile resolves by it).

    - When the large traits (:data:`LARGE_TRAIT_BYTES` and more) cover the excess, they are left
      out, largest first, until they do; the lists and the other traits stay whole.
    - Otherwise the lists make the size: their elements go first, in the order of ``lists``,
      until the copy fits; then the traits, largest first; at last the newest elements kept
      per ``kept_per``.
    """
    excess = message.ByteSize() - bound
    if excess <= 0:
        return False
    struct = getattr(message, traits).fields
    held = getattr(message, provenance) if provenance else None
    by_size = sorted(((_trait_bytes(key, value, held), key) for key, value in struct.items()),
                     reverse=True)
    if sum(size for size, _ in by_size if size >= LARGE_TRAIT_BYTES) < excess:
        for field, oldest_first, kept_per in lists:
            _trim_list(message, bound, field, oldest_first, kept_per)
        excess = message.ByteSize() - bound
    for size, key in by_size:
        if excess <= 0:
            break
        del struct[key]
        if held is not None and key in held:
            del held[key]
        excess -= size
    for field, oldest_first, kept_per in lists:
        _trim_list(message, bound, field, oldest_first, kept_per)
    for field, oldest_first, _ in lists:
        _trim_list(message, bound, field, oldest_first, "")
    return True


def _trait_bytes(key: str, value: Message, held: Any) -> int:
    """What a trait takes in a copy, its provenance included: its map entry's key and value
    (with their tags and lengths, 4 bytes at most below 2 MiB)."""
    key_bytes = len(key.encode())
    size = _entry_bytes(key_bytes + value.ByteSize() + 4)
    if held is not None and key in held:
        size += _entry_bytes(key_bytes + held[key].ByteSize() + 4)
    return size


def _trim_list(message: Message, bound: int, field: str, oldest_first: bool,
               kept_per: str) -> None:
    """Leave out elements of the repeated field ``field`` from its start (``oldest_first``) or
    its end until ``message`` fits ``bound``, in one deletion, except the last element per
    value of ``kept_per`` (moved to the end: the last of its kind, it stays after every other
    element of its kind)."""
    items = getattr(message, field)
    while (excess := message.ByteSize() - bound) > 0 and items:
        kept = set({getattr(x, kept_per): i for i, x in enumerate(items)}.values()) \
            if kept_per else set()
        order = range(len(items)) if oldest_first else range(len(items) - 1, -1, -1)
        count, freed, spared = 0, 0, []
        for index in order:
            if freed >= excess:
                break
            count += 1
            if index in kept:
                spared.append(index)
            else:
                freed += _entry_bytes(items[index].ByteSize())
        if not freed:
            return  # only the kept elements are left
        copies = [type(items[index])() for index in spared]
        for copy, index in zip(copies, spared, strict=True):
            copy.CopyFrom(items[index])
        if oldest_first:
            del items[:count]
        else:
            del items[len(items) - count:]
            copies.reverse()
        for copy in copies:
            items.add().CopyFrom(copy)
