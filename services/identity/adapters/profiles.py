"""Profile, identity graph and event storage.

An ingest batch costs a fixed number of round trips whatever its size: one read of earlier
message ids, one of the identifiers' owners (per 500 identifiers), one of the touched profiles,
then one bulk statement per table written.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from datetime import datetime
from typing import Any, TypeVar

from sqlalchemy import (
    Row,
    and_,
    bindparam,
    insert,
    or_,
    select,
    update,
)
from sqlalchemy.orm import Session

from cjo_identity.adapters.tables import events, identifiers, profiles
from cjo_identity.domain.events import Event, EventType, StoredEvent
from cjo_identity.domain.identifiers import Identifier, IdentifierType
from cjo_identity.domain.ingest import BatchPlan, Outcome, plan_batch
from cjo_identity.domain.profiles import Profile
from cjo_identity.domain.traits import Trait
from cjo_platform.db import one_of

T = TypeVar("T")

# Bind parameters per IN list: SQLite allows 32,766 per statement, PostgreSQL 65,535.
_CHUNK = 500


def ingest(session: Session, workspace_id: str, batch: Sequence[Event], now: datetime,
           new_id: Callable[[], str]) -> BatchPlan:
    """Apply valid events (deduplicated, resolved, traits merged) and store them."""
    seen = _earlier_outcomes(session, workspace_id, {e.message_id for e in batch})
    wanted = {i for e in batch if e.message_id not in seen for i in e.identifiers}
    owners = _owners(session, workspace_id, wanted)
    held = _traits_for_update(session, workspace_id, set(owners.values()))
    plan = plan_batch(batch, seen=seen, owners=owners, traits=held, new_id=new_id)
    _write(session, workspace_id, plan, now)
    return plan


def _earlier_outcomes(session: Session, workspace_id: str,
                      message_ids: set[str]) -> dict[str, Outcome]:
    found: dict[str, Outcome] = {}
    for chunk in _chunks(sorted(message_ids)):
        rows = session.execute(
            select(events.c.message_id, events.c.event_id, events.c.profile_id)
            .where(events.c.workspace_id == workspace_id,
                   one_of(session, events.c.message_id, chunk)))
        found.update({r.message_id: Outcome(r.event_id, r.profile_id, duplicate=True)
                      for r in rows})
    return found


def _owners(session: Session, workspace_id: str, wanted: set[Identifier]) -> dict[Identifier, str]:
    found: dict[Identifier, str] = {}
    for chunk in _chunks(sorted(wanted)):
        # "type = t AND value IN (...)" per type matches the primary key on both databases;
        # a row-value IN becomes a long OR filter that PostgreSQL applies row by row.
        by_type: dict[IdentifierType, list[str]] = defaultdict(list)
        for identifier in chunk:
            by_type[identifier.type].append(identifier.value)
        rows = session.execute(
            select(identifiers.c.type, identifiers.c.value, identifiers.c.profile_id)
            .where(identifiers.c.workspace_id == workspace_id,
                   or_(*(and_(identifiers.c.type == kind.value,
                              one_of(session, identifiers.c.value, values))
                         for kind, values in by_type.items()))))
        found.update({Identifier(IdentifierType(r.type), r.value): r.profile_id for r in rows})
    return found


def _traits_for_update(session: Session, workspace_id: str,
                       profile_ids: set[str]) -> dict[str, dict[str, Trait]]:
    """Current traits of the profiles, locked (PostgreSQL) in a fixed order so that concurrent
    batches neither lose each other's updates nor deadlock."""
    held: dict[str, dict[str, Trait]] = {}
    for chunk in _chunks(sorted(profile_ids)):
        rows = session.execute(
            select(profiles.c.profile_id, profiles.c.traits, profiles.c.trait_times)
            .where(profiles.c.workspace_id == workspace_id,
                   one_of(session, profiles.c.profile_id, chunk))
            .order_by(profiles.c.profile_id).with_for_update())
        held.update({r.profile_id: _load_traits(r.traits, r.trait_times) for r in rows})
    return held


