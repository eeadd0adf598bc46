"""The engine's background workers: they read work from the database, ask the pure engine what
to do, call peers, and write the outcome back in one transaction per batch.

* EventWorker: matches inbox events (in receive order) against active journeys and enrolls.
* StepWorker: claims due enrollments with a lease, runs their nodes with one render call and one
  send call per workspace, and records steps, state and facts.
"""

from __future__ import annotations

import asyncio
import secrets
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import replace
from datetime import timedelta

from cjo_orchestration.adapters import enrollments as enrollment_store
from cjo_orchestration.adapters import erasures, facts
from cjo_orchestration.adapters import journeys as journey_store
from cjo_orchestration.adapters.peers import Peers, RenderItem, SendItem
from cjo_orchestration.domain.engine import (
    LIFECYCLE_EVENTS,
    PROFILE_MERGED,
    Deferred,
    Enrollment,
    EnrollmentState,
    ProfileOrder,
    Rejected,
    SendOrder,
    SendResult,
    Transition,
    advance,
    after_send,
    apply_events,
    merged_profile_id,
    profile_time_zone,
    resolve_profile,
)
from cjo_orchestration.domain.journeys import JourneyGraph
from cjo_orchestration.settings import EngineSettings
from cjo_platform.clock import Clock
from cjo_platform.db import Database
from cjo_platform.db.outbox import Outbox
from cjo_platform.logging import get_logger
from cjo_platform.telemetry import batch_span
from cjo_platform.worker import PollingWorker

log = get_logger(__name__)

VersionKey = tuple[str, str, int]


def new_id() -> str:
    """80 random bits, hex: unguessable, and short enough for names and send keys."""
    return secrets.token_hex(10)


class EventWorker(PollingWorker):
    name = "events"

    def __init__(self, db: Database, outbox: Outbox, clock: Clock, settings: EngineSettings,
                 steps: PollingWorker) -> None:
        super().__init__(settings.poll_seconds)
        self.db = db
        self.outbox = outbox
        self.clock = clock
        self.batch = settings.event_batch
        self.steps = steps

    def _process(self) -> tuple[int, int]:
        """Apply one batch of inbox events; returns (events handled, enrollments changed)."""
        with self.db.transaction() as session:
            events = enrollment_store.pending_events(session, self.batch)
            if not events:
                return 0, 0
            now = self.clock.now()
            with batch_span("orchestration.enroll", [e.traceparent for e in events]):
                triggers = journey_store.triggers(
                    session, {(e.workspace_id, e.event_name) for e in events if e.event_name})
                listening: dict[tuple[str, str], list[str]] = defaultdict(list)
                for trigger in triggers:
                    listening[(trigger.workspace_id, trigger.event_name)].append(
                        trigger.journey_id)
                named = {(e.workspace_id, e.profile_id) for e in events} | {
                    (e.workspace_id, merged_profile_id(e)) for e in events
                    if e.event_name == PROFILE_MERGED and merged_profile_id(e)}
                retired = enrollment_store.retired_successors(session, named)
                # Events still addressed to a merged profile reach its survivor.
                profiles = {(w, resolved) for w, p in named
                            if (resolved := resolve_profile(retired, w, p))}
                # Erasures and merges act on every active enrollment of their profiles, also
                # in journeys that ordinary events cannot change.
                lifecycle = {(e.workspace_id, resolve_profile(retired, e.workspace_id, p))
                             for e in events if e.event_name in LIFECYCLE_EVENTS
                             for p in (e.profile_id, merged_profile_id(e)) if p}
                found = enrollment_store.watched(session, profiles, now)
                graphs = journey_store.versions(
                    session, [(e.workspace_id, e.journey_id, e.journey_version)
                              for e, _ in found])
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
                candidates = {(e.workspace_id, journey_id,
                               resolve_profile(retired, e.workspace_id, e.profile_id))
                              for e in events
                              for journey_id in listening.get((e.workspace_id, e.event_name), ())}
                history = enrollment_store.history(session, candidates)
                outcome = apply_events(events, triggers, watched, history, busy, new_id, now,
                                       retired)
                # Ended ones first: a merge may end one profile's enrollment in a journey and
                # move the other's in, and only one may be active at any moment.
                changed = list(outcome.changed.values())
                enrollment_store.save_progress(session, [
                    c for c in changed if c[0].state is not EnrollmentState.ACTIVE])
                created = [(replace(e, step_count=len(taken)), taken)
                           for e, taken in outcome.created.values()]
                inserted = enrollment_store.insert_new(session, [e for e, _ in created])
                enrollment_store.insert_steps(
                    session, [(replace(e, step_count=0), taken) for e, taken in created
                              if e.enrollment_id in inserted])
                enrollment_store.save_progress(session, [
                    c for c in changed if c[0].state is EnrollmentState.ACTIVE])
                erased = enrollment_store.retire(session, outcome.retired, now)
                enrollment_store.drop_events(session, outcome.dropped)
                facts.publish(session, self.outbox, [
                    f for f in outcome.facts
                    if f.enrollment_id in inserted or f.enrollment_id not in outcome.created])
                erasures.request(session, self.outbox, erased)
                deferred = set(outcome.deferred)
                enrollment_store.mark_processed(
                    session, [e.seq for e in events if e.seq not in deferred])
        if outcome.deferred:
            log.debug("events deferred while their profile's step runs",
                      deferred=len(outcome.deferred))
        for retirement in outcome.retired:
            log.info("profile erased" if retirement.erased else "profile merged",
                     workspace=retirement.workspace_id, profile_id=retirement.profile_id,
                     successor_profile_id=retirement.successor_profile_id)
        log.debug("events applied", events=len(events), enrolled=len(inserted),
                  changed=len(outcome.changed), unmatched=outcome.unmatched)
        return len(events) - len(outcome.deferred), len(inserted) + len(outcome.changed)

    async def run_once(self) -> bool:
        handled, enrolled = await self.db.run(self._process)
        if enrolled:
            self.outbox.notify()
            self.steps.wake()
        # A full batch means more is waiting; a batch of only deferred events waits for the
        # next poll, by which time the step holding their profile has finished.
        return handled >= self.batch


