"""GetSendTimes over a real gRPC server: the hour a person opens and clicks most (learned from
delivery's forwarded facts), the workspace's hour for a person with none, the earliest time for
a workspace with no engagement at all; per channel; limits per the proto."""

from __future__ import annotations

from datetime import timedelta

import grpc
import pytest
from google.protobuf.duration_pb2 import Duration
from outcomes_support import START, WS, opened, running

from cjo.common.v1 import common_pb2
from cjo.decisioning.v1 import decisioning_service_pb2 as pb
from cjo_platform.protobuf import from_timestamp, to_timestamp
from support import Backend, as_service


def request(*profile_ids: str, channel: int = common_pb2.CHANNEL_EMAIL,
            max_delay: timedelta | None = None) -> pb.GetSendTimesRequest:
    message = pb.GetSendTimesRequest(profile_ids=list(profile_ids), channel=channel,
                                     earliest_time=to_timestamp(START))
    if max_delay is not None:
        message.max_delay.FromTimedelta(max_delay)
    return message


async def test_send_times_come_from_the_person_then_the_workspace(backend: Backend) -> None:
    evening = START.replace(hour=19)  # START is 09:00 UTC
    async with running(backend) as d:
        empty = await d.stub.GetSendTimes(request("p1"), metadata=WS)
        [none] = empty.send_times
        assert (from_timestamp(none.send_time), none.source, none.observations) == (
            START, pb.SEND_TIME_SOURCE_DEFAULT, 0)

        await d.facts(*(opened(f"m{n}", evening - timedelta(days=n), "p1") for n in range(6)))
        # SMS opens at 12:00 count for SMS only.
        await d.facts(*(opened(f"s{n}", START.replace(hour=12) - timedelta(days=n), "p1",
                               common_pb2.CHANNEL_SMS) for n in range(9)))
        reply = await d.stub.GetSendTimes(request("p1", "p-new"), metadata=WS)
        mine, new = reply.send_times
        assert (mine.profile_id, from_timestamp(mine.send_time), mine.source,
                mine.observations) == ("p1", evening, pb.SEND_TIME_SOURCE_PROFILE, 6)
        assert (new.profile_id, from_timestamp(new.send_time), new.source, new.observations) == (
            "p-new", evening, pb.SEND_TIME_SOURCE_POPULATION, 0)
        sms = (await d.stub.GetSendTimes(request("p1", channel=common_pb2.CHANNEL_SMS),
                                         metadata=WS)).send_times[0]
        assert (from_timestamp(sms.send_time), sms.observations) == (
            START.replace(hour=12), 9)
        # Within the maximum delay: 19:00 is out of reach in two hours.
        soon = (await d.stub.GetSendTimes(request("p1", max_delay=timedelta(hours=2)),
                                          metadata=WS)).send_times[0]
        assert START <= from_timestamp(soon.send_time) <= START + timedelta(hours=2)
        # Another workspace has learned nothing.
        other = (await d.stub.GetSendTimes(request("p1"), metadata=as_service("ws-b")))
        assert other.send_times[0].source == pb.SEND_TIME_SOURCE_DEFAULT


@pytest.mark.parametrize(("message", "field"), [
    (request(*(f"p{n}" for n in range(1001))), "profile_ids"),
    (request(), "profile_ids"),
    (request("p1", ""), "profile_ids[1]"),
    (request("x" * 129), "profile_ids[0]"),
    (request("p1", max_delay=timedelta(days=7, seconds=1)), "max_delay"),
    (pb.GetSendTimesRequest(profile_ids=["p1"], max_delay=Duration(seconds=-1)), "max_delay"),
])
async def test_bad_requests_name_their_field(sqlite_backend: Backend,
                                             message: pb.GetSendTimesRequest,
                                             field: str) -> None:
    async with running(sqlite_backend) as d:
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await d.stub.GetSendTimes(message, metadata=WS)
    assert refused.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert field in (refused.value.details() or "")