def _write(session: Session, workspace_id: str, plan: BatchPlan, now: datetime) -> None:
    def trait_columns(profile_id: str) -> dict[str, Any]:
        traits = plan.traits[profile_id]
        return {"traits": {n: t.value for n, t in traits.items()},
                "trait_times": {n: t.time.isoformat() for n, t in traits.items()}}

    if plan.new_profiles:
        session.execute(insert(profiles), [
            {"workspace_id": workspace_id, "profile_id": p, "create_time": now,
             "update_time": now, **trait_columns(p)}
            for p in sorted(plan.new_profiles)])
    if plan.changed_profiles:
        session.execute(
            update(profiles)
            .where(profiles.c.workspace_id == workspace_id,
                   profiles.c.profile_id == bindparam("b_profile_id"))
            .values(traits=bindparam("b_traits"), trait_times=bindparam("b_trait_times"),
                    update_time=now),
            [{"b_profile_id": p, **{f"b_{k}": v for k, v in trait_columns(p).items()}}
             for p in sorted(plan.changed_profiles)])
    if plan.links:
        # Sorted, so concurrent batches take unique-index locks in the same order.
        session.execute(insert(identifiers), [
            {"workspace_id": workspace_id, "type": i.type.value, "value": i.value,
             "profile_id": p, "create_time": now}
            for i, p in sorted(plan.links.items())])
    if plan.accepted:
        session.execute(insert(events), [
            {"workspace_id": workspace_id, "event_id": a.event_id, "message_id": e.message_id,
             "profile_id": a.profile_id, "type": e.type.value, "name": e.name,
             "identifiers": [[i.type.value, i.value] for i in e.identifiers],
             "properties": dict(e.properties), "traits": dict(e.traits),
             "timestamp": e.timestamp, "source": e.source, "receive_time": now}
            for a in plan.accepted for e in [a.event]])


def get_profile(session: Session, workspace_id: str, profile_id: str) -> Profile | None:
    row = session.execute(select(profiles).where(
        profiles.c.workspace_id == workspace_id, profiles.c.profile_id == profile_id)).first()
    if row is None:
        return None
    owned = session.execute(
        select(identifiers.c.type, identifiers.c.value)
        .where(identifiers.c.workspace_id == workspace_id,
               identifiers.c.profile_id == profile_id)
        .order_by(identifiers.c.create_time, identifiers.c.type, identifiers.c.value))
    return Profile(row.profile_id,
                   tuple(Identifier(IdentifierType(t), v) for t, v in owned),
                   _load_traits(row.traits, row.trait_times), row.create_time, row.update_time)


def owner_of(session: Session, workspace_id: str, identifier: Identifier) -> str | None:
    return session.execute(select(identifiers.c.profile_id).where(
        identifiers.c.workspace_id == workspace_id,
        identifiers.c.type == identifier.type.value,
        identifiers.c.value == identifier.value)).scalar_one_or_none()


def profile_exists(session: Session, workspace_id: str, profile_id: str) -> bool:
    return session.execute(select(profiles.c.profile_id).where(
        profiles.c.workspace_id == workspace_id,
        profiles.c.profile_id == profile_id)).first() is not None


def list_events(session: Session, workspace_id: str, profile_id: str, limit: int,
                after: tuple[datetime, str] | None) -> list[StoredEvent]:
    """A profile's events, newest (by event time) first, continuing after ``after``."""
    query = select(events).where(events.c.workspace_id == workspace_id,
                                 events.c.profile_id == profile_id)
    if after is not None:
        time, event_id = after
        query = query.where(or_(events.c.timestamp < time,
                                and_(events.c.timestamp == time, events.c.event_id < event_id)))
    rows = session.execute(
        query.order_by(events.c.timestamp.desc(), events.c.event_id.desc()).limit(limit))
    return [_stored_event(r) for r in rows]


def _stored_event(row: Row[Any]) -> StoredEvent:
    event = Event(
        message_id=row.message_id, type=EventType(row.type), name=row.name,
        identifiers=tuple(Identifier(IdentifierType(t), v) for t, v in row.identifiers),
        properties=row.properties, traits=row.traits, timestamp=row.timestamp,
        source=row.source)
    return StoredEvent(row.event_id, row.profile_id, event, row.receive_time)


def _load_traits(values: dict[str, Any], times: dict[str, str]) -> dict[str, Trait]:
    return {name: Trait(value, datetime.fromisoformat(times[name]))
            for name, value in values.items()}


def _chunks(items: Sequence[T]) -> Iterator[Sequence[T]]:
    for start in range(0, len(items), _CHUNK):
        yield items[start:start + _CHUNK]


