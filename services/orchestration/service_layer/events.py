"""Events from identity: stored in the inbox as they arrive (HandleEvents), then applied in
receive order by the event round: goals, exit criteria and awaited events reach the profile's
enrollments, triggers enroll it, erasures and merges end or move its enrollments."""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from functools import partial
from typing import Any

from cjo_orchestration.adapters import enrollments as enrollment_store
from cjo_orchestration.adapters import erasures, facts
from cjo_orchestration.adapters import journeys as journey_store
from cjo_orchestration.adapters.journeys import TriggerCache
from cjo_orchestration.domain.conditions import error_detail
from cjo_orchestration.domain.enrollment import Enrollment, EnrollmentState
from cjo_orchestration.domain.entry import ActiveKey, Contents, History, InboxEvent
from cjo_orchestration.domain.events import EventOutcome, apply_events
from cjo_orchestration.domain.journeys import JourneyGraph
from cjo_orchestration.domain.lifecycle import (
    LIFECYCLE_EVENTS,
    PROFILE_MERGED,
    merged_profile_id,
    resolve_profile,
)
from cjo_orchestration.service_layer.enrollment import MAX_TRACEPARENT_LENGTH, admit
from cjo_orchestration.service_layer.errors import count_errors
from cjo_orchestration.service_layer.handoff import Handoff
from cjo_orchestration.service_layer.ids import NewId
from cjo_platform.backoff import RetryPolicy
from cjo_platform.db.dead_letters import DeadLetter, DeadLetters
from cjo_platform.db.item_writes import database_unavailable
from cjo_platform.db.unit_of_work import Transactions, UnitOfWork
from cjo_platform.logging import get_logger
from cjo_platform.telemetry import batch_span

log = get_logger(__name__)


@dataclass(frozen=True)
class ForwardedEvent:
    """An event identity forwarded, already resolved to its profile."""

    event_id: str
    profile_id: str
    event_name: str
    properties: Mapping[str, Any]
    traits: Mapping[str, Any]
    traceparent: str
    # Properties and traits not read yet (the two above are empty until then): how to read
    # them. Stored processed and applied in the same transaction, an event no journey can use
    # is never read (see :func:`_store`).
    unread: Contents | None = field(default=None, compare=False, repr=False)

    def contents(self) -> tuple[Mapping[str, Any], Mapping[str, Any]]:
        return (self.properties, self.traits) if self.unread is None else self.unread()


def receive(uow: UnitOfWork, workspace_id: str, events: Sequence[ForwardedEvent]) -> list[bool]:
    """Store events not seen before in the inbox; for each event, whether it was new (a repeat
    within the batch, or of an earlier batch, is not)."""
    return _store(uow, workspace_id, events)[0]


def _store(uow: UnitOfWork, workspace_id: str, events: Sequence[ForwardedEvent],
           processed: bool = False) -> tuple[list[bool], list[InboxEvent]]:
    """:func:`receive`, and the events stored, as the inbox holds them, in seq order;
    ``processed``: stored already marked so (the caller applies them in this transaction)."""
    first: dict[str, ForwardedEvent] = {}
    for event in events:
        first.setdefault(event.event_id, event)
    now = uow.now()
    # An event stored processed is never read from its row again, unless it is deferred behind
    # its profile's step (keep_pending writes its properties and traits then): one not read
    # yet is stored without them, and read only if a journey may use it (apply_inbox). Its row
    # still dedupes a redelivery; the event round reads only pending rows; erasure empties
    # rows anyway. A pending one is stored whole, for the event round.
    rows: list[dict[str, Any]] = []
    unread: dict[str, Contents] = {}
    for e in first.values():
        if processed and e.unread is not None:
            properties, traits = e.properties, e.traits
            unread[e.event_id] = e.unread
        else:
            properties, traits = e.contents()
        rows.append({
            "workspace_id": workspace_id, "event_id": e.event_id, "profile_id": e.profile_id,
            "event_name": e.event_name, "properties": dict(properties), "traits": dict(traits),
            # A malformed traceparent only costs the trace link, never the event.
            "traceparent": e.traceparent if len(e.traceparent) <= MAX_TRACEPARENT_LENGTH else "",
            "receive_time": now, "processed": processed})
    new = {event_id: seq for (_, event_id), seq in
           (enrollment_store.receive(uow.session, rows) if rows else {}).items()}
    stored = sorted((InboxEvent(workspace_id, new[row["event_id"]], row["event_id"],
                                row["profile_id"], row["event_name"], row["properties"],
                                row["traits"], row["traceparent"],
                                unread=unread.get(row["event_id"]))
                     for row in rows if row["event_id"] in new), key=lambda e: e.seq)
    answers: list[bool] = []
    for event in events:
        answers.append(event.event_id in new and first.get(event.event_id) is event)
        if answers[-1]:
            del new[event.event_id]  # a later copy in this batch is a duplicate
    return answers, stored


