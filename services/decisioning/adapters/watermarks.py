"""The forwarding watermarks decisioning holds (domain.watermarks), one small table: a stream's
own row (workspace "") and a row per workspace reported behind it."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import delete, not_, select, update
from sqlalchemy.orm import Session

from cjo_decisioning.adapters.tables import forwarding_watermarks
from cjo_decisioning.domain.watermarks import Watermark
from cjo_platform.db import insert_ignore, one_of, upsert

w = forwarding_watermarks.c
STREAM_ROW = ""  # the workspace_id of a stream's own row


def load(session: Session, stream: str) -> Watermark | None:
    """The stream's watermark, or None when it was never reported."""
    rows = session.execute(select(w.workspace_id, w.delivered_before, w.update_time)
                           .where(w.stream == stream)).all()
    own = [r for r in rows if r.workspace_id == STREAM_ROW]
    if not own:
        return None
    return Watermark(own[0].delivered_before, {r.workspace_id: r.delivered_before for r in rows
                                               if r.workspace_id != STREAM_ROW},
                     reported=own[0].update_time)


def lock(session: Session, stream: str, report: Watermark, now: datetime) -> Watermark | None:
    """Serialize the reports of ``stream`` (replicas take them concurrently): its own row is
    created with ``report`` when absent (then None: nothing was held), or else locked until
    the transaction ends and the watermark held returned."""
    while True:
        created = insert_ignore(session, forwarding_watermarks, [
            {"stream": stream, "workspace_id": STREAM_ROW,
             "delivered_before": report.delivered_before, "update_time": now}],
            returning=w.workspace_id)
        if created:
            return None
        # None: the learning worker dropped it as stale between the two statements (review
        # rmark2: the report was then lost); it is created again.
        if session.execute(select(w.stream)
                           .where(w.stream == stream, w.workspace_id == STREAM_ROW)
                           .with_for_update()).first() is not None:
            return load(session, stream)


def save(session: Session, stream: str, watermark: Watermark, now: datetime) -> None:
    """Replace the stream's watermark (its row locked or created by :func:`lock`): the
    workspaces listed are written in place, those no longer listed deleted."""
    session.execute(update(forwarding_watermarks)
                    .where(w.stream == stream, w.workspace_id == STREAM_ROW)
                    .values(delivered_before=watermark.delivered_before, update_time=now))
    listed = sorted(watermark.behind)
    session.execute(delete(forwarding_watermarks)
                    .where(w.stream == stream, w.workspace_id != STREAM_ROW,
                           not_(one_of(session, w.workspace_id, listed))))
    upsert(session, forwarding_watermarks, [
        {"stream": stream, "workspace_id": workspace_id,
         "delivered_before": watermark.behind[workspace_id], "update_time": now}
        for workspace_id in listed],
        lambda new: {"delivered_before": new.delivered_before, "update_time": new.update_time})


def touch(session: Session, stream: str, now: datetime) -> None:
    """Mark the stream's watermark (its row locked by :func:`lock`) reported at ``now``: a
    report older than the one held still says its sender reports (not stale)."""
    session.execute(update(forwarding_watermarks)
                    .where(w.stream == stream, w.workspace_id == STREAM_ROW)
                    .values(update_time=now))


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
