"""Profiles (golden records): read one, many, by identifier or by CEL filter; their event
history; export everything held about a person; erase a person.

A profile id merged into another resolves to the survivor everywhere."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import NoReturn

from cjo_identity.adapters import profiles, segments
from cjo_identity.adapters.outbox_payloads import EVENTS_TOPIC, erasure_event
from cjo_identity.adapters.settings import load_rules
from cjo_identity.domain.events import StoredEvent
from cjo_identity.domain.identifiers import Identifier
from cjo_identity.domain.profiles import Profile
from cjo_identity.domain.segments import activation
from cjo_platform.cel import Expression
from cjo_platform.db.unit_of_work import UnitOfWork
from cjo_platform.decisioning import DECISIONING_EVENTS_TOPIC
from cjo_platform.errors import Aborted, NotFound
from cjo_platform.paging import MAX_PAGE_BYTES

# ListProfiles reads at most SCAN_ROUNDS * SCAN_CHUNK profiles per call, so a rare match cannot
# make one call read the whole workspace; its page token continues the scan.
SCAN_CHUNK = 1000
SCAN_ROUNDS = 10
EventCursor = tuple[datetime, str]


def _missing(profile_id: str) -> NotFound:
    return NotFound(f"profile 'profiles/{profile_id}' does not exist")


def get_profile(uow: UnitOfWork, workspace_id: str, profile_id: str) -> Profile:
    profile = profiles.get_profile(uow.session, workspace_id, profile_id)
    if profile is None:
        raise _missing(profile_id)
    return profile


def get_profiles(uow: UnitOfWork, workspace_id: str, profile_ids: Sequence[str]
                 ) -> dict[str, Profile]:
    """The profiles that exist among ``profile_ids`` (merged-away ids answered by their
    survivor), keyed by the id asked for."""
    return profiles.get_profiles(uow.session, workspace_id, profile_ids)


def lookup_profile(uow: UnitOfWork, workspace_id: str, identifier: Identifier) -> Profile:
    """The profile that owns the (normalised) identifier."""
    owner = profiles.owner_of(uow.session, workspace_id, identifier)
    profile = None if owner is None else profiles.get_profile(uow.session, workspace_id, owner)
    if profile is None:
        raise NotFound("no profile has this identifier", reason="IDENTIFIER_UNKNOWN")
    return profile


def list_profile_events(uow: UnitOfWork, workspace_id: str, profile_id: str, size: int,
                        after: EventCursor | None, max_bytes: int = MAX_PAGE_BYTES
                        ) -> tuple[list[StoredEvent], EventCursor | None]:
    """Up to ``size`` of the profile's events, newest (by event time) first, after ``after``,
    fewer when they would pass ``max_bytes`` stored (one at least); and where the next page
    starts (None on the last page)."""
    resolved = profiles.resolve_profile_ids(uow.session, workspace_id, [profile_id])[profile_id]
    if not profiles.profile_exists(uow.session, workspace_id, resolved):
        raise _missing(profile_id)
    page = profiles.page_events(uow.session, workspace_id, resolved, size, after, max_bytes)
    return page.events, page.more


def list_profiles(uow: UnitOfWork, workspace_id: str, condition: Expression | None, size: int,
                  after: str) -> tuple[list[Profile], str | None]:
    """Up to ``size`` profiles (by id, after ``after``) matching ``condition`` (all when None);
    and where the scan continues (None when it reached the end). A page may hold fewer than
    ``size`` and still continue: the scan is bounded per call."""
    matched: list[str] = []
    last = after
    for _ in range(SCAN_ROUNDS):
        rows = profiles.scan_profiles(uow.session, workspace_id, last, SCAN_CHUNK)
        for profile_id, golden, computed in rows:
            last = profile_id
            if condition is None or condition.test(activation(golden, computed)):
                matched.append(profile_id)
                if len(matched) == size:
                    break
        if len(matched) == size or len(rows) < SCAN_CHUNK:
            break
    more = len(matched) == size or len(rows) == SCAN_CHUNK
    return profiles.load_profiles(uow.session, workspace_id, matched), last if more else None


@dataclass(frozen=True)
class ExportCursor:
    """Where an export's next page starts: after the event at ``after``, of the set of events
    the export began with: the profile ``profile_id`` (the one the name resolved to) holding
    ``merges`` profiles merged into it, and its events received by ``received_by``, of which
    ``exported`` come up to ``after``. A merge since, or an event moved into or out of the
    profile (an identifier moving to another profile takes its events), changes one of them,
    and the export must start again (moved-in events newer than ``after`` would be left
    out)."""

    after: EventCursor
    profile_id: str
    merges: int
    received_by: datetime
    exported: int


def export_profile(uow: UnitOfWork, workspace_id: str, profile_id: str,
                   cursor: ExportCursor | None, max_bytes: int,
                   profile_bytes: Callable[[Profile], int],
                   event_bytes: Callable[[StoredEvent], int]
                   ) -> tuple[Profile, list[StoredEvent], ExportCursor | None]:
    """A page of everything held about a person: the profile and its events after ``cursor``,
    newest first, as many as fit ``max_bytes`` as the caller encodes them (``profile_bytes``
    for the profile, on the first page only, and ``event_bytes`` for each event; one event at
    least; bounded by bytes only, so a history within ``max_bytes`` is one page whatever its
    number of events): each event is measured as it is read, so a page reads one event past
    what it answers at most; and where the next page starts (None on the last
    page). Aborted when the profile was merged with another (or into one), or had events moved
    into or out of it, since the export began. Only reads: run it with ``Transactions.read``
    (each statement sees what was committed when it ran; the check after the page's read covers
    everything exported so far, so a change it does not see came after that page)."""
    session = uow.session
    profile = get_profile(uow, workspace_id, profile_id)
    merges = len(profile.merged_from)
    if cursor is not None and (cursor.profile_id, cursor.merges) != (profile.profile_id, merges):
        _changed()
    if cursor is None:
        latest = profiles.latest_receive_time(session, workspace_id, profile.profile_id)
        # Now, not the profile's latest: events received elsewhere before the export began
        # and moved in later must count.
        received_by = max(latest, uow.now()) if latest else uow.now()
        after, exported, left = None, 0, max_bytes - profile_bytes(profile)
    else:
        received_by, after, exported = cursor.received_by, cursor.after, cursor.exported
        left = max_bytes
    # No bound by number: every event measures one byte at least.
    page = profiles.page_events(session, workspace_id, profile.profile_id, max(left, 1),
                                after, left, measure=event_bytes)
    exported += sum(1 for e in page.events if e.receive_time <= received_by)
    # The events received by then, up to where this page ends (all of them on the last page),
    # are the ones exported: else some moved in or out (or were erased) meanwhile.
    if profiles.count_events_through(session, workspace_id, profile.profile_id, received_by,
                                     page.more) != exported:
        _changed()
    more = ExportCursor(page.more, profile.profile_id, merges, received_by, exported) \
        if page.more is not None else None
    return profile, page.events, more


def _changed() -> NoReturn:
    raise Aborted("profile changed during export; start again (it was merged with another "
                  "profile, or had events moved into or out of it, since the export's first "
                  "page)", reason="PROFILE_CHANGED")


def delete_profile(uow: UnitOfWork, workspace_id: str, profile_id: str,
                   block_identifiers: bool, traceparent: str) -> None:
    """Erase the person: the profile, the profiles merged into it, their identifiers, events
    and memberships; with ``block_identifiers`` those identifiers never identify anyone again.
    Orchestration (and through it delivery) and decisioning hear of it so they drop their
    copies."""
    session = uow.session
    now = uow.now()
    resolved = profiles.resolve_profile_ids(session, workspace_id, [profile_id])[profile_id]
    if not profiles.erase_profile(session, workspace_id, resolved, block_identifiers, now):
        raise _missing(profile_id)
    settings = load_rules(session, workspace_id)
    segments.refresh(session, workspace_id, {}, [resolved], settings, now)
    erasure = erasure_event(resolved, now, traceparent)
    uow.publish(EVENTS_TOPIC, workspace_id, [(erasure, traceparent)])
    # Decisioning holds the person's decisions, engagement hours and merged ids: it erases
    # them on the same event, whether or not track events are forwarded to it (there may be
    # decisions from before forwarding was switched off).
    uow.publish(DECISIONING_EVENTS_TOPIC, workspace_id, [(erasure, traceparent)])