@dataclass(frozen=True)
class EventRound:
    """What one event round did: events handled (applied or dropped; deferred ones wait),
    enrollments created or changed, and events deferred (their profile's step runs)."""

    handled: int
    enrolled: int
    deferred: int = 0
    # When the earliest event backing off after a failed attempt is due again (the whole
    # batch's round only; None: none is, or not known).
    next_retry: datetime | None = None
    # Of the enrollments created, those handed to this process's step worker leased (the
    # others, and the changed ones, wait for its claim).
    handed_over: int = 0


def apply_inbox(uow: UnitOfWork, batch: int, new_id: NewId, *,
                seqs: Sequence[int] | None = None,
                claimed: list[InboxEvent] | None = None,
                stored: list[InboxEvent] | None = None,
                handoff: Handoff | None = None,
                marked: bool = False,
                triggers: TriggerCache | None = None,
                revision: Mapping[str, int] | None = None,
                none_retired: bool = False,
                due_at: datetime | None = None) -> EventRound:
    """Apply the oldest ``batch`` inbox events (of ``seqs`` only, when given; the ``stored``
    ones only, when given: inserted by this transaction, so neither read back nor locked
    again), locked, in one transaction. ``marked``: the ``stored`` events were inserted
    processed, no other event being pending (all of them apply; the deferred ones go back to
    the pending tail). ``claimed``
    receives the events this attempt claimed, so a caller whose transaction failed knows which
    to apply one profile at a time. With a ``handoff``, the enrollments created that are due
    at once go to this process's step worker, leased (:func:`admit`). With ``triggers``, the
    journeys' triggers come from that cache (at the workspaces' journeys ``revision``, when
    given: read in this transaction before the events were stored). ``none_retired``: no
    profile the events name was merged away or erased (checked in this transaction).
    ``due_at``: the clock reading at which the pending events are due (default: now)."""
    session = uow.session
    if stored is None:
        events = enrollment_store.pending_events(session, batch, seqs,
                                                 now=due_at or uow.now())
    else:
        events = stored[:batch] if marked else enrollment_store.in_order(session, stored[:batch])
    if claimed is not None:
        claimed[:] = events
    if not events:
        return EventRound(0, 0)
    now = uow.now()
    with batch_span("orchestration.enroll", [e.traceparent for e in events]):
        wanted = {(e.workspace_id, e.event_name) for e in events if e.event_name}
        listeners = journey_store.triggers(session, wanted, triggers, revision)
        listening: dict[tuple[str, str], list[str]] = defaultdict(list)
        for trigger in listeners:
            listening[(trigger.workspace_id, trigger.event_name)].append(trigger.journey_id)
        named = {(e.workspace_id, e.profile_id) for e in events} | {
            (e.workspace_id, merged_profile_id(e)) for e in events
            if e.event_name == PROFILE_MERGED and merged_profile_id(e)}
        retired = {} if none_retired else enrollment_store.retired_successors(session, named)
        # Events still addressed to a merged profile reach its survivor.
        profiles = {(w, resolved) for w, p in named
                    if (resolved := resolve_profile(retired, w, p))}
        # Erasures and merges act on every active enrollment of their profiles, also in
        # journeys that ordinary events cannot change.
        lifecycle = {(e.workspace_id, resolve_profile(retired, e.workspace_id, p))
                     for e in events if e.event_name in LIFECYCLE_EVENTS
                     for p in (e.profile_id, merged_profile_id(e)) if p}
        candidates = {(e.workspace_id, journey_id,
                       resolve_profile(retired, e.workspace_id, e.profile_id))
                      for e in events
                      for journey_id in listening.get((e.workspace_id, e.event_name), ())}
        watched, busy, history = _watched(uow, profiles, lifecycle, candidates)
        events = _read_used(events, listening, watched, busy, retired)
        outcome = apply_events(events, listeners, watched, history, busy, new_id, now, retired)
        inserted, handed_over = _record(uow, events, outcome, handoff, marked)

    def report() -> None:  # once, for the attempt that committed
        if outcome.deferred:
            log.debug("events deferred while their profile's step runs",
                      deferred=len(outcome.deferred))
        for retirement in outcome.retired:
            log.info("profile erased" if retirement.erased else "profile merged",
                     workspace=retirement.workspace_id, profile_id=retirement.profile_id,
                     successor_profile_id=retirement.successor_profile_id)
        log.debug("events applied", events=len(events), enrolled=len(inserted),
                  changed=len(outcome.changed), unmatched=outcome.unmatched)

    uow.after_commit(report)
    return EventRound(len(events) - len(outcome.deferred), len(inserted) + len(outcome.changed),
                      len(outcome.deferred), handed_over=handed_over)


