"""One forwarder replica in a process of its own, for the replica tests:

    python outbox_replica.py <database url> <schema> <name> <lease seconds> run|hang|write|linger

It forwards topic ``t`` of the outbox in ``schema`` to a "receiver" that records each row in the
``received`` table (in receipt order, with the replica's name). ``hang`` claims a batch and then
never answers, like a replica that died mid-batch (the test kills it). ``write`` is a replica
that writes rows 0..9 of workspace ``ws-a`` itself, one unit of work each, so they are handed
to its own forwarder, which never answers either; it prints "written" once all are committed.
``linger`` writes them the same way to a forwarder that lingers a minute before sending.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Sequence
from datetime import timedelta

from outbox_support import open_box
from sqlalchemy import BigInteger, Column, Identity, MetaData, String, Table, insert

from cjo_platform.clock import SystemClock
from cjo_platform.db.outbox import Forwarder, OutboxRow
from cjo_platform.db.unit_of_work import Transactions, UnitOfWork

received_metadata = MetaData()
received = Table(
    "received", received_metadata,
    Column("seq", BigInteger, Identity(), primary_key=True),
    Column("replica", String(32), nullable=False),
    Column("workspace_id", String(64), nullable=False),
    Column("payload", String(64), nullable=False),
)


async def main(url: str, schema: str, name: str, lease: float, mode: str) -> None:
    box = open_box(url, schema, SystemClock())

    async def send(workspace: str, rows: Sequence[OutboxRow]) -> None:
        if mode == "hang":
            print("claimed", flush=True)
            await asyncio.Event().wait()
        if mode == "write":
            await asyncio.Event().wait()

        def record() -> None:
            with box.db.transaction() as session:
                session.execute(insert(received), [
                    {"replica": name, "workspace_id": workspace, "payload": r.payload.decode()}
                    for r in rows])

        await box.db.run(record)

    forwarder = Forwarder(box.db, box.outbox, "t", send, batch_size=50, poll_interval=0.05,
                          lease=timedelta(seconds=lease),
                          linger=60.0 if mode == "linger" else 0.0)
    if mode not in ("write", "linger"):
        await forwarder.run()
        return
    task = asyncio.create_task(forwarder.run())
    await asyncio.sleep(0)  # the forwarder runs: rows written from now on are handed to it
    transactions = Transactions(box.db, box.outbox.clock, box.outbox)
    for n in range(10):
        def write(uow: UnitOfWork, n: int = n) -> None:
            uow.publish("t", "ws-a", [(str(n).encode(), "")])
        await transactions.run(write)
    print("written", flush=True)
    await task


if __name__ == "__main__":
    url, schema, name, lease, mode = sys.argv[1:6]
    asyncio.run(main(url, schema, name, float(lease), mode))
