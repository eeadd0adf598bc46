"""A round that fails before its messages' outcome is recorded leaves them SENDING until their
lease runs out: they keep their place first in their profile's queue. The profile's later
messages on the channel are held behind them (adapters/held.py); on other channels, the
process's next rounds neither claim them meanwhile (it takes a new lease holder) nor send those
it claimed already (they go back after the earlier one)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from datetime import timedelta

from test_delivery_consent_tenants import Mailbox, Storage, queue, sending, status, storage

from cjo_delivery.domain.messages import MessageStatus
from cjo_delivery.domain.policies import ConsentDecision, ConsentQuery
from support import eventually

__all__ = ["storage"]  # the fixture


@dataclass
class BuggyOnce:
    """Consent that fails with a bug (not ConsentUnavailable) on its first call, answered
    once ``release`` is set, and answers everyone subscribed after."""

    release: asyncio.Event = field(default_factory=asyncio.Event)
    calls: int = 0

    async def check(self, workspace_id: str,
                    queries: list[ConsentQuery]) -> list[ConsentDecision]:
        self.calls += 1
        if self.calls == 1:
            await self.release.wait()
            raise RuntimeError("a bug in the consent check")
        return [ConsentDecision(True, "subscribed") for _ in queries]


def states(storage: Storage, *ids: str) -> list[MessageStatus]:
    return [status(storage, "ws-a", message_id)[0] for message_id in ids]


async def test_a_message_left_sending_by_a_failed_round_stays_first_in_its_profile(
        storage: Storage) -> None:
    """Ada's first message's round fails (a bug asking consent): her second, queued meanwhile,
    and a third queued later are held behind it; none goes out before the first, which is
    sent first once its lease ran out, then the others in order."""
    identity, mailbox = BuggyOnce(), Mailbox()
    rounds = sending(storage, identity, mailbox)
    first, _ = queue(storage, "ws-a", "k1")
    failing = asyncio.create_task(rounds.run())
    assert await eventually(lambda: identity.calls == 1, timeout=10)
    second, _ = queue(storage, "ws-a", "k2")
    assert await rounds.run() == 0  # held behind the first, which is being sent
    identity.release.set()
    assert await asyncio.wait_for(failing, 10) == 1
    assert mailbox.sent == []
    assert states(storage, first, second) == [MessageStatus.SENDING, MessageStatus.HELD]
    third, _ = queue(storage, "ws-a", "k3")
    assert await rounds.run() == 0  # the first still holds its place, under its lease
    assert mailbox.sent == []
    storage.clock.advance(timedelta(minutes=5, seconds=1))
    for _ in range(4):
        if len(mailbox.sent) == 3:
            break
        await rounds.run()
    assert mailbox.sent == [first, second, third]
