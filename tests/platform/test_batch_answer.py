"""A batch's answer: a result per item, in item order, OK unless the servicer failed or filled
it; built as one response whatever the batch's size (the plain results never one by one)."""

from __future__ import annotations

import pytest
from google.rpc import code_pb2

from cjo.analytics.v1 import analytics_service_pb2 as pb
from cjo.analytics.v1 import fact_pb2
from cjo.orchestration.v1 import orchestration_service_pb2 as orchestration_pb
from cjo_platform.errors import InvalidArgument, NotFound
from cjo_platform.rpc.batch import BatchAnswer
from cjo_platform.rpc.status import error_reason, field_violations


def answer(count: int) -> BatchAnswer[pb.RecordFactResult]:
    return BatchAnswer([fact_pb2.Fact(fact_id=f"f{i}") for i in range(count)], "facts",
                       "test.cjo", pb.RecordFactResult)


def test_every_item_answers_ok_with_its_status_set() -> None:
    response = answer(1000).response(pb.RecordFactsResponse)
    assert len(response.results) == 1000
    assert all(r.HasField("status") and r.status.code == code_pb2.OK and not r.duplicate
               for r in response.results)
    # The same bytes as results built one by one with an OK status copied in.
    one_by_one = pb.RecordFactsResponse()
    for _ in range(1000):
        one_by_one.results.add().status.code = code_pb2.OK
    assert response.SerializeToString() == one_by_one.SerializeToString()


def test_filled_and_failed_items_keep_their_place() -> None:
    batch = answer(5)
    batch.result(1).duplicate = True
    batch.fail(3, InvalidArgument.one("fact_id", "is bad"))
    batch.fail(4, NotFound("no such thing"))
    response = batch.response(pb.RecordFactsResponse)
    assert [r.status.code for r in response.results] == [
        code_pb2.OK, code_pb2.OK, code_pb2.OK, code_pb2.INVALID_ARGUMENT, code_pb2.NOT_FOUND]
    assert [r.duplicate for r in response.results] == [False, True, False, False, False]
    assert field_violations(response.results[3].status) == {"facts[3].fact_id": "is bad"}
    assert error_reason(response.results[4].status) == "NOT_FOUND"


def test_results_as_messages_are_the_same_answers() -> None:
    """Servicers that fill every item use ``results``; the response says the same."""
    batch = answer(3)
    batch.result(0).duplicate = True
    results = batch.results
    results[2].duplicate = True
    batch.fail(1, NotFound("gone"))
    assert [r.status.code for r in results] == [code_pb2.OK, code_pb2.NOT_FOUND, code_pb2.OK]
    assert batch.response(pb.RecordFactsResponse) == pb.RecordFactsResponse(results=results)


def test_a_response_whose_results_are_another_type_is_refused() -> None:
    with pytest.raises(TypeError):
        answer(2).response(orchestration_pb.HandleEventsResponse)
