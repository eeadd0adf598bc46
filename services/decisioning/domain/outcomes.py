"""What comes back after a decision, and which decisions it rewards. Pure: the service layer
reads the decisions and points, this module picks, and the service layer writes.

A reward is the point's reward event arriving while a decision's window is open: after its
exposure and no later than its deadline. When several exposed decisions of the person at one
point are open and match the filter, the **last exposure wins**: the most recent thing the
person saw is credited with the conversion, once (a decision is rewarded at most once, and one
event rewards at most one decision per point)."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cached_property
from typing import Any

from cjo_decisioning.domain.catalogue import DecisionPoint

PROFILE_MERGED = "profile_merged"
# identity's erasure (DeleteProfile): the person's data goes (service_layer.outcomes).
PROFILE_DELETED = "profile_deleted"
ERASER = "identity"  # the event source identity's erasures carry


@dataclass(frozen=True)
class MessageFact:
    """A message fact from delivery: a decision's exposure (SENT) or an engagement."""

    fact_id: str
    kind: str  # "sent", "opened", "clicked" or "other"
    profile_id: str
    decision_id: str
    channel: int  # cjo.common.v1.Channel
    occur_time: datetime


@dataclass(frozen=True)
class EventDetails:
    """What only a reward reads of a track event."""

    time: datetime
    # The CEL `event`: {name, properties, source, message_id}.
    event: Mapping[str, Any]
    # The CEL `profile` (cjo_platform.profiles view).
    profile: Mapping[str, Any]


@dataclass(frozen=True)
class TrackEvent:
    """A track event identity accepted, with the profile as of that event."""

    event_id: str
    profile_id: str
    name: str
    # Its details, made when first read: most events are no point's reward event, and
    # building the CEL maps (the profile's traits, consents, segments) was most of
    # RecordEvents' CPU per event.
    details: Callable[[], EventDetails] = field(repr=False, compare=False)
    merged_profile_id: str = ""  # for a profile_merged event: the profile merged away
    erased: bool = False  # identity erased the profile (profile_deleted)

    @cached_property
    def _details(self) -> EventDetails:
        return self.details()

    @property
    def time(self) -> datetime:
        return self._details.time

    @property
    def event(self) -> Mapping[str, Any]:
        return self._details.event

    @property
    def profile(self) -> Mapping[str, Any]:
        return self._details.profile


@dataclass(frozen=True)
class OpenDecision:
    """An exposed decision whose reward window has not been closed."""

    decision_id: str
    decision_point: str
    profile_id: str
    action: str
    expose_time: datetime
    reward_deadline: datetime


@dataclass(frozen=True)
class Rewarded:
    decision_id: str
    reward_time: datetime
    reward_event_id: str


@dataclass
class RewardPlan:
    rewarded: list[Rewarded] = field(default_factory=list)
    # Point key -> (errors, the last one): the filter failed for these events.
    errors: dict[str, tuple[int, str]] = field(default_factory=dict)


# (filter source, activation) -> whether the event rewards; raises on a failing filter.
FilterCheck = Callable[[str, Mapping[str, Any]], bool]


def plan_rewards(events: Sequence[TrackEvent], points: Sequence[DecisionPoint],
                 open_decisions: Sequence[OpenDecision],
                 people: Mapping[str, Sequence[str]], check: FilterCheck) -> RewardPlan:
    """The decisions the events reward. ``people`` maps an event's profile to every profile id
    of that person (itself and the ids merged into it); ``open_decisions`` are the exposed
    decisions of those people at the events' points. Events are taken in order, so a decision
    rewarded by an earlier event is not rewarded again. A filter that fails counts an error for
    its point; the event does not reward there, and everything else goes on."""
    plan = RewardPlan()
    by_event: dict[str, list[DecisionPoint]] = {}
    for point in points:
        by_event.setdefault(point.reward.event_name, []).append(point)
    open_by: dict[tuple[str, str], list[OpenDecision]] = {}
    for decision in open_decisions:
        open_by.setdefault((decision.profile_id, decision.decision_point), []).append(decision)
    taken: set[str] = set()
    for event in events:
        for point in by_event.get(event.name, ()):
            candidates = [
                d for profile in people.get(event.profile_id, (event.profile_id,))
                for d in open_by.get((profile, point.key), ())
                if d.decision_id not in taken
                and d.expose_time <= event.time <= d.reward_deadline]
            # Last exposure wins: try the most recent first; the first that matches is it.
            for decision in sorted(candidates, key=lambda d: (d.expose_time, d.decision_id),
                                   reverse=True):
                if point.reward.filter:
                    try:
                        matches = check(point.reward.filter, {
                            "event": event.event, "profile": event.profile,
                            "decision": {"action": decision.action,
                                         "decision_point": decision.decision_point}})
                    except Exception as exc:
                        count, _ = plan.errors.get(point.key, (0, ""))
                        plan.errors[point.key] = (
                            count + 1, f"reward filter failed for event {event.event_id}: {exc}")
                        break  # the event does not reward at this point
                    if not matches:
                        continue
                taken.add(decision.decision_id)
                plan.rewarded.append(Rewarded(decision.decision_id, event.time, event.event_id))
                break
    return plan


def engagement_hour(time: datetime) -> int:
    """The UTC hour of the day an engagement counts for."""
    return time.astimezone(UTC).hour
