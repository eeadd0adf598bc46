"""The step round: claim due enrollments with a lease, read their profiles as identity holds
them now (one BatchGetProfiles per workspace), advance them through the pure engine, render and
send (or update profiles) through the peers with one batch call per workspace, and record steps,
state and facts, all as long as the lease still holds.

Consistency: a step sees every identity change accepted before its round read the profile (its
traits, computed traits, segments, consent, identifiers and the address a send goes to), and a
merge identity accepted is applied to the enrollments before the step acts: when identity
answers a profile with its survivor before the merge's profile_merged event reached
orchestration, the enrollment waits (``merge_wait``, no attempt counted) for the event round to
merge the two profiles' enrollments, so one person in one journey is one enrollment. When
identity cannot answer, the workspace's group is not advanced on the data it held: it waits a
jittered backoff (per workspace, capped) and is retried without end, never failed for it and
never charged an attempt (identity's trouble is not the enrollment's). A profile identity no
longer has (erased: it existed when enrolled, as Enroll checks) ends the enrollment the way an
erasure does (exited, "profile_deleted"): nothing is sent to it."""

from __future__ import annotations

import asyncio
import secrets
import time
from collections import defaultdict, deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from contextvars import ContextVar
from dataclasses import replace
from datetime import datetime, timedelta
from functools import partial
from typing import Any, Protocol

from cjo_orchestration.adapters import enrollments as enrollment_store
from cjo_orchestration.adapters import facts
from cjo_orchestration.adapters import journeys as journey_store
from cjo_orchestration.adapters.peers import (
    DecideItem,
    DecisionAnswer,
    LiveProfile,
    ProfileGone,
    RenderItem,
    RenderOutcome,
    SendItem,
)
from cjo_orchestration.domain.conditions import error_detail
from cjo_orchestration.domain.enrollment import Enrollment, evolve
from cjo_orchestration.domain.events import JourneyError
from cjo_orchestration.domain.journeys import Channel, JourneyGraph
from cjo_orchestration.domain.lifecycle import erase_enrollment
from cjo_orchestration.domain.orders import (
    Decided,
    DecideOrder,
    Deferred,
    ProfileOrder,
    Rejected,
    SendOrder,
    SendResult,
    SendTimeFound,
    SendTimeOrder,
    Sent,
    Unavailable,
    recipient_address,
)
from cjo_orchestration.domain.timing import profile_time_zone
from cjo_orchestration.domain.transitions import Transition
from cjo_orchestration.domain.walk import advance, after_send, fail_enrollment
from cjo_orchestration.service_layer.errors import count_errors
from cjo_orchestration.settings import EngineSettings
from cjo_platform.db.item_writes import database_unavailable
from cjo_platform.db.unit_of_work import Transactions, UnitOfWork
from cjo_platform.logging import get_logger
from cjo_platform.telemetry import batch_span

log = get_logger(__name__)

VersionKey = tuple[str, str, int]
MAX_CACHED_GRAPHS = 10_000
# What a version that vanished runs on (graphs are frozen, so one serves every lookup; built
# per lookup as ``get``'s default, it cost a dataclass __init__ per enrollment and node).
_NO_GRAPH = JourneyGraph()


def claim_due(uow: UnitOfWork, now: datetime, lease_seconds: float, token: str,
              batch: int) -> list[Enrollment]:
    """Enrollments due at ``now``, leased to ``token`` (SKIP LOCKED: replicas share the work)."""
    return enrollment_store.claim_due(uow.session, now, now + timedelta(seconds=lease_seconds),
                                      token, batch)


def claim_due_and_next(uow: UnitOfWork, lease_seconds: float, token: str,
                       batch: int) -> tuple[list[Enrollment], datetime | None]:
    """:func:`claim_due`, and when the earliest enrollment not yet due falls due, both at one
    clock reading: the clock read again after the claim would miss an enrollment falling due
    in between (neither claimed nor next), and the worker would sleep its poll past it."""
    now = uow.now()
    return (claim_due(uow, now, lease_seconds, token, batch),
            enrollment_store.next_due(uow.session, now))


