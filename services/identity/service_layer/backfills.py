"""Backfills (domain/backfills.py): a new or changed segment condition, or new or changed
computed-trait definitions, applied to every existing profile in the background.

A round leases unfinished backfills (SKIP LOCKED plus a lease, so replicas share them) and runs
one chunk of :data:`SCAN_CHUNK` profiles of each, a transaction per chunk: the profiles are read
by id after the stored cursor and locked in id order, then memberships (and computed traits)
are written, then the segment's errors (ingest's lock order: profiles, then segment), and last
the backfill's cursor, by a compare-and-set that fails, rolling the chunk back, when another
worker moved on or the definition changed since (a newer backfill replaced this one). A restart
resumes at the stored cursor; a lease that ran out is taken over.

Ingest goes on meanwhile and evaluates every active segment for the profiles it changes, as
always: a profile the cursor already passed is kept current by ingest; one it has not reached
yet is evaluated by ingest now and by the chunk later, with its record as it is then (locked),
and only a membership that differs from the stored one is a transition, so nothing is
announced twice nor undone.

A chunk that fails (a definition that cannot be read, a database error) is recorded on its
backfill, which waits before it is tried again; the other backfills go on. After
``max_attempts`` failures in a row the backfill is FAILED (a permanently broken definition is
not retried for ever); setting the definition again records a new one.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from functools import partial

from cjo_identity.adapters import backfills, profiles, segments
from cjo_identity.adapters.outbox_payloads import EVENTS_TOPIC, segment_event
from cjo_identity.adapters.settings import load_rules
from cjo_identity.domain.backfills import (
    COMPUTED_TRAITS,
    Backfill,
    BackfillState,
    computed_digest,
)
from cjo_identity.domain.segments import Segment
from cjo_identity.domain.settings import IdentitySettings
from cjo_platform.db.unit_of_work import Transactions, UnitOfWork
from cjo_platform.logging import get_logger
from cjo_platform.telemetry import current_traceparent, tracer

log = get_logger(__name__)

# Profiles per chunk (one transaction each): a bounded memory footprint and lock time.
SCAN_CHUNK = 1000


class Superseded(Exception):
    """The backfill changed under the chunk (another worker, or a newer definition): the
    chunk is rolled back and the backfill left to whoever holds it now."""


@dataclass(frozen=True)
class BackfillSettings:
    lease_seconds: float = 60.0  # how long a claimed backfill is reserved for its worker
    retry_seconds: float = 60.0  # how long a backfill whose chunk failed waits
    max_attempts: int = 10  # chunks failing in a row before the backfill is FAILED
    batch: int = 4  # backfills claimed per round (one chunk of each)


def start_computed(uow: UnitOfWork, workspace_id: str, old: IdentitySettings,
                   new: IdentitySettings) -> bool:
    """Record a backfill of the computed traits when their definitions changed (a newer
    change replaces one still running) or their last backfill FAILED (saving them again is
    how it is restarted). Returns whether one was recorded."""
    if computed_digest(old.computed_traits) == computed_digest(new.computed_traits):
        last = computed_backfill(uow, workspace_id)
        if last is None or last.state is not BackfillState.FAILED:
            return False
    backfills.start(uow.session, workspace_id, COMPUTED_TRAITS,
                    computed_digest(new.computed_traits), uow.now())
    return True


def computed_backfill(uow: UnitOfWork, workspace_id: str) -> Backfill | None:
    """The backfill of the workspace's computed traits (None: never changed)."""
    return backfills.read(uow.session, workspace_id, [COMPUTED_TRAITS]).get(COMPUTED_TRAITS)


def claim(uow: UnitOfWork, token: str, settings: BackfillSettings) -> list[Backfill]:
    now = uow.now()
    return backfills.claim(uow.session, now, now + timedelta(seconds=settings.lease_seconds),
                           token, settings.batch)


