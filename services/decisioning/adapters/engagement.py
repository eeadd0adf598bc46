"""Opens and clicks per person, channel and UTC hour (engagement_hours): what best send times
are learned from. Profile id "" holds the workspace's totals (the population)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

from sqlalchemy import Integer, bindparam, delete, func, select
from sqlalchemy.orm import Session

from cjo_decisioning.adapters.tables import engagement_hours
from cjo_platform.db import one_of, pg_array, upsert
from cjo_platform.db.probes import pg_by_keys

POPULATION = ""
HOURS = 24

e = engagement_hours.c


def add_engagements(session: Session, workspace_id: str,
                    counts: Mapping[tuple[str, int, int], int]) -> None:
    """Add ``counts`` by (profile, channel, hour), each also to the population, in one upsert
    statement (concurrent calls add up: the sum is computed by the database)."""
    rows: dict[tuple[str, int, int], int] = {}
    for (profile_id, channel, hour), count in counts.items():
        for who in (profile_id, POPULATION):
            rows[(who, channel, hour)] = rows.get((who, channel, hour), 0) + count
    upsert(session, engagement_hours, [
        {"workspace_id": workspace_id, "profile_id": p, "channel": c, "hour": h,
         "engagements": n} for (p, c, h), n in rows.items()],
        lambda excluded: {"engagements": e.engagements + excluded.engagements})


def move_engagements(session: Session, workspace_id: str, merged_profile_id: str,
                     survivor_profile_id: str) -> None:
    """The merged profile's hours become the survivor's (added to its own)."""
    rows = session.execute(select(e.channel, e.hour, e.engagements).where(
        e.workspace_id == workspace_id, e.profile_id == merged_profile_id)).all()
    if not rows:
        return
    upsert(session, engagement_hours, [
        {"workspace_id": workspace_id, "profile_id": survivor_profile_id, "channel": r.channel,
         "hour": r.hour, "engagements": r.engagements} for r in rows],
        lambda excluded: {"engagements": e.engagements + excluded.engagements})
    session.execute(delete(engagement_hours).where(
        e.workspace_id == workspace_id, e.profile_id == merged_profile_id))


def erase(session: Session, workspace_id: str, profile_ids: Iterable[str]) -> None:
    """An erased person's hours go; the population's totals keep what they added (counts
    by hour across everyone, nothing about the person)."""
    wanted = sorted(set(profile_ids) - {POPULATION})
    if wanted:
        session.execute(delete(engagement_hours).where(
            e.workspace_id == workspace_id, one_of(session, e.profile_id, wanted)))


def hour_counts(session: Session, workspace_id: str, profile_ids: Sequence[str],
                channel: int) -> dict[str, list[float]]:
    """24 hour counts per profile of ``profile_ids`` that has any, and the population's under
    "" (absent when the workspace has none), in one query; ``channel`` 0 sums every channel.

    On PostgreSQL each profile's rows are probed by the primary key (cjo_platform.db.probes):
    with the workspace a constant, a workspace the planner's statistics did not know yet (a
    new tenant, a fresh database) was read whole through the key's workspace prefix and
    filtered by the profiles, on every Decide call that asks for send times."""
    wanted = sorted({*profile_ids, POPULATION})
    found: dict[str, list[float]] = {}
    if session.get_bind().dialect.name == "postgresql":
        # A person's rows are at most a day's hours per channel: summed here.
        parameters: dict[str, object] = {"workspace_id": workspace_id, "keys": pg_array(wanted)}
        if channel:
            parameters["channel"] = channel
        for profile_id, hour, count in session.execute(_PG_HOURS[bool(channel)], parameters):
            found.setdefault(profile_id, [0.0] * HOURS)[int(hour)] += float(count)
        return found
    query = select(e.profile_id, e.hour, func.sum(e.engagements)).where(
        e.workspace_id == workspace_id, one_of(session, e.profile_id, wanted))
    if channel:
        query = query.where(e.channel == channel)
    for profile_id, hour, count in session.execute(query.group_by(e.profile_id, e.hour)):
        found.setdefault(profile_id, [0.0] * HOURS)[int(hour)] = float(count)
    return found


# Every channel's rows (False) or one channel's (True).
_PG_HOURS = {
    False: pg_by_keys([e.profile_id, e.hour, e.engagements], e.profile_id),
    True: pg_by_keys([e.profile_id, e.hour, e.engagements], e.profile_id,
                     where="t.channel = :channel", binds=[bindparam("channel", type_=Integer)])}