def _read_used(events: list[InboxEvent], listening: Mapping[tuple[str, str], list[str]],
               watched: Sequence[tuple[Enrollment, JourneyGraph]],
               busy: set[tuple[str, str]], retired: Mapping[tuple[str, str], str],
               ) -> list[InboxEvent]:
    """``events`` with the properties and traits read of those not read yet that a journey may
    use: the event of a profile that has, or may have by the time the event applies, an
    enrollment or a running step. That is a profile an enrollment of which watches events, one
    whose step runs (deferred, its events go back to the pending tail whole), and one that an
    event of this batch may enroll (a listened name) or give enrollments or a step to (either
    side of a merge, an erasure), by its id as sent and as resolved. The others reach nothing
    (apply_events reads an event's properties and traits only for a trigger or an enrollment
    of its profile); lifecycle events were read as received."""
    if all(e.unread is None for e in events):
        return events
    reached = {(e.workspace_id, e.profile_id) for e, _ in watched} | busy
    for e in events:
        if (e.workspace_id, e.event_name) in listening or e.event_name in LIFECYCLE_EVENTS:
            other = merged_profile_id(e) if e.event_name == PROFILE_MERGED else ""
            for profile in (e.profile_id, other) if other else (e.profile_id,):
                reached.add((e.workspace_id, profile))
                reached.add((e.workspace_id, resolve_profile(retired, e.workspace_id, profile)))
    return [e.read() if e.unread is not None and (
        (e.workspace_id, e.profile_id) in reached
        or (e.workspace_id, resolve_profile(retired, e.workspace_id, e.profile_id)) in reached)
        else e for e in events]


