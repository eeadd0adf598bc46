"""A journey's send carries the profile's time zone to delivery, so quiet hours are kept in the
person's own zone: real content and delivery in-process, delivery on the wall clock."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from orchestration_support import (
    create_content,
    forwarded,
    messages,
    published,
    running,
    send_then_exit,
)

from cjo.delivery.v1 import delivery_service_pb2 as delivery_pb
from cjo.delivery.v1 import message_pb2, policy_pb2
from cjo.orchestration.v1 import orchestration_service_pb2 as pb
from cjo_orchestration.domain.timing import profile_time_zone
from support import Backend, as_service, eventually

TOKYO = ZoneInfo("Asia/Tokyo")  # UTC+9 all year: no DST to reason about


def test_only_known_zone_names_are_passed_on() -> None:
    assert profile_time_zone({"timezone": "Asia/Tokyo"}) == "Asia/Tokyo"
    assert profile_time_zone({"time_zone": "Europe/Paris"}) == "Europe/Paris"
    for bad in ("Not/AZone", "America", "../etc/passwd", "x" * 300, 9, None, ""):
        assert profile_time_zone({"timezone": bad}) == ""
    assert profile_time_zone({"timezone": "Mars/Base", "time_zone": "UTC"}) == "UTC"


async def test_quiet_hours_are_kept_in_the_profiles_time_zone(sqlite_backend: Backend) -> None:
    async with running(sqlite_backend) as cluster:
        if "delivery" not in cluster.real:
            pytest.skip("the real delivery service is needed to see quiet hours")
        ws = as_service("ws-a")
        # Quiet now in Tokyo; the policy's default zone (UTC) is nine hours away, outside it.
        tokyo_now = datetime.now(UTC).astimezone(TOKYO)
        start = (tokyo_now - timedelta(minutes=30)).strftime("%H:%M")
        end = (tokyo_now + timedelta(hours=3)).strftime("%H:%M")
        await cluster.stub("delivery").UpdateDeliveryPolicy(
            delivery_pb.UpdateDeliveryPolicyRequest(policy=policy_pb2.DeliveryPolicy(
                quiet_hours=policy_pb2.QuietHours(start=start, end=end,
                                                  default_time_zone="UTC"))), metadata=ws)
        await create_content(cluster, "ws-a", "cart", "Your cart", "<p>x</p>")
        journey = await published(cluster, "ws-a", send_then_exit("cart"))

        reply = await cluster.orchestration.HandleEvents(pb.HandleEventsRequest(events=[
            forwarded("e1", "aki", traits={"email": "aki@example.com",
                                           "timezone": "Asia/Tokyo"}),
            # Not a zone: ignored, so the policy's default applies instead of a refused send.
            forwarded("e2", "bea", traits={"email": "bea@example.com",
                                           "timezone": "Mars/Olympus_Mons"}),
        ]), metadata=ws)
        assert all(r.status.code == 0 for r in reply.results)

        async def decided() -> dict[str, Any] | None:
            found = {m.recipient.address: m
                     for m in await messages(cluster, "ws-a", journey.journey_id)}
            done = {message_pb2.MESSAGE_STATUS_DEFERRED, message_pb2.MESSAGE_STATUS_SENT}
            return found if len(found) == 2 and all(
                m.status in done for m in found.values()) else None

        found = await eventually(decided)
        assert isinstance(found, dict)
        aki, bea = found["aki@example.com"], found["bea@example.com"]
        assert aki.status == message_pb2.MESSAGE_STATUS_DEFERRED
        resume = aki.next_attempt_time.ToDatetime().replace(tzinfo=UTC).astimezone(TOKYO)
        assert resume.strftime("%H:%M") == end  # the end of quiet hours, Tokyo time
        assert bea.status == message_pb2.MESSAGE_STATUS_SENT
