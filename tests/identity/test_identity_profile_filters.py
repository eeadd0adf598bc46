"""ListProfiles(filter) with expressions that fail: refused when they fail for any data, and a
filter that errs on some profiles' data simply does not match them (never INTERNAL)."""

from __future__ import annotations

import time

import grpc
import pytest
from grpc_status import rpc_status
from identity_support import Identity, event, rpc_error

from cjo.identity.v1 import identity_service_pb2 as pb
from cjo_platform.rpc.status import field_violations


@pytest.mark.parametrize("condition", [
    "1/0 == 1", "[1,2][5] == 1", "9223372036854775807 + 1 > 0", "uint(-1) > 0u",
    'int("x") == 1',
])
async def test_a_filter_failing_for_any_data_is_invalid(identity: Identity,
                                                          condition: str) -> None:
    acme = await identity.new_workspace("acme")
    await identity.events.IngestEvents(pb.IngestEventsRequest(events=[
        event("m1", ("user_id", "u1"), traits={"plan": "pro"}, identify=True)]), metadata=acme)
    error = await rpc_error(identity.events.ListProfiles(
        pb.ListProfilesRequest(filter=condition), metadata=acme))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "filter" in field_violations(rpc_status.from_call(error))


async def test_a_filter_erring_on_some_profiles_does_not_match_them(identity: Identity) -> None:
    acme = await identity.new_workspace("acme")
    reply = await identity.events.IngestEvents(pb.IngestEventsRequest(events=[
        event("m1", ("user_id", "u1"), traits={"orders": 0, "zip": "x"}, identify=True),
        event("m2", ("user_id", "u2"), traits={"orders": 4, "zip": "1200"}, identify=True),
        event("m3", ("user_id", "u3"), traits={"plan": "free"}, identify=True),
    ]), metadata=acme)
    assert {r.status.code for r in reply.results} == {0}

    async def listed(condition: str) -> list[str]:
        page = await identity.events.ListProfiles(pb.ListProfilesRequest(filter=condition),
                                                  metadata=acme)
        return sorted(i.value for p in page.profiles for i in p.identifiers)

    # u1 divides by zero, u3 has no orders: neither errs the call, neither matches.
    assert await listed("100 / traits.orders > 10") == ["u2"]
    assert await listed("int(traits.zip) > 1000") == ["u2"]
    assert await listed("traits.tags[3] == 'x'") == []


async def test_a_filter_too_costly_for_any_data_is_refused_fast(identity: Identity) -> None:
    acme = await identity.new_workspace("acme")
    ones = "[" + ",".join(["1"] * 300) + "]"
    costly = f"size({ones}.map(x, {ones}.map(y, [x, y, x, y]))) == 0 || traits.a == 1"
    # The CPU this process spent (the server runs in it), not the wall clock: on a loaded
    # machine the call waits for a core, and waiting is not what the bound is about.
    started = time.process_time()
    error = await rpc_error(identity.events.ListProfiles(
        pb.ListProfilesRequest(filter=costly), metadata=acme))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    violations = field_violations(rpc_status.from_call(error))
    assert "too costly" in violations["filter"]
    assert time.process_time() - started < 2.0
    listed = await identity.events.ListProfiles(
        pb.ListProfilesRequest(filter="traits.tags.exists(t, t == 'vip')"), metadata=acme)
    assert list(listed.profiles) == []
