"""The sender: a background loop running send rounds (service_layer/send_round.py) while due
messages are waiting, woken at once when messages are queued."""

from __future__ import annotations

import asyncio

from cjo_delivery.service_layer.send_round import SendRound
from cjo_platform.worker import PollingWorker

_MAX_ROUND_BACKOFF = 30.0


class Sender(PollingWorker):
    name = "sender"

    def __init__(self, send_round: SendRound) -> None:
        super().__init__(send_round.settings.poll_seconds, _MAX_ROUND_BACKOFF)
        self.send_round = send_round

    async def run_once(self) -> bool:
        return await self.send_due() >= self.send_round.settings.batch_size

    async def send_due(self) -> int:
        """One round; returns how many messages it claimed.

        Cancelling (shutdown) lets the round finish: the claim commits either way, so it must
        be followed through, but messages not yet handed to a provider go back to the queue.
        """
        current = asyncio.ensure_future(self.send_round.run())
        try:
            return await asyncio.shield(current)
        except asyncio.CancelledError:
            self.send_round.stop()
            await asyncio.wait({current})
            raise
