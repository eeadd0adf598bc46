"""Conditions a journey's author writes (trigger filters, goals, exit criteria, branches, event
waits), evaluated against one person's data.

Every condition sees the same three variables (docs/api-guide.md, "Conditions: CEL"):

- ``event``: the properties of the event the condition is about (the trigger's, the goal's, the
  exit criterion's or the awaited event for filters; for a branch, the event that enrolled the
  person or last woke them from an event wait). There is no ``event.name``: a property called
  ``name`` would collide with it, and each filter belongs to one event name already.
- ``profile``: the profile as the event or the enrollment carries it (traits flat, plus
  ``computed``, ``segments`` and ``consent`` where identity provides them).
- ``journey``: the journey and the enrollment (:data:`JOURNEY_FIELDS`); a trigger filter runs
  before there is an enrollment and sees only :data:`TRIGGER_JOURNEY_FIELDS`.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping
from typing import Any

from cjo_orchestration.domain.enrollment import Enrollment
from cjo_platform.cel import fields_read, load_expression
from cjo_platform.limits import storable_text

MAX_ERROR_DETAIL = 500  # what an enrollment, a step or a journey keeps of an error's text
CONDITION_VARIABLES = ("event", "profile", "journey")
JOURNEY_FIELDS = ("id", "version", "enrollment_id", "node_id", "entry_time", "entry")
"""``journey.*`` wherever an enrollment exists: the journey's id and version, the enrollment's
id, the node it stands at, when it entered (a timestamp) and ``entry``, the properties of the
event that enrolled it (the variables the journey carries, never overwritten by later events)."""
TRIGGER_JOURNEY_FIELDS = ("id", "version")
"""``journey.*`` in a trigger filter: the journey being entered (no enrollment exists yet)."""


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


def journey_variables(enrollment: Enrollment) -> dict[str, Any]:
    """``journey`` for a condition evaluated for ``enrollment`` (:data:`JOURNEY_FIELDS`)."""
    return {"id": enrollment.journey_id, "version": enrollment.journey_version,
            "enrollment_id": enrollment.enrollment_id, "node_id": enrollment.current_node_id,
            "entry_time": enrollment.create_time, "entry": dict(enrollment.entry_properties)}


def trigger_variables(journey_id: str, version: int) -> dict[str, Any]:
    """``journey`` for a trigger filter (:data:`TRIGGER_JOURNEY_FIELDS`)."""
    return {"id": journey_id, "version": version}


def unknown_journey_fields(source: str, allowed: Collection[str] = JOURNEY_FIELDS) -> list[str]:
    """The ``journey.<field>`` reads of ``source`` that are not among ``allowed``, sorted."""
    return sorted(fields_read(source, "journey") - set(allowed))


def enrollment_condition_holds(source: str, field: str, properties: Mapping[str, Any],
                               traits: Mapping[str, Any], enrollment: Enrollment) -> bool:
    """:func:`condition_holds` with ``journey`` built from ``enrollment``, only when the
    condition reads it."""
    return condition_holds(source, field, properties, traits,
                           lambda: journey_variables(enrollment))


def condition_holds(source: str, field: str, properties: Mapping[str, Any],
                    traits: Mapping[str, Any],
                    journey: Mapping[str, Any] | Callable[[], Mapping[str, Any]]) -> bool:
    """An empty condition holds; one about data the person does not have (or has in another
    type) does not (:func:`cjo_platform.cel.is_missing_data`, the rule identity's segments
    follow too). Any other failure raises :class:`ConditionError`, whatever the expression
    library raised: the caller fails only the item it evaluated the condition for. The condition
    was checked when its journey was published: it is loaded as saved (a check added since makes
    it err here, recorded on the item, rather than refused).

    Only the variables the condition reads are bound (``journey`` may be given as a function
    that builds it): the CEL core converts every bound value on each evaluation, and binding
    all three made a small filter take twice as long."""
    if not source:
        return True
    try:
        expression = load_expression(source, field)
    except Exception as exc:  # published expressions compile; a parser changed since may refuse
        raise ConditionError(field, f"does not compile: {exc}") from exc
    reads = expression.variables
    activation: dict[str, Any] = {}
    if "event" in reads:
        activation["event"] = dict(properties)
    if "profile" in reads:
        activation["profile"] = dict(traits)
    if "journey" in reads:
        activation["journey"] = dict(journey() if callable(journey) else journey)
    try:
        return expression.holds(activation)
    except Exception as exc:
        raise ConditionError(field, str(exc) or type(exc).__name__) from exc
