"""Conditions a journey's author writes (trigger filters, goals, exit criteria, branches, event
waits), evaluated against one person's data."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from cjo_platform.cel import compile_expression

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
    text = text.replace("\x00", "\\0")
    return text if len(text) <= MAX_ERROR_DETAIL else text[:MAX_ERROR_DETAIL - 1] + "…"


def _missing_data(error: BaseException) -> bool:
    """A missing field (KeyError) or a field of another type than the expression expects
    (TypeError: no such overload): the person's data, not the definition. cel.py may wrap what
    the CEL core raised, so the cause chain is looked at too."""
    seen: BaseException | None = error
    for _ in range(3):
        if seen is None:
            return False
        if isinstance(seen, KeyError | TypeError):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def condition_holds(source: str, field: str, properties: Mapping[str, Any],
                    traits: Mapping[str, Any], journey: Mapping[str, Any] | None = None) -> bool:
    """An empty condition holds; one about data the person does not have (or has in another
    type) does not. Any other failure raises :class:`ConditionError`, whatever the expression
    library raised: the caller fails only the item it evaluated the condition for."""
    if not source:
        return True
    activation: dict[str, Any] = {"event": dict(properties), "profile": dict(traits)}
    if journey is not None:
        activation["journey"] = dict(journey)
    try:
        expression = compile_expression(source, field)
    except Exception as exc:  # published expressions compile; a rule tightened since may refuse
        raise ConditionError(field, f"does not compile: {exc}") from exc
    try:
        return expression.evaluate(activation) is True
    except Exception as exc:
        if _missing_data(exc):
            return False
        raise ConditionError(field, str(exc) or type(exc).__name__) from exc
