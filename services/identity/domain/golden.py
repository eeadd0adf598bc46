"""The golden record: traits and consent folded from a profile's events by survivorship rules.

Sources deliver late (an offline app syncing, a nightly CRM export), so arrival order says
nothing about which value is current. Every rule is a choice by (event time, message id) or a
union, so folding the same events in any order gives the same record, and two profiles' records
combine when they merge. Each trait keeps its provenance (source, event time, message id).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, NamedTuple

from cjo_identity.domain.events import SUBSCRIBED, UNSUBSCRIBED, Event, EventType
from cjo_identity.domain.settings import IdentitySettings, Survivorship


class Trait(NamedTuple):
    """A trait's value and where it came from (a tuple: made per trait of every event)."""

    value: Any  # a JSON value
    time: datetime  # event time of the event that set it
    message_id: str = ""
    source: str = ""

    @property
    def key(self) -> tuple[datetime, str]:
        return self.time, self.message_id


@dataclass(frozen=True)
class ConsentRecord:
    channel: str
    topic: str
    subscribed: bool
    time: datetime
    message_id: str
    source: str


@dataclass
class Golden:
    traits: dict[str, Trait] = field(default_factory=dict)
    consents: dict[tuple[str, str], ConsentRecord] = field(default_factory=dict)

    def copy(self) -> Golden:
        return Golden(dict(self.traits), dict(self.consents))


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def _union(held: Any, incoming: Any) -> list[Any]:
    items = [*(held if isinstance(held, list) else [held]),
             *(incoming if isinstance(incoming, list) else [incoming])]
    unique = {_canonical(v): v for v in items if v is not None}
    return [unique[k] for k in sorted(unique)]


def apply_trait(held: Trait | None, incoming: Trait, settings: IdentitySettings,
                name: str) -> Trait:
    """The surviving value of trait ``name`` when ``incoming`` meets what is ``held``."""
    rule = settings.set_trait_rule(name)
    if held is None:
        if rule is not None and rule.survivorship is Survivorship.UNION:
            return Trait(_union([], incoming.value), incoming.time, incoming.message_id,
                         incoming.source)
        return incoming
    if rule is None:  # the usual trait: the latest wins
        return incoming if (incoming.time, incoming.message_id) >= (
            held.time, held.message_id) else held
    if rule.survivorship is Survivorship.FIRST:
        return incoming if incoming.key < held.key else held
    if rule.survivorship is Survivorship.UNION:
        latest = max(held, incoming, key=lambda t: t.key)
        return Trait(_union(held.value, incoming.value), latest.time, latest.message_id,
                     latest.source)
    if rule.survivorship is Survivorship.SOURCE_PRIORITY:
        rank = {source: -n for n, source in enumerate(rule.source_priority)}
        lowest = -len(rank)
        return max(held, incoming, key=lambda t: (rank.get(t.source, lowest), t.key))
    return incoming if incoming.key >= held.key else held


def apply_event(golden: Golden, event: Event, settings: IdentitySettings) -> None:
    """Fold one event into ``golden`` (in place). Retention keeps every event this reads
    (adapters/tables.events_removable): change both together."""
    for name, value in event.traits.items():
        golden.traits[name] = apply_trait(
            golden.traits.get(name), Trait(value, event.timestamp, event.message_id,
                                           event.source), settings, name)
    if event.type is EventType.TRACK and event.name in (SUBSCRIBED, UNSUBSCRIBED):
        channel = str(event.properties.get("channel", ""))
        topic = str(event.properties.get("topic", "") or "")
        record = ConsentRecord(channel, topic, event.name == SUBSCRIBED, event.timestamp,
                               event.message_id, event.source)
        held = golden.consents.get((channel, topic))
        if held is None or (record.time, record.message_id) >= (held.time, held.message_id):
            golden.consents[(channel, topic)] = record


def combine(golden: Golden, other: Golden, settings: IdentitySettings) -> None:
    """Merge ``other`` into ``golden`` (in place): the same record as folding both profiles'
    events together, since every rule is a choice by (time, message id) or a union."""
    for name, trait in other.traits.items():
        held = golden.traits.get(name)
        golden.traits[name] = trait if held is None else apply_trait(held, trait, settings, name)
    for key, record in other.consents.items():
        mine = golden.consents.get(key)
        if mine is None or (record.time, record.message_id) >= (mine.time, mine.message_id):
            golden.consents[key] = record


def fold(events: Iterable[Event], settings: IdentitySettings) -> Golden:
    golden = Golden()
    for event in sorted(events, key=lambda e: (e.timestamp, e.message_id)):
        apply_event(golden, event, settings)
    return golden


def trait_values(traits: Mapping[str, Trait]) -> dict[str, Any]:
    return {name: trait.value for name, trait in traits.items()}
