"""Decisioning's retention kinds (cjo_platform.db.retention), besides the request log and dead
letters every service has: the decision log."""

from __future__ import annotations

from sqlalchemy import ColumnElement, or_, true

from cjo_decisioning.adapters.tables import NO_ACTION, PENDING, decisions
from cjo_platform.db.retention import Rule

# Off-policy evaluation and the decision reports read the log; 90 days holds a quarter's
# comparison. Models keep what they learned from deleted decisions.
DECISIONS_DAYS = 90


def _decisions_removable() -> ColumnElement[bool]:
    """Settled decisions: learned (the reward window closed and the model took the outcome),
    with no action, or never exposed in all that time. An exposed decision whose window is
    open, or whose outcome is not learned yet, stays."""
    return or_(decisions.c.learned == true(), decisions.c.outcome.in_([NO_ACTION, PENDING]))


RULES = [
    Rule("decisions", decisions, decisions.c.decide_time, DECISIONS_DAYS, _decisions_removable,
         description="the decision log"),
]
