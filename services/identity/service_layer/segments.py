"""Segments: CEL conditions over profiles, whose members orchestration hears about as they
enter and leave. Memberships of changed profiles are refreshed by ingest and erasure, and by the
time worker when a windowed computed trait lapses; creating a segment, or changing its
condition, records a backfill that the time worker runs in the background, a chunk of profiles
per transaction (service_layer/backfills.py). A condition failing for a profile is recorded on
the segment (domain/segments.py) and never fails the use-case."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from functools import partial

from cjo_identity.adapters import backfills, profiles, segments
from cjo_identity.adapters.outbox_payloads import EVENTS_TOPIC, segment_event
from cjo_identity.adapters.segments import Transition
from cjo_identity.domain.backfills import segment_target
from cjo_identity.domain.segments import (
    SEGMENT_DELETED,
    Segment,
    SegmentChanges,
    apply_changes,
    check_segment,
)
from cjo_platform.db.unit_of_work import Transactions, UnitOfWork
from cjo_platform.errors import Aborted, AlreadyExists, InvalidArgument, NotFound
from cjo_platform.limits import MAX_SEGMENTS

# Profiles read per query of a scan (a bounded memory footprint per step).
SCAN_CHUNK = 1000


def _missing(segment_id: str) -> NotFound:
    return NotFound(f"segment 'segments/{segment_id}' does not exist",
                    reason="SEGMENT_NOT_FOUND")


def _new_etag() -> str:
    return uuid.uuid4().hex


def create_segment(uow: UnitOfWork, workspace_id: str, segment_id: str, display_name: str,
                   condition: str) -> tuple[Segment, int]:
    """Create the segment and record its backfill: the time worker lets every existing profile
    that matches enter it (and orchestration hears of it), a chunk of profiles per transaction
    (service_layer/backfills.py). Returns the segment (its backfill PENDING) and its member
    count (0)."""
    now = uow.now()
    segment = Segment(segment_id, display_name, condition, now, update_time=now,
                      etag=_new_etag())
    check_segment(segment)
    session = uow.session
    if segments.read_segment(session, workspace_id, segment_id) is not None:
        raise AlreadyExists(f"segment {segment_id!r} already exists", reason="SEGMENT_EXISTS")
    if segments.count_segments(session, workspace_id) >= MAX_SEGMENTS:
        raise InvalidArgument.one(
            "segment", f"a workspace holds at most {MAX_SEGMENTS} segments; delete one first")
    segments.add_segment(session, workspace_id, segment)
    backfills.start(session, workspace_id, segment_target(segment_id), condition, now)
    return get_segment(uow, workspace_id, segment_id)


def get_segment(uow: UnitOfWork, workspace_id: str, segment_id: str) -> tuple[Segment, int]:
    """The segment and its member count."""
    found = segments.get_segment(uow.session, workspace_id, segment_id)
    if found is None:
        raise _missing(segment_id)
    return found


def list_segments(uow: UnitOfWork, workspace_id: str, size: int, after: str
                  ) -> tuple[list[tuple[Segment, int]], str | None]:
    """Up to ``size`` segments (with member counts) by id after ``after``, and where the next
    page starts (None on the last page)."""
    found = segments.list_segments(uow.session, workspace_id, after, size + 1)
    if len(found) <= size:
        return found, None
    return found[:size], found[size - 1][0].segment_id


def update_segment(uow: UnitOfWork, workspace_id: str, segment_id: str,
                   changes: SegmentChanges, paths: frozenset[str], etag: str
                   ) -> tuple[Segment, int]:
    """Change the fields named in ``paths``; refused when ``etag`` is given and the segment
    changed since it was read. Setting the condition clears the segment's errors, makes it
    ACTIVE and records a backfill of its members, as CreateSegment does (a backfill still
    running for the old condition starts over)."""
    session = uow.session
    current = segments.read_segment(session, workspace_id, segment_id, for_update=True)
    if current is None:
        raise _missing(segment_id)
    if etag and etag != current.etag:
        raise Aborted(f"segment 'segments/{segment_id}' changed since etag {etag!r} was read",
                      reason="ETAG_MISMATCH")
    updated = apply_changes(current, changes, paths, uow.now(), _new_etag())
    segments.replace_segment(session, workspace_id, updated)
    if "condition" in paths:
        backfills.start(session, workspace_id, segment_target(segment_id), updated.condition,
                        updated.update_time or uow.now())
    return get_segment(uow, workspace_id, segment_id)


def delete_segment(uow: UnitOfWork, workspace_id: str, segment_id: str,
                   traceparent: str) -> None:
    """Delete the segment and its memberships; each member leaves it (orchestration hears a
    segment_exited with reason segment_deleted, in order with the member's events)."""
    session = uow.session
    segment = segments.read_segment(session, workspace_id, segment_id, for_update=True)
    if segment is None:
        raise _missing(segment_id)
    # Each member is announced by whoever deletes its row: here, or an ingest that saw it
    # leave at the same moment (never both).
    while members := segments.list_members(session, workspace_id, segment_id, SCAN_CHUNK, ""):
        gone = segments.remove_members(session, workspace_id, segment_id, members)
        _publish_exits(uow, workspace_id, segment, gone, traceparent)
    segments.delete_segment(session, workspace_id, segment_id)
    backfills.remove(session, workspace_id, segment_target(segment_id))


def drain_chunk(uow: UnitOfWork, workspace_id: str, segment_id: str,
                traceparent: str) -> bool:
    """Before DeleteSegment: up to :data:`SCAN_CHUNK` members leave the segment (orchestration
    hears a segment_exited with reason segment_deleted), in a transaction that locks neither
    the segment nor a profile. Returns whether more members may be left."""
    session = uow.session
    segment = segments.read_segment(session, workspace_id, segment_id)
    if segment is None:
        return False
    members = segments.list_members(session, workspace_id, segment_id, SCAN_CHUNK, "")
    if not members:
        return False
    gone = segments.remove_members(session, workspace_id, segment_id, members)
    _publish_exits(uow, workspace_id, segment, gone, traceparent)
    return len(members) == SCAN_CHUNK


async def drain(transactions: Transactions, workspace_id: str, segment_id: str,
                traceparent: str) -> None:
    """Empty the segment before it is deleted, a chunk of members per transaction, so that
    deleting a segment of a million members is not one transaction writing a million outbox
    rows; :func:`delete_segment` then handles the few that entered meanwhile."""
    while await transactions.run(partial(drain_chunk, workspace_id=workspace_id,
                                         segment_id=segment_id, traceparent=traceparent)):
        pass


def _publish_exits(uow: UnitOfWork, workspace_id: str, segment: Segment,
                   members: Sequence[str], traceparent: str) -> None:
    now = uow.now()
    golden = profiles.golden_of(uow.session, workspace_id, members)
    uow.publish(EVENTS_TOPIC, workspace_id, [
        (segment_event(Transition(p, segment, entered=False), golden[p], now, traceparent,
                       reason=SEGMENT_DELETED), traceparent)
        for p in members if p in golden])


def list_members(uow: UnitOfWork, workspace_id: str, segment_id: str, size: int, after: str
                 ) -> tuple[list[str], str | None]:
    """Up to ``size`` member profile ids after ``after`` (by id), and where the next page
    starts (None on the last page)."""
    if segments.read_segment(uow.session, workspace_id, segment_id) is None:
        raise _missing(segment_id)
    members = segments.list_members(uow.session, workspace_id, segment_id, size + 1, after)
    return members[:size], members[size - 1] if len(members) > size else None
