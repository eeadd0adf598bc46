"""ListDecisions: what decisioning holds about one person (a data subject access request) — the
decisions made for their profile and for the profiles identity merged into it, newest first,
paged; nobody else's, no other workspace's, and none once the person is erased."""

from __future__ import annotations

from datetime import timedelta

import grpc
import pytest
from decisioning_support import refused
from outcomes_support import START, WS, merged, running
from test_decide import profile
from test_erasure import erased

from cjo.decisioning.v1 import decision_pb2
from cjo.decisioning.v1 import decisioning_service_pb2 as pb
from cjo_platform.paging import next_page_token
from support import Backend, as_service


async def test_a_person_s_decisions_are_listed_newest_first_with_their_merged_ids(
        backend: Backend) -> None:
    async with running(backend) as d:
        await d.point("home", "order_completed", actions_=("a",))

        async def decide(profile_id: str, metadata: object = WS) -> str:
            d.clock.advance(timedelta(minutes=1))
            return (await d.stub.Decide(pb.DecideRequest(
                decision_point="decisionPoints/home", profile_id=profile_id,
                profile=profile(city="Paris")), metadata=metadata)).decision.decision_id

        anonymous = await decide("ada-anon")
        first, second = await decide("ada"), await decide("ada")
        await decide("bob")
        await d.events(merged("ada-anon", "ada", START + timedelta(minutes=5)))
        third = await decide("ada")

        async def listed(profile_id: str, size: int, metadata: object = WS
                         ) -> list[list[decision_pb2.Decision]]:
            pages, token = [], ""
            while True:
                reply = await d.stub.ListDecisions(pb.ListDecisionsRequest(
                    profile_id=profile_id, page_size=size, page_token=token),
                    metadata=metadata)
                pages.append(list(reply.decisions))
                token = reply.next_page_token
                if not token:
                    return pages

        pages = await listed("ada", 2)
        assert [[x.decision_id for x in page] for page in pages] == [
            [third, second], [first, anonymous]]
        assert pages[0][0].name == f"decisions/{third}"
        assert pages[0][0].actions[0].action == "a"  # the whole decision, as GetDecision has it
        assert pages[0][0].decision_point == "home"
        # Another workspace knows nobody called ada.
        assert await listed("ada", 10, as_service("ws-b")) == [[]]

        await d.events(erased("ada"))
        assert await listed("ada", 10) == [[]]
        assert [x.profile_id for page in await listed("bob", 10) for x in page] == ["bob"]


@pytest.mark.parametrize(("request_", "field"), [
    (pb.ListDecisionsRequest(), "profile_id"),
    (pb.ListDecisionsRequest(profile_id="x" * 129), "profile_id"),
    (pb.ListDecisionsRequest(profile_id="ada", page_size=-1), "page_size"),
    (pb.ListDecisionsRequest(profile_id="ada", page_token="bm90IGEgdG9rZW4="), "page_token"),
    *((pb.ListDecisionsRequest(profile_id="ada", page_token=next_page_token("after", after)),
       "page_token") for after in ([1, 2], ["2026-05-04T09:00:00", "d"],
                                   ["0001-01-01T00:00:00+01:00", "d"],
                                   ["2026-05-04T09:00:00+00:00", 7], ["x"], "x")),
])
async def test_bad_list_requests_name_the_field(sqlite_backend: Backend,
                                                request_: pb.ListDecisionsRequest,
                                                field: str) -> None:
    async with running(sqlite_backend) as d:
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await d.stub.ListDecisions(request_, metadata=WS)
    code, _, violations = refused(info)
    assert code is grpc.StatusCode.INVALID_ARGUMENT
    assert field in violations
