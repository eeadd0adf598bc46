"""Conditions a journey's author writes (trigger filters, goals, exit criteria, branches, event
waits), evaluated against one person's data."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from cjo_platform.cel import load_expression
from cjo_platform.limits import storable_text

MAX_ERROR_DETAIL = 500  # what an enrollment, a step or a journey keeps of an error's text


class ConditionError(Exception):
    """A condition could not be evaluated for this person for a reason that is the definition's
    (a division by zero, an overflow, an index out of range, a failed conversion, an expression
    that no longer compiles): the item it was evaluated for records it, and its journey counts
    it. Missing data is not an error: a condition about a field the person lacks does not hold."""

    def __init__(self, field: str, detail: str) -> None:
        super().__init__(f"{field}: {detail}")
        self.field = field
        self.detail = detail


def error_detail(error: BaseException) -> str:
    """The text an item records for ``error``: a condition's field and reason, or the exception's
    type and message; bounded, and storable by every database (no NUL)."""
    text = str(error) if isinstance(error, ConditionError) else (
        f"{type(error).__name__}: {error}" if str(error) else type(error).__name__)
    return storable_text(text, MAX_ERROR_DETAIL)


def condition_holds(source: str, field: str, properties: Mapping[str, Any],
                    traits: Mapping[str, Any], journey: Mapping[str, Any] | None = None) -> bool:
    """An empty condition holds; one about data the person does not have (or has in another
    type) does not (:func:`cjo_platform.cel.is_missing_data`, the rule identity's segments
    follow too). Any other failure raises :class:`ConditionError`, whatever the expression
    library raised: the caller fails only the item it evaluated the condition for. The condition
    was checked when its journey was published: it is loaded as saved (a check added since makes
    it err here, recorded on the item, rather than refused)."""
    if not source:
        return True
    activation: dict[str, Any] = {"event": dict(properties), "profile": dict(traits)}
    if journey is not None:
        activation["journey"] = dict(journey)
    try:
        expression = load_expression(source, field)
    except Exception as exc:  # published expressions compile; a parser changed since may refuse
        raise ConditionError(field, f"does not compile: {exc}") from exc
    try:
        return expression.holds(activation)
    except Exception as exc:
        raise ConditionError(field, str(exc) or type(exc).__name__) from exc