# Called in a transaction that hands enrollments back while events of their profiles wait in
# the inbox (the event round deferred them behind the step): wakes the event workers once it
# commits (bootstrap: the ``orchestration.events`` signal, which reaches every replica).
EventsWaiting = Callable[[UnitOfWork], None]


def record(uow: UnitOfWork, token: str, transitions: Sequence[Transition],
           events_waiting: EventsWaiting | None = None, *,
           surely_held_until: datetime | None = None) -> int:
    """Write the transitions of enrollments still leased to ``token``, with their facts;
    returns how many. One whose lease expired is left to its new holder. When events of their
    profiles wait in the inbox, ``events_waiting(uow)``.

    Before ``surely_held_until`` (well inside the leases, counted from before the claim) no
    lease can have run out, and only a lease that ran out is ever taken over: the leases are
    not read again (a statement less per round, paid per event when events come one at a
    time). Later, or without it, each is checked (``still_leased``, rows locked)."""
    if surely_held_until is not None and uow.now() < surely_held_until:
        kept = list(transitions)
    else:
        held = enrollment_store.still_leased(uow.session, token, [
            (t.enrollment.workspace_id, t.enrollment.profile_id, t.enrollment.enrollment_id)
            for t in transitions])
        kept = [t for t in transitions
                if (t.enrollment.workspace_id, t.enrollment.enrollment_id) in held]
    enrollment_store.save_progress(uow.session, [(t.enrollment, t.steps) for t in kept],
                                   context=False)
    facts.publish(uow, [f for t in kept for f in t.facts])
    count_errors(uow, [JourneyError(t.enrollment.workspace_id, t.enrollment.journey_id, t.error)
                       for t in kept if t.error])
    _handed_back(uow, [t.enrollment for t in kept], events_waiting)
    if len(kept) < len(transitions):
        uow.after_commit(partial(  # logged once, for the attempt that committed
            log.warning, "leases expired before the steps were recorded; their new holders record "
                         "them", lost=len(transitions) - len(kept)))
    return len(kept)


def release(uow: UnitOfWork, token: str, claimed: Sequence[Enrollment],
            events_waiting: EventsWaiting | None = None) -> None:
    """Hand claimed enrollments back untouched (stopping or failing), not at lease expiry."""
    enrollment_store.release(uow.session, token,
                             [(e.workspace_id, e.profile_id, e.enrollment_id) for e in claimed])
    _handed_back(uow, claimed, events_waiting)


def _handed_back(uow: UnitOfWork, handed: Iterable[Enrollment],
                 events_waiting: EventsWaiting | None) -> None:
    """Events the event round deferred while these enrollments were held apply now, not at
    the event worker's next poll."""
    if events_waiting is not None and enrollment_store.events_pending(
            uow.session, {(e.workspace_id, e.profile_id) for e in handed}):
        events_waiting(uow)


ProfileAnswer = LiveProfile | ProfileGone | Rejected | Deferred
ProfilesRead = dict[int, LiveProfile]
"""A step round's profiles as identity answered them, by the ``id`` of their view (the very
object each enrollment walks on, unless a step changed it: an update_profile's traits)."""
PROFILE_READS_KEPT = 10_000  # durations of the latest profile reads, for the benchmark's p50


class StepPeers(Protocol):
    """What a step needs from content, delivery and identity (adapters.peers.Peers)."""

    async def profiles(self, workspace_id: str,
                       profile_ids: Sequence[str]) -> list[ProfileAnswer]: ...

    async def render(self, workspace_id: str,
                     items: Sequence[RenderItem]) -> list[RenderOutcome]: ...

    async def send(self, workspace_id: str, items: Sequence[SendItem]) -> list[SendResult]: ...

    async def update_profiles(self, workspace_id: str,
                              orders: Sequence[ProfileOrder]) -> list[SendResult]: ...

    async def decide(self, workspace_id: str, decision_point: str, channel: Channel | None,
                     time: datetime, items: Sequence[DecideItem]
                     ) -> list[DecisionAnswer | Rejected | Unavailable]: ...

    async def send_times(self, workspace_id: str, channel: Channel | None, earliest: datetime,
                         max_delay: timedelta, profile_ids: Sequence[str]
                         ) -> list[SendTimeFound | Rejected | Unavailable]: ...