def _watched(uow: UnitOfWork, profiles: set[tuple[str, str]],
             lifecycle: set[tuple[str, str]], candidates: set[ActiveKey],
             ) -> tuple[list[tuple[Enrollment, JourneyGraph]], set[tuple[str, str]],
                        dict[ActiveKey, History]]:
    """The profiles' enrollments the events can change, with their graphs; the profiles a
    step worker holds right now (their events wait); and the ``candidates``' history (their
    latest enrollments), read with them."""
    found, history = enrollment_store.watched_and_history(uow.session, profiles, candidates,
                                                          uow.now())
    graphs = journey_store.versions(
        uow.session, [(e.workspace_id, e.journey_id, e.journey_version) for e, _ in found])
    watched: list[tuple[Enrollment, JourneyGraph]] = []
    busy: set[tuple[str, str]] = set()
    for enrollment, leased in found:
        graph = graphs.get((enrollment.workspace_id, enrollment.journey_id,
                            enrollment.journey_version))
        subject = (enrollment.workspace_id, enrollment.profile_id) in lifecycle
        if not subject and (graph is None or not graph.watches_events):
            continue
        watched.append((enrollment, graph or JourneyGraph()))
        if leased:
            busy.add((enrollment.workspace_id, enrollment.profile_id))
    return watched, busy, history


def _record(uow: UnitOfWork, events: Sequence[InboxEvent], outcome: EventOutcome,
            handoff: Handoff | None = None, marked: bool = False) -> tuple[set[str], int]:
    """Write what the events did; returns the ids of the enrollments they created, and how many
    of them went to ``handoff``. ``marked``: the events were stored processed already."""
    session = uow.session
    now = uow.now()
    # Ended ones first: a merge may end one profile's enrollment in a journey and move the
    # other's in, and only one may be active at any moment.
    changed = list(outcome.changed.values())
    enrollment_store.save_progress(session, [
        c for c in changed if c[0].state is not EnrollmentState.ACTIVE])
    created = list(outcome.created.values())
    inserted = admit(uow, created, handoff)
    handed_over = 0 if handoff is None else sum(
        1 for e, _ in created if e.enrollment_id in inserted and handoff.ready(e, now))
    enrollment_store.save_progress(session, [
        c for c in changed if c[0].state is EnrollmentState.ACTIVE])
    erased = enrollment_store.retire(session, outcome.retired, now)
    enrollment_store.drop_events(session, outcome.dropped)
    # In the order the events happened (an exit, then a re-entry), leaving out the facts of
    # enrollments a racing writer kept from being inserted.
    facts.publish(uow, [f for f in outcome.facts
                        if f.enrollment_id in inserted or f.enrollment_id not in outcome.created])
    erasures.request(uow, erased)
    count_errors(uow, outcome.errors)
    deferred = set(outcome.deferred)
    if marked:
        enrollment_store.keep_pending(session, [e.read() for e in events if e.seq in deferred])
    else:
        enrollment_store.mark_processed(session, [e.seq for e in events if e.seq not in deferred])
    return inserted, handed_over



@dataclass(frozen=True)
class Received:
    """What one receipt did: for each event, whether it was new; what applying the new ones
    in the same transaction did; and whether any new one is left in the inbox for the event
    round (ordered behind an event not applied yet, or deferred behind its profile's step)."""

    new: list[bool]
    applied: EventRound
    waiting: bool


def receive_and_apply(uow: UnitOfWork, workspace_id: str, events: Sequence[ForwardedEvent],
                      new_id: NewId, handoff: Handoff | None = None,
                      triggers: TriggerCache | None = None) -> Received:
    """:func:`receive`, then apply the events just stored in the same transaction, as the event
    round would (:func:`apply_inbox` on them alone): an older pending event of the same person
    (held by another replica, backing off, or not applied yet) keeps its later ones in the
    inbox for the event round, so every profile's order holds.

    When no event at all is pending before the insert (the usual case), none can be older than
    these: they are stored processed, in the insert itself, and all applied (no statement to
    count the older ones, none to mark them afterwards); a redelivery still meets its row."""
    named = {e.profile_id for e in events} | {
        merged for e in events
        if e.event_name == PROFILE_MERGED and (merged := merged_profile_id(e))}
    checked = enrollment_store.receipt(uow.session, workspace_id, sorted(named))
    answers, stored = _store(uow, workspace_id, events, processed=not checked.pending)
    if not stored:
        return Received(answers, EventRound(0, 0), False)
    applied = apply_inbox(uow, len(stored), new_id, stored=stored, handoff=handoff,
                          marked=not checked.pending, triggers=triggers,
                          revision={workspace_id: checked.revision},
                          none_retired=not checked.retired)
    return Received(answers, applied, applied.handled < len(stored))


