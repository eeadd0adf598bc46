"""Event application: a batch of events, in receive order, reaching the enrollments of their
profiles and enrolling the profiles in the journeys they trigger."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime

from cjo_orchestration.domain.conditions import error_detail
from cjo_orchestration.domain.enrollment import (
    Enrollment,
    EnrollmentState,
    FactRecord,
    Step,
)
from cjo_orchestration.domain.entry import (
    ActiveKey,
    History,
    InboxEvent,
    Trigger,
    may_enter,
    new_enrollment,
)
from cjo_orchestration.domain.journeys import JourneyGraph
from cjo_orchestration.domain.lifecycle import (
    LIFECYCLE_EVENTS,
    PROFILE_DELETED,
    PROFILE_MERGED,
    Retirement,
    erase_enrollment,
    merge_enrollments,
    merged_profile_id,
    resolve_profile,
)
from cjo_orchestration.domain.reactions import on_event
from cjo_orchestration.domain.transitions import Transition
from cjo_orchestration.domain.walk import fail_enrollment

Profile = tuple[str, str]  # (workspace_id, profile_id)


@dataclass(frozen=True)
class JourneyError:
    """One error a journey's definition ran into while handling one item."""

    workspace_id: str
    journey_id: str
    detail: str


@dataclass
class EventOutcome:
    """What a batch of events did: enrollments created and changed (with the steps each took),
    facts to publish, and events deferred because a worker holds one of their profile's
    enrollments right now (they are applied, in order, on a later pass).

    ``retired``: profiles the batch's lifecycle events erased or merged away, in order;
    ``dropped``: events of profiles erased before them (applied to nobody)."""

    created: dict[str, tuple[Enrollment, list[Step]]] = field(default_factory=dict)
    changed: dict[str, tuple[Enrollment, list[Step]]] = field(default_factory=dict)
    facts: list[FactRecord] = field(default_factory=list)
    deferred: list[int] = field(default_factory=list)
    unmatched: int = 0
    retired: list[Retirement] = field(default_factory=list)
    dropped: list[int] = field(default_factory=list)
    # Errors of journeys' definitions the events ran into (a trigger filter, exit criterion,
    # goal or wait filter that failed to evaluate), in order: (workspace, journey, error).
    errors: list[JourneyError] = field(default_factory=list)

    def record(self, transition: Transition) -> None:
        """Keep an enrollment's new state and steps, after those it took earlier in the batch."""
        enrollment_id = transition.enrollment.enrollment_id
        bucket = self.created if enrollment_id in self.created else self.changed
        steps = bucket[enrollment_id][1] if enrollment_id in bucket else []
        bucket[enrollment_id] = (transition.enrollment, [*steps, *transition.steps])
        self.facts.extend(transition.facts)
        if transition.error:
            self.errors.append(JourneyError(transition.enrollment.workspace_id,
                                            transition.enrollment.journey_id, transition.error))


def apply_events(events: Sequence[InboxEvent], triggers: Iterable[Trigger],
                 watched: Sequence[tuple[Enrollment, JourneyGraph]],
                 history: Mapping[ActiveKey, History], busy_profiles: set[Profile],
                 new_id: Callable[[], str], now: datetime,
                 retired: Mapping[Profile, str] | None = None) -> EventOutcome:
    """Apply events in receive order, per profile: each event first reaches the profile's
    enrollments (goal, exit criteria, an awaited event), then enrolls the profile in every
    journey it triggers that the re-entry rules let it enter.

    ``watched`` are the profiles' enrollments events can still change (active ones, and ended
    ones whose goal window is open); ``history`` the latest enrollment per (journey, profile);
    ``busy_profiles`` the (workspace, profile) pairs whose enrollments a step worker holds;
    ``retired`` the successor of each retired (workspace, profile) the batch names ("" erased).

    Lifecycle events (``profile_deleted``, ``profile_merged``) are applied in the same order:
    for them ``watched`` must hold every active enrollment of the profiles they name.
    """
    batch = _Batch(triggers, history, busy_profiles, retired or {}, new_id, now)
    for enrollment, graph in watched:
        batch.watch(enrollment, graph)
    for event in sorted(events, key=lambda e: e.seq):
        batch.apply(event)
    return batch.outcome


