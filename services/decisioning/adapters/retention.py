"""Decisioning's retention kinds (cjo_platform.db.retention), besides the request log and dead
letters every service has: the decision log."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import ColumnElement, and_, func, or_, true

from cjo_decisioning.adapters.tables import NO_ACTION, PENDING, decisions
from cjo_decisioning.domain.catalogue import MAX_CONTEXT_TIME_SKEW, MAX_PERIOD
from cjo_platform.db.retention import Rule

# Off-policy evaluation and the decision reports read the log; 90 days holds a quarter's
# comparison. Models keep what they learned from deleted decisions.
DECISIONS_DAYS = 90


def _decisions_removable() -> ColumnElement[bool]:
    """Settled decisions: learned (the reward window closed and the model took the outcome),
    with no action, or never exposed. An exposed decision whose window is open, or whose
    outcome is not learned yet, stays."""
    return or_(decisions.c.learned == true(), decisions.c.outcome.in_([NO_ACTION, PENDING]))


def _counted_as_contact(now: datetime) -> ColumnElement[bool]:
    """Decisions a contact limit may still count, whatever the configured days: those with an
    action whose contact (the exposure, or the decision while it waits for one: see
    adapters.decisions.contacts) lies within the longest period a limit may have, counted from
    the earliest decision time a request may give (its context time, up to
    MAX_CONTEXT_TIME_SKEW before now)."""
    return and_(decisions.c.outcome != NO_ACTION,
                func.coalesce(decisions.c.expose_time, decisions.c.decide_time)
                >= now - MAX_CONTEXT_TIME_SKEW - MAX_PERIOD)


RULES = [
    Rule("decisions", decisions, decisions.c.decide_time, DECISIONS_DAYS, _decisions_removable,
         needed=_counted_as_contact, description="the decision log"),
]
