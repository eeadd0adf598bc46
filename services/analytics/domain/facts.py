"""A fact is one thing that happened (a profile entered a journey, a message was sent...).
Facts are immutable and recorded once; every report is a query over them."""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from cjo_platform.errors import Violations
from cjo_platform.limits import MAX_ID_LENGTH, MAX_PROFILE_ID_LENGTH, check_id


class FactType(StrEnum):
    JOURNEY_ENTERED = "journey_entered"
    MESSAGE_REQUESTED = "message_requested"
    MESSAGE_SENT = "message_sent"
    MESSAGE_FAILED = "message_failed"
    JOURNEY_EXITED = "journey_exited"
    NODE_VISITED = "node_visited"
    MESSAGE_DELIVERED = "message_delivered"
    MESSAGE_OPENED = "message_opened"
    MESSAGE_CLICKED = "message_clicked"
    MESSAGE_BOUNCED = "message_bounced"
    MESSAGE_UNSUBSCRIBED = "message_unsubscribed"
    GOAL_REACHED = "goal_reached"
    CONVERTED = "converted"
    EXPERIMENT_EXPOSED = "experiment_exposed"
    PROFILE_MERGED = "profile_merged"
    NODE_FAILED = "node_failed"


CONVERSIONS = (FactType.GOAL_REACHED, FactType.CONVERTED)
"""Fact types that count as a conversion. One purchase may be both (a journey's goal and a
workspace conversion, each with the event's revenue): reports across journeys (attribution,
experiments) count a conversion once per (person, ``source_event_id``); the journey funnel
counts the journey's own goal (GOAL_REACHED) only."""

TOUCHES = (FactType.MESSAGE_DELIVERED, FactType.MESSAGE_OPENED, FactType.MESSAGE_CLICKED)
"""Fact types that make a message a touchpoint (delivered or engaged)."""

COMPLETING_EXITS = ("completed", "goal_reached", "goal")
"""Exit reasons (fact.proto's closed list of ``Fact.exit_reason``) that complete the node an
enrollment ended at; "goal" is what orchestration called "goal_reached" before the list was
closed. FAILING_EXITS fail the node, HOLDING_EXITS hold it out there (a split's control arm,
a deliberate non-treatment), MERGED_EXITS leave the node's counts (the person carries on in
the surviving enrollment); any other reason drops the enrollment there."""

FAILING_EXITS = ("failed",)
HOLDING_EXITS = ("control",)
MERGED_EXITS = ("merged",)


@dataclass(frozen=True)
class Fact:
    fact_id: str
    type: FactType
    profile_id: str
    journey_id: str
    enrollment_id: str
    message_id: str
    occur_time: datetime
    journey_version: int = 0
    node_id: str = ""
    channel: int = 0
    content_key: str = ""
    variant: str = ""
    experiment_id: str = ""
    arm: str = ""
    control: bool = False
    arm_weight: float = 0.0
    revenue: float = 0.0
    currency: str = ""
    exit_reason: str = ""
    survivor_profile_id: str = ""
    conversion_deadline: datetime | None = None
    # NODE_VISITED: which arrival of its enrollment (1: the entry node); 0 when not numbered
    # (visits recorded before arrivals were, which were recorded when leaving the node).
    visit_sequence: int = 0
    # GOAL_REACHED / CONVERTED: the id of the event that made the conversion, so one purchase
    # that is both a journey's goal and a workspace conversion counts once ("": recorded
    # before conversions named their event; such a fact counts on its own).
    source_event_id: str = ""


def validate_fact(fact: Fact | None = None, *, fact_id: str = "", profile_id: str = "",
                  journey_id: str = "", has_type: bool = True, has_time: bool = True
                  ) -> Violations:
    """Problems of one fact; ``fact`` may be None when the type was unknown (then the loose
    fields are checked)."""
    if fact is not None:
        fact_id, profile_id, journey_id = fact.fact_id, fact.profile_id, fact.journey_id
    problems = Violations()
    problems.check(bool(fact_id), "fact_id", "is required")
    problems.check(len(fact_id) <= MAX_ID_LENGTH, "fact_id", f"at most {MAX_ID_LENGTH} characters")
    problems.check(has_type, "type", "is required")
    check_id(problems, "profile_id", profile_id, required=True,
             max_length=MAX_PROFILE_ID_LENGTH)
    problems.check(len(journey_id) <= MAX_ID_LENGTH, "journey_id",
                   f"at most {MAX_ID_LENGTH} characters")
    problems.check(has_time, "occur_time", "is required")
    if fact is None:
        return problems
    for name in ("node_id", "content_key", "variant", "experiment_id", "arm", "exit_reason",
                 "enrollment_id", "message_id", "source_event_id"):
        problems.check(len(getattr(fact, name)) <= MAX_ID_LENGTH, name,
                       f"at most {MAX_ID_LENGTH} characters")
    problems.check(fact.journey_version >= 0, "journey_version", "must not be negative")
    problems.check(fact.visit_sequence >= 0, "visit_sequence", "must not be negative")
    problems.check(not fact.experiment_id or bool(fact.arm), "arm",
                   "is required when experiment_id is set")
    problems.check(math.isfinite(fact.revenue) and fact.revenue >= 0, "revenue",
                   "must be a finite amount, 0 or more")
    problems.check(math.isfinite(fact.arm_weight) and fact.arm_weight >= 0, "arm_weight",
                   "must be a finite weight, 0 or more")
    problems.check(len(fact.currency) <= 3, "currency", "must be an ISO 4217 code")
    if fact.type is FactType.PROFILE_MERGED:
        check_id(problems, "survivor_profile_id", fact.survivor_profile_id, required=True,
                 max_length=MAX_PROFILE_ID_LENGTH)
        problems.check(fact.survivor_profile_id != fact.profile_id, "survivor_profile_id",
                       "must differ from profile_id")
    else:
        problems.check(not fact.survivor_profile_id, "survivor_profile_id",
                       "is only for profile merged facts")
    return problems


def is_valid(fact: Fact) -> bool:
    """Whether :func:`validate_fact` finds nothing wrong with ``fact``: the same rules, checked
    without building their messages (every fact a service sends takes this path)."""
    longest = MAX_ID_LENGTH
    return (0 < len(fact.fact_id) <= longest
            and 0 < len(fact.profile_id) <= MAX_PROFILE_ID_LENGTH
            and len(fact.journey_id) <= longest and len(fact.node_id) <= longest
            and len(fact.content_key) <= longest and len(fact.variant) <= longest
            and len(fact.experiment_id) <= longest and len(fact.arm) <= longest
            and len(fact.exit_reason) <= longest and len(fact.enrollment_id) <= longest
            and len(fact.message_id) <= longest and len(fact.source_event_id) <= longest
            and fact.journey_version >= 0 and fact.visit_sequence >= 0
            and (not fact.experiment_id or bool(fact.arm))
            and math.isfinite(fact.revenue) and fact.revenue >= 0
            and math.isfinite(fact.arm_weight) and fact.arm_weight >= 0
            and len(fact.currency) <= 3
            and (not fact.survivor_profile_id if fact.type is not FactType.PROFILE_MERGED
                 else (0 < len(fact.survivor_profile_id) <= MAX_PROFILE_ID_LENGTH
                       and fact.survivor_profile_id != fact.profile_id)))


@dataclass(frozen=True)
class FactCount:
    type: FactType
    count: int
    profiles: int
