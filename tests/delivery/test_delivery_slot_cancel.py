"""A send round ended while its workers hold slots and a message waits for its workspace's share
(the round's tasks cancelled together, as when a wave or the record fails): every slot comes
back (review rfair HIGH: the waiter cancelled in the tick a slot was given back took that slot
for good, and after a few failed rounds its workspace could never send again)."""

from __future__ import annotations

import asyncio

from cjo_delivery.service_layer.send_slots import SendSlots
from support import eventually


async def test_cancelled_holders_and_waiters_give_every_slot_back() -> None:
    slots = SendSlots(8, 2)
    never = asyncio.Event()

    async def holder() -> None:
        async with slots.slot("acme"):
            await never.wait()  # a provider call under way

    async def waiter() -> None:
        async with slots.slot("acme"):
            pass

    for _ in range(3):  # failed rounds, one after another
        holders = [asyncio.create_task(holder()) for _ in range(6)]
        await eventually(lambda: slots._held["acme"] == 6)
        waiting = asyncio.create_task(waiter())  # acme holds 6 of 8: waits for its share
        await eventually(lambda: "acme" in slots._waiting)
        for task in (*holders, waiting):
            task.cancel()
        await asyncio.gather(*holders, waiting, return_exceptions=True)
        assert slots._free == 8 and not slots._held and not slots._waiting
    async with asyncio.timeout(5):
        async with slots.slot("acme"):  # acme still sends
            pass
