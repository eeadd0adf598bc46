"""Conditions a journey's author writes (trigger filters, goals, exit criteria, branches, event
waits), evaluated against one person's data."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from cjo_platform.cel import compile_expression


def condition_holds(source: str, field: str, properties: Mapping[str, Any],
                    traits: Mapping[str, Any], journey: Mapping[str, Any] | None = None) -> bool:
    """An empty condition holds; an expression that fails (a published one always compiles)
    does not, and neither does one that errors on this person's data."""
    if not source:
        return True
    activation: dict[str, Any] = {"event": dict(properties), "profile": dict(traits)}
    if journey is not None:
        activation["journey"] = dict(journey)
    try:
        expression = compile_expression(source, field)
    except Exception:
        return False
    return expression.test(activation)
