"""Conversion events: the track events a workspace counts as conversions (e.g. a purchase), and
how to read the revenue and currency of one. Each accepted one is forwarded to analytics."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from cjo_identity.domain.numbers import parse_number
from cjo_platform.errors import Violations

MAX_CONVERSION_EVENTS = 50
MAX_NAME = 128
CURRENCY = re.compile(r"^[A-Z]{3}$")


@dataclass(frozen=True)
class ConversionEvent:
    event_name: str
    revenue_property: str = ""  # "": no revenue
    currency_property: str = ""  # "": only the fixed currency
    currency: str = ""  # the currency when the event names none


@dataclass(frozen=True)
class Conversion:
    """The value of one conversion; ``problem`` says why revenue fell back to 0, if it did."""

    revenue: float
    currency: str
    problem: str = ""


def check_conversions(definitions: Sequence[ConversionEvent], problems: Violations,
                      field: str) -> None:
    problems.check(len(definitions) <= MAX_CONVERSION_EVENTS, field,
                   f"at most {MAX_CONVERSION_EVENTS}")
    names: set[str] = set()
    for index, item in enumerate(definitions):
        path = f"{field}[{index}]"
        problems.check(0 < len(item.event_name) <= MAX_NAME, f"{path}.event_name",
                       f"must be 1 to {MAX_NAME} characters")
        problems.check(item.event_name not in names, f"{path}.event_name", "is listed twice")
        names.add(item.event_name)
        problems.check(len(item.revenue_property) <= MAX_NAME, f"{path}.revenue_property",
                       f"must be at most {MAX_NAME} characters")
        problems.check(len(item.currency_property) <= MAX_NAME, f"{path}.currency_property",
                       f"must be at most {MAX_NAME} characters")
        problems.check(not item.currency or bool(CURRENCY.fullmatch(item.currency)),
                       f"{path}.currency",
                       "must be an ISO 4217 code of three capital letters, e.g. EUR")


def conversion_index(definitions: Sequence[ConversionEvent]) -> dict[str, ConversionEvent]:
    return {item.event_name: item for item in definitions}


def value_of(definition: ConversionEvent, properties: Mapping[str, Any]) -> Conversion:
    """Revenue and currency of an event; a missing or non-numeric revenue counts as 0."""
    currency = definition.currency
    if definition.currency_property:
        named = properties.get(definition.currency_property)
        if isinstance(named, str) and CURRENCY.fullmatch(named.strip().upper()):
            currency = named.strip().upper()
    if not definition.revenue_property:
        return Conversion(0.0, currency)
    raw = properties.get(definition.revenue_property)
    if raw is None:
        return Conversion(0.0, currency,
                          f"property {definition.revenue_property!r} is missing")
    revenue = parse_number(raw)
    if revenue is None:
        return Conversion(0.0, currency,
                          f"property {definition.revenue_property!r} is not a number")
    return Conversion(revenue, currency)
