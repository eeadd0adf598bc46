"""Forwarding watermarks (domain.watermarks): a sender's report, and when lapsed windows are
final for the learning worker."""

from __future__ import annotations

from datetime import datetime, timedelta

from cjo_decisioning.adapters import watermarks
from cjo_decisioning.domain.watermarks import (
    EVENTS,
    LearningCutoffs,
    Watermark,
    fold,
    learning_cutoffs,
    merge,
    stale,
)
from cjo_platform.db.unit_of_work import UnitOfWork
from cjo_platform.logging import get_logger

log = get_logger(__name__)


def record_watermark(uow: UnitOfWork, stream: str, report: Watermark) -> datetime:
    """Take a sender's report; returns the stream's watermark held now (never moved back)."""
    held, first = _take(uow, stream, report)
    if first:
        log.info("first forwarding watermark of the stream: lapsed windows wait for it now",
                 stream=stream, delivered_before=report.delivered_before.isoformat())
    return held


def record_bus_watermark(uow: UnitOfWork, stream: str, partition: int, partitions: int,
                         report: Watermark) -> None:
    """Take a watermark marker decisioning's bus consumer passed on for ``partition`` (of
    ``partitions``): kept as the partition's (never moved back), then the stream's watermark
    is all partitions' fold, taken as a report is, once every partition has reported."""
    if not 0 <= partition < partitions:
        raise ValueError(f"partition {partition} of a stream of {partitions}")
    watermarks.lock_markers(uow.session, stream, uow.now())
    _take(uow, stream, report, partition)
    reported = watermarks.load_partitions(uow.session, stream, partitions)
    if reported is not None:
        record_watermark(uow, stream, fold(reported))


def _take(uow: UnitOfWork, stream: str, report: Watermark, partition: int | None = None,
          ) -> tuple[datetime, bool]:
    """Merge ``report`` into the stream's watermark (or its ``partition``'s); returns the
    watermark held now and whether it is the first."""
    now = uow.now()
    held = watermarks.lock(uow.session, stream, Watermark(min(report.delivered_before, now)),
                           now, partition)
    merged = merge(held, report, now)
    if merged is None:
        assert held is not None  # merge keeps every report when nothing is held
        # Older than the one held (a row committed late, its forwarder stuck on it): its
        # sender still reports, so the watermark is not stale (review rmark2: it was dropped
        # after the maximum hold, and windows were learned on the grace alone).
        watermarks.touch(uow.session, stream, now, partition)
        return held.delivered_before, False
    watermarks.save(uow.session, stream, merged, now, partition)
    return merged.delivered_before, held is None


def cutoffs(uow: UnitOfWork, grace: timedelta, max_hold: timedelta,
            bus_partitions: int = 0) -> LearningCutoffs:
    """When lapsed windows are final now (the rewards' stream: identity's events). A stale
    watermark (its sender stopped reporting) is dropped, so that reports and gauges no longer
    show it either (with ``max_hold`` 0, watermarks off, it is only ignored). With the event
    bus (``bus_partitions``) the watermark holds only once every partition has passed on a
    marker: one left from the gRPC days, whose sender no longer reports it, holds nothing."""
    now = uow.now()
    if bus_partitions and not watermarks.partitions_reported(uow.session, EVENTS,
                                                             bus_partitions):
        return learning_cutoffs(now, grace, None, max_hold)
    held = watermarks.load(uow.session, EVENTS)
    if (held is not None and max_hold > timedelta(0) and stale(held, now, max_hold)
            and watermarks.drop_stale(uow.session, EVENTS, now - max_hold)):
        log.warning("forwarding watermark not reported for the maximum hold: dropped; lapsed "
                    "windows wait the grace alone until its sender reports again",
                    stream=EVENTS, reported=str(held.reported),
                    max_hold_hours=max_hold / timedelta(hours=1))
        held = None
    return learning_cutoffs(now, grace, held, max_hold)


def rewards_delivered_before(uow: UnitOfWork, workspace_id: str) -> datetime | None:
    """The workspace's watermark of its reward events, or None when never reported."""
    held = watermarks.load(uow.session, EVENTS)
    return None if held is None else held.of(workspace_id)
