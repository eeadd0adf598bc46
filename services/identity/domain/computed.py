"""Computed traits: counts, sums and last times of a profile's events over a window."""

from __future__ import annotations

import math
import re
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any

from cjo_identity.domain.numbers import parse_number
from cjo_platform.errors import Violations
from cjo_platform.limits import MAX_COMPUTED_TRAITS

NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,63}$")
# A window longer than this is a mistake (a unit mix-up), not a business rule; an unbounded one
# would also push `now - window` outside the dates Python and the databases can hold.
MAX_WINDOW = timedelta(days=3650)
MAX_WINDOW_TEXT = "at most 10 years (3,650 days)"
_EARLIEST = datetime.min.replace(tzinfo=UTC)


class Aggregation(StrEnum):
    COUNT = "count"
    SUM = "sum"
    LAST_TIME = "last_time"


@dataclass(frozen=True)
class ComputedTrait:
    name: str
    aggregation: Aggregation
    event_name: str
    property: str = ""
    window: timedelta | None = None  # None: the whole history


@dataclass(frozen=True)
class EventFact:
    """The part of a stored event computed traits read."""

    name: str
    properties: Mapping[str, Any]
    timestamp: datetime


def check_computed(definitions: Sequence[ComputedTrait], problems: Violations,
                   field: str) -> None:
    problems.check(len(definitions) <= MAX_COMPUTED_TRAITS, field,
                   f"at most {MAX_COMPUTED_TRAITS}")
    names: set[str] = set()
    for index, item in enumerate(definitions):
        path = f"{field}[{index}]"
        problems.check(bool(NAME.fullmatch(item.name)), f"{path}.name",
                       "must be a letter then up to 63 letters, digits or underscores")
        problems.check(item.name not in names, f"{path}.name", "is defined twice")
        names.add(item.name)
        problems.check(0 < len(item.event_name) <= 128, f"{path}.event_name",
                       "must be 1 to 128 characters")
        problems.check(item.aggregation is not Aggregation.SUM or bool(item.property),
                       f"{path}.property", "is required for SUM")
        problems.check(item.window is None or item.window > timedelta(0), f"{path}.window",
                       "must be positive (or unset for the whole history)")
        problems.check(item.window is None or item.window <= MAX_WINDOW, f"{path}.window",
                       MAX_WINDOW_TEXT)


def window_start(now: datetime, window: timedelta | None) -> datetime | None:
    """The earliest event time a window counts; None for the whole history. Never raises: a
    window reaching before the first representable date (settings stored before windows were
    bounded) counts the whole history."""
    if window is None or window >= now - _EARLIEST:
        return None
    return now - window


def compute(definitions: Sequence[ComputedTrait], facts: Iterable[EventFact],
            now: datetime) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for item in definitions:
        if item.aggregation is Aggregation.COUNT:
            values[item.name] = 0
        elif item.aggregation is Aggregation.SUM:
            values[item.name] = 0.0
    facts = list(facts)
    for item in definitions:
        since = window_start(now, item.window)
        chosen = [f for f in facts if f.name == item.event_name
                  and (since is None or since <= f.timestamp <= now)]
        if item.aggregation is Aggregation.COUNT:
            values[item.name] = len(chosen)
        elif item.aggregation is Aggregation.SUM:
            values[item.name] = _bounded(sum(_number(f.properties.get(item.property))
                                             for f in chosen))
        elif chosen:
            values[item.name] = max(f.timestamp for f in chosen).isoformat()
    return values


def _number(value: Any) -> float:
    """A summed property's value: what conversions read as revenue (numbers and numeric
    strings, a CSV import's "19.99"); anything else counts as 0."""
    return parse_number(value) or 0.0


def _bounded(total: float) -> float:
    """Huge finite values can still add up to infinity; a sum is clamped to the largest finite
    number so that it can be stored (PostgreSQL's JSON refuses Infinity) and compared in CEL."""
    if math.isnan(total):
        return 0.0
    return max(-sys.float_info.max, min(sys.float_info.max, float(total)))


# An event leaves a window just after ``timestamp + window`` (the window's start is inclusive):
# the recompute is due one tick later, so that it sees the event gone.
TICK = timedelta(microseconds=1)


def next_change(definitions: Sequence[ComputedTrait], facts: Iterable[EventFact],
                now: datetime) -> datetime | None:
    """The earliest instant after ``now`` at which a computed trait may change with no new
    event: an event counted by a windowed trait leaves the window, or an event dated in the
    future enters the traits that read its name. None: nothing changes until the next event."""
    due: datetime | None = None
    facts = list(facts)
    for item in definitions:
        since = window_start(now, item.window)
        for fact in facts:
            if fact.name != item.event_name:
                continue
            if fact.timestamp > now:
                moment = fact.timestamp
            elif since is not None and item.window is not None and since <= fact.timestamp:
                moment = fact.timestamp + item.window + TICK
            else:
                continue
            if due is None or moment < due:
                due = moment
    return due


def earliest_needed(definitions: Sequence[ComputedTrait], now: datetime) -> datetime | None:
    """Events older than this never count (None: some trait reads the whole history)."""
    if not definitions or any(d.window is None for d in definitions):
        return None
    return window_start(now, max(d.window for d in definitions if d.window is not None))
