"""The event worker: applies inbox events in receive order (service_layer.events.InboxRound)."""

from __future__ import annotations

from collections.abc import Callable

from cjo_orchestration.service_layer.events import EventRound, InboxRound
from cjo_orchestration.workers.idle import seconds_until
from cjo_platform.worker import PollingWorker

# How soon events deferred behind their profile's running step are looked at again (the step
# may run on another replica, whose end nothing here hears of).
DEFERRED_SECONDS = 0.2


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
        if applied.enrolled:
            self.wake_steps()
        # A full batch means more is waiting; a batch of only deferred events waits for the
        # next look (idle_seconds), by which time the step holding their profile has finished.
        return applied.handled >= self.round.batch

    def idle_seconds(self) -> float:
        """New events wake the worker (signals reach every replica): it looks sooner than
        ``poll_seconds`` only for events it left waiting, deferred ones every
        ``DEFERRED_SECONDS``, one backing off when its retry is due."""
        longest = self.poll_seconds
        if self.last.deferred:
            longest = min(longest, DEFERRED_SECONDS)
        return seconds_until(self.last.next_retry, self.round.transactions.clock.now(),
                             longest)
