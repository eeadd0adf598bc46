"""The scheduler: fires scheduled triggers (service_layer.schedules.ScheduleRound)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from cjo_orchestration.service_layer.schedules import ScheduleRound
from cjo_orchestration.workers.idle import seconds_until
from cjo_platform.worker import PollingWorker


class ScheduleWorker(PollingWorker):
    name = "schedules"

    def __init__(self, round: ScheduleRound, poll_seconds: float,
                 wake_steps: Callable[[], None]) -> None:
        super().__init__(poll_seconds)
        self.round = round
        self.wake_steps = wake_steps
        self.next_due: datetime | None = None

    async def run_once(self) -> bool:
        outcome = await self.round.run()
        self.next_due = outcome.next_due
        if outcome.enrolled:
            self.wake_steps()
        return outcome.more

    def idle_seconds(self) -> float:
        """Until the next occurrence falls due, at most ``poll_seconds`` (an occurrence planned
        since, by a publish on another replica, is seen at the next poll)."""
        return seconds_until(self.next_due, self.round.transactions.clock.now(),
                             self.poll_seconds)
