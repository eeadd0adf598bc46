"""What comes back after a decision, and which decisions it rewards. Pure: the service layer
reads the decisions and points, this module picks, and the service layer writes.

A reward is the point's reward event arriving while a decision's window is open: after its
exposure and no later than its deadline. When several exposed decisions of the person at one
point are open and match the filter, the **last exposure wins**: the most recent thing the
person saw is credited with the conversion, once (a decision is rewarded at most once, and one
event rewards at most one decision per point).

The exposure (delivery's SENT fact) and the reward event (identity's) come on different
topics, so the event may arrive first. An event that rewards no exposed decision at a point is
then kept for each of the person's decided, not yet exposed decisions there that its filter
matches (an early reward); when one of them is exposed, the earliest kept event inside its
window rewards it (that event then rewards nothing else at the point: among decisions exposed
after their reward event, the first exposure recorded wins)."""

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
class PendingDecision:
    """A decision not yet exposed (decided, with an action): its reward event may come first."""

    decision_id: str
    decision_point: str
    profile_id: str
    action: str
    decide_time: datetime


@dataclass(frozen=True)
class EarlyReward:
    """A reward event kept for a pending decision whose filter it matched, until the exposure
    (``expire_time``: the end of the latest window that could hold it)."""

    decision_id: str
    decision_point: str
    profile_id: str
    event_id: str
    event_time: datetime
    expire_time: datetime


@dataclass(frozen=True)
class Rewarded:
    decision_id: str
    reward_time: datetime
    reward_event_id: str


@dataclass
class RewardPlan:
    rewarded: list[Rewarded] = field(default_factory=list)
    # Events kept for pending decisions (rewarding no exposed one at the point).
    early: list[EarlyReward] = field(default_factory=list)
    # Point key -> (errors, the last one): the filter failed for these events.
    errors: dict[str, tuple[int, str]] = field(default_factory=dict)


# An event is kept for at most this many of the person's pending decisions at a point (the
# latest decided): a person whose messages are never sent (suppressed, say) keeps their
# decisions pending, and each conversion would otherwise be kept for every one of them.
MAX_KEPT_PER_EVENT = 10

# (filter source, activation) -> whether the event rewards; raises on a failing filter.
FilterCheck = Callable[[str, Mapping[str, Any]], bool]


def plan_rewards(events: Sequence[TrackEvent], points: Sequence[DecisionPoint],
                 open_decisions: Sequence[OpenDecision],
                 people: Mapping[str, Sequence[str]], check: FilterCheck,
                 pending: Sequence[PendingDecision] = ()) -> RewardPlan:
    """The decisions the events reward. ``people`` maps an event's profile to every profile id
    of that person (itself and the ids merged into it); ``open_decisions`` are the exposed
    decisions of those people at the events' points, ``pending`` those not exposed yet (an
    event rewarding no exposed decision at a point is kept for those its filter matches).
    Events are taken in order, so a decision rewarded by an earlier event is not rewarded
    again. A filter that fails counts an error for its point; the event does not reward there,
    and everything else goes on."""
    plan = RewardPlan()
    by_event: dict[str, list[DecisionPoint]] = {}
    for point in points:
        by_event.setdefault(point.reward.event_name, []).append(point)
    open_by: dict[tuple[str, str], list[OpenDecision]] = {}
    for decision in open_decisions:
        open_by.setdefault((decision.profile_id, decision.decision_point), []).append(decision)
    pending_by: dict[tuple[str, str], list[PendingDecision]] = {}
    for waiting in pending:
        pending_by.setdefault((waiting.profile_id, waiting.decision_point), []).append(waiting)
    taken: set[str] = set()

    def matches(event: TrackEvent, point: DecisionPoint, action: str) -> bool | None:
        """Whether the event's filter holds for a decision of ``action``; None: it failed."""
        if not point.reward.filter:
            return True
        try:
            return check(point.reward.filter, {
                "event": event.event, "profile": event.profile,
                "decision": {"action": action, "decision_point": point.key}})
        except Exception as exc:
            count, _ = plan.errors.get(point.key, (0, ""))
            plan.errors[point.key] = (
                count + 1, f"reward filter failed for event {event.event_id}: {exc}")
            return None

    for event in events:
        for point in by_event.get(event.name, ()):
            profiles = people.get(event.profile_id, (event.profile_id,))
            candidates = [
                d for profile in profiles for d in open_by.get((profile, point.key), ())
                if d.decision_id not in taken
                and d.expose_time <= event.time <= d.reward_deadline]
            # Last exposure wins: try the most recent first; the first that matches is it.
            found: bool | None = False
            for decision in sorted(candidates, key=lambda d: (d.expose_time, d.decision_id),
                                   reverse=True):
                found = matches(event, point, decision.action)
                if found is None:
                    break  # the event does not reward at this point
                if found:
                    taken.add(decision.decision_id)
                    plan.rewarded.append(
                        Rewarded(decision.decision_id, event.time, event.event_id))
                    break
            if found is not False:
                continue
            expire = event.time + point.reward.effective_window
            waiting_ones = sorted((w for profile in profiles
                                   for w in pending_by.get((profile, point.key), ())
                                   if w.decide_time <= event.time),
                                  key=lambda w: (w.decide_time, w.decision_id), reverse=True)
            for waiting in waiting_ones[:MAX_KEPT_PER_EVENT]:
                kept = matches(event, point, waiting.action)
                if kept is None:
                    break
                if kept:
                    plan.early.append(EarlyReward(
                        waiting.decision_id, point.key, waiting.profile_id, event.event_id,
                        event.time, expire))
    return plan


def take_early_rewards(exposed: Sequence[tuple[str, datetime, datetime]],
                       early: Sequence[EarlyReward]) -> list[Rewarded]:
    """The rewards of just exposed decisions, (decision id, exposure, deadline), from the
    events kept for them: each the earliest inside its window, an event rewarding one decision
    per point (the first exposed in ``exposed``'s order)."""
    by_decision: dict[str, list[EarlyReward]] = {}
    for kept in early:
        by_decision.setdefault(kept.decision_id, []).append(kept)
    used: set[tuple[str, str]] = set()
    rewarded: list[Rewarded] = []
    for decision_id, exposed_at, deadline in exposed:
        inside = sorted((k for k in by_decision.get(decision_id, ())
                         if exposed_at <= k.event_time <= deadline
                         and (k.decision_point, k.event_id) not in used),
                        key=lambda k: (k.event_time, k.event_id))
        if inside:
            first = inside[0]
            used.add((first.decision_point, first.event_id))
            rewarded.append(Rewarded(decision_id, first.event_time, first.event_id))
    return rewarded


def engagement_hour(time: datetime) -> int:
    """The UTC hour of the day an engagement counts for."""
    return time.astimezone(UTC).hour