class EventReceiver:
    """HandleEvents' use-case: store a batch of forwarded events in the inbox (dedupe by event
    id) and, in the same transaction, apply them: one commit per batch, and no event round
    (its claim transaction and its wake-up) on an event's path.

    What the caller is told never depends on applying: when applying fails (an event that
    cannot be applied, whatever it raised), the batch is stored alone, in a transaction of its
    own, and the event round applies it with its per-profile isolation (a bad event counts
    its attempts and holds back only its profile). A batch larger than ``apply_limit`` is only
    stored: the event round applies it in its own batches, while the caller sends the next.
    ``events_waiting(uow)`` wakes the event workers when events are left in the inbox;
    ``enrolled()`` wakes the step worker after a commit that created or changed enrollments;
    with a ``handoff``, the ones created due at once are handed to it leased (no claim).
    """

    def __init__(self, transactions: Transactions, new_id: NewId,
                 events_waiting: Callable[[UnitOfWork], None],
                 enrolled: Callable[[], None], apply_limit: int,
                 handoff: Handoff | None = None, triggers: TriggerCache | None = None) -> None:
        self.transactions = transactions
        self.triggers = triggers
        self.handoff = handoff
        self.new_id = new_id
        self.events_waiting = events_waiting
        self.enrolled = enrolled
        self.apply_limit = apply_limit

    async def receive(self, workspace_id: str, events: Sequence[ForwardedEvent]) -> list[bool]:
        """For each event, whether it was new (stored now)."""
        if 0 < len(events) <= self.apply_limit:
            try:
                return await self.transactions.run(
                    lambda uow: self._receive_and_apply(uow, workspace_id, events))
            except Exception as exc:
                if database_unavailable(exc):
                    raise
                log.info("applying received events failed; the event round applies them",
                         events=len(events), error=error_detail(exc))
        return await self.transactions.run(lambda uow: self._store(uow, workspace_id, events))

    def _receive_and_apply(self, uow: UnitOfWork, workspace_id: str,
                           events: Sequence[ForwardedEvent]) -> list[bool]:
        received = receive_and_apply(uow, workspace_id, events, self.new_id, self.handoff,
                                     self.triggers)
        if received.waiting:
            self.events_waiting(uow)
        if received.applied.enrolled > received.applied.handed_over:
            uow.after_commit(self.enrolled)  # enrollments for the step worker's claim
        return received.new

    def _store(self, uow: UnitOfWork, workspace_id: str,
               events: Sequence[ForwardedEvent]) -> list[bool]:
        new = receive(uow, workspace_id, events)
        if any(new):
            self.events_waiting(uow)  # every replica's event worker looks, once this commits
        return new


# --- poison isolation ------------------------------------------------------------------------

# Where given-up events go: (uow, event, error, attempts), in the transaction that gives up.
DeadLetterSink = Callable[[UnitOfWork, InboxEvent, str, int], None]
INBOX_SOURCE = enrollment_store.INBOX_SOURCE  # the dead letters' source of given-up events


def to_dead_letters(dead_letters: DeadLetters) -> DeadLetterSink:
    """Given-up events as dead letters of :data:`INBOX_SOURCE`: the event (id, profile, name,
    properties, traits) as JSON, with the error and the attempts."""

    def add(uow: UnitOfWork, event: InboxEvent, error: str, attempts: int) -> None:
        payload = json.dumps({
            "event_id": event.event_id, "profile_id": event.profile_id,
            "event_name": event.event_name, "properties": dict(event.properties),
            "traits": dict(event.traits)}, default=str, sort_keys=True).encode()
        dead_letters.add(uow.session, workspace_id=event.workspace_id, source=INBOX_SOURCE,
                         item_key=event.event_id, payload=payload, error=error,
                         traceparent=event.traceparent, attempts=attempts)

    return add


