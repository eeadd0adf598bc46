"""A fact is one thing that happened (a profile entered a journey, a message was sent...).
Facts are immutable and recorded once; every report is a query over them."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from cjo_platform.errors import Violations
from cjo_platform.limits import MAX_ID_LENGTH


class FactType(StrEnum):
    JOURNEY_ENTERED = "journey_entered"
    MESSAGE_REQUESTED = "message_requested"
    MESSAGE_SENT = "message_sent"
    MESSAGE_FAILED = "message_failed"
    JOURNEY_EXITED = "journey_exited"


@dataclass(frozen=True)
class Fact:
    fact_id: str
    type: FactType
    profile_id: str
    journey_id: str
    enrollment_id: str
    message_id: str
    occur_time: datetime


def validate_fact(fact_id: str, profile_id: str, journey_id: str, has_type: bool,
                  has_time: bool) -> Violations:
    problems = Violations()
    problems.check(bool(fact_id), "fact_id", "is required")
    problems.check(len(fact_id) <= MAX_ID_LENGTH, "fact_id", f"at most {MAX_ID_LENGTH} characters")
    problems.check(has_type, "type", "is required")
    problems.check(bool(profile_id), "profile_id", "is required")
    problems.check(len(journey_id) <= MAX_ID_LENGTH, "journey_id",
                   f"at most {MAX_ID_LENGTH} characters")
    problems.check(has_time, "occur_time", "is required")
    return problems


@dataclass(frozen=True)
class FactCount:
    type: FactType
    count: int
    profiles: int
