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


def _entry_bytes(size: int) -> int:
    """What an element of ``size`` bytes takes in its repeated (or map) field: its tag (one
    byte: every field trimmed is numbered below 16) and its length, a varint."""
    return 1 + (size.bit_length() + 6) // 7 + size if size else 2


def trim_profile(message: Message, bound: int, traits: str,
                 lists: Sequence[tuple[str, bool]] = (), provenance: str = "") -> bool:
    """Bound ``message`` (a ``ForwardedEvent``, a ``Profile``), in place, to ``bound`` bytes
    encoded, for a profile grown past the limits by merges: the largest values of its Struct
    field ``traits`` are left out first (with their entries in the map field ``provenance``),
    then the elements of each repeated field of ``lists`` in turn, from its end (``False``: the
    newest of a list in link order) or its start (``True``: the oldest), until it fits. Returns
    whether anything was left out. A message within the bound costs one ``ByteSize``."""
    excess = message.ByteSize() - bound
    if excess <= 0:
        return False
    struct = getattr(message, traits).fields
    held = getattr(message, provenance) if provenance else None
    by_size = sorted(((_entry_bytes(len(key.encode()) + value.ByteSize() + 4), key)
                      for key, value in struct.items()), reverse=True)
    for size, key in by_size:
        if excess <= 0:
            break
        del struct[key]
        excess -= size
        if held is not None and key in held:
            excess -= _entry_bytes(len(key.encode()) + held[key].ByteSize() + 4)
            del held[key]
    for field, oldest_first in lists:
        items = getattr(message, field)
        excess = message.ByteSize() - bound
        while excess > 0 and items:
            # As many elements from the chosen end as cover the excess, in one deletion.
            count, freed = 0, 0
            while freed < excess and count < len(items):
                index = count if oldest_first else len(items) - 1 - count
                freed += _entry_bytes(items[index].ByteSize())
                count += 1
            if oldest_first:
                del items[:count]
            else:
                del items[len(items) - count:]
            excess = message.ByteSize() - bound
    return True
