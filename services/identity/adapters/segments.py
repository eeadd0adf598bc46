"""Computed traits and segment membership, refreshed for the profiles a change touched.

One refresh costs a fixed number of queries: the segments, the events computed traits read,
the current memberships, then bulk writes."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import bindparam, delete, func, insert, select, update
from sqlalchemy.orm import Session

from cjo_identity.adapters.profiles import IN_LIST_KEYS
from cjo_identity.adapters.tables import events, profiles, segment_members, segments
from cjo_identity.domain.computed import EventFact, compute, earliest_needed
from cjo_identity.domain.golden import Golden
from cjo_identity.domain.segments import Segment, activation
from cjo_identity.domain.settings import IdentitySettings
from cjo_platform.db import bulk_insert, one_of
from cjo_platform.rpc.batch import chunks


@dataclass(frozen=True)
class Transition:
    """A profile entered (or left) a segment."""

    profile_id: str
    segment: Segment
    entered: bool


def load_segments(session: Session, workspace_id: str) -> list[Segment]:
    rows = session.execute(select(segments).where(segments.c.workspace_id == workspace_id)
                           .order_by(segments.c.segment_id))
    return [Segment(r.segment_id, r.display_name, r.condition, r.create_time) for r in rows]


def get_segment(session: Session, workspace_id: str, segment_id: str
                ) -> tuple[Segment, int] | None:
    row = session.execute(select(segments).where(
        segments.c.workspace_id == workspace_id, segments.c.segment_id == segment_id)).first()
    if row is None:
        return None
    count = session.execute(select(func.count()).select_from(segment_members).where(
        segment_members.c.workspace_id == workspace_id,
        segment_members.c.segment_id == segment_id)).scalar_one()
    return Segment(row.segment_id, row.display_name, row.condition, row.create_time), int(count)


def add_segment(session: Session, workspace_id: str, segment: Segment) -> None:
    session.execute(insert(segments).values(
        workspace_id=workspace_id, segment_id=segment.segment_id,
        display_name=segment.display_name, condition=segment.condition,
        create_time=segment.create_time))


def list_members(session: Session, workspace_id: str, segment_id: str, limit: int,
                 after: str) -> list[str]:
    return list(session.execute(
        select(segment_members.c.profile_id)
        .where(segment_members.c.workspace_id == workspace_id,
               segment_members.c.segment_id == segment_id,
               segment_members.c.profile_id > after)
        .order_by(segment_members.c.profile_id).limit(limit)).scalars())


def memberships(session: Session, workspace_id: str, profile_ids: Iterable[str]
                ) -> dict[str, set[str]]:
    found: dict[str, set[str]] = defaultdict(set)
    for chunk in chunks(sorted(set(profile_ids)), IN_LIST_KEYS):
        for row in session.execute(
                select(segment_members.c.profile_id, segment_members.c.segment_id)
                .where(segment_members.c.workspace_id == workspace_id,
                       one_of(session, segment_members.c.profile_id, chunk))):
            found[row.profile_id].add(row.segment_id)
    return found


def computed_values(session: Session, workspace_id: str, profile_ids: Iterable[str],
                    settings: IdentitySettings, now: datetime) -> dict[str, dict[str, Any]]:
    """Fresh computed traits of the profiles, from their events."""
    definitions = settings.computed_traits
    ids = sorted(set(profile_ids))
    if not definitions or not ids:
        return {p: {} for p in ids}
    names = sorted({d.event_name for d in definitions})
    since = earliest_needed(definitions, now)
    facts: dict[str, list[EventFact]] = defaultdict(list)
    for chunk in chunks(ids, IN_LIST_KEYS):
        query = select(events.c.profile_id, events.c.name, events.c.properties,
                       events.c.timestamp).where(
            events.c.workspace_id == workspace_id,
            one_of(session, events.c.profile_id, chunk),
            one_of(session, events.c.name, names))
        if since is not None:
            query = query.where(events.c.timestamp >= since)
        for row in session.execute(query):
            facts[row.profile_id].append(EventFact(row.name, row.properties, row.timestamp))
    return {p: compute(definitions, facts[p], now) for p in ids}


def refresh(session: Session, workspace_id: str, golden: Mapping[str, Golden],
            removed: Iterable[str], settings: IdentitySettings, now: datetime,
            only: Sequence[Segment] | None = None,
            before: Mapping[str, tuple[Golden, Mapping[str, Any]]] | None = None
            ) -> list[Transition]:
    """Recompute computed traits and memberships of the profiles in ``golden``; drop the
    memberships of ``removed`` profiles (merged away or erased). Returns who entered or left.

    ``before``: the stored record and computed traits of profiles that existed (when known).
    Computed traits equal to the stored ones are not rewritten, and a profile whose record and
    computed traits are both unchanged keeps its memberships without evaluating a condition:
    membership is a function of exactly those inputs."""
    before = before or {}
    removed = sorted(set(removed))
    for chunk in chunks(removed, IN_LIST_KEYS):
        session.execute(delete(segment_members).where(
            segment_members.c.workspace_id == workspace_id,
            one_of(session, segment_members.c.profile_id, chunk)))
    if not golden:
        return []
    computed = computed_values(session, workspace_id, golden, settings, now)
    stale = [(p, values) for p, values in sorted(computed.items())
             if p not in before or before[p][1] != values]
    if settings.computed_traits and stale:
        session.execute(
            update(profiles)
            .where(profiles.c.workspace_id == workspace_id,
                   profiles.c.profile_id == bindparam("b_profile_id"))
            .values(computed=bindparam("b_computed")),
            [{"b_profile_id": p, "b_computed": values} for p, values in stale])
    all_segments = list(only) if only is not None else load_segments(session, workspace_id)
    if not all_segments:
        return []
    changed = [p for p in sorted(golden) if p not in before
               or before[p][0] != golden[p] or before[p][1] != computed[p]]
    held = memberships(session, workspace_id, changed)
    transitions: list[Transition] = []
    for profile_id in changed:
        facts = activation(golden[profile_id], computed[profile_id])
        for segment in all_segments:
            member = segment.expression.test(facts)
            if member != (segment.segment_id in held.get(profile_id, set())):
                transitions.append(Transition(profile_id, segment, member))
    entered = [t for t in transitions if t.entered]
    left = [t for t in transitions if not t.entered]
    if entered:
        bulk_insert(session, segment_members, [
            {"workspace_id": workspace_id, "segment_id": t.segment.segment_id,
             "profile_id": t.profile_id, "enter_time": now} for t in entered])
    if left:
        session.execute(
            delete(segment_members).where(
                segment_members.c.workspace_id == workspace_id,
                segment_members.c.segment_id == bindparam("b_segment_id"),
                segment_members.c.profile_id == bindparam("b_profile_id")),
            [{"b_segment_id": t.segment.segment_id, "b_profile_id": t.profile_id}
             for t in left])
    return transitions

