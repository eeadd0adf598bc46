"""AnalyticsService: protos in, domain calls, protos out. Nothing else lives here."""

from __future__ import annotations

import grpc

from cjo.analytics.v1 import analytics_service_pb2 as pb
from cjo.analytics.v1 import analytics_service_pb2_grpc as pb_grpc
from cjo.analytics.v1 import fact_pb2
from cjo_analytics.adapters import repository
from cjo_analytics.domain.facts import Fact, FactType, validate_fact
from cjo_platform.clock import Clock
from cjo_platform.db import Database
from cjo_platform.errors import InvalidArgument
from cjo_platform.limits import check_batch
from cjo_platform.protobuf import from_timestamp
from cjo_platform.rpc.auth import current_workspace
from cjo_platform.rpc.status import OK, to_status_proto

DOMAIN = "analytics.cjo"

_TYPES = {
    fact_pb2.FACT_TYPE_JOURNEY_ENTERED: FactType.JOURNEY_ENTERED,
    fact_pb2.FACT_TYPE_MESSAGE_REQUESTED: FactType.MESSAGE_REQUESTED,
    fact_pb2.FACT_TYPE_MESSAGE_SENT: FactType.MESSAGE_SENT,
    fact_pb2.FACT_TYPE_MESSAGE_FAILED: FactType.MESSAGE_FAILED,
    fact_pb2.FACT_TYPE_JOURNEY_EXITED: FactType.JOURNEY_EXITED,
}
_TYPE_PROTOS = {v: k for k, v in _TYPES.items()}


def _to_fact(item: fact_pb2.Fact) -> Fact:
    problems = validate_fact(item.fact_id, item.profile_id, item.journey_id,
                             has_type=item.type in _TYPES, has_time=item.HasField("occur_time"))
    problems.raise_if_any()
    return Fact(item.fact_id, _TYPES[item.type], item.profile_id, item.journey_id,
                item.enrollment_id, item.message_id, from_timestamp(item.occur_time))


def journey_id_of(name: str, field: str) -> str:
    prefix = "journeys/"
    if not name.startswith(prefix) or not name[len(prefix):] or "/" in name[len(prefix):]:
        raise InvalidArgument.one(field, "must be journeys/{journey_id}")
    return name[len(prefix):]


class AnalyticsServicer(pb_grpc.AnalyticsServiceServicer):
    def __init__(self, db: Database, clock: Clock) -> None:
        self.db = db
        self.clock = clock

    async def RecordFacts(self, request: pb.RecordFactsRequest,
                          context: grpc.aio.ServicerContext) -> pb.RecordFactsResponse:
        check_batch(request.facts, "facts")
        workspace = current_workspace()
        results: list[pb.RecordFactResult] = []
        valid: list[Fact] = []
        for index, item in enumerate(request.facts):
            try:
                valid.append(_to_fact(item))
                results.append(pb.RecordFactResult(status=OK))
            except InvalidArgument as exc:
                status = to_status_proto(exc.within(f"facts[{index}]"), DOMAIN)
                results.append(pb.RecordFactResult(status=status))

        def write() -> set[str]:
            with self.db.transaction() as session:
                return repository.record_facts(session, workspace, valid, self.clock.now())

        inserted = await self.db.run(write)
        seen: set[str] = set()
        for result, item in zip(results, request.facts, strict=True):
            if result.status.code == 0:
                result.duplicate = item.fact_id not in inserted or item.fact_id in seen
                seen.add(item.fact_id)
        return pb.RecordFactsResponse(results=results)

    async def GetJourneyReport(self, request: pb.GetJourneyReportRequest,
                               context: grpc.aio.ServicerContext) -> pb.GetJourneyReportResponse:
        journey_id = journey_id_of(request.journey, "journey")
        workspace = current_workspace()

        def read() -> list[repository.FactCount]:
            with self.db.transaction() as session:
                return repository.journey_counts(session, workspace, journey_id)

        counts = await self.db.run(read)
        return pb.GetJourneyReportResponse(report=pb.JourneyReport(
            journey=request.journey,
            counts=[pb.FactCount(type=_TYPE_PROTOS[c.type], count=c.count, profiles=c.profiles)
                    for c in counts],
        ))
