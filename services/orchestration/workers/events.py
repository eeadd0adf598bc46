"""The event worker: applies inbox events in receive order (service_layer.events.InboxRound)."""

from __future__ import annotations

from collections.abc import Callable

from cjo_orchestration.service_layer.events import InboxRound
from cjo_platform.worker import PollingWorker


class EventWorker(PollingWorker):
    name = "events"

    def __init__(self, round: InboxRound, poll_seconds: float,
                 wake_steps: Callable[[], None]) -> None:
        super().__init__(poll_seconds)
        self.round = round
        self.wake_steps = wake_steps

    async def run_once(self) -> bool:
        applied = await self.round.run()
        if applied.enrolled:
            self.wake_steps()
        # A full batch means more is waiting; a batch of only deferred events waits for the
        # next poll, by which time the step holding their profile has finished.
        return applied.handled >= self.round.batch
