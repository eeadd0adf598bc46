"""The step worker: runs journey steps that are due (service_layer.steps.StepRound) in a few
lanes at once."""

from __future__ import annotations

import asyncio
import time

from cjo_orchestration.service_layer.handoff import Handoff
from cjo_orchestration.service_layer.steps import StepRound
from cjo_orchestration.workers.idle import seconds_until
from cjo_platform.logging import get_logger
from cjo_platform.worker import PollingWorker

log = get_logger(__name__)


class StepWorker(PollingWorker):
    name = "steps"

    def __init__(self, round: StepRound, poll_seconds: float, lanes: int,
                 handoff: Handoff | None = None) -> None:
        super().__init__(poll_seconds)
        self.round = round
        self.lanes = lanes
        # New enrollments leased to this process where they were created: run without a claim
        # transaction. A claim still runs when asked (wake), when a timer this worker knows of
        # falls due, and at least every poll, so handed work never starves due work.
        self.handoff = handoff
        self._claim_wanted = True
        self._last_claim = float("-inf")
        if handoff is not None:
            handoff.on_give = super().wake

    def wake(self) -> None:
        """Claim due enrollments now (new work in the database). Safe from any thread."""
        self._claim_wanted = True
        super().wake()

    def _claims_due(self) -> bool:
        due = self.round.next_due()
        return (self._claim_wanted
                or time.monotonic() - self._last_claim >= self.poll_seconds
                or (due is not None and due <= self.round.transactions.clock.now()))

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
        handoff = self.handoff
        if handoff is not None and not self._claims_due():
            handed, held_until = handoff.take(self.round.settings.step_batch,
                                              self.round.transactions.clock.now())
            if not handed:
                return False  # another lane took them; nothing is due to claim
            await self.round.run_claimed(handoff.token, handed, held_until)
            more = bool(handoff) or self._claim_wanted
            if more:
                super().wake()  # the idle lanes take the rest now
            return more
        self._claim_wanted = False
        self._last_claim = time.monotonic()
        full = await self.round.run()
        if full:
            self.wake()  # a backlog: the idle lanes take their share now, not at their poll
        elif handoff:
            super().wake()
        return full or bool(handoff)

    def idle_seconds(self) -> float:
        """Until the next timer falls due (woken sooner by new work), at most ``poll_seconds``:
        a wait ends on time however long the poll."""
        return seconds_until(self.round.next_due(), self.round.transactions.clock.now(),
                             self.poll_seconds)
