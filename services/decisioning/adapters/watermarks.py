"""The forwarding watermarks decisioning holds (domain.watermarks), small tables: a stream's
own row (workspace "") and a row per workspace reported behind it, in ``forwarding_watermarks``;
with the event bus the same per partition of the stream, in ``bus_watermarks``."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, Table, delete, func, not_, select, update
from sqlalchemy.orm import Session

from cjo_decisioning.adapters.tables import bus_watermarks, forwarding_watermarks
from cjo_decisioning.domain.watermarks import Watermark
from cjo_platform.db import insert_ignore, one_of, upsert

w = forwarding_watermarks.c
STREAM_ROW = ""  # the workspace_id of a stream's (or a partition's) own row
# The bus_partition of a stream's row in bus_watermarks that serializes its markers.
_MARKERS_LOCK = -1


@dataclass(frozen=True)
class _Rows:
    """The rows of one watermark: a stream's, or one partition's of a stream."""

    table: Table
    key: dict[str, Any]

    def where(self, *more: ColumnElement[bool]) -> list[ColumnElement[bool]]:
        return [*(self.table.c[name] == value for name, value in self.key.items()), *more]

    def own(self) -> list[ColumnElement[bool]]:
        return self.where(self.table.c.workspace_id == STREAM_ROW)


def _rows(stream: str, partition: int | None) -> _Rows:
    if partition is None:
        return _Rows(forwarding_watermarks, {"stream": stream})
    return _Rows(bus_watermarks, {"stream": stream, "bus_partition": partition})


def load(session: Session, stream: str, partition: int | None = None) -> Watermark | None:
    """The stream's watermark (or its ``partition``'s), or None when never reported."""
    rows = _rows(stream, partition)
    c = rows.table.c
    found = session.execute(select(c.workspace_id, c.delivered_before, c.update_time)
                            .where(*rows.where())).all()
    own = [r for r in found if r.workspace_id == STREAM_ROW]
    if not own:
        return None
    return Watermark(own[0].delivered_before, {r.workspace_id: r.delivered_before for r in found
                                               if r.workspace_id != STREAM_ROW},
                     reported=own[0].update_time)


def lock_markers(session: Session, stream: str, now: datetime) -> None:
    """Serialize the markers of ``stream``'s partitions until the transaction ends: two
    partitions' markers taken at once would each miss the other's row (not committed yet),
    and neither would find every partition reported."""
    lock(session, stream, Watermark(now), now, _MARKERS_LOCK)


def partitions_reported(session: Session, stream: str, partitions: int) -> bool:
    """Whether each of the stream's ``partitions`` (0 to partitions - 1) has reported: a count
    of their own rows (a key look-up each), not a read of every workspace they list behind
    (the learning worker asks it each claim; review rbusmark)."""
    b = bus_watermarks.c
    reported = session.execute(
        select(func.count()).select_from(bus_watermarks)
        .where(b.stream == stream, one_of(session, b.bus_partition, list(range(partitions))),
               b.workspace_id == STREAM_ROW)).scalar_one()
    return int(reported) >= partitions


def load_partitions(session: Session, stream: str, partitions: int
                    ) -> Sequence[Watermark] | None:
    """The watermark of each of the stream's ``partitions`` (0 to partitions - 1), or None
    while one of them has not reported."""
    b = bus_watermarks.c
    found = session.execute(select(b.bus_partition, b.workspace_id, b.delivered_before)
                            .where(b.stream == stream, b.bus_partition >= 0,
                                   b.bus_partition < partitions)).all()
    own = {r.bus_partition: r.delivered_before for r in found if r.workspace_id == STREAM_ROW}
    if len(own) < partitions:
        return None
    behind: dict[int, dict[str, datetime]] = {partition: {} for partition in own}
    for r in found:
        if r.workspace_id != STREAM_ROW:
            behind[r.bus_partition][r.workspace_id] = r.delivered_before
    return [Watermark(own[p], behind[p]) for p in range(partitions)]


def lock(session: Session, stream: str, report: Watermark, now: datetime,
         partition: int | None = None) -> Watermark | None:
    """Serialize the reports of ``stream`` (or of its ``partition``; replicas take them
    concurrently): its own row is created with ``report`` when absent (then None: nothing was
    held), or else locked until the transaction ends and the watermark held returned."""
    rows = _rows(stream, partition)
    while True:
        created = insert_ignore(session, rows.table, [
            {**rows.key, "workspace_id": STREAM_ROW,
             "delivered_before": report.delivered_before, "update_time": now}],
            returning=rows.table.c.workspace_id)
        if created:
            return None
        # None: the learning worker dropped it as stale between the two statements (review
        # rmark2: the report was then lost); it is created again.
        if session.execute(select(rows.table.c.workspace_id).where(*rows.own())
                           .with_for_update()).first() is not None:
            return load(session, stream, partition)


def save(session: Session, stream: str, watermark: Watermark, now: datetime,
         partition: int | None = None) -> None:
    """Replace the stream's watermark (or its ``partition``'s; its row locked or created by
    :func:`lock`): the workspaces listed are written in place, those no longer listed
    deleted."""
    rows = _rows(stream, partition)
    c = rows.table.c
    session.execute(update(rows.table).where(*rows.own())
                    .values(delivered_before=watermark.delivered_before, update_time=now))
    listed = sorted(watermark.behind)
    session.execute(delete(rows.table).where(
        *rows.where(c.workspace_id != STREAM_ROW,
                    not_(one_of(session, c.workspace_id, listed)))))
    upsert(session, rows.table, [
        {**rows.key, "workspace_id": workspace_id,
         "delivered_before": watermark.behind[workspace_id], "update_time": now}
        for workspace_id in listed],
        lambda new: {"delivered_before": new.delivered_before, "update_time": new.update_time})


def touch(session: Session, stream: str, now: datetime, partition: int | None = None) -> None:
    """Mark the stream's watermark (or its ``partition``'s; its row locked by :func:`lock`)
    reported at ``now``: a report older than the one held still says its sender reports (not
    stale)."""
    rows = _rows(stream, partition)
    session.execute(update(rows.table).where(*rows.own()).values(update_time=now))


def drop_stale(session: Session, stream: str, reported_before: datetime) -> bool:
    """Drop the stream's watermark if it was last reported before ``reported_before`` (a
    report taken meanwhile keeps it); whether it was dropped."""
    dropped = session.execute(
        delete(forwarding_watermarks)
        .where(w.stream == stream, w.workspace_id == STREAM_ROW,
               w.update_time < reported_before)).rowcount  # type: ignore[attr-defined]
    if dropped:
        session.execute(delete(forwarding_watermarks)
                        .where(w.stream == stream, w.update_time < reported_before))
    return bool(dropped)
