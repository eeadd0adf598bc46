"""Trait survivorship: per trait, the value from the latest event by EVENT time wins.

Sources deliver late (an offline app syncing, a nightly CRM export), so arrival order says
nothing about which value is current. Each trait keeps the event time that set it; an older
event arriving later leaves a newer value alone. On a tie the later arrival wins, so a source
can correct a value it sent with the same timestamp.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any


@dataclass(frozen=True)
class Trait:
    value: Any  # a JSON value
    time: datetime  # event time of the event that set it


Traits = Mapping[str, Trait]


def apply_traits(current: Traits, incoming: Mapping[str, Any], time: datetime) -> dict[str, Trait]:
    """``current`` with each incoming trait applied unless the held value is newer."""
    merged = dict(current)
    for name, value in incoming.items():
        held = merged.get(name)
        if held is None or time >= held.time:
            merged[name] = Trait(value, time)
    return merged


def trait_values(traits: Traits) -> dict[str, Any]:
    return {name: trait.value for name, trait in traits.items()}