def replay_events(wake: Callable[[UnitOfWork], None],
                  ) -> Callable[[UnitOfWork, Sequence[DeadLetter]], None]:
    """RetryDeadLetters for :data:`INBOX_SOURCE`: the events go back into the inbox's pending
    tail with their attempts counted afresh (an event whose row is gone is received again from
    the letter); ``wake(uow)`` wakes the event workers once it commits."""

    def replay(uow: UnitOfWork, letters: Sequence[DeadLetter]) -> None:
        by_workspace: dict[str, list[DeadLetter]] = defaultdict(list)
        for letter in letters:
            by_workspace[letter.workspace_id].append(letter)
        for workspace_id, mine in by_workspace.items():
            found = enrollment_store.replay(uow.session, workspace_id,
                                            [x.item_key for x in mine])
            if found < len(mine):
                receive(uow, workspace_id, [_forwarded(x) for x in mine])
        wake(uow)

    return replay


def _forwarded(letter: DeadLetter) -> ForwardedEvent:
    event = json.loads(letter.payload)
    return ForwardedEvent(event_id=letter.item_key, profile_id=str(event["profile_id"]),
                          event_name=str(event.get("event_name", "")),
                          properties=dict(event.get("properties") or {}),
                          traits=dict(event.get("traits") or {}),
                          traceparent=letter.traceparent)


# How long a failed event waits before its next attempt (doubling, capped).
EVENT_BACKOFF = RetryPolicy(base_delay=timedelta(seconds=1), max_delay=timedelta(minutes=5))


def fail_event(uow: UnitOfWork, event: InboxEvent, error: str, max_attempts: int,
               dead_letter: DeadLetterSink | None,
               backoff: RetryPolicy = EVENT_BACKOFF) -> bool:
    """Count a failed attempt to apply ``event`` and hold it back for ``backoff``'s delay; after
    ``max_attempts`` give it up (to the dead letters, when there are any), so its profile's
    later events flow again. True when given up. An event no longer pending (another replica
    applied it meanwhile) or held by another replica is left alone."""
    now = uow.now()
    # attempts so far + 1 is this one; its delay is the one after that attempt.
    attempts = enrollment_store.record_failure(
        uow.session, event.seq, error, now + backoff.delay(event.attempts + 1))
    if attempts is None:
        return False
    about = {"workspace": event.workspace_id, "event_id": event.event_id,
             "profile_id": event.profile_id, "attempts": attempts, "error": error}
    if attempts < max_attempts:
        uow.after_commit(partial(  # logged once, for the attempt that committed
            log.warning, "event could not be applied; its profile's events wait for a retry",
            **about))
        return False
    enrollment_store.give_up(uow.session, [event.seq])
    if dead_letter is not None:
        dead_letter(uow, event, error, attempts)
    uow.after_commit(partial(log.error, "event given up after repeated failures; it is in the "
                                        "dead letters", **about))
    return True


def profile_groups(events: Sequence[InboxEvent]) -> list[list[InboxEvent]]:
    """The events by the profiles they concern (a merge joins its two profiles), each group in
    receive order, the groups in the order of their first event: groups share no profile, so
    applying them one after the other keeps every profile's order."""
    parent: dict[tuple[str, str], tuple[str, str]] = {}

    def root(key: tuple[str, str]) -> tuple[str, str]:
        while parent.setdefault(key, key) != key:
            key = parent[key]
        return key

    for event in events:
        mine = root((event.workspace_id, event.profile_id))
        if event.event_name == PROFILE_MERGED and (merged := merged_profile_id(event)):
            other = root((event.workspace_id, merged))
            if other != mine:
                parent[other] = mine
    groups: dict[tuple[str, str], list[InboxEvent]] = defaultdict(list)
    for event in sorted(events, key=lambda e: e.seq):
        groups[root((event.workspace_id, event.profile_id))].append(event)
    return sorted(groups.values(), key=lambda g: g[0].seq)


