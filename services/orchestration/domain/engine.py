"""The enrollment state machine, as pure functions, split by concern:

- ``enrollment`` and ``transitions``: the enrollment record, its steps and facts, and the moves
  every rule builds a transition from;
- ``entry``: triggers, the re-entry rules and a new enrollment;
- ``events`` (a batch of events), ``reactions`` (goals, exit criteria, event waits) and
  ``lifecycle`` (erasures and merges): event application;
- ``walk``, ``orders`` and ``splits``: walking nodes and applying the answers of sends;
- ``timing``: wait durations, local-time waits, profile time zones.

The engine never talks to a database or a peer. Workers feed it what they read (events, claimed
enrollments, answers of content and delivery) and persist the transitions it returns.

The re-exports below are temporary: they keep callers importing from ``engine`` working while
orchestration is restructured, and go once those imports name the modules above.
"""

from __future__ import annotations

from cjo_orchestration.domain.conditions import condition_holds
from cjo_orchestration.domain.enrollment import (
    Enrollment,
    EnrollmentState,
    FactKind,
    FactRecord,
    Step,
    StepOutcome,
)
from cjo_orchestration.domain.entry import (
    ActiveKey,
    History,
    InboxEvent,
    Trigger,
    may_enter,
    new_enrollment,
    validate_forwarded_event,
)
from cjo_orchestration.domain.events import EventOutcome, apply_events, plan_enrollments
from cjo_orchestration.domain.lifecycle import (
    EXIT_MERGED,
    EXIT_PROFILE_DELETED,
    LIFECYCLE_EVENTS,
    PROFILE_DELETED,
    PROFILE_MERGED,
    Retirement,
    erase_enrollment,
    merge_enrollments,
    merged_profile_id,
    resolve_profile,
)
from cjo_orchestration.domain.orders import (
    ADDRESS_TRAITS,
    Deferred,
    Order,
    ProfileOrder,
    Rejected,
    SendOrder,
    SendResult,
    Sent,
    identity_identifiers,
    recipient_address,
    send_key,
)
from cjo_orchestration.domain.reactions import on_event
from cjo_orchestration.domain.splits import split_arm, split_bucket
from cjo_orchestration.domain.timing import next_local_time, profile_time_zone, profile_zone
from cjo_orchestration.domain.transitions import Transition
from cjo_orchestration.domain.walk import advance, after_send
from cjo_platform.backoff import RetryPolicy

__all__ = [
    "ADDRESS_TRAITS",
    "EXIT_MERGED",
    "EXIT_PROFILE_DELETED",
    "LIFECYCLE_EVENTS",
    "PROFILE_DELETED",
    "PROFILE_MERGED",
    "ActiveKey",
    "Deferred",
    "Enrollment",
    "EnrollmentState",
    "EventOutcome",
    "FactKind",
    "FactRecord",
    "History",
    "InboxEvent",
    "Order",
    "ProfileOrder",
    "Rejected",
    "Retirement",
    "RetryPolicy",
    "SendOrder",
    "SendResult",
    "Sent",
    "Step",
    "StepOutcome",
    "Transition",
    "Trigger",
    "advance",
    "after_send",
    "apply_events",
    "condition_holds",
    "erase_enrollment",
    "identity_identifiers",
    "may_enter",
    "merge_enrollments",
    "merged_profile_id",
    "new_enrollment",
    "next_local_time",
    "on_event",
    "plan_enrollments",
    "profile_time_zone",
    "profile_zone",
    "recipient_address",
    "resolve_profile",
    "send_key",
    "split_arm",
    "split_bucket",
    "validate_forwarded_event",
]
