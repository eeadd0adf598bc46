"""The event worker: applies inbox events in receive order (service_layer.events)."""

from __future__ import annotations

from collections.abc import Callable

from cjo_orchestration.service_layer.events import apply_inbox
from cjo_orchestration.service_layer.ids import NewId
from cjo_platform.db.unit_of_work import Transactions
from cjo_platform.worker import PollingWorker


class EventWorker(PollingWorker):
    name = "events"

    def __init__(self, transactions: Transactions, poll_seconds: float, batch: int,
                 new_id: NewId, wake_steps: Callable[[], None]) -> None:
        super().__init__(poll_seconds)
        self.transactions = transactions
        self.batch = batch
        self.new_id = new_id
        self.wake_steps = wake_steps

    async def run_once(self) -> bool:
        applied = await self.transactions.run(
            lambda uow: apply_inbox(uow, self.batch, self.new_id))
        if applied.enrolled:
            self.wake_steps()
        # A full batch means more is waiting; a batch of only deferred events waits for the
        # next poll, by which time the step holding their profile has finished.
        return applied.handled >= self.batch
