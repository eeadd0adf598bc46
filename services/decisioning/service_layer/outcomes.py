"""Outcomes coming back to decisioning, each call in one transaction:

- delivery's message facts (RecordMessageFacts): the SENT fact of a message carrying a decision
  id is that decision's exposure (the same path as RecordExposures); every open and click adds
  to the person's and the workspace's engagement hours (best send times);
- identity's track events and merges (RecordEvents): an event named by a point's reward rewards
  the person's open exposed decisions there (domain.outcomes: the last exposure wins); a merge
  makes the merged profile's decisions and engagement the survivor's; an erasure
  (profile_deleted, when identity's DeleteProfile erased the person) erases what decisioning
  holds about the person (adapters.outcomes.erase_people).

Forwarded items are deduplicated by their ids (the `received` table), so an item re-sent after
a lost acknowledgement is taken once and answered as a duplicate. A track event decisioning does
nothing with (neither a merge nor an erasure, and no decision point of its workspace rewards its
name when it arrives) leaves no id behind: a repeat is taken as its first copy would have been
had it come only then (rewarding, if a point has meanwhile begun to reward its name), and most
events are such (the id's row was a third of RecordEvents' CPU per event: capacity journal)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from cjo_decisioning.adapters import engagement, outcomes
from cjo_decisioning.domain.catalogue import DecisionPoint
from cjo_decisioning.domain.outcomes import (
    MAX_KEPT_PER_EVENT,
    MessageFact,
    TrackEvent,
    engagement_hour,
    plan_rewards,
)
from cjo_decisioning.service_layer import exposures
from cjo_platform.cel import load_expression
from cjo_platform.db.unit_of_work import UnitOfWork

SENT, OPENED, CLICKED = "sent", "opened", "clicked"


def _first_seen(uow: UnitOfWork, workspace_id: str, ids: Sequence[str]) -> list[bool]:
    """Per item, whether this is the first time its id was received (the first of repeats in
    one call counts as new, the others as duplicates)."""
    new = outcomes.first_received(uow.session, workspace_id, ids, uow.now())
    seen: set[str] = set()
    answer = []
    for source_id in ids:
        answer.append(source_id in new and source_id not in seen)
        seen.add(source_id)
    return answer


def record_message_facts(uow: UnitOfWork, workspace_id: str,
                         facts: Sequence[MessageFact]) -> list[bool]:
    """Take delivery's facts; per fact, whether it was a duplicate."""
    fresh = _first_seen(uow, workspace_id, [f"fact:{f.fact_id}" for f in facts])
    taken = [f for f, new in zip(facts, fresh, strict=True) if new]
    sent: list[tuple[str, datetime | None]] = [
        (f.decision_id, f.occur_time) for f in taken if f.kind == SENT and f.decision_id]
    if sent:
        # The path RecordExposures takes: a decision is exposed once; a decision this
        # workspace does not have is no fault of the message (ignored). A send time off by
        # the services' clock skew is moved up to the decision's time, not refused.
        exposures.expose(uow, workspace_id, sent, clamp=True)
    engaged = [f for f in taken if f.kind in (OPENED, CLICKED) and f.profile_id]
    if engaged:
        # An engagement of a merged-away id counts for its survivor; one of an erased
        # person's (queued before the erasure) for nobody.
        survivors = outcomes.survivors(uow.session, workspace_id,
                                       {f.profile_id for f in engaged})
        counts = Counter((person, f.channel, engagement_hour(f.occur_time)) for f in engaged
                         if (person := survivors.get(f.profile_id, f.profile_id))
                         != outcomes.ERASED)
        engagement.add_engagements(uow.session, workspace_id, counts)
    return [not new for new in fresh]


def record_events(uow: UnitOfWork, workspace_id: str, events: Sequence[TrackEvent]
                  ) -> list[bool]:
    """Take identity's events; per event, whether it was a duplicate. A reward is learned with
    its window's failures once the window is final (the learning worker's poll).

    Only the events decisioning acts on are deduplicated (their ids recorded): merges,
    erasures, and events a point of the workspace rewards, read in this transaction. The
    others change nothing, now or when sent again, and are never duplicates: a repeat of one
    after a point began rewarding its name is taken as its first copy would have been had it
    come only then (an event sent late), never twice."""
    acting = [e for e in events if not e.merged_profile_id and not e.erased]
    points = outcomes.workspace_points(uow.session, workspace_id) if acting else []
    rewarded = {point.reward.event_name for point in points}
    kept = [bool(e.merged_profile_id) or e.erased or e.name in rewarded for e in events]
    first = iter(_first_seen(uow, workspace_id, [
        f"event:{e.event_id}" for e, k in zip(events, kept, strict=True) if k]))
    fresh = [next(first) if k else True for k in kept]
    taken = [e for e, new, k in zip(events, fresh, kept, strict=True) if new and k]
    now = uow.now()
    erased = {e.profile_id for e in taken if e.erased and e.profile_id}
    # Merges first (identity sends them before the events that carry the survivor's id).
    for event in taken:
        if event.merged_profile_id and event.merged_profile_id != event.profile_id:
            person = outcomes.add_alias(uow.session, workspace_id, event.merged_profile_id,
                                        event.profile_id, now)
            if person == outcomes.ERASED:
                # Merged into a person erased before the merge arrived: erased with them.
                erased.add(event.merged_profile_id)
            elif person is not None:
                engagement.move_engagements(uow.session, workspace_id,
                                            event.merged_profile_id, person)
    if erased:
        # After the merges: ids merged into the erased person in this batch go with them.
        people = outcomes.people(uow.session, workspace_id, erased)
        ids = {i for found in people.values() for i in found}
        outcomes.erase_people(uow.session, workspace_id, ids, now)
        engagement.erase(uow.session, workspace_id, ids)
    rewarding = [e for e in taken if not e.merged_profile_id and not e.erased]
    if rewarding:
        _reward(uow, workspace_id, rewarding, points)
    return [not new for new in fresh]


def _reward(uow: UnitOfWork, workspace_id: str, events: Sequence[TrackEvent],
            workspace_points: Sequence[DecisionPoint]) -> None:
    session = uow.session
    names = {e.name for e in events}
    points = [point for point in workspace_points if point.reward.event_name in names]
    if not points:
        return
    names = {point.reward.event_name for point in points}
    events = [e for e in events if e.name in names]
    people = outcomes.people(session, workspace_id, {e.profile_id for e in events})
    ids, keys = {i for ids in people.values() for i in ids}, {point.key for point in points}
    open_decisions = outcomes.open_decisions(session, workspace_id, ids, keys)
    # The pending decisions an event may be kept for: decided before it, the latest.
    pending = outcomes.pending_decisions(session, workspace_id, ids, keys,
                                         max(e.time for e in events), MAX_KEPT_PER_EVENT)
    plan = plan_rewards(events, points, open_decisions, people, _filter_holds, pending)
    outcomes.reward(session, workspace_id, plan.rewarded)
    # An event before its decision's exposure (on delivery's topic) waits for it.
    outcomes.keep_early_rewards(session, workspace_id, plan.early)
    outcomes.record_point_errors(session, workspace_id, plan.errors, uow.now())


def _filter_holds(source: str, activation: Mapping[str, Any]) -> bool:
    # Compiled once per process (cjo_platform.cel caches programs by source). A filter about
    # data the event lacks does not hold; any other failure raises and is counted on the point.
    return load_expression(source, "reward.filter").holds(activation)