class StepRound:
    """One pass of the step worker. Keeps the graphs of the versions it ran (versions never
    change, so caching them is free)."""

    def __init__(self, transactions: Transactions, peers: StepPeers,
                 settings: EngineSettings, events_waiting: EventsWaiting | None = None) -> None:
        self.transactions = transactions
        self.peers = peers
        self.settings = settings
        # Wakes the event workers when a round hands back enrollments whose profiles' events
        # wait in the inbox (deferred behind the step).
        self.events_waiting = events_waiting
        self._graphs: dict[VersionKey, JourneyGraph] = {}
        # Seconds each workspace group's profile read took (latest first out).
        self.profile_read_seconds: deque[float] = deque(maxlen=PROFILE_READS_KEPT)
        # Consecutive profile reads identity could not answer, by workspace: the backoff's
        # state (a successful read forgets it). Shared by the rounds of one worker.
        self.identity_failures: dict[str, int] = {}
        # The same for decisioning's decisions (decide nodes, optimising splits).
        self.decisioning_failures: dict[str, int] = {}
        # When the earliest timer this round knows of falls due: the next claim's, or a time
        # this round recorded. Per task: each lane of a step worker sleeps until its own.
        self._next_due: ContextVar[datetime | None] = ContextVar("next_due", default=None)

    def next_due(self) -> datetime | None:
        """When, as far as the latest round (of this task) knows, the next enrollment falls
        due: the earliest future due time at its claim, or an earlier one it recorded since
        (a wait, a retry, the next node). None: none is known."""
        return self._next_due.get()

    def profile_read_summary(self) -> dict[str, float]:
        """How long the latest profile reads took (one per workspace group): count, p50, p90
        in milliseconds; logged when the step worker stops."""
        taken = sorted(self.profile_read_seconds)
        if not taken:
            return {"reads": 0}
        return {"reads": len(taken), "p50_ms": round(1000 * taken[len(taken) // 2], 2),
                "p90_ms": round(1000 * taken[int(len(taken) * 0.9)], 2)}

    async def run(self) -> bool:
        """Run one batch of due enrollments; True when the batch was full (more may wait)."""
        token = secrets.token_hex(16)
        # The claim's leases run lease_seconds from its clock reading, which is no earlier than
        # this one: until half of that has passed, nobody else can have taken them over (half
        # leaves room for replicas' clocks to disagree).
        surely_held_until = self.transactions.clock.now() + timedelta(
            seconds=self.settings.lease_seconds / 2)
        claimed, next_due = await self.transactions.run(lambda uow: claim_due_and_next(
            uow, self.settings.lease_seconds, token, self.settings.step_batch))
        self._next_due.set(next_due)
        if not claimed:
            return False
        await self._run_claimed(token, claimed, next_due, surely_held_until)
        return len(claimed) >= self.settings.step_batch

    async def run_claimed(self, token: str, claimed: Sequence[Enrollment],
                          surely_held_until: datetime | None = None) -> None:
        """Run enrollments already leased to ``token`` (by the transaction that created them:
        :class:`~cjo_orchestration.service_layer.handoff.Handoff`), as :meth:`run` runs the
        ones it claims, without a claim of its own; ``surely_held_until`` as :func:`record`'s
        (None: the leases are read again when recording)."""
        if claimed:
            await self._run_claimed(token, claimed, self._next_due.get(), surely_held_until)

    async def _run_claimed(self, token: str, claimed: Sequence[Enrollment],
                           next_due: datetime | None,
                           surely_held_until: datetime | None) -> None:
        try:
            await self._load_graphs(claimed)
            by_workspace: dict[str, list[Enrollment]] = defaultdict(list)
            for enrollment in claimed:
                by_workspace[enrollment.workspace_id].append(enrollment)
            # Workspaces run side by side, so one pass takes about one render and one send call
            # however many workspaces it holds, well inside the lease.
            groups = await asyncio.gather(*(self._run_workspace(workspace_id, group)
                                            for workspace_id, group in by_workspace.items()))
            transitions = [t for group_transitions in groups for t in group_transitions]
        except BaseException:
            # Stopping or failing: hand the batch back now rather than when the leases expire.
            await self.transactions.run(lambda uow: release(uow, token, claimed,
                                                            self.events_waiting))
            raise
        self._next_due.set(min(filter(None, [next_due, *(t.enrollment.due_time
                                                        for t in transitions)]),
                               default=None))
        try:
            await self.transactions.run(lambda uow: record(
                uow, token, transitions, self.events_waiting,
                surely_held_until=surely_held_until))
        except Exception as exc:
            if database_unavailable(exc):
                _database_failed(exc, len(transitions))
                raise
            # One enrollment's outcome cannot be written: write them one at a time, and fail
            # the one that cannot be written with the error instead.
            log.warning("recording a step batch failed; recording one enrollment at a time",
                        enrollments=len(transitions), error=repr(exc))
            await self._record_one_by_one(token, claimed, transitions)

    async def _record_one_by_one(self, token: str, claimed: Sequence[Enrollment],
                                 transitions: Sequence[Transition]) -> None:
        before = {e.enrollment_id: e for e in claimed}
        for transition in transitions:
            try:
                await self.transactions.run(partial(record, token=token, transitions=[transition],
                                                    events_waiting=self.events_waiting))
                continue
            except Exception as exc:
                if database_unavailable(exc):
                    _database_failed(exc, len(transitions))
                    raise
                detail = error_detail(exc)
                log.error("an enrollment's step could not be recorded; it fails",
                          enrollment_id=transition.enrollment.enrollment_id, error=detail)
            failed = fail_enrollment(before[transition.enrollment.enrollment_id],
                                     self.transactions.clock.now(), detail)
            try:
                await self.transactions.run(partial(record, token=token, transitions=[failed],
                                                    events_waiting=self.events_waiting))
            except Exception:
                # Left leased: retried once the lease expires, never in a tight loop.
                log.exception("an enrollment's failure could not be recorded either",
                              enrollment_id=failed.enrollment.enrollment_id)

    async def _load_graphs(self, claimed: Sequence[Enrollment]) -> None:
        missing = list({(e.workspace_id, e.journey_id, e.journey_version) for e in claimed}
                       - self._graphs.keys())
        if not missing:
            return
        found = await self.transactions.run(
            lambda uow: journey_store.versions(uow.session, missing))
        if len(self._graphs) + len(found) > MAX_CACHED_GRAPHS:
            self._graphs.clear()
        self._graphs.update(found)

    def _graph(self, enrollment: Enrollment) -> JourneyGraph:
        # A version that vanished (it never should) yields an empty graph: the engine then fails
        # the enrollment with a recorded step instead of stalling it.
        return self._graphs.get(
            (enrollment.workspace_id, enrollment.journey_id, enrollment.journey_version),
            _NO_GRAPH)

    async def _run_workspace(self, workspace_id: str,
                             group: Sequence[Enrollment]) -> list[Transition]:
        with batch_span("orchestration.step", [e.traceparent for e in group]) as span:
            span.set_attribute("cjo.workspace.id", workspace_id)
            span.set_attribute("cjo.enrollment.count", len(group))
            if len(group) == 1:
                span.set_attribute("cjo.enrollment.id", group[0].enrollment_id)
                span.set_attribute("cjo.journey.id", group[0].journey_id)
            live, read = await self._live(workspace_id, group)
            now = self.transactions.clock.now()
            transitions = [self._advance(evolve(e, traits=view), now)
                           if isinstance(view, dict) else view
                           for e, view in zip(group, live, strict=True)]
            waiting = [i for i, t in enumerate(transitions) if t.send is not None]
            if not waiting:
                return transitions
            try:
                results = await self._perform(workspace_id, [transitions[i] for i in waiting],
                                              read)
            except Exception as exc:
                # Not an answer about any one item (peers answer per item): this workspace's
                # sends are retried with backoff, the other workspaces' go on.
                log.exception("a workspace's sends failed; retrying them later",
                              workspace=workspace_id)
                results = [Deferred(error_detail(exc))] * len(waiting)
            now = self.transactions.clock.now()
            unavailable = self._decisioning_backoff(workspace_id, [
                r for i, r in zip(waiting, results, strict=True)
                if isinstance(transitions[i].send, DecideOrder)])
            for i, result in zip(waiting, results, strict=True):
                before = transitions[i]
                assert before.send is not None
                if isinstance(before.send, DecideOrder) and isinstance(result, Unavailable):
                    # Decisioning's trouble, not the enrollment's: it waits at the node and asks
                    # again (same request id), no attempt charged; what it walked stays.
                    waited = _wait(before.enrollment, now + unavailable, now, result.detail)
                    transitions[i] = replace(waited, steps=before.steps, facts=before.facts,
                                             error=before.error)
                    continue
                try:
                    after = after_send(before.enrollment, self._graph(before.enrollment),
                                       before.send, result, now, self.settings.retry)
                except Exception as exc:
                    after = fail_enrollment(before.enrollment, now, error_detail(exc))
                error = before.error or after.error or (
                    result.detail if isinstance(result, Rejected) and result.journey_error
                    else "")
                transitions[i] = Transition(after.enrollment, before.steps + after.steps,
                                            before.facts + after.facts, error=error)
            return transitions

    async def _live(self, workspace_id: str, group: Sequence[Enrollment],
                    ) -> tuple[list[dict[str, Any] | Transition], ProfilesRead]:
        """Each enrollment's profile view as identity holds it now, or the transition that
        replaces its step: waiting (identity could not answer, or its merge has not reached
        the journey yet), ended (erased), failed (identity refused the read); and the profiles
        read, by their view (:data:`ProfilesRead`)."""
        profile_ids = list(dict.fromkeys(e.profile_id for e in group))
        started = time.perf_counter()
        try:
            answers = dict(zip(profile_ids, await self.peers.profiles(workspace_id, profile_ids),
                               strict=True))
        except Exception as exc:
            # Not an answer about any one profile: the whole group waits (_identity_backoff).
            log.warning("reading a workspace's profiles failed; retrying its steps later",
                        workspace=workspace_id, error=error_detail(exc))
            answers = dict.fromkeys(profile_ids, Deferred(error_detail(exc)))
        self.profile_read_seconds.append(time.perf_counter() - started)
        now = self.transactions.clock.now()
        unanswered = self._identity_backoff(workspace_id, answers.values())
        unmerged = await self._merges_not_applied(workspace_id, answers.values(), now)
        read: ProfilesRead = {id(a.view): a for a in answers.values()
                              if isinstance(a, LiveProfile)}
        return [self._with_profile(e, answers[e.profile_id], now, unanswered, unmerged)
                for e in group], read

    async def _merges_not_applied(self, workspace_id: str, answers: Iterable[ProfileAnswer],
                                  now: datetime) -> set[str]:
        """The recently merged-away profiles (``merge_wait_limit``) among the answers whose
        profile_merged event the event round has not applied yet (no retired row here): one
        query, only when identity answered a recent merge."""
        recent = {merged for a in answers if isinstance(a, LiveProfile)
                  for merged, when in a.merged_from
                  if now - when < self.settings.merge_wait_limit}
        if not recent:
            return set()
        retired = await self.transactions.run(lambda uow: enrollment_store.retired_successors(
            uow.session, [(workspace_id, p) for p in sorted(recent)]))
        return {p for p in recent if (workspace_id, p) not in retired}

    def _identity_backoff(self, workspace_id: str,
                          answers: Iterable[ProfileAnswer]) -> timedelta:
        """How long the group's unanswered profiles wait: a backoff by the workspace's
        consecutive reads that identity could not (fully) answer, jittered so a recovering
        identity is not hit by every waiting group at once."""
        if not any(isinstance(a, Deferred) for a in answers):
            self.identity_failures.pop(workspace_id, None)
            return timedelta(0)
        failures = self.identity_failures.get(workspace_id, 0) + 1
        self.identity_failures[workspace_id] = failures
        delay = self.settings.profile_read_backoff.delay(failures)
        log.warning("identity could not answer the step round's profile read; the steps wait "
                    "(identity's trouble: no enrollment is failed or charged an attempt)",
                    workspace=workspace_id, failed_reads=failures,
                    retry_in_seconds=round(delay.total_seconds(), 2))
        return delay

    def _decisioning_backoff(self, workspace_id: str, results: Sequence[SendResult]
                             ) -> timedelta:
        """How long decisions decisioning could not answer wait: identity's backoff policy, by
        the workspace's consecutive rounds with such answers."""
        if not results:
            return timedelta(0)
        if not any(isinstance(r, Unavailable) for r in results):
            self.decisioning_failures.pop(workspace_id, None)
            return timedelta(0)
        failures = self.decisioning_failures.get(workspace_id, 0) + 1
        self.decisioning_failures[workspace_id] = failures
        delay = self.settings.profile_read_backoff.delay(failures)
        log.warning("decisioning could not answer the step round's decisions; the steps wait "
                    "(no enrollment is failed or charged an attempt)", workspace=workspace_id,
                    failed_rounds=failures, retry_in_seconds=round(delay.total_seconds(), 2))
        return delay

    def _with_profile(self, enrollment: Enrollment, answer: ProfileAnswer, now: datetime,
                      unanswered: timedelta, unmerged: set[str]) -> dict[str, Any] | Transition:
        if isinstance(answer, LiveProfile):
            merged_at = dict(answer.merged_from)
            if answer.profile_id != enrollment.profile_id:
                # This enrollment's profile was merged away. Only a merge older than the limit
                # (its event never came: dead-lettered, say) lets it act as the survivor.
                # A profile merged through a chain (A into B, then B into C) may be listed by
                # the survivor under its last link only, or not at all: the latest merge into
                # the survivor bounds when this one took effect, and with none listed nothing
                # tells us to wait. Either way the wait ends.
                when = merged_at.get(enrollment.profile_id) or max(merged_at.values(),
                                                                    default=None)
                stale = when is None or now - when >= self.settings.merge_wait_limit
                pending = [] if stale else [enrollment.profile_id]
            else:
                pending = [merged for merged in merged_at if merged in unmerged]
            if pending:
                # Identity merged profiles of this person; their profile_merged event (identity's
                # outbox guarantees it) has not been applied here yet. Acting now could mail one
                # person twice (both profiles' enrollments, the merged one under the dead id):
                # wait for the event round to merge the enrollments.
                return _wait(enrollment, now + self.settings.merge_wait, now,
                             f"waiting for identity's merge of profile {', '.join(pending)} "
                             f"into {answer.profile_id} to reach this journey")
            return answer.view
        if isinstance(answer, ProfileGone):
            # Erased: nothing may be sent to it; identity's erasure event will say the same.
            return erase_enrollment(enrollment, now)
        if isinstance(answer, Rejected):
            # Identity's trouble, not the journey's: no journey error is counted.
            return replace(fail_enrollment(
                enrollment, now, f"the profile could not be read: {answer.detail}"), error="")
        return _wait(enrollment, now + unanswered, now,
                     f"the profile could not be read: {answer.detail}")

    def _advance(self, enrollment: Enrollment, now: datetime) -> Transition:
        """The engine's walk (which fails a node that raises by the node's policy); anything
        else that raises fails this enrollment only."""
        try:
            return advance(enrollment, self._graph(enrollment), now)
        except Exception as exc:
            return fail_enrollment(enrollment, now, error_detail(exc))

    async def _perform(self, workspace_id: str, waiting: Sequence[Transition],
                       read: ProfilesRead | None = None) -> list[SendResult]:
        """Carry out the orders the transitions wait on: profile updates through identity,
        sends through content (render) and delivery."""
        results: list[SendResult] = [Deferred("no answer")] * len(waiting)
        updates = [(i, t.send) for i, t in enumerate(waiting) if isinstance(t.send, ProfileOrder)]
        sends = [(i, t.enrollment, t.send) for i, t in enumerate(waiting)
                 if isinstance(t.send, SendOrder)]
        decides = [(i, t) for i, t in enumerate(waiting) if isinstance(t.send, DecideOrder)]
        times = [(i, t) for i, t in enumerate(waiting) if isinstance(t.send, SendTimeOrder)]
        if updates:
            answers = await self.peers.update_profiles(workspace_id, [o for _, o in updates])
            for (i, _), answer in zip(updates, answers, strict=True):
                results[i] = answer
        decided: dict[int, DecisionAnswer] = {}
        if decides:
            for (i, transition), decision in zip(decides, await self._decide(workspace_id,
                                                                             decides),
                                                 strict=True):
                if not isinstance(decision, DecisionAnswer):
                    results[i] = decision
                    continue
                decided[i] = decision
                order = transition.send
                assert isinstance(order, DecideOrder)
                outcome = _decision_order(transition.enrollment, order, decision)
                if isinstance(outcome, SendOrder):
                    sends.append((i, transition.enrollment, outcome))
                else:
                    results[i] = outcome
        if times:
            for (i, _), answer in zip(times, await self._send_times(workspace_id, times),
                                      strict=True):
                results[i] = answer
        if sends:
            answers = await self._send(workspace_id, [(e, o) for _, e, o in sends], read)
            for (i, _, order), answer in zip(sends, answers, strict=True):
                if i in decided and isinstance(answer, Sent):
                    # The decide node's action went out: the answer names the decision.
                    answer = Decided(decided[i].decision_id, order.decision_action,
                                     answer.message_id, order.channel, order.content_key)
                results[i] = answer
        return results

    async def _decide(self, workspace_id: str, decides: Sequence[tuple[int, Transition]]
                      ) -> list[DecisionAnswer | SendResult]:
        """One BatchDecide per decision point (and channel) of the round's enrollments, with
        the profile view the round read and the step's key as the request id."""
        groups: dict[tuple[str, Channel | None], list[int]] = defaultdict(list)
        for position, (_, transition) in enumerate(decides):
            order = transition.send
            assert isinstance(order, DecideOrder)
            groups[(order.decision_point, order.channel)].append(position)
        answers: list[DecisionAnswer | SendResult] = [Unavailable("no answer")] * len(decides)
        now = self.transactions.clock.now()

        async def ask(point: str, channel: Channel | None, positions: list[int]) -> None:
            items = []
            for position in positions:
                enrollment, order = decides[position][1].enrollment, decides[position][1].send
                assert isinstance(order, DecideOrder)
                items.append(DecideItem(enrollment.profile_id, enrollment.traits,
                                        order.request_id, enrollment.journey_id,
                                        enrollment.enrollment_id, order.node_id))
            try:
                got: Sequence[DecisionAnswer | SendResult] = await self.peers.decide(
                    workspace_id, point, channel, now, items)
            except Exception as exc:
                log.warning("asking decisioning failed; the decisions wait",
                            workspace=workspace_id, decision_point=point,
                            error=error_detail(exc))
                got = [Unavailable(f"decisioning: {error_detail(exc)}")] * len(positions)
            for position, answer in zip(positions, got, strict=True):
                answers[position] = answer

        await asyncio.gather(*(ask(point, channel, positions)
                               for (point, channel), positions in groups.items()))
        return answers

    async def _send_times(self, workspace_id: str, times: Sequence[tuple[int, Transition]]
                          ) -> list[SendResult]:
        """One GetSendTimes per (channel, max_delay) of the round's best-time waits."""
        groups: dict[tuple[Channel | None, timedelta], list[int]] = defaultdict(list)
        for position, (_, transition) in enumerate(times):
            order = transition.send
            assert isinstance(order, SendTimeOrder)
            groups[(order.channel, order.max_delay)].append(position)
        answers: list[SendResult] = [Unavailable("no answer")] * len(times)
        now = self.transactions.clock.now()

        async def ask(channel: Channel | None, max_delay: timedelta,
                      positions: list[int]) -> None:
            profile_ids = [times[p][1].enrollment.profile_id for p in positions]
            try:
                got: Sequence[SendResult] = await self.peers.send_times(
                    workspace_id, channel, now, max_delay, profile_ids)
            except Exception as exc:
                log.warning("asking decisioning for send times failed; the waits ask again",
                            workspace=workspace_id, error=error_detail(exc))
                got = [Unavailable(f"decisioning: {error_detail(exc)}")] * len(positions)
            for position, answer in zip(positions, got, strict=True):
                answers[position] = answer

        await asyncio.gather(*(ask(channel, delay, positions)
                               for (channel, delay), positions in groups.items()))
        return answers

    async def _send(self, workspace_id: str, waiting: Sequence[tuple[Enrollment, SendOrder]],
                    read: ProfilesRead | None = None) -> list[SendResult]:
        renders = await self.peers.render(workspace_id, [
            RenderItem(enrollment.profile_id, order.content_key, order.channel,
                       enrollment.traits, enrollment.properties, order.content_version,
                       _unchanged_profile(read, enrollment.traits))
            for enrollment, order in waiting])
        results: list[SendResult] = [Deferred("no answer")] * len(waiting)
        to_send: list[tuple[int, SendItem]] = []
        for i, ((enrollment, order), rendered) in enumerate(zip(waiting, renders,
                                                                strict=True)):
            if isinstance(rendered, Rejected):
                # The content this journey sends cannot render for this profile.
                results[i] = Rejected(rendered.detail, journey_error=True)
                continue
            if isinstance(rendered, Deferred):
                results[i] = rendered
                continue
            to_send.append((i, SendItem(order.idempotency_key, enrollment.profile_id,
                                        order.address, rendered, enrollment.journey_id,
                                        enrollment.enrollment_id,
                                        profile_time_zone(enrollment.traits),
                                        order.topic, order.transactional, order.decision_id)))
        if to_send:
            sent = await self.peers.send(workspace_id, [item for _, item in to_send])
            for (i, _), result in zip(to_send, sent, strict=True):
                results[i] = result
        return results


def _decision_order(enrollment: Enrollment, order: DecideOrder,
                    answer: DecisionAnswer) -> SendOrder | SendResult:
    """What a decision asks of the round: for a decide node, the send of the chosen action's
    content on the node's channel (or the action's first content), like a send node's with the
    action's topic and transactional flag and the decision id; for an optimising split (no
    channel, no content) or no action at all, nothing more."""
    action = answer.action
    if order.split or action is None:
        return Decided(answer.decision_id, action.key if action else "")
    if not action.contents:
        return Rejected(f"action {action.key!r} of decision {answer.decision_id} has no content "
                        "to send", journey_error=True)
    channel, content_key = next(
        ((c, k) for c, k in action.contents if c == order.channel), action.contents[0])
    address = recipient_address(channel, enrollment.traits)
    if not address:
        return Rejected(f"the profile has no address on {channel.value} for action "
                        f"{action.key!r} (decision {answer.decision_id})")
    return SendOrder(order.node_id, order.visit, content_key, channel, address,
                     order.request_id, 0, action.topic, action.transactional,
                     answer.decision_id, action.key)


def _unchanged_profile(read: ProfilesRead | None, view: Mapping[str, Any]) -> Any:
    """Identity's Profile that ``view`` is the view of, if the walk did not change it (then the
    render copies identity's traits instead of rebuilding them from the view); else None."""
    live = read.get(id(view)) if read else None
    return live.message if live is not None and live.view is view else None


def _wait(enrollment: Enrollment, until: datetime, now: datetime, why: str) -> Transition:
    """The enrollment stays where it is, due again at ``until``; its attempts are untouched."""
    return Transition(evolve(enrollment, last_error=why, due_time=until, update_time=now))


def _database_failed(exc: Exception, transitions: int) -> None:
    """A failure of the database's own while recording steps is no enrollment's fault: none is
    failed for it. What was not recorded stays leased and runs again once the lease expires (a
    send repeats with the same idempotency key, which delivery accepts once); the worker backs
    off."""
    log.warning("the database failed while recording steps; they run again after their lease",
                enrollments=transitions, error=repr(exc))
