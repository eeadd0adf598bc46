"""The event worker: applies inbox events in receive order (service_layer.events.InboxRound)."""

from __future__ import annotations

from collections.abc import Callable

from cjo_orchestration.service_layer.events import EventRound, InboxRound
from cjo_orchestration.workers.idle import seconds_until
from cjo_platform.worker import PollingWorker


class EventWorker(PollingWorker):
    name = "events"

    def __init__(self, round: InboxRound, poll_seconds: float,
                 wake_steps: Callable[[], None]) -> None:
        super().__init__(poll_seconds)
        self.round = round
        self.wake_steps = wake_steps
        self.last = EventRound(0, 0)

    async def run_once(self) -> bool:
        applied = await self.round.run()
        self.last = applied
        if applied.enrolled > applied.handed_over:
            self.wake_steps()  # enrollments for the step worker's claim (not handed over)
        # A full batch means more is waiting. Events deferred behind their profile's running
        # step wait for it to end: the step round that hands the profile back signals every
        # replica's event worker (StepRound.events_waiting); the poll is the safety net.
        return applied.handled >= self.round.batch

    def idle_seconds(self) -> float:
        """New events, and the end of a step that held back a profile's events, wake the
        worker (signals reach every replica): it looks sooner than ``poll_seconds`` only for
        an event backing off, when its retry is due."""
        return seconds_until(self.last.next_retry, self.round.transactions.clock.now(),
                             self.poll_seconds)
