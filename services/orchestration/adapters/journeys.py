"""Journey storage: drafts, frozen versions, and the trigger lookup the event worker batches."""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import replace
from datetime import datetime
from typing import Any

from sqlalchemy import (
    Row,
    Select,
    Text,
    and_,
    bindparam,
    cast,
    func,
    or_,
    select,
    tuple_,
    update,
)
from sqlalchemy.orm import Session

from cjo_orchestration.adapters.tables import journey_versions, journeys
from cjo_orchestration.domain.entry import Trigger
from cjo_orchestration.domain.journeys import (
    Journey,
    JourneyGraph,
    JourneyState,
    JourneyVersion,
)
from cjo_platform.db import keys_in
from cjo_platform.errors import NotFound
from cjo_platform.logging import get_logger
from cjo_platform.revision_cache import RevisionCache

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


def read(session: Session, workspace_id: str, journey_id: str) -> Journey:
    """The journey for a caller, with ``unpublished_changes`` worked out (see :func:`_compared`)."""
    c = journeys.c
    found = _compared(session, select(journeys).where(
        c.workspace_id == workspace_id, c.journey_id == journey_id))
    if not found:
        raise NotFound(f"journey {journey_id} not found", reason="JOURNEY_NOT_FOUND")
    return found[0]


# Whether the draft's stored JSON is the latest version's, text for text. Both are written from
# JourneyGraph.to_dict through the one JSON encoder (cjo_platform.db.json_columns), so equal
# graphs are equal text and most journeys are settled without decoding their version; a text
# that differs (a version an older release wrote otherwise) is decoded and compared as graphs.
# NULL: no such version (never published, or gone).
_SAME_AS_PUBLISHED = (cast(journeys.c.definition, Text)
                      == cast(journey_versions.c.definition, Text)).label("same_as_published")


def _compared(session: Session, query: Select[Any]) -> list[Journey]:
    """The journeys ``query`` (on ``journeys``) reads, each with ``unpublished_changes``: its
    draft compared with its latest version, joined by primary key in the same query. A version
    that no longer reads counts as different, so a deploy publishes the draft again."""
    j, v = journeys.c, journey_versions.c
    rows = session.execute(query.add_columns(_SAME_AS_PUBLISHED).outerjoin(
        journey_versions, and_(v.workspace_id == j.workspace_id, v.journey_id == j.journey_id,
                               v.version == j.published_version))).all()
    differing = [(r.workspace_id, r.journey_id, r.published_version) for r in rows
                 if r.same_as_published is not None and not r.same_as_published]
    decoded = versions(session, differing)
    found = []
    for r in rows:
        journey = _journey(r)
        if r.same_as_published is None:
            unpublished = True
        elif r.same_as_published:
            unpublished = False
        else:
            unpublished = decoded.get(
                (r.workspace_id, r.journey_id, r.published_version)) != journey.graph
        found.append(replace(journey, unpublished_changes=unpublished))
    return found


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
    """Oldest first; ``after`` is the (create_time, journey_id) of the previous page's last.
    Each with ``unpublished_changes`` (see :func:`_compared`)."""
    c = journeys.c
    query = select(journeys).where(c.workspace_id == workspace_id)
    if after is not None:
        when, journey_id = after
        query = query.where(or_(c.create_time > when,
                                and_(c.create_time == when, c.journey_id > journey_id)))
    return _compared(session, query.order_by(c.create_time, c.journey_id).limit(size))


# The triggers of each (workspace, event name) kept between events, with the workspace's journeys
# revision they were read at (:data:`REVISION`): while the revision read in the event's
# transaction is the same, no journey of the workspace changed (on any replica), so the list is
# reused, its graphs decoded once; when it moved (a journey published, paused or archived), or
# the list is older than the cache's bound (a change that did not move the revision: a restore,
# a fix in SQL), it is read again. One per process and database, shared by its event threads.
TriggerCache = RevisionCache[tuple[str, str], tuple[Trigger, ...]]


def triggers(session: Session, wanted: Iterable[tuple[str, str]],
             kept: TriggerCache | None = None,
             revision: Mapping[str, int] | None = None) -> list[Trigger]:
    """The latest versions of active journeys listening for any (workspace_id, event_name).
    With ``kept``, the lists it holds at the workspaces' journeys ``revision`` (read here when
    not given; when given, it must have been read before this call, in the caller's
    transaction) are used instead of a read (see :data:`TriggerCache`)."""
    pairs = sorted(set(wanted))
    if not pairs:
        return []
    if kept is None:
        return _read_triggers(session, pairs)
    current = revisions(session, {w for w, _ in pairs}) if revision is None else revision

    def read(missing: Collection[tuple[str, str]]) -> dict[tuple[str, str], tuple[Trigger, ...]]:
        by_pair: dict[tuple[str, str], list[Trigger]] = {pair: [] for pair in missing}
        for trigger in _read_triggers(session, sorted(missing)):
            by_pair[(trigger.workspace_id, trigger.event_name)].append(trigger)
        return {pair: tuple(found) for pair, found in by_pair.items()}

    lists = kept.get({pair: current.get(pair[0], 0) for pair in pairs}, read)
    return [trigger for pair in pairs for trigger in lists[pair]]


def _read_triggers(session: Session, pairs: Sequence[tuple[str, str]]) -> list[Trigger]:
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


# A workspace's journeys revision: the sum of its journeys' revisions. Every change of a journey
# (its draft, state or published version) adds one to its revision, a new journey comes with
# revision 1, and journeys are never deleted; so the sum grows with every committed change, and
# a trigger list read at a revision stays right while the sum is unchanged. One aggregate over
# the workspace's journey rows, which costs far less than reading and decoding its triggers.
REVISION = func.coalesce(func.sum(journeys.c.revision), 0)
_REVISIONS = (select(journeys.c.workspace_id, REVISION)
              .where(journeys.c.workspace_id.in_(bindparam("ws", expanding=True)))
              .group_by(journeys.c.workspace_id))


def revisions(session: Session, workspace_ids: Iterable[str]) -> dict[str, int]:
    """The journeys revision (:data:`REVISION`) of each workspace; 0 for one without journeys."""
    wanted = sorted(set(workspace_ids))
    if not wanted:
        return {}
    found = dict.fromkeys(wanted, 0)
    found.update({r[0]: int(r[1]) for r in session.execute(_REVISIONS, {"ws": wanted})})
    return found


def versions(session: Session, keys: Sequence[tuple[str, str, int]]) -> dict[
        tuple[str, str, int], JourneyGraph]:
    """Frozen graphs by (workspace_id, journey_id, version), each version found by primary key,
    one probe per key, whatever their number, in one statement whose keys are one parameter
    (cjo_platform.db.keys_in; review rorchfix3)."""
    if not keys:
        return {}
    v = journey_versions.c
    rows = session.execute(
        select(v.workspace_id, v.journey_id, v.version, v.definition)
        .where(keys_in(session, (v.workspace_id, v.journey_id, v.version), keys))).all()
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
