"""Journey storage: drafts, frozen versions, and the trigger lookup the event worker batches."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Row, and_, bindparam, or_, select, tuple_, update
from sqlalchemy.orm import Session

from cjo_orchestration.adapters.tables import journey_versions, journeys
from cjo_orchestration.domain.entry import Trigger
from cjo_orchestration.domain.journeys import (
    Journey,
    JourneyGraph,
    JourneyState,
    JourneyVersion,
)
from cjo_platform.errors import NotFound
from cjo_platform.logging import get_logger

log = get_logger(__name__)


def _journey(row: Row[Any]) -> Journey:
    return Journey(
        workspace_id=row.workspace_id, journey_id=row.journey_id,
        display_name=row.display_name, state=JourneyState(row.state),
        graph=JourneyGraph.from_dict(row.definition), published_version=row.published_version,
        revision=row.revision, create_time=row.create_time, update_time=row.update_time,
        error_count=row.error_count, last_error=row.last_error,
        last_error_time=row.last_error_time)


def _values(journey: Journey) -> dict[str, Any]:
    return {"display_name": journey.display_name, "state": journey.state.value,
            "definition": journey.graph.to_dict(),
            "published_version": journey.published_version, "revision": journey.revision,
            "update_time": journey.update_time}


def insert(session: Session, journey: Journey) -> None:
    session.execute(journeys.insert().values(
        workspace_id=journey.workspace_id, journey_id=journey.journey_id,
        create_time=journey.create_time, **_values(journey)))


def get(session: Session, workspace_id: str, journey_id: str, *,
        for_update: bool = False) -> Journey:
    query = select(journeys).where(journeys.c.workspace_id == workspace_id,
                                   journeys.c.journey_id == journey_id)
    if for_update:
        query = query.with_for_update()  # serialises editors; the etag check then sees the winner
    row = session.execute(query).first()
    if row is None:
        raise NotFound(f"journey {journey_id} not found", reason="JOURNEY_NOT_FOUND")
    return _journey(row)


def save(session: Session, journey: Journey) -> None:
    session.execute(update(journeys).where(
        journeys.c.workspace_id == journey.workspace_id,
        journeys.c.journey_id == journey.journey_id).values(**_values(journey)))


def add_version(session: Session, version: JourneyVersion) -> None:
    session.execute(journey_versions.insert().values(
        workspace_id=version.workspace_id, journey_id=version.journey_id,
        version=version.version, trigger_event_name=version.graph.event_name,
        definition=version.graph.to_dict(), create_time=version.create_time))


def page(session: Session, workspace_id: str, size: int,
         after: tuple[datetime, str] | None) -> list[Journey]:
    """Oldest first; ``after`` is the (create_time, journey_id) of the previous page's last."""
    c = journeys.c
    query = select(journeys).where(c.workspace_id == workspace_id)
    if after is not None:
        when, journey_id = after
        query = query.where(or_(c.create_time > when,
                                and_(c.create_time == when, c.journey_id > journey_id)))
    rows = session.execute(query.order_by(c.create_time, c.journey_id).limit(size)).all()
    return [_journey(r) for r in rows]


def triggers(session: Session, wanted: Iterable[tuple[str, str]]) -> list[Trigger]:
    """The latest versions of active journeys listening for any (workspace_id, event_name)."""
    pairs = sorted(set(wanted))
    if not pairs:
        return []
    j, v = journeys.c, journey_versions.c
    rows = session.execute(
        select(v.workspace_id, v.journey_id, v.version, v.trigger_event_name, v.definition)
        .join(journeys, and_(j.workspace_id == v.workspace_id, j.journey_id == v.journey_id,
                             j.published_version == v.version))
        .where(j.state == JourneyState.ACTIVE.value,
               tuple_(v.workspace_id, v.trigger_event_name).in_(pairs))
    ).all()
    return [Trigger(r.workspace_id, r.journey_id, r.version, graph) for r in rows
            if (graph := _graph(r)) is not None]


def versions(session: Session, keys: Sequence[tuple[str, str, int]]) -> dict[
        tuple[str, str, int], JourneyGraph]:
    """Frozen graphs by (workspace_id, journey_id, version)."""
    if not keys:
        return {}
    v = journey_versions.c
    rows = session.execute(
        select(v.workspace_id, v.journey_id, v.version, v.definition)
        .where(tuple_(v.workspace_id, v.journey_id, v.version).in_(sorted(set(keys))))
    ).all()
    return {(r.workspace_id, r.journey_id, r.version): graph for r in rows
            if (graph := _graph(r)) is not None}


def _graph(row: Any) -> JourneyGraph | None:
    """A stored version's graph; None (logged) for one that no longer reads (it was stored by a
    release that wrote it differently, say): its journey enrolls nobody and its enrollments fail
    with a recorded step, while every other journey runs."""
    try:
        return JourneyGraph.from_dict(row.definition)
    except Exception as exc:
        log.error("a journey version cannot be read", workspace=row.workspace_id,
                  journey_id=row.journey_id, version=row.version, error=repr(exc))
        return None


def record_errors(session: Session, errors: Mapping[tuple[str, str], tuple[int, str]],
                  now: datetime) -> None:
    """Count errors on journeys: ``(workspace, journey) -> (how many, the latest)``, one
    statement for the round. Journeys go in key order, so two rounds never wait on each other's
    rows in opposite orders."""
    if not errors:
        return
    c = journeys.c
    session.execute(
        update(journeys)
        .where(c.workspace_id == bindparam("p_ws"), c.journey_id == bindparam("p_id"))
        .values(error_count=c.error_count + bindparam("p_count"),
                last_error=bindparam("p_error"), last_error_time=bindparam("p_time")),
        [{"p_ws": ws, "p_id": journey_id, "p_count": count, "p_error": error, "p_time": now}
         for (ws, journey_id), (count, error) in sorted(errors.items())])
