"""The learning worker: rounds of service_layer.learning every ``poll_seconds``, each learning
the decisions whose reward window has closed."""

from __future__ import annotations

from cjo_decisioning.service_layer.learning import LearningRound
from cjo_platform.worker import PollingWorker


class LearningWorker(PollingWorker):
    name = "learning"

    def __init__(self, round_: LearningRound, poll_seconds: float) -> None:
        super().__init__(poll_seconds)
        self.round = round_

    async def run_once(self) -> bool:
        return await self.round.run_once()
