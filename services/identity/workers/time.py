"""The time worker: recomputes profiles whose computed traits lapse with time
(service_layer/lapses.py) and runs backfills of new or changed definitions
(service_layer/backfills.py), while either has work; woken at once when a backfill is recorded."""

from __future__ import annotations

from cjo_identity.service_layer.backfills import BackfillRound
from cjo_identity.service_layer.lapses import LapseRound
from cjo_platform.worker import PollingWorker


class TimeWorker(PollingWorker):
    name = "time"

    def __init__(self, lapses: LapseRound, backfills: BackfillRound,
                 poll_seconds: float) -> None:
        super().__init__(poll_seconds)
        self.lapses = lapses
        self.backfills = backfills

    async def run_once(self) -> bool:
        # Lapses first: a backfill of a large workspace must not hold up the profiles whose
        # windows lapse meanwhile (each round runs one chunk of a backfill).
        more = await self.lapses.run()
        return await self.backfills.run() or more
