"""Forwarding watermarks: when a lapsed reward window is final. Pure.

A decision exposed and not rewarded is learned as NOT_REWARDED once its window closed; but the
conversion that would reward it travels through identity's outbox forwarder, which may be down
or behind for longer than any fixed grace (decisioning unreachable, a failing forwarder, a
backlog). Identity therefore reports a **watermark** of its reward events: every event written
to its outbox before ``delivered_before`` has been delivered, except in the few workspaces
listed as ``behind``, each with its own (its oldest undelivered event's write time). A window
is final, and learned, once its deadline plus the grace is before both the clock and the
watermark of its workspace: a conversion inside the window was written to identity's outbox
within the grace after the deadline (the grace still covers identity's own delay, and the two
services' clocks' skew), and everything written before the watermark has arrived.

The watermark is computed by identity from its outbox table (shared by its replicas), not per
process, so any replica's report is true; reports may arrive out of order, so a report older
than the one held changes nothing, and no workspace's watermark ever moves back.

A stream never reported on (identity too old, forwarding switched off, the event bus: see
docs/operations.md) holds nothing: windows are then learned after the grace alone, as before
watermarks. A watermark holds learning back at most ``max_hold``: a source that stopped
reporting for good (decommissioned, rolled back to a version without reports, moved to the bus,
forwarding switched off) must not stall learning forever; by then the forwarded ids' dedupe is
forgotten too (``received_retention``, also a day). A watermark not reported for ``max_hold``
is stale: it holds nothing (the grace alone, as if never reported), and is dropped, until its
sender reports again. (One still reported but far behind holds lapsed windows ``max_hold``.)

**Over the event bus** identity publishes its watermark as a marker to every partition of the
stream (cjo_platform.bus.watermark), and decisioning's consumer passes each on once everything
before it in its partition was answered, listing the workspaces it still keeps. Each
partition's latest marker is kept (merged as a report is: never moved back), and the stream's
watermark is their :func:`fold`: the earliest of all partitions', none until every partition
has reported once (a partition not heard from may hold anything)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

EVENTS = "events"  # identity's track events and merges (the rewards)
MAX_BEHIND_WORKSPACES = 1000


@dataclass(frozen=True)
class Watermark:
    """Every item of a stream written before ``delivered_before`` has been delivered, but in
    the ``behind`` workspaces: there only those written before their own time."""

    delivered_before: datetime
    behind: Mapping[str, datetime] = field(default_factory=dict)
    # When its sender last reported it (a watermark held; None: a report).
    reported: datetime | None = None

    def of(self, workspace_id: str) -> datetime:
        return self.behind.get(workspace_id, self.delivered_before)

    def oldest(self) -> datetime:
        return min((self.delivered_before, *self.behind.values()))


def merge(held: Watermark | None, report: Watermark, now: datetime) -> Watermark | None:
    """The watermark after ``report``, or None when it is older than the one ``held`` (a
    report another replica computed earlier, arriving late): it changes nothing. No
    workspace's watermark moves back: a workspace reported behind keeps at least what it had.
    A report ahead of ``now`` (the sender's clock runs fast) counts up to ``now`` only, so one
    from a clock that jumped ahead does not make the true reports after it look old."""
    delivered_before = min(report.delivered_before, now)
    if held is not None and delivered_before < held.delivered_before:
        return None
    behind = {}
    for workspace_id, reported in report.behind.items():
        kept = max(reported, held.of(workspace_id)) if held is not None else reported
        if kept < delivered_before:
            behind[workspace_id] = kept
    return Watermark(delivered_before, behind)


def fold(partitions: Sequence[Watermark], limit: int = MAX_BEHIND_WORKSPACES) -> Watermark:
    """The stream's watermark from each partition's (every partition's, at least one): the
    earliest of theirs, and a workspace behind it at the earliest time any partition has for
    it (its own, or the partition's watermark), listed only if before the stream's; at most
    ``limit`` workspaces, past which the watermark of all is the next one's time."""
    delivered_before = min(p.delivered_before for p in partitions)
    behind: dict[str, datetime] = {}
    for partition in partitions:
        for workspace_id, time in partition.behind.items():
            if time < delivered_before:
                behind[workspace_id] = min(time, behind.get(workspace_id, time))
    listed = sorted((time, workspace_id) for workspace_id, time in behind.items())
    if len(listed) > limit:
        delivered_before = listed[limit][0]
        listed = listed[:limit]
    return Watermark(delivered_before, {workspace_id: time for time, workspace_id in listed})


@dataclass(frozen=True)
class LearningCutoffs:
    """A decision's outcome is final once its reward deadline is before its workspace's
    cutoff: ``by_workspace`` for the workspaces held further back, ``default`` for the rest
    (never earlier than any of ``by_workspace``)."""

    default: datetime
    by_workspace: Mapping[str, datetime] = field(default_factory=dict)

    def of(self, workspace_id: str) -> datetime:
        return self.by_workspace.get(workspace_id, self.default)


def learning_cutoffs(now: datetime, grace: timedelta, watermark: Watermark | None,
                     max_hold: timedelta) -> LearningCutoffs:
    """When windows are final: their deadline plus ``grace`` before the clock and before the
    workspace's watermark (see the module); a watermark older than ``max_hold`` holds no
    further back than that, and a stale one (not reported for ``max_hold``) not at all."""
    if watermark is None or stale(watermark, now, max_hold):
        return LearningCutoffs(now - grace)
    floor = now - max_hold

    def cutoff(delivered_before: datetime) -> datetime:
        return min(now, max(delivered_before, floor)) - grace

    return LearningCutoffs(cutoff(watermark.delivered_before),
                           {w: cutoff(t) for w, t in watermark.behind.items()})


def stale(watermark: Watermark, now: datetime, max_hold: timedelta) -> bool:
    """Whether ``watermark`` (held) was last reported more than ``max_hold`` ago: its sender
    stopped reporting (see the module)."""
    return watermark.reported is not None and watermark.reported < now - max_hold
