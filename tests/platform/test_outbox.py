"""The outbox forwards every row once the receiver acknowledged it, keeps rows while the
receiver fails, and keeps order."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from sqlalchemy import MetaData, func, select

from cjo_platform.clock import ManualClock
from cjo_platform.db import Database
from cjo_platform.db.dead_letters import DeadLetters, define_dead_letters
from cjo_platform.db.outbox import Forwarder, Outbox, OutboxRow, define_outbox
from support import Backend, eventually


def make(backend: Backend) -> tuple[Database, Outbox]:
    metadata = MetaData()
    table = define_outbox(metadata)
    clock = ManualClock()
    dead_letters = DeadLetters(define_dead_letters(metadata), clock)
    url = backend.env().get("CJO_DATABASE_URL", f"sqlite:///{backend.data_dir}/outbox.db")
    db = Database(url, schema=backend.schema_prefix + "outbox")
    db.create_schema()
    metadata.create_all(db.engine)
    return db, Outbox(table, clock, dead_letters)


async def test_rows_are_forwarded_in_order_and_kept_while_the_receiver_fails(
        backend: Backend) -> None:
    db, outbox = make(backend)
    received: list[tuple[str, bytes]] = []
    failing = True

    attempts = 0

    async def send(workspace: str, rows: Sequence[OutboxRow]) -> None:
        nonlocal attempts
        attempts += 1
        if failing:
            raise ConnectionError("receiver down")
        received.extend((workspace, r.payload) for r in rows)

    forwarder = Forwarder(db, outbox, "t", send, batch_size=3, poll_interval=0.01,
                          max_backoff=0.02)
    with db.transaction() as session:
        outbox.add(session, "t", "ws-a", [(b"1", ""), (b"2", "")])
        outbox.add(session, "t", "ws-b", [(b"3", "")])
        outbox.add(session, "t", "ws-a", [(b"4", ""), (b"5", "")])
        outbox.add(session, "other", "ws-a", [(b"x", "")])
    def queued() -> int:
        with db.transaction() as session:
            return int(session.execute(select(func.count()).where(
                outbox.table.c.topic == "t")).scalar_one())

    task = asyncio.create_task(forwarder.run())
    await eventually(lambda: attempts >= 3)  # tried, failed, backed off, tried again
    assert received == []  # receiver down: nothing lost, nothing acknowledged
    assert queued() == 5
    failing = False

    # Acknowledged rows are deleted only after the receiver had them.
    await eventually(lambda: queued() == 0)
    task.cancel()
    assert received == [("ws-a", b"1"), ("ws-a", b"2"), ("ws-b", b"3"), ("ws-a", b"4"),
                        ("ws-a", b"5")]
    with db.transaction() as session:
        left = session.execute(select(outbox.table.c.topic, func.count())
                               .group_by(outbox.table.c.topic)).all()
    assert [tuple(r) for r in left] == [("other", 1)]
    db.drop_schema()
    db.dispose()
