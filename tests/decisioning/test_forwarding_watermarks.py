"""RecordForwardingWatermark as the learning worker obeys it: a lapsed window waits for the
watermark of its workspace's rewards, one workspace behind holds back only its own windows, the
watermark never moves back, a stale one holds at most the maximum hold, and bad reports are
refused naming the field before anything is written."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import grpc
import pytest
from google.protobuf.timestamp_pb2 import Timestamp
from outcomes_support import START, Decisioning, learned, running, sent, shown, track
from sqlalchemy import event

from cjo.decisioning.v1 import decisioning_service_pb2 as pb
from cjo_decisioning.adapters import gauges
from cjo_decisioning.adapters.gauges import WATERMARK_LAG
from cjo_decisioning.adapters.tables import EXPOSED, NOT_REWARDED, REWARDED
from cjo_decisioning.bootstrap import load_learning_settings
from cjo_platform.config import Env
from cjo_platform.metrics import Reading
from cjo_platform.protobuf import from_timestamp, to_timestamp
from support import SERVICE_TOKEN, Backend, as_service, bearer, eventually

HOUR = timedelta(hours=1)
MINUTE = timedelta(minutes=1)
GRACE = timedelta(minutes=5)  # CJO_DECISIONING_REWARD_GRACE_SECONDS' default
EVENTS = pb.FORWARDED_STREAM_EVENTS
SERVICE = bearer(SERVICE_TOKEN)  # names no workspace: a watermark covers them all


async def report(d: Decisioning, delivered_before: datetime,
                 **behind: datetime) -> datetime:
    reply = await d.stub.RecordForwardingWatermark(pb.RecordForwardingWatermarkRequest(
        stream=EVENTS, delivered_before=to_timestamp(delivered_before),
        behind_workspaces=[pb.WorkspaceWatermark(workspace_id=w.replace("_", "-"),
                                                 delivered_before=to_timestamp(t))
                           for w, t in behind.items()]), metadata=SERVICE)
    return from_timestamp(reply.delivered_before)


async def test_a_lapsed_window_waits_for_its_workspace_s_watermark(backend: Backend) -> None:
    async with running(backend) as d:
        for workspace in ("ws-a", "ws-b"):
            await d.point("home", "order_completed", window=HOUR, workspace_id=workspace)
            await d.decided("late", "home", "p1", workspace_id=workspace)
            await d.facts(sent("m1", "late", START), workspace=as_service(workspace))
        assert await shown(d, "ws-a") is None  # never reported: the grace alone holds
        await report(d, START)  # identity's first report: from now on lapsed windows wait
        # Both windows close by the clock long before the reports below.
        d.clock.advance(3 * HOUR)
        # Identity: everything written before START + 30 min was delivered, but for ws-a,
        # whose oldest undelivered event was written at START + 10 min (a conversion).
        assert await report(d, START + HOUR / 2,
                            ws_a=START + 10 * MINUTE) == START + HOUR / 2
        assert await shown(d, "ws-a") == START + 10 * MINUTE
        assert await shown(d, "ws-b") == START + HOUR / 2
        # Neither watermark has passed the windows (plus the grace) yet.
        await d.decided("old", "home", "p0", workspace_id="ws-b",
                        outcome=EXPOSED, expose_time=START - 3 * HOUR,
                        reward_deadline=START - 2 * HOUR)
        await eventually(lambda: learned(d, "old", "ws-b"))  # a round ran at this clock
        assert not await learned(d, "late", "ws-a")
        assert not await learned(d, "late", "ws-b")

        # ws-b's rewards are delivered past its window and the grace: its window is final; ws-a
        # is still behind (its queued conversion has not arrived) and holds only its own.
        await report(d, START + HOUR + GRACE + timedelta(seconds=1),
                     ws_a=START + 10 * MINUTE)
        await eventually(lambda: learned(d, "late", "ws-b"))
        assert (await d.decision("late", "ws-b")).outcome == NOT_REWARDED
        assert (await d.decision("late", "ws-a")).outcome == EXPOSED
        assert not await learned(d, "late", "ws-a")

        # ws-a's conversion arrives, then its watermark catches up: rewarded, then learned.
        await d.events(track("e1", "p1", "order_completed", START + 10 * MINUTE))
        assert (await d.decision("late", "ws-a")).outcome == REWARDED
        await report(d, START + 2 * HOUR)
        assert await shown(d, "ws-a") == START + 2 * HOUR
        await eventually(lambda: learned(d, "late", "ws-a"))
        assert (await d.decision("late", "ws-a")).outcome == REWARDED


async def test_the_watermark_never_moves_back(backend: Backend) -> None:
    async with running(backend) as d:
        for workspace in ("ws-a", "ws-b"):
            await d.point("home", "order_completed", window=HOUR, workspace_id=workspace)
        d.clock.advance(3 * HOUR)  # reports ahead of decisioning's clock count up to it only
        assert await report(d, START + HOUR, ws_b=START) == START + HOUR
        # A report another replica of identity read earlier arrives late: nothing changes.
        assert await report(d, START) == START + HOUR
        assert await shown(d, "ws-a") == START + HOUR
        assert await shown(d, "ws-b") == START
        # A later report that finds ws-a behind, older than what it had: it keeps what it had.
        assert await report(d, START + 2 * HOUR, ws_a=START) == START + 2 * HOUR
        assert await shown(d, "ws-a") == START + HOUR
        assert await shown(d, "ws-b") == START + 2 * HOUR  # caught up: not listed any more
        # A report from a clock ahead of decisioning's counts up to decisioning's clock.
        assert await report(d, START + 30 * HOUR) == START + 3 * HOUR


async def test_a_watermark_stuck_behind_holds_lapsed_windows_at_most_the_maximum_hold(
        backend: Backend) -> None:
    async with running(backend, CJO_DECISIONING_WATERMARK_MAX_HOLD_HOURS="2") as d:
        await d.point("home", "order_completed", window=HOUR)
        await d.decided("late", "home", "p1")
        await d.facts(sent("m1", "late", START))
        await report(d, START)
        d.clock.advance(HOUR)
        await report(d, START)  # identity still reports, its forwarder stuck
        d.clock.advance(HOUR + GRACE)
        await d.decided("old", "home", "p0", outcome=EXPOSED, expose_time=START - 4 * HOUR,
                        reward_deadline=START - 3 * HOUR)
        await eventually(lambda: learned(d, "old"))
        assert not await learned(d, "late")  # held: the watermark is 2 h 5 min old
        await report(d, START)
        # The window closed the hold plus the grace before the clock.
        d.clock.advance(HOUR + timedelta(seconds=1))
        await eventually(lambda: learned(d, "late"))
        assert (await d.decision("late")).outcome == NOT_REWARDED


async def test_a_watermark_no_longer_reported_is_dropped_after_the_maximum_hold(
        backend: Backend) -> None:
    # Identity rolled back to a version without reports, or switched to the bus: its last
    # watermark must not hold every lapsed window the maximum hold behind the clock forever.
    async with running(backend, CJO_DECISIONING_WATERMARK_MAX_HOLD_HOURS="2") as d:
        await d.point("home", "order_completed", window=HOUR)
        await report(d, START)  # and then identity never reports again
        d.clock.advance(5 * HOUR)
        await d.decided("late", "home", "p1", outcome=EXPOSED, expose_time=START + 3 * HOUR,
                        reward_deadline=START + 4 * HOUR)
        # Closed the grace before the clock: learned, as if never reported.
        await eventually(lambda: learned(d, "late"))
        assert (await d.decision("late")).outcome == NOT_REWARDED
        assert await shown(d, "ws-a") is None  # dropped: no report, no gauge shows it
        assert [r for r in await gauge_readings(d) if r.gauge == WATERMARK_LAG.name] == []
        # Identity reports again: the watermark holds again.
        assert await report(d, START + 5 * HOUR - 10 * MINUTE) == START + 5 * HOUR - 10 * MINUTE
        assert await shown(d, "ws-a") == START + 5 * HOUR - 10 * MINUTE


async def gauge_readings(d: Decisioning) -> list[Reading]:
    def read() -> list[Reading]:
        with d.app.db.transaction() as session:
            return list(gauges.read(session, d.clock.now()))
    return await d.app.db.run(read)


@pytest.mark.parametrize(("request_", "field"), [
    (pb.RecordForwardingWatermarkRequest(delivered_before=to_timestamp(START)), "stream"),
    (pb.RecordForwardingWatermarkRequest(stream=EVENTS), "delivered_before"),
    (pb.RecordForwardingWatermarkRequest(
        stream=EVENTS, delivered_before=to_timestamp(START),
        behind_workspaces=[pb.WorkspaceWatermark(delivered_before=to_timestamp(START))]),
     "behind_workspaces[0].workspace_id"),
    (pb.RecordForwardingWatermarkRequest(
        stream=EVENTS, delivered_before=to_timestamp(START),
        behind_workspaces=[pb.WorkspaceWatermark(workspace_id="ws-a")]),
     "behind_workspaces[0].delivered_before"),
    (pb.RecordForwardingWatermarkRequest(
        stream=EVENTS, delivered_before=Timestamp(seconds=-10**12)), "delivered_before"),
    (pb.RecordForwardingWatermarkRequest(
        stream=EVENTS, delivered_before=to_timestamp(START),
        behind_workspaces=[pb.WorkspaceWatermark(
            workspace_id="ws-a", delivered_before=Timestamp(seconds=10**12))]),
     "behind_workspaces[0].delivered_before"),
])
async def test_a_bad_report_is_refused_naming_the_field(
        backend: Backend, request_: pb.RecordForwardingWatermarkRequest, field: str) -> None:
    async with running(backend) as d:
        await d.point("home", "order_completed", window=HOUR)
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await d.stub.RecordForwardingWatermark(request_, metadata=SERVICE)
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert field in (info.value.details() or "")
        assert await shown(d, "ws-a") is None  # nothing written


async def test_a_report_rewrites_in_place_and_deletes_only_the_workspaces_caught_up(
        backend: Backend) -> None:
    async with running(backend) as d:
        for workspace in ("ws-a", "ws-b"):
            await d.point("home", "order_completed", workspace_id=workspace)
        deleted: list[int] = []

        def count(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
            if statement.lstrip().upper().startswith("DELETE") \
                    and "forwarding_watermarks" in statement:
                deleted.append(max(cursor.rowcount, 0))

        event.listen(d.app.db.engine, "after_cursor_execute", count)
        try:
            await report(d, START, ws_a=START - HOUR, ws_b=START - HOUR)
            d.clock.advance(MINUTE)
            # The same workspaces behind (ws-a further on): their rows are updated in place.
            await report(d, START + MINUTE, ws_a=START - HOUR / 2, ws_b=START - HOUR)
            assert sum(deleted) == 0
            assert await shown(d, "ws-a") == START - HOUR / 2
            # ws-b caught up: its row alone is deleted.
            await report(d, START + MINUTE, ws_a=START - HOUR / 2)
            assert sum(deleted) == 1
            assert await shown(d, "ws-b") == START + MINUTE
            assert await shown(d, "ws-a") == START - HOUR / 2
        finally:
            event.remove(d.app.db.engine, "after_cursor_execute", count)


async def test_a_sender_reporting_all_along_is_not_dropped(backend: Backend) -> None:
    """Review rmark2: identity reports all along, each report older than the one held (a row
    committed late, its forwarder then stuck on it). The watermark was taken as not reported,
    dropped after the maximum hold, and the held window learned by the grace alone."""
    async with running(backend, CJO_DECISIONING_WATERMARK_MAX_HOLD_HOURS="2") as d:
        await d.point("home", "order_completed", window=HOUR)
        await d.decided("late", "home", "p1")
        await d.facts(sent("m1", "late", START))
        await report(d, START)
        for _ in range(8):  # every 15 min for 2 h: reported, a minute older than held
            d.clock.advance(15 * MINUTE)
            assert await report(d, START - MINUTE) == START  # late: not moved back
        d.clock.advance(MINUTE)
        await report(d, START - MINUTE)
        await d.decided("old", "home", "p0", outcome=EXPOSED, expose_time=START - 4 * HOUR,
                        reward_deadline=START - 3 * HOUR)
        await eventually(lambda: learned(d, "old"))  # a learning round ran at this clock
        # The hold's floor is now START + 1 min; the window closed at START + 1 h (+ grace).
        assert not await learned(d, "late"), "dropped as stale although reported all along"



@pytest.mark.parametrize(("hours", "refused"), [("0", False), ("0.01", True), ("0.1", False)])
def test_a_maximum_hold_shorter_than_a_few_reports_is_refused(hours: str, refused: bool) -> None:
    env = Env({"CJO_DECISIONING_WATERMARK_MAX_HOLD_HOURS": hours})
    load_learning_settings(env)
    assert bool(env.errors) == refused
