"""The one enrollment path. Whatever enrolls a profile (the Enroll RPC, a page of a scheduled
occurrence's audience, an event matching a trigger) goes history -> may_enter ->
new_enrollment -> insert -> facts through here.

The event round is the one caller that decides entry itself: its events must be applied in
receive order together with the events that end or move enrollments, so the pure engine
(``apply_events``) runs the re-entry rules on its way; it then admits what it created with
:func:`admit`, the same insert and facts as :func:`enroll`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from functools import partial
from typing import Any, Protocol

from cjo_orchestration.adapters import enrollments as enrollment_store
from cjo_orchestration.adapters import facts
from cjo_orchestration.adapters import journeys as journey_store
from cjo_orchestration.adapters.peers import LiveProfile, ProfileGone
from cjo_orchestration.domain.conditions import error_detail
from cjo_orchestration.domain.enrollment import Enrollment, FactRecord, Step
from cjo_orchestration.domain.entry import may_enter, new_enrollment
from cjo_orchestration.domain.events import JourneyError
from cjo_orchestration.domain.journeys import JourneyGraph, JourneyState
from cjo_orchestration.domain.lifecycle import resolve_profile
from cjo_orchestration.domain.orders import Rejected
from cjo_orchestration.service_layer.errors import count_errors
from cjo_orchestration.service_layer.handoff import Handoff
from cjo_orchestration.service_layer.ids import NewId
from cjo_platform.db.unit_of_work import UnitOfWork
from cjo_platform.errors import FailedPrecondition, InvalidArgument, NotFound, Unavailable
from cjo_platform.logging import get_logger

log = get_logger(__name__)

# Why a profile was not enrolled, beyond the engine's re-entry reasons.
ALREADY_ACTIVE = "already_active"  # a concurrent writer enrolled it first
PROFILE_ERASED = "profile_erased"
JOURNEY_ERROR = "journey_error"  # the version failed to start it; the journey's last_error says why
MAX_TRACEPARENT_LENGTH = 64  # longer is malformed: it only costs the trace link
NOT_ASKED = ""  # enroll_profile's identity_profile_id when identity was not asked


@dataclass(frozen=True)
class Entry:
    """What profiles enter: a published journey version, and what enrolls them (``entry_id``:
    the event, occurrence or request; kept on the enrollment, never overwritten)."""

    workspace_id: str
    journey_id: str
    version: int
    graph: JourneyGraph
    entry_id: str
    traceparent: str = ""


@dataclass(frozen=True)
class Entrant:
    """A profile asking to enter, with what its templates render against."""

    profile_id: str
    traits: Mapping[str, Any]
    properties: Mapping[str, Any]


@dataclass(frozen=True)
class Admission:
    """The enrollment made for an entrant, or why there is none."""

    enrollment: Enrollment | None
    skip_reason: str = ""


def enroll(uow: UnitOfWork, entry: Entry, entrants: Sequence[Entrant],
           new_id: NewId) -> list[Admission]:
    """Enroll each entrant the re-entry rules let in; one answer per entrant, in order."""
    now = uow.now()
    keys = [(entry.workspace_id, entry.journey_id, e.profile_id) for e in entrants]
    history = enrollment_store.history(uow.session, keys)
    traceparent = entry.traceparent if len(entry.traceparent) <= MAX_TRACEPARENT_LENGTH else ""
    answers: list[Admission] = []
    created: list[tuple[Enrollment, Sequence[FactRecord]]] = []
    errors: list[JourneyError] = []
    for entrant, key in zip(entrants, keys, strict=True):
        try:
            skip = may_enter(entry.graph, history.get(key), now)
            if skip:
                answers.append(Admission(None, skip))
                continue
            enrollment, entry_facts = new_enrollment(
                entry.workspace_id, new_id(), entry.journey_id, entry.version, entry.graph,
                entrant.profile_id, entrant.traits, entrant.properties, entry.entry_id,
                traceparent, now)
        except Exception as exc:
            # The version cannot start this entrant (its goal window overflows the calendar,
            # say): this entrant is not enrolled, the journey counts the error, the rest go on.
            errors.append(JourneyError(entry.workspace_id, entry.journey_id, error_detail(exc)))
            answers.append(Admission(None, JOURNEY_ERROR))
            continue
        created.append((enrollment, entry_facts))
        answers.append(Admission(enrollment))
    count_errors(uow, errors)
    inserted = admit(uow, [(e, ()) for e, _ in created])
    facts.publish(uow, [f for _, fs in created for f in fs if f.enrollment_id in inserted])
    return [a if a.enrollment is None or a.enrollment.enrollment_id in inserted
            else Admission(None, ALREADY_ACTIVE) for a in answers]


def admit(uow: UnitOfWork, created: Sequence[tuple[Enrollment, Sequence[Step]]],
          handoff: Handoff | None = None) -> set[str]:
    """Insert new enrollments with the steps they already took. One that would be a second
    active enrollment of its profile in its journey (a racing replica or request) is left out;
    the caller publishes facts only for the ids returned (the ones inserted). With a
    ``handoff``, the ones due at once are inserted leased to it and given to it once the
    transaction commits (this process's step worker runs them without claiming them)."""
    now = uow.now()
    rows = [replace(e, step_count=len(taken)) for e, taken in created]
    ready = [e for e in rows if handoff is not None and handoff.ready(e, now)]
    lease = handoff.lease(now) if handoff is not None and ready else None
    inserted = enrollment_store.insert_new(
        uow.session, rows, {e.enrollment_id: lease for e in ready} if lease else None)
    enrollment_store.insert_steps(uow.session, [
        (replace(e, step_count=0), taken) for e, taken in created
        if taken and e.enrollment_id in inserted])
    if handoff is not None and lease is not None:
        handed = [e for e in ready if e.enrollment_id in inserted]
        if handed:
            uow.after_commit(partial(handoff.give, lease[1], handed))
    return inserted


class ProfileDirectory(Protocol):
    """Identity's profiles as they are now (adapters.peers.Peers.profiles)."""

    async def profiles(self, workspace_id: str, profile_ids: Sequence[str]) -> Sequence[Any]: ...


async def identity_profile(directory: ProfileDirectory | None, workspace_id: str,
                           profile_id: str) -> str | None:
    """What identity calls ``profile_id`` now, asked before Enroll writes anything: itself, its
    survivor when it was merged away, or None when identity does not know it (never identified,
    or erased). UNAVAILABLE when identity cannot answer; ``NOT_ASKED`` without a directory."""
    if directory is None:
        return NOT_ASKED
    try:
        [answer] = await directory.profiles(workspace_id, [profile_id])
    except Exception as exc:
        raise Unavailable(f"identity could not say whether profile {profile_id!r} exists; "
                          f"retry the request: {error_detail(exc)}",
                          reason="IDENTITY_UNAVAILABLE") from exc
    if isinstance(answer, LiveProfile):
        return answer.profile_id
    if isinstance(answer, ProfileGone):
        return None
    detail = getattr(answer, "detail", repr(answer))
    if isinstance(answer, Rejected):  # identity refuses the id itself (malformed, say)
        raise InvalidArgument.one("profile_id", detail)
    log.warning("identity could not answer Enroll's profile check", workspace=workspace_id,
                error=detail)
    raise Unavailable(f"identity could not say whether profile {profile_id!r} exists; retry "
                      f"the request: {detail}", reason="IDENTITY_UNAVAILABLE")


def enroll_profile(uow: UnitOfWork, workspace_id: str, journey_id: str, entrant: Entrant,
                   entry_id: str, traceparent: str, new_id: NewId,
                   identity_profile_id: str | None = NOT_ASKED) -> Admission:
    """The Enroll RPC: one profile into an active journey's published version, given what
    identity calls it (:func:`identity_profile`; ``NOT_ASKED`` skips that check). A profile
    merged away enrolls as its survivor; an erased one not at all (skip "profile_erased"); one
    identity does not know is NOT_FOUND."""
    journey = journey_store.get(uow.session, workspace_id, journey_id, for_update=True)
    if journey.state is not JourneyState.ACTIVE:
        raise FailedPrecondition(
            f"journey {journey_id} is {journey.state.value}; only an active journey enrolls",
            reason="JOURNEY_NOT_ACTIVE")
    version = (workspace_id, journey_id, journey.published_version)
    graph = journey_store.versions(uow.session, [version])[version]
    profile_id = resolve_profile(
        enrollment_store.retired_successors(uow.session, [(workspace_id, entrant.profile_id)]),
        workspace_id, entrant.profile_id)
    if not profile_id:
        return Admission(None, PROFILE_ERASED)
    if identity_profile_id is None:
        raise NotFound(
            f"identity has no profile {entrant.profile_id!r}: enroll a profile identity knows "
            f"(ingest an identify event with its identifiers first, and enroll the profile_id "
            f"it answers)", reason="PROFILE_NOT_FOUND", metadata={"field": "profile_id"})
    if identity_profile_id:
        profile_id = identity_profile_id  # identity's survivor, even before its merge event
    entry = Entry(workspace_id, journey_id, journey.published_version, graph, entry_id,
                  traceparent)
    [admission] = enroll(uow, entry, [replace(entrant, profile_id=profile_id)], new_id)
    return admission


def get_enrollment(uow: UnitOfWork, workspace_id: str, journey_id: str,
                   enrollment_id: str) -> tuple[Enrollment, list[Step]]:
    """An enrollment with every step it took."""
    found = enrollment_store.get(uow.session, workspace_id, journey_id, enrollment_id)
    steps = enrollment_store.steps_of(uow.session, workspace_id, [enrollment_id])
    return found, steps.get(enrollment_id, [])


def list_enrollments(uow: UnitOfWork, workspace_id: str, journey_id: str | None,
                     profile_id: str, size: int, before: tuple[datetime, str] | None,
                     ) -> tuple[list[tuple[Enrollment, list[Step]]], bool]:
    """Up to ``size`` of a journey's enrollments (of one profile, when given; ``journey_id``
    ``None``: the profile's in every journey), newest first, before the (create_time,
    enrollment_id) cursor, with their steps; and whether more follow. NOT_FOUND for a journey
    that does not exist."""
    if journey_id is not None:
        journey_store.get(uow.session, workspace_id, journey_id)
    found = enrollment_store.page(uow.session, workspace_id, journey_id, profile_id, size + 1,
                                  before)
    page = found[:size]
    steps = enrollment_store.steps_of(uow.session, workspace_id,
                                      [e.enrollment_id for e in page])
    return [(e, steps.get(e.enrollment_id, [])) for e in page], len(found) > size