class InboxRound:
    """One event round: the whole batch in one transaction; when that fails (an event that
    cannot be applied, whatever it raised), the batch again one profile at a time, then one
    event at a time within a profile that still fails. The event that fails counts an attempt,
    backs off (``backoff``: doubling delays) and holds back only its own profile's later events;
    everything else is applied. A failure of the database itself (down, timed out, deadlocked)
    is no event's fault: it counts against none, and the round fails for the worker to retry
    with its own backoff."""

    def __init__(self, transactions: Transactions, batch: int, new_id: NewId,
                 max_attempts: int, dead_letter: DeadLetterSink | None = None,
                 backoff: RetryPolicy = EVENT_BACKOFF, handoff: Handoff | None = None,
                 triggers: TriggerCache | None = None) -> None:
        self.transactions = transactions
        self.triggers = triggers
        self.handoff = handoff  # where new enrollments due at once go, leased
        self.batch = batch
        self.new_id = new_id
        self.max_attempts = max_attempts
        self.dead_letter = dead_letter
        self.backoff = backoff

    async def run(self) -> EventRound:
        claimed: list[InboxEvent] = []
        read_at: list[datetime] = []

        def apply(uow: UnitOfWork) -> EventRound:
            # The events due and the next retry at one clock reading: an event due again
            # between two would be neither applied nor next, and wait for the poll.
            now = uow.now()
            read_at[:] = [now]
            applied = apply_inbox(uow, self.batch, self.new_id, claimed=claimed,
                                  handoff=self.handoff, triggers=self.triggers, due_at=now)
            return replace(applied, next_retry=enrollment_store.next_retry(uow.session, now))

        try:
            return await self.transactions.run(apply)
        except Exception as exc:
            if not claimed or database_unavailable(exc):
                raise  # the database itself failed; the worker backs off
            log.warning("event round failed; applying its events one profile at a time",
                        events=len(claimed), error=repr(exc))
        handled = enrolled = deferred = 0
        for group in profile_groups(claimed):
            applied = await self._apply_group(group)
            handled += applied.handled
            enrolled += applied.enrolled
            deferred += applied.deferred
        # The events that failed back off: the worker sleeps until the first is due again,
        # not its poll.
        next_retry = await self.transactions.run(
            lambda uow: enrollment_store.next_retry(uow.session, read_at[0]))
        return EventRound(handled, enrolled, deferred, next_retry=next_retry)

    async def _apply(self, events: Sequence[InboxEvent]) -> EventRound:
        seqs = [e.seq for e in events]
        return await self.transactions.run(
            lambda uow: apply_inbox(uow, len(seqs), self.new_id, seqs=seqs,
                                    handoff=self.handoff, triggers=self.triggers))

    async def _apply_group(self, group: Sequence[InboxEvent]) -> EventRound:
        try:
            return await self._apply(group)
        except Exception as exc:
            if database_unavailable(exc):
                raise
            if len(group) == 1:
                return await self._failed(group[0], exc)
        handled = enrolled = deferred = 0
        for event in group:
            try:
                applied = await self._apply([event])
            except Exception as exc:
                if database_unavailable(exc):
                    raise
                failed = await self._failed(event, exc)
                handled += failed.handled
                break  # the profile's later events wait behind it
            handled += applied.handled
            enrolled += applied.enrolled
            deferred += applied.deferred
        return EventRound(handled, enrolled, deferred)

    async def _failed(self, event: InboxEvent, exc: Exception) -> EventRound:
        error = error_detail(exc)
        log.debug("event failed", event_id=event.event_id, error=error, exc_info=exc)
        gave_up = await self.transactions.run(lambda uow: fail_event(
            uow, event, error, self.max_attempts, self.dead_letter, self.backoff))
        return EventRound(1 if gave_up else 0, 0)