def plan_enrollments(events: Sequence[InboxEvent], triggers: Iterable[Trigger],
                     active: set[ActiveKey], new_id: Callable[[], str],
                     now: datetime) -> list[tuple[Enrollment, FactRecord]]:
    """Enrollments the events create when no enrollment of theirs is watched (kept for
    callers that only enroll)."""
    history = {key: History(EnrollmentState.ACTIVE, now) for key in active}
    outcome = apply_events(events, triggers, (), history, set(), new_id, now)
    return [(enrollment, next(f for f in outcome.facts
                              if f.fact_id == f"entered:{enrollment.enrollment_id}"))
            for enrollment, _ in outcome.created.values()]


class _Batch:
    """The batch's enrollments as its events change them, one event at a time."""

    def __init__(self, triggers: Iterable[Trigger], history: Mapping[ActiveKey, History],
                 busy_profiles: set[Profile], retired: Mapping[Profile, str],
                 new_id: Callable[[], str], now: datetime) -> None:
        self.triggers: dict[tuple[str, str], list[Trigger]] = defaultdict(list)
        for trigger in triggers:
            self.triggers[(trigger.workspace_id, trigger.event_name)].append(trigger)
        self.graphs: dict[str, JourneyGraph] = {}
        self.enrollments: dict[str, Enrollment] = {}
        self.by_profile: dict[Profile, list[str]] = defaultdict(list)  # -> enrollment ids
        self.latest = dict(history)
        self.successors = dict(retired)
        self.busy = set(busy_profiles)
        self.new_id = new_id
        self.now = now
        self.outcome = EventOutcome()

    def watch(self, enrollment: Enrollment, graph: JourneyGraph) -> None:
        self.graphs[enrollment.enrollment_id] = graph
        self.enrollments[enrollment.enrollment_id] = enrollment
        self.by_profile[(enrollment.workspace_id, enrollment.profile_id)].append(
            enrollment.enrollment_id)

    def apply(self, event: InboxEvent) -> None:
        profile_id = resolve_profile(self.successors, event.workspace_id, event.profile_id)
        if not profile_id:
            self.outcome.dropped.append(event.seq)  # the person was erased: nothing may act on it
            return
        if profile_id != event.profile_id:  # forwarded before its profile was merged away
            event = replace(event, profile_id=profile_id)
        if event.event_name in LIFECYCLE_EVENTS:
            self.retire(event)
        elif (event.workspace_id, event.profile_id) in self.busy:
            self.outcome.deferred.append(event.seq)
        else:
            reached = self.reach_enrollments(event)
            entered = self.enroll(event)
            if not (reached or entered):
                self.outcome.unmatched += 1

    # --- the profile's enrollments ----------------------------------------------------------

    def reach_enrollments(self, event: InboxEvent) -> bool:
        """Hand the event to each of the profile's enrollments; True when any one reacted."""
        reacted = False
        for enrollment_id in self.by_profile[(event.workspace_id, event.profile_id)]:
            enrollment = self.enrollments[enrollment_id]
            try:
                transition = on_event(enrollment, self.graphs[enrollment_id], event, self.now)
            except Exception as exc:
                # This enrollment only: an active one fails with the error; an ended one (its
                # goal window still open) stays as it ended. Its journey counts the error.
                transition = self._failed(enrollment, error_detail(exc))
            if transition is None:
                continue
            reacted = True
            self._record(transition)
            ended = transition.enrollment
            if not ended.active:
                self.latest[_key(ended)] = History(ended.state, ended.update_time)
        return reacted

    # --- triggers -----------------------------------------------------------------------------

    def enroll(self, event: InboxEvent) -> bool:
        """Enroll the profile in every journey the event triggers and the re-entry rules let it
        enter; True when it entered any."""
        entered = False
        for trigger in self.triggers.get((event.workspace_id, event.event_name), ()):
            try:
                if trigger.matches(event) and self._enter(trigger, event):
                    entered = True
            except Exception as exc:
                # A filter that fails to evaluate keeps the profile out of this journey only;
                # the journey counts the error.
                self.outcome.errors.append(JourneyError(event.workspace_id, trigger.journey_id,
                                                        error_detail(exc)))
        return entered

    def _failed(self, enrollment: Enrollment, detail: str) -> Transition | None:
        if enrollment.active:
            return fail_enrollment(enrollment, self.now, detail)
        self.outcome.errors.append(JourneyError(enrollment.workspace_id, enrollment.journey_id,
                                                detail))
        return None

    def _enter(self, trigger: Trigger, event: InboxEvent) -> bool:
        key = (event.workspace_id, trigger.journey_id, event.profile_id)
        if may_enter(trigger.graph, self.latest.get(key), self.now):
            return False
        enrollment, entry_facts = new_enrollment(
            event.workspace_id, self.new_id(), trigger.journey_id, trigger.version,
            trigger.graph, event.profile_id, event.traits, event.properties, event.event_id,
            event.traceparent, self.now)
        self.latest[key] = History(EnrollmentState.ACTIVE, self.now)
        self.watch(enrollment, trigger.graph)
        self.outcome.created[enrollment.enrollment_id] = (enrollment, [])
        self.outcome.facts.extend(entry_facts)
        return True

    # --- erasures and merges -------------------------------------------------------------------

    def retire(self, event: InboxEvent) -> None:
        profile = (event.workspace_id, event.profile_id)
        merged = ((event.workspace_id, merged_profile_id(event))
                  if event.event_name == PROFILE_MERGED else profile)
        if profile in self.busy or merged in self.busy:
            # Later events of both wait too, so each profile's events stay in order.
            self.busy |= {profile, merged}
            self.outcome.deferred.append(event.seq)
            return
        moves = (self._erase(profile) if event.event_name == PROFILE_DELETED
                 else self._merge(merged, profile))
        for move in moves:
            self._record(move)
            changed = move.enrollment
            seen = self.latest.get(_key(changed))
            # An enrollment that exits or moves over must not hide an active one of the same
            # journey: the re-entry rules would let the profile in twice.
            if changed.active or seen is None or seen.state is not EnrollmentState.ACTIVE:
                self.latest[_key(changed)] = History(changed.state, changed.update_time)

    def _erase(self, profile: Profile) -> list[Transition]:
        self.successors[profile] = ""
        self.outcome.retired.append(Retirement(*profile, ""))
        return [erase_enrollment(self.enrollments[i], self.now) for i in self.by_profile[profile]]

    def _merge(self, merged: Profile, survivor: Profile) -> list[Transition]:
        if not merged[1] or merged == survivor or merged in self.successors:
            return []  # nothing named, a merge into itself, or a repeat
        moves = merge_enrollments([self.enrollments[i] for i in self.by_profile[merged]],
                                  [self.enrollments[i] for i in self.by_profile[survivor]],
                                  survivor[1], self.now)
        self.by_profile[survivor].extend(self.by_profile.pop(merged, []))
        self.successors[merged] = survivor[1]
        self.outcome.retired.append(Retirement(*merged, survivor[1]))
        return moves

    def _record(self, transition: Transition) -> None:
        self.enrollments[transition.enrollment.enrollment_id] = transition.enrollment
        self.outcome.record(transition)


def _key(enrollment: Enrollment) -> ActiveKey:
    return (enrollment.workspace_id, enrollment.journey_id, enrollment.profile_id)