class StepWorker(PollingWorker):
    name = "steps"

    def __init__(self, db: Database, outbox: Outbox, clock: Clock, settings: EngineSettings,
                 peers: Peers) -> None:
        super().__init__(settings.poll_seconds)
        self.db = db
        self.outbox = outbox
        self.clock = clock
        self.settings = settings
        self.peers = peers
        self._graphs: dict[VersionKey, JourneyGraph] = {}  # versions never change: cache freely

    async def run(self) -> None:
        # Every lane is the polling loop; wake() wakes them all, an idle lane finds no work.
        lanes = self.settings.step_lanes
        await asyncio.gather(*(super(StepWorker, self).run() for _ in range(lanes)))

    def _claim(self, token: str) -> list[Enrollment]:
        now = self.clock.now()
        until = now + timedelta(seconds=self.settings.lease_seconds)
        with self.db.transaction() as session:
            return enrollment_store.claim_due(session, now, until, token, self.settings.step_batch)

    def _load_graphs(self, keys: Sequence[VersionKey]) -> None:
        missing = [k for k in set(keys) if k not in self._graphs]
        if not missing:
            return
        with self.db.transaction() as session:
            found = journey_store.versions(session, missing)
        if len(self._graphs) + len(found) > 10_000:
            self._graphs.clear()
        self._graphs.update(found)

    def _finish(self, token: str, transitions: Sequence[Transition]) -> int:
        keys = [(t.enrollment.workspace_id, t.enrollment.enrollment_id) for t in transitions]
        with self.db.transaction() as session:
            held = enrollment_store.still_leased(session, token, keys)
            kept = [t for t, key in zip(transitions, keys, strict=True) if key in held]
            enrollment_store.save_progress(session, [(t.enrollment, t.steps) for t in kept],
                                           context=False)
            facts.publish(session, self.outbox, [f for t in kept for f in t.facts])
        if len(kept) < len(transitions):
            log.warning("leases expired before the steps were recorded; their new holders "
                        "record them", lost=len(transitions) - len(kept))
        return len(kept)

    def _release(self, token: str, claimed: Sequence[Enrollment]) -> None:
        with self.db.transaction() as session:
            enrollment_store.release(session, token,
                                     [(e.workspace_id, e.enrollment_id) for e in claimed])

    async def run_once(self) -> bool:
        token = secrets.token_hex(16)
        claimed = await self.db.run(self._claim, token)
        if not claimed:
            return False
        try:
            await self.db.run(self._load_graphs,
                              [(e.workspace_id, e.journey_id, e.journey_version) for e in claimed])
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
            await self.db.run(self._release, token, claimed)
            raise
        await self.db.run(self._finish, token, transitions)
        self.outbox.notify()
        return len(claimed) >= self.settings.step_batch

    def _graph(self, enrollment: Enrollment) -> JourneyGraph:
        # A version that vanished (it never should) yields an empty graph: the engine then fails
        # the enrollment with a recorded step instead of stalling it.
        return self._graphs.get(
            (enrollment.workspace_id, enrollment.journey_id, enrollment.journey_version),
            JourneyGraph())

    async def _run_workspace(self, workspace_id: str,
                             group: Sequence[Enrollment]) -> list[Transition]:
        with batch_span("orchestration.step", [e.traceparent for e in group]) as span:
            span.set_attribute("cjo.workspace.id", workspace_id)
            span.set_attribute("cjo.enrollment.count", len(group))
            if len(group) == 1:
                span.set_attribute("cjo.enrollment.id", group[0].enrollment_id)
                span.set_attribute("cjo.journey.id", group[0].journey_id)
            now = self.clock.now()
            transitions = [advance(e, self._graph(e), now) for e in group]
            waiting = [i for i, t in enumerate(transitions) if t.send is not None]
            if not waiting:
                return transitions
            results = await self._render_and_send(workspace_id, [transitions[i] for i in waiting])
            now = self.clock.now()
            for i, result in zip(waiting, results, strict=True):
                before = transitions[i]
                assert before.send is not None
                after = after_send(before.enrollment, self._graph(before.enrollment),
                                   before.send, result, now, self.settings.retry)
                transitions[i] = Transition(after.enrollment, before.steps + after.steps,
                                            before.facts + after.facts)
            return transitions

    async def _render_and_send(self, workspace_id: str,
                               waiting: Sequence[Transition]) -> list[SendResult]:
        results: list[SendResult | None] = [None] * len(waiting)
        sends = [(i, t) for i, t in enumerate(waiting) if isinstance(t.send, SendOrder)]
        updates = [(i, t) for i, t in enumerate(waiting) if isinstance(t.send, ProfileOrder)]
        if updates:
            answers = await self.peers.update_profiles(workspace_id, [
                t.send for _, t in updates if isinstance(t.send, ProfileOrder)])
            for (i, _), answer in zip(updates, answers, strict=True):
                results[i] = answer
        if sends:
            for i, result in zip([i for i, _ in sends],
                                 await self._send(workspace_id, [t for _, t in sends]),
                                 strict=True):
                results[i] = result
        return [r if r is not None else Deferred("no answer") for r in results]

    async def _send(self, workspace_id: str, waiting: Sequence[Transition]) -> list[SendResult]:
        orders = [t.send for t in waiting if isinstance(t.send, SendOrder)]
        renders = await self.peers.render(workspace_id, [
            RenderItem(t.enrollment.profile_id, order.content_key, order.channel,
                       t.enrollment.traits, t.enrollment.properties, order.content_version)
            for t, order in zip(waiting, orders, strict=True)])
        results: list[SendResult | None] = [None] * len(waiting)
        to_send: list[tuple[int, SendItem]] = []
        for i, (transition, order, rendered) in enumerate(zip(waiting, orders, renders,
                                                              strict=True)):
            if isinstance(rendered, Rejected | Deferred):
                results[i] = rendered
                continue
            to_send.append((i, SendItem(order.idempotency_key, transition.enrollment.profile_id,
                                        order.address, rendered, transition.enrollment.journey_id,
                                        transition.enrollment.enrollment_id,
                                        profile_time_zone(transition.enrollment.traits))))
        if to_send:
            sent = await self.peers.send(workspace_id, [item for _, item in to_send])
            for (i, _), result in zip(to_send, sent, strict=True):
                results[i] = result
        return [r if r is not None else Deferred("no answer") for r in results]
