"""The scheduler: fires scheduled triggers (service_layer.schedules.ScheduleRound)."""

from __future__ import annotations

from collections.abc import Callable

from cjo_orchestration.service_layer.schedules import ScheduleRound
from cjo_platform.worker import PollingWorker


class ScheduleWorker(PollingWorker):
    name = "schedules"

    def __init__(self, round: ScheduleRound, poll_seconds: float,
                 wake_steps: Callable[[], None]) -> None:
        super().__init__(poll_seconds)
        self.round = round
        self.wake_steps = wake_steps

    async def run_once(self) -> bool:
        outcome = await self.round.run()
        if outcome.enrolled:
            self.wake_steps()
        return outcome.more
