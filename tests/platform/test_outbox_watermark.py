"""A topic's delivery watermark, read from the outbox table that every replica's forwarder
shares: the oldest row still there bounds it, per workspace for the few workspaces behind; a
row delivered or dead-lettered (gone from the table) holds nothing; an empty topic's watermark
is the time it was read. A workspace is listed only when its oldest row is older than the
slack (a healthy flow's rows in flight are covered by the watermark of all), and the read is
bounded: only the topic's oldest rows by id are read, whatever the backlog."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

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
                found = delivery_watermark(session, box.outbox.table, "t", clock.now(), most,
                                           timedelta(0))
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


def _read(box: Any, now: datetime, *, most: int = 10, slack: timedelta = MINUTE,
          scan: int = 100) -> tuple[object, list[tuple[str, object]]]:
    with box.db.transaction() as session:
        found = delivery_watermark(session, box.outbox.table, "t", now, most, slack, scan)
    return found.delivered_before, list(found.behind)


def test_only_workspaces_behind_by_more_than_the_slack_are_listed(backend: Backend) -> None:
    clock = ManualClock()
    start = clock.now()
    box = open_box(url_of(backend), backend.schema_prefix + "outbox", clock, create=True)
    try:
        box.queue("t", "ws-a", [b"a1"])
        clock.advance(2 * MINUTE)
        box.queue("t", "ws-b", [b"b1"])
        clock.advance(MINUTE / 2)
        for i in range(5):  # a healthy flow: rows in flight for a moment, in many workspaces
            box.queue("t", f"ws-{i}", [b"x"])
        now = clock.now()
        # ws-a is 2.5 min behind, ws-b 30 s (within the slack of a minute): ws-b and the flow
        # are covered by the watermark of all, their oldest row (ws-b's).
        assert _read(box, now) == (start + 2 * MINUTE, [("ws-a", start)])
        # Past the slack, ws-b is listed too; the flow's rows still are not.
        clock.advance(MINUTE)
        assert _read(box, clock.now()) == (now, [("ws-a", start), ("ws-b", start + 2 * MINUTE)])
        # At most one listed: the others' watermark is the next one's oldest row.
        assert _read(box, clock.now(), most=1) == (start + 2 * MINUTE, [("ws-a", start)])
    finally:
        if backend.kind == "postgresql":
            box.db.drop_schema()
        box.close()


def test_only_the_oldest_rows_by_id_are_read(backend: Backend) -> None:
    clock = ManualClock()
    start = clock.now()
    box = open_box(url_of(backend), backend.schema_prefix + "outbox", clock, create=True)
    try:
        for i in range(3):
            box.queue("t", "ws-a", [b"a%d" % i])
            clock.advance(MINUTE)
        box.queue("t", "ws-b", [b"b1"])
        clock.set(start - MINUTE)  # a row written later, stamped earlier: beyond the rows read
        box.queue("t", "ws-c", [b"c1"])
        now = start + 10 * MINUTE
        # Unbounded, ws-c's row (the oldest of all) would be listed; three rows read, the
        # watermark of all is the first row's not read (ws-b's), whatever comes after it.
        assert _read(box, now, scan=3) == (start + 3 * MINUTE, [("ws-a", start)])
        assert _read(box, now, scan=5) == (
            now, [("ws-c", start - MINUTE), ("ws-a", start), ("ws-b", start + 3 * MINUTE)])
    finally:
        if backend.kind == "postgresql":
            box.db.drop_schema()
        box.close()
