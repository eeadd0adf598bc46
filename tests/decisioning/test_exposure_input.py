"""RecordExposures answers each exposure on its own: one with an expose time protobuf cannot
represent (nanos out of range, a year past 9999) fails alone with INVALID_ARGUMENT naming its
field, and the others are recorded (it was INTERNAL for the whole call, found by the fuzzer)."""

from __future__ import annotations

import grpc
from decisioning_support import A, action, create_action, create_point, decisioning_service, point
from google.protobuf import timestamp_pb2
from test_decide import NOW, decide

from cjo.decisioning.v1 import decision_pb2 as R
from cjo.decisioning.v1 import decisioning_service_pb2 as pb
from cjo_platform.clock import ManualClock
from cjo_platform.rpc.status import field_violations
from support import Backend


async def test_an_unrepresentable_expose_time_fails_only_its_exposure(backend: Backend) -> None:
    async with decisioning_service(backend, ManualClock(NOW)) as services:
        stub = services.decisioning
        await create_action(stub, action("only"))
        await create_point(stub, point("home", ["only"]))
        made = await decide(stub, "home", "p1")
        reply = await stub.RecordExposures(pb.RecordExposuresRequest(exposures=[
            pb.Exposure(decision_id=made.decision_id, expose_time=timestamp_pb2.Timestamp(
                seconds=int(NOW.timestamp()), nanos=1_000_000_000)),
            pb.Exposure(decision_id=made.decision_id, expose_time=timestamp_pb2.Timestamp(
                seconds=253_402_300_800)),
            pb.Exposure(decision_id=made.decision_id)]), metadata=A)
        invalid = grpc.StatusCode.INVALID_ARGUMENT.value[0]
        assert [r.status.code for r in reply.results] == [invalid, invalid, 0]
        assert list(field_violations(reply.results[0].status)) == ["exposures[0].expose_time"]
        assert list(field_violations(reply.results[1].status)) == ["exposures[1].expose_time"]
        got = (await stub.GetDecision(pb.GetDecisionRequest(
            name=f"decisions/{made.decision_id}"), metadata=A)).decision
        assert got.outcome == R.DECISION_OUTCOME_EXPOSED
        # A decision id that is not one still names its own field.
        bad = await stub.RecordExposures(pb.RecordExposuresRequest(exposures=[
            pb.Exposure(decision_id="")]), metadata=A)
        assert list(field_violations(bad.results[0].status)) == ["exposures[0].decision_id"]
