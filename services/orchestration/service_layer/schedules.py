"""Scheduled triggers: each round claims due occurrences with a lease and enrolls one page of
each one's audience (a segment in identity), through the one enrollment path.

ListSegmentMembers and BatchGetProfiles are called without holding a transaction, then the
page's enrollments, their facts and the occurrence's new page cursor are written in one
transaction, which also re-reads the journey's state: a page read while the journey was being
paused or archived enrolls nobody. A crash before that commit repeats the page; a crash after it
resumes at the next page. Enrollments carry the occurrence's id as their entry id (never
overwritten), so a page enrolled twice (an expired lease, a retry) never enrolls a profile twice
for one occurrence.

Failures are handled per occurrence, so one bad occurrence never holds up the others: an answer a
retry cannot change (the segment is gone, its id refused) fails the occurrence and plans the
next one; anything else hands the occurrence back with exponential backoff (the retry policy's
delays) and the round goes on with the rest of its batch. Occurrences in a final state are
deleted after the retention period, except the latest of each journey.
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from functools import partial
from typing import Any

from cjo_orchestration.adapters import journeys as journey_store
from cjo_orchestration.adapters import schedules as schedule_store
from cjo_orchestration.adapters.audience import Audience, AudienceError
from cjo_orchestration.domain.conditions import error_detail
from cjo_orchestration.domain.events import JourneyError
from cjo_orchestration.domain.journeys import JourneyGraph, JourneyState
from cjo_orchestration.domain.schedule import (
    MAX_MISSED_COUNT,
    Decision,
    Occurrence,
    OccurrenceState,
    decide,
    next_fire,
    schedule_of,
)
from cjo_orchestration.service_layer.enrollment import Entrant, Entry, enroll
from cjo_orchestration.service_layer.errors import count_errors
from cjo_orchestration.service_layer.ids import NewId
from cjo_orchestration.settings import EngineSettings
from cjo_platform.backoff import RetryPolicy
from cjo_platform.db.unit_of_work import Transactions, UnitOfWork
from cjo_platform.logging import get_logger
from cjo_platform.telemetry import batch_span, current_traceparent

log = get_logger(__name__)

SWEEP_EVERY = timedelta(hours=1)  # how often a scheduler deletes occurrences past retention
SWEEP_BATCH = 100  # journeys whose old occurrences are deleted per transaction


@dataclass(frozen=True)
class Firing:
    """A claimed occurrence to enroll a page of, with what enrolling needs."""

    occurrence: Occurrence
    segment_id: str
    graph: JourneyGraph


# --- reads -------------------------------------------------------------------------------------


def get_occurrence(uow: UnitOfWork, workspace_id: str, journey_id: str, version: int,
                   fire_time: datetime) -> Occurrence:
    return schedule_store.get(uow.session, workspace_id, journey_id, version, fire_time)


def list_occurrences(uow: UnitOfWork, workspace_id: str, journey_id: str,
                     state: OccurrenceState | None, size: int,
                     before: tuple[datetime, int] | None) -> tuple[list[Occurrence], bool]:
    """Up to ``size`` of a journey's occurrences, newest first, before the (fire_time, version)
    cursor; and whether more follow. NOT_FOUND for a journey that does not exist."""
    journey_store.get(uow.session, workspace_id, journey_id)
    found = schedule_store.page(uow.session, workspace_id, journey_id, state, size + 1, before)
    return found[:size], len(found) > size


# --- one round's transactions ------------------------------------------------------------------


def claim_due(uow: UnitOfWork, now: datetime, lease_seconds: float, token: str,
              batch: int) -> tuple[list[Firing], bool]:
    """Occurrences due at ``now`` to enroll now; the others are settled here (cancelled,
    skipped, or replaced by the latest missed one). Returns (firings, whether any was
    settled)."""
    session = uow.session
    claimed = schedule_store.claim_due(session, now, now + timedelta(seconds=lease_seconds),
                                       token, batch)
    graphs = journey_store.versions(session, [
        (o.workspace_id, o.journey_id, o.journey_version) for o in claimed])
    firings: list[Firing] = []
    settled = 0
    errors: list[JourneyError] = []
    for occurrence in claimed:
        try:
            firing = _settle_or_fire(uow, occurrence, graphs)
        except Exception as exc:
            # This occurrence's version cannot be read or decided on: it fails, with why; the
            # journey counts it; the other claimed occurrences go on.
            detail = error_detail(exc)
            schedule_store.save(session, occurrence.settled(OccurrenceState.FAILED, detail, now))
            errors.append(JourneyError(occurrence.workspace_id, occurrence.journey_id, detail))
            uow.after_commit(partial(  # logged once, for the attempt that committed
                log.error, "scheduled occurrence failed", **_about(occurrence), detail=detail))
            firing = None
        if firing is not None:
            firings.append(firing)
        else:
            settled += 1
    count_errors(uow, errors)
    return firings, settled > 0


def _settle_or_fire(uow: UnitOfWork, occurrence: Occurrence,
                    graphs: Mapping[tuple[str, str, int], JourneyGraph]) -> Firing | None:
    """The occurrence to fire now, or None once it is settled here."""
    session = uow.session
    now = uow.now()
    journey = journey_store.get(session, occurrence.workspace_id, occurrence.journey_id)
    graph = graphs.get((occurrence.workspace_id, occurrence.journey_id,
                        occurrence.journey_version), JourneyGraph())
    decision, late = decide(journey.state, journey.published_version,
                            occurrence.journey_version, occurrence.state, graph,
                            occurrence.fire_time, now)
    current = (journey.state is not JourneyState.ARCHIVED
               and journey.published_version == occurrence.journey_version)
    scheduled = schedule_of(graph)
    if decision is Decision.RUN and scheduled is not None:
        return Firing(occurrence, scheduled[0], graph)
    if decision is Decision.CATCH_UP and late is not None:
        count = (f"at least {late.missed}" if late.missed >= MAX_MISSED_COUNT
                 else str(late.missed))
        detail = (f"missed while the scheduler was not running; {count} occurrence(s) "
                  f"left out, fired the latest ({late.latest.isoformat()}) once instead")
        schedule_store.save(session, occurrence.settled(OccurrenceState.MISSED, detail, now))
        schedule_store.plan(session, occurrence.workspace_id, occurrence.journey_id,
                            occurrence.journey_version, late.latest, now)
        uow.after_commit(partial(  # logged once, for the attempt that committed
            log.warning, "scheduled occurrences missed; firing the latest once",
                         journey_id=occurrence.journey_id, missed=late.missed,
                         latest=late.latest.isoformat()))
    elif decision is Decision.SKIP_PAUSED:
        schedule_store.save(session, occurrence.settled(
            OccurrenceState.SKIPPED,
            f"journey paused ({occurrence.enrolled} enrolled before)"
            if occurrence.state is OccurrenceState.RUNNING else "journey paused", now))
        if current and scheduled is not None:
            # Not made up on resume: the schedule goes on after now.
            schedule_store.plan(session, occurrence.workspace_id, occurrence.journey_id,
                                occurrence.journey_version, next_fire(scheduled[1], now),
                                now)
    else:
        reason = ("journey archived" if decision is Decision.CANCEL_ARCHIVED
                  else "replaced by a newer version")
        schedule_store.save(session, occurrence.settled(OccurrenceState.CANCELLED, reason,
                                                        now))
    return None


def _plan_next(uow: UnitOfWork, occurrence: Occurrence, graph: JourneyGraph) -> None:
    """Plan the occurrence after a finished one, if its version still runs the schedule.
    Planned after the fire time, not after now: when enrolling ran past the next fire time,
    that one is caught up (fired late, once) rather than silently dropped."""
    journey = journey_store.get(uow.session, occurrence.workspace_id, occurrence.journey_id)
    scheduled = schedule_of(graph)
    if (scheduled is None or journey.state is JourneyState.ARCHIVED
            or journey.published_version != occurrence.journey_version):
        return
    schedule_store.plan(uow.session, occurrence.workspace_id, occurrence.journey_id,
                        occurrence.journey_version,
                        next_fire(scheduled[1], occurrence.fire_time), uow.now())


def fail(uow: UnitOfWork, token: str, firing: Firing, detail: str, *,
         journey_error: bool = False) -> None:
    """A failure no retry can change: the occurrence is FAILED with why, the next planned
    (``journey_error``: the journey counts it too)."""
    occurrence = schedule_store.held(uow.session, firing.occurrence, token)
    if occurrence is None:
        return
    if journey_error:
        count_errors(uow, [JourneyError(occurrence.workspace_id, occurrence.journey_id,
                                        detail)])
    schedule_store.save(uow.session, occurrence.settled(OccurrenceState.FAILED, detail,
                                                        uow.now()))
    _plan_next(uow, occurrence, firing.graph)
    uow.after_commit(partial(  # logged once, for the attempt that committed
        log.error, "scheduled occurrence failed", **_about(firing.occurrence), detail=detail))


def retry_later(uow: UnitOfWork, token: str, firing: Firing, detail: str,
                policy: RetryPolicy) -> None:
    """A failure that may pass: hand only this occurrence back, to be tried again after an
    exponentially growing delay (capped by the retry policy); it stays at its page."""
    occurrence = firing.occurrence
    attempts = occurrence.attempts + 1
    retry_time = uow.now() + policy.delay(attempts)
    schedule_store.retry_later(uow.session, token, occurrence, retry_time,
                               f"retrying after {attempts} failed attempt(s): {detail}")
    uow.after_commit(partial(  # logged once, for the attempt that committed
        log.warning, "scheduled occurrence could not read its audience; retrying later",
                     **_about(occurrence), attempts=attempts, retry_time=retry_time.isoformat(),
                     detail=detail))


def enroll_page(uow: UnitOfWork, token: str, firing: Firing, listed: int,
                traits: Mapping[str, Mapping[str, Any]], next_token: str, traceparent: str,
                new_id: NewId) -> int:
    """Enroll one page and move the cursor on; returns how many enrolled (0 too when the lease
    was lost and another worker took the page over, or when the journey was paused or
    archived while the page was read). ``listed`` counts the members the page listed;
    ``traits`` holds those still there, by their current id."""
    session = uow.session
    occurrence = schedule_store.held(session, firing.occurrence, token)
    if occurrence is None:
        uow.after_commit(partial(  # logged once, for the attempt that committed
            log.warning, "lease of a scheduled occurrence expired before its page was recorded; "
                         "its new holder enrolls it", **_about(firing.occurrence)))
        return 0
    journey = schedule_store.journey_state(session, occurrence.workspace_id,
                                           occurrence.journey_id)
    if journey is None or journey[0] in (JourneyState.PAUSED, JourneyState.ARCHIVED):
        # Stop at this page; the next claim settles the occurrence as paused/archived.
        schedule_store.release(session, token, [occurrence])
        uow.after_commit(partial(  # logged once, for the attempt that committed
            log.info, "journey paused or archived while a scheduled page was read; the page is "
                      "not enrolled", **_about(occurrence)))
        return 0
    now = uow.now()
    already = schedule_store.enrolled_by(session, occurrence, list(traits))
    properties = {"segment_id": firing.segment_id,
                  "scheduled_time": occurrence.fire_time.isoformat()}
    entry = Entry(occurrence.workspace_id, occurrence.journey_id, occurrence.journey_version,
                  firing.graph, occurrence.event_id, traceparent)
    admitted = enroll(uow, entry, [Entrant(p, t, properties) for p, t in traits.items()
                                   if p not in already], new_id)
    enrolled = sum(1 for a in admitted if a.enrollment is not None)
    done = not next_token
    progressed = replace(
        occurrence, page_token=next_token, pages=occurrence.pages + 1,
        enrolled=occurrence.enrolled + enrolled,
        not_enrolled=occurrence.not_enrolled + listed - enrolled,
        state=OccurrenceState.DONE if done else OccurrenceState.RUNNING,
        start_time=occurrence.start_time or now, finish_time=now if done else None,
        attempts=0, detail="")
    schedule_store.save(session, progressed)
    if done:
        _plan_next(uow, progressed, firing.graph)
        uow.after_commit(partial(  # logged once, for the attempt that committed
            log.info, "scheduled occurrence enrolled", journey_id=progressed.journey_id,
                      fire_time=progressed.fire_time.isoformat(), enrolled=progressed.enrolled,
                      not_enrolled=progressed.not_enrolled, pages=progressed.pages))
    return enrolled


def release(uow: UnitOfWork, token: str, occurrences: Sequence[Occurrence]) -> None:
    schedule_store.release(uow.session, token, occurrences)


def sweep(uow: UnitOfWork, finished_before: datetime) -> bool:
    """Delete final-state occurrences that finished before ``finished_before`` (the latest of
    each journey stays); True when a full batch went (more may be waiting)."""
    deleted, journeys = schedule_store.sweep(uow.session, finished_before, SWEEP_BATCH)
    if deleted:
        uow.after_commit(partial(  # logged once, for the attempt that committed
            log.info, "old scheduled occurrences deleted", deleted=deleted, journeys=journeys,
                      finished_before=finished_before.isoformat()))
    return journeys >= SWEEP_BATCH


# --- the round ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class ScheduleOutcome:
    enrolled: int  # enrollments made (the step worker has work)
    more: bool  # a firing, a settled occurrence or a full sweep: run again at once
    next_due: datetime | None = None  # when the next open occurrence falls due, if known


class ScheduleRound:
    """One scheduler pass: sweep (at most every SWEEP_EVERY), claim, enroll a page of each."""

    def __init__(self, transactions: Transactions, settings: EngineSettings,
                 audience: Audience, new_id: NewId) -> None:
        self.transactions = transactions
        self.settings = settings
        self.audience = audience
        self.new_id = new_id
        self._next_sweep: datetime | None = None  # the first round sweeps

    async def run(self) -> ScheduleOutcome:
        token = secrets.token_hex(16)
        swept = await self.sweep()

        def claim(uow: UnitOfWork) -> tuple[list[Firing], bool, datetime | None]:
            # The claim and the next due time at one clock reading: an occurrence falling due
            # between two would be neither claimed nor next, and wait for the poll.
            now = uow.now()
            firings, settled = claim_due(uow, now, self.settings.lease_seconds, token,
                                         self.settings.schedule_batch)
            return firings, settled, schedule_store.next_due(uow.session, now)

        firings, settled, next_due = await self.transactions.run(claim)
        enrolled = 0
        for index, firing in enumerate(firings):
            try:
                enrolled += await self._enroll_page(token, firing)
            except Exception as exc:
                # Unexpected (a bug, a lost database connection): this occurrence only is
                # retried later, and fails once the retry policy is exhausted; the rest of the
                # batch goes on.
                log.exception("scheduled occurrence page failed", **_about(firing.occurrence))
                await self._failed(token, firing, error_detail(exc))
            except BaseException:
                # Stopping: hand the rest back now, not at lease expiry.
                await self._release(token, [f.occurrence for f in firings[index:]])
                raise
        return ScheduleOutcome(enrolled, bool(firings) or settled or swept, next_due)

    async def sweep(self) -> bool:
        """Delete occurrences past retention, at most every SWEEP_EVERY; True when a full batch
        went (more may be waiting)."""
        now = self.transactions.clock.now()
        if self._next_sweep is not None and now < self._next_sweep:
            return False
        before = now - timedelta(days=self.settings.schedule_retention_days)
        full = await self.transactions.run(lambda uow: sweep(uow, before))
        self._next_sweep = now if full else now + SWEEP_EVERY
        return full

    async def _failed(self, token: str, firing: Firing, detail: str) -> None:
        attempts = firing.occurrence.attempts + 1
        if self.settings.retry.exhausted(attempts):
            given_up = f"gave up after {attempts} attempts: {detail}"
            await self.transactions.run(lambda uow: fail(uow, token, firing, given_up,
                                                         journey_error=True))
        else:
            await self._retry(token, firing, detail)

    async def _release(self, token: str, occurrences: Sequence[Occurrence]) -> None:
        await self.transactions.run(lambda uow: release(uow, token, occurrences))

    async def _retry(self, token: str, firing: Firing, detail: str) -> None:
        await self.transactions.run(
            lambda uow: retry_later(uow, token, firing, detail, self.settings.retry))

    async def _enroll_page(self, token: str, firing: Firing) -> int:
        occurrence = firing.occurrence
        with batch_span("orchestration.schedule", []) as span:
            span.set_attribute("cjo.workspace.id", occurrence.workspace_id)
            span.set_attribute("cjo.journey.id", occurrence.journey_id)
            span.set_attribute("cjo.schedule.fire_time", occurrence.fire_time.isoformat())
            try:
                page = await self.audience.members(
                    occurrence.workspace_id, firing.segment_id, occurrence.page_token,
                    self.settings.schedule_page_size)
                traits = await self.audience.traits(occurrence.workspace_id, page.profile_ids)
            except AudienceError as exc:
                if exc.permanent:
                    detail = f"audience unavailable ({exc.code_name}): {exc}"
                    await self.transactions.run(lambda uow: fail(uow, token, firing, detail))
                else:
                    await self._retry(token, firing, f"{exc.code_name}: {exc}")
                return 0
            span.set_attribute("cjo.enrollment.count", len(page.profile_ids))
            traceparent = current_traceparent()
            return await self.transactions.run(lambda uow: enroll_page(
                uow, token, firing, len(page.profile_ids), traits, page.next_page_token,
                traceparent, self.new_id))


def _about(occurrence: Occurrence) -> dict[str, str]:
    """Log fields naming an occurrence."""
    return {"workspace_id": occurrence.workspace_id, "journey_id": occurrence.journey_id,
            "journey_version": str(occurrence.journey_version),
            "fire_time": occurrence.fire_time.isoformat()}
