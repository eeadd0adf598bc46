"""Segments: CEL conditions over profiles, whose members orchestration hears about as they
enter and leave. Memberships of changed profiles are refreshed by ingest and erasure; creating
a segment scans the workspace once."""

from __future__ import annotations

from cjo_identity.adapters import profiles, segments
from cjo_identity.adapters.outbox_payloads import EVENTS_TOPIC, segment_event
from cjo_identity.adapters.settings import load_settings
from cjo_identity.domain.segments import Segment, check_segment
from cjo_platform.db.unit_of_work import UnitOfWork
from cjo_platform.errors import AlreadyExists, NotFound

# Profiles read per query of a scan (a bounded memory footprint per step).
SCAN_CHUNK = 1000


def create_segment(uow: UnitOfWork, workspace_id: str, segment_id: str, display_name: str,
                   condition: str, traceparent: str) -> tuple[Segment, int]:
    """Create the segment; every existing profile that matches enters it now (and orchestration
    hears of it). Returns the segment and how many entered."""
    now = uow.now()
    segment = Segment(segment_id, display_name, condition, now)
    check_segment(segment)
    session = uow.session
    if segments.get_segment(session, workspace_id, segment_id) is not None:
        raise AlreadyExists(f"segment {segment_id!r} already exists", reason="SEGMENT_EXISTS")
    segments.add_segment(session, workspace_id, segment)
    settings = load_settings(session, workspace_id)[0]
    entered = 0
    after = ""
    while rows := profiles.scan_profiles(session, workspace_id, after, SCAN_CHUNK):
        after = rows[-1][0]
        golden = {p: g for p, g, _ in rows}
        transitions = segments.refresh(session, workspace_id, golden, (), settings, now,
                                       only=[segment])
        entered += len(transitions)
        uow.publish(EVENTS_TOPIC, workspace_id, [
            (segment_event(t, golden[t.profile_id], now, traceparent), traceparent)
            for t in transitions])
    return segment, entered


def get_segment(uow: UnitOfWork, workspace_id: str, segment_id: str) -> tuple[Segment, int]:
    """The segment and its member count."""
    found = segments.get_segment(uow.session, workspace_id, segment_id)
    if found is None:
        raise NotFound(f"segment 'segments/{segment_id}' does not exist")
    return found


def list_members(uow: UnitOfWork, workspace_id: str, segment_id: str, size: int, after: str
                 ) -> tuple[list[str], str | None]:
    """Up to ``size`` member profile ids after ``after`` (by id), and where the next page
    starts (None on the last page)."""
    if segments.get_segment(uow.session, workspace_id, segment_id) is None:
        raise NotFound(f"segment 'segments/{segment_id}' does not exist")
    members = segments.list_members(uow.session, workspace_id, segment_id, size + 1, after)
    return members[:size], members[size - 1] if len(members) > size else None