def chunk(uow: UnitOfWork, job: Backfill, token: str, lease_seconds: float,
          traceparent: str = "") -> Backfill:
    """One chunk of ``job``; returns the backfill as this chunk left it (DONE after the last).
    The segment events it writes carry ``traceparent`` (the round's span). Raises
    :class:`Superseded` when the chunk must not be written."""
    session = uow.session
    now = uow.now()
    settings = load_rules(session, job.workspace_id)
    segment_id = job.segment_id
    until = now + timedelta(seconds=lease_seconds)
    only: list[Segment] = []
    if segment_id is not None:
        segment = segments.read_segment(session, job.workspace_id, segment_id)
        if segment is not None and segment.condition != job.definition:
            raise Superseded()  # changed: a newer backfill replaced this one
        if segment is None or not segment.evaluated:
            # Gone (DeleteSegment removes its backfill too), or INVALID during the scan: the
            # rest keep their memberships, as with ingest.
            if not backfills.advance(session, job, token, job.cursor, 0, True, now, until):
                raise Superseded()
            return _done(job, now)
        only.append(segment)
    elif computed_digest(settings.computed_traits) != job.definition:
        raise Superseded()
    rows = profiles.scan_profiles(session, job.workspace_id, job.cursor, SCAN_CHUNK,
                                  for_update=True)
    golden = {p: g for p, g, _ in rows}
    if only:
        # Evaluated on the profiles as stored: their computed traits are kept current by
        # ingest and by the time worker.
        transitions = segments.refresh(session, job.workspace_id, golden, (), settings, now,
                                       only=only, stored={p: c for p, _, c in rows})
    else:
        transitions = segments.refresh(session, job.workspace_id, golden, (), settings, now,
                                       before={p: (g, c) for p, g, c in rows})
    states = segments.states_of(session, job.workspace_id, transitions)
    uow.publish(EVENTS_TOPIC, job.workspace_id, [
        (segment_event(t, golden[t.profile_id], now, traceparent,
                       state=states.get(t.profile_id)), traceparent)
        for t in transitions])
    done = len(rows) < SCAN_CHUNK
    cursor = rows[-1][0] if rows else job.cursor
    if not backfills.advance(session, job, token, cursor, len(rows), done, now, until):
        raise Superseded()
    if done:
        return _done(job, now, len(rows))
    return replace(job, cursor=cursor, profiles_scanned=job.profiles_scanned + len(rows))


def _done(job: Backfill, now: datetime, scanned: int = 0) -> Backfill:
    return replace(job, state=BackfillState.DONE, end_time=now,
                   profiles_scanned=job.profiles_scanned + scanned)


def failed(uow: UnitOfWork, job: Backfill, token: str, error: str,
           settings: BackfillSettings) -> BackfillState:
    return backfills.failed(uow.session, job, token, error,
                            uow.now() + timedelta(seconds=settings.retry_seconds),
                            settings.max_attempts)


class BackfillRound:
    """Claims backfills and runs one chunk of each; the worker runs rounds while any is
    unfinished."""

    def __init__(self, transactions: Transactions, settings: BackfillSettings) -> None:
        self.transactions = transactions
        self.settings = settings
        self.token = uuid.uuid4().hex  # this worker's leases

    async def run(self) -> bool:
        """One round (one span: the segment events it writes carry its traceparent); returns
        whether a claimed backfill has chunks left."""
        with tracer().start_as_current_span("identity.time.backfills") as span:
            claimed = await self.transactions.run(partial(claim, token=self.token,
                                                          settings=self.settings))
            span.set_attribute("cjo.identity.backfills_claimed", len(claimed))
            return await self._chunks(claimed, current_traceparent())

    async def _chunks(self, claimed: list[Backfill], traceparent: str) -> bool:
        more = False
        for job in claimed:
            try:
                after = await self.transactions.run(partial(
                    chunk, job=job, token=self.token, lease_seconds=self.settings.lease_seconds,
                    traceparent=traceparent))
            except Superseded:
                continue
            except Exception as exc:
                # This backfill alone waits; the others (and other workspaces) go on.
                log.warning("backfill chunk failed; will retry", workspace_id=job.workspace_id,
                            target=job.target, error=repr(exc), exc_info=exc)
                state = await self.transactions.run(partial(
                    failed, job=job, token=self.token, error=str(exc) or repr(exc),
                    settings=self.settings))
                if state is BackfillState.FAILED:
                    log.error("backfill given up after failing chunks in a row; set its "
                              "definition again to restart it", workspace_id=job.workspace_id,
                              target=job.target, attempts=job.attempts + 1, error=repr(exc))
                continue
            more = more or after.state is not BackfillState.DONE
        return more
