"""Identity's erasures and merges: which profile an event belongs to now, and what happens to
the enrollments of a profile that was erased or merged into another."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from cjo_orchestration.domain.enrollment import Enrollment, EnrollmentState, ExitReason, evolve
from cjo_orchestration.domain.transitions import (
    Transition,
    end_enrollment,
    step_at_current_node,
)
from cjo_platform.limits import MAX_ID_LENGTH

# Forwarded by identity with the profile's id after DeleteProfile erased it.
PROFILE_DELETED = "profile_deleted"
# Forwarded by identity with the survivor's id; property ``merged_profile_id`` names the profile
# merged into it.
PROFILE_MERGED = "profile_merged"
LIFECYCLE_EVENTS = frozenset({PROFILE_DELETED, PROFILE_MERGED})
_MAX_MERGE_HOPS = 32  # A -> B -> C ...: chains are compressed when stored, so they stay short


@dataclass(frozen=True)
class Retirement:
    """A profile that no longer exists on its own: merged into ``successor_profile_id``, or
    erased (successor "")."""

    workspace_id: str
    profile_id: str
    successor_profile_id: str

    @property
    def erased(self) -> bool:
        return not self.successor_profile_id


class _Addressed(Protocol):
    """An event as received or as the inbox holds it: its properties name a merged profile."""

    @property
    def properties(self) -> Mapping[str, Any]: ...


def merged_profile_id(event: _Addressed) -> str:
    value = event.properties.get("merged_profile_id")
    return value if isinstance(value, str) and len(value) <= MAX_ID_LENGTH else ""


def resolve_profile(successors: Mapping[tuple[str, str], str], workspace_id: str,
                    profile_id: str) -> str:
    """The profile an event addressed to ``profile_id`` belongs to now: itself, the profile it
    was merged into (transitively), or "" when that profile was erased."""
    for _ in range(_MAX_MERGE_HOPS):
        successor = successors.get((workspace_id, profile_id))
        if successor is None:
            return profile_id
        if not successor:
            return ""
        profile_id = successor
    return profile_id


def erase_enrollment(enrollment: Enrollment, now: datetime) -> Transition:
    """GDPR erasure of the profile: an active enrollment exits (no step runs again), and the
    enrollment forgets the traits and event properties it kept for rendering."""
    forgotten = evolve(enrollment, traits={}, properties={}, last_error="")
    if not enrollment.active:
        return Transition(forgotten)
    step = step_at_current_node(forgotten, "profile deleted", now)
    return end_enrollment(forgotten, EnrollmentState.EXITED, now, [step], [],
                          reason=ExitReason.PROFILE_DELETED)


def merge_enrollments(merged: Sequence[Enrollment], survivor: Sequence[Enrollment],
                      survivor_profile_id: str, now: datetime) -> list[Transition]:
    """Move the merged profile's enrollments to the survivor. In a journey where both have an
    active enrollment, the one that entered first continues and the other exits ("merged"); a
    moved active enrollment records a step saying where it came from."""
    active = {e.journey_id: e for e in survivor if e.active}
    transitions: list[Transition] = []
    for enrollment in merged:
        from_id = enrollment.profile_id
        moved = evolve(enrollment, profile_id=survivor_profile_id)
        if not enrollment.active:
            transitions.append(Transition(moved))  # history and open goal windows follow too
            continue
        other = active.get(moved.journey_id)
        if other is not None and _entered_first(other, moved):
            transitions.append(_exit_merged(moved, now, (
                f"merged: profile {from_id} joined {survivor_profile_id}, whose "
                f"enrollment {other.enrollment_id} continues")))
            continue
        if other is not None:
            transitions.append(_exit_merged(other, now, (
                f"merged: profile {from_id} joined {survivor_profile_id}; enrollment "
                f"{moved.enrollment_id} entered first and continues")))
        active[moved.journey_id] = moved
        transitions.append(Transition(evolve(moved, update_time=now), (
            step_at_current_node(moved, f"merged from profile {from_id}", now),)))
    return transitions


def _entered_first(one: Enrollment, other: Enrollment) -> bool:
    """Ties on the entry time go to the smaller id, so every worker picks the same one."""
    return (one.create_time, one.enrollment_id) <= (other.create_time, other.enrollment_id)


def _exit_merged(enrollment: Enrollment, now: datetime, detail: str) -> Transition:
    return end_enrollment(enrollment, EnrollmentState.EXITED, now,
                          [step_at_current_node(enrollment, detail, now)], [],
                          reason=ExitReason.MERGED)
