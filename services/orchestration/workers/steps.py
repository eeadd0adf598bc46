"""The step worker: runs journey steps that are due (service_layer.steps.StepRound) in a few
lanes at once."""

from __future__ import annotations

import asyncio

from cjo_orchestration.service_layer.steps import StepRound
from cjo_orchestration.workers.idle import seconds_until
from cjo_platform.logging import get_logger
from cjo_platform.worker import PollingWorker

log = get_logger(__name__)


class StepWorker(PollingWorker):
    name = "steps"

    def __init__(self, round: StepRound, poll_seconds: float, lanes: int) -> None:
        super().__init__(poll_seconds)
        self.round = round
        self.lanes = lanes

    async def run(self) -> None:
        # A pass mostly waits for its peers: with a few lanes, one pass's database work overlaps
        # the others' peer calls. Every lane is the polling loop; wake() wakes them all, an idle
        # lane finds no work.
        try:
            await asyncio.gather(*(super(StepWorker, self).run() for _ in range(self.lanes)))
        finally:
            log.info("step worker stopped; latest profile reads",
                     **self.round.profile_read_summary())

    async def run_once(self) -> bool:
        more = await self.round.run()
        if more:
            self.wake()  # a backlog: the idle lanes take their share now, not at their poll
        return more

    def idle_seconds(self) -> float:
        """Until the next timer falls due (woken sooner by new work), at most ``poll_seconds``:
        a wait ends on time however long the poll."""
        return seconds_until(self.round.next_due(), self.round.transactions.clock.now(),
                             self.poll_seconds)
