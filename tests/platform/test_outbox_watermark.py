"""A topic's delivery watermark, read from the outbox table that every replica's forwarder
shares: the oldest row still there bounds it, per workspace for the few workspaces behind; a
row delivered or dead-lettered (gone from the table) holds nothing; an empty topic's watermark
is the time it was read."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta

from outbox_support import open_box, url_of

from cjo_platform.clock import ManualClock
from cjo_platform.db.outbox import Forwarder, OutboxRow, Refusal, delivery_watermark
from support import Backend

MINUTE = timedelta(minutes=1)


async def test_the_oldest_undelivered_row_of_each_workspace_bounds_the_watermark(
        backend: Backend) -> None:
    clock = ManualClock()
    start = clock.now()
    box = open_box(url_of(backend), backend.schema_prefix + "outbox", clock, create=True)
    try:
        def watermark(most: int = 10) -> tuple[object, list[tuple[str, object]]]:
            with box.db.transaction() as session:
                found = delivery_watermark(session, box.outbox.table, "t", clock.now(), most)
            return found.delivered_before, list(found.behind)

        assert watermark() == (start, [])  # nothing waits: everything written so far is in
        box.queue("t", "ws-a", [b"a1"])
        clock.advance(MINUTE)
        box.queue("t", "ws-b", [b"b1"])
        box.queue("other", "ws-c", [b"c1"])  # another topic holds nothing of this one
        clock.advance(MINUTE)
        box.queue("t", "ws-a", [b"a2"])
        clock.advance(MINUTE)
        now = clock.now()
        assert watermark() == (now, [("ws-a", start), ("ws-b", start + MINUTE)])
        # At most one workspace listed: the others' watermark is the next one's oldest row.
        assert watermark(most=1) == (start + MINUTE, [("ws-a", start)])

        # ws-a's first row is delivered, ws-b's refused for good (dead-lettered): ws-a is
        # behind only by its second row, ws-b no longer.
        async def send(workspace: str, rows: Sequence[OutboxRow]) -> list[Refusal]:
            return [Refusal(r, "bad row") for r in rows if r.payload == b"b1"]

        forwarder = Forwarder(box.db, box.outbox, "t", send, batch_size=1)
        await forwarder.drain_once()  # a1
        assert watermark() == (now, [("ws-b", start + MINUTE), ("ws-a", start + 2 * MINUTE)])
        await forwarder.drain_once()  # b1, to the dead letters
        assert watermark() == (now, [("ws-a", start + 2 * MINUTE)])
        await forwarder.drain_once()  # a2
        assert watermark() == (now, [])
        assert [letter.item_key for letter in box.letters("ws-b")] == [""]
    finally:
        if backend.kind == "postgresql":
            box.db.drop_schema()
        box.close()
