"""The outcome RPCs of DecisioningService (mixed into the servicer): RecordEvents,
RecordForwardingWatermark and RecordMessageFacts (service-only: identity's and delivery's
forwarders) and GetSendTimes."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from datetime import datetime, timedelta
from functools import partial

import grpc

from cjo.analytics.v1 import fact_pb2
from cjo.common.v1 import common_pb2
from cjo.decisioning.v1 import decisioning_service_pb2 as pb
from cjo.orchestration.v1 import orchestration_service_pb2 as orchestration_pb
from cjo_decisioning.domain.outcomes import (
    ERASER,
    PROFILE_DELETED,
    PROFILE_MERGED,
    EventDetails,
    MessageFact,
    TrackEvent,
)
from cjo_decisioning.domain.watermarks import EVENTS, MAX_BEHIND_WORKSPACES, Watermark
from cjo_decisioning.service_layer import outcomes, send_times
from cjo_decisioning.service_layer.watermarks import record_bus_watermark, record_watermark
from cjo_platform.db.unit_of_work import Transactions
from cjo_platform.errors import Violations
from cjo_platform.limits import (
    MAX_BATCH_ITEMS,
    MAX_PROFILE_ID_LENGTH,
    MAX_WORKSPACE_ID_LENGTH,
    check_duration,
    check_id,
)
from cjo_platform.profiles import consent_from_proto, profile_view, segment_id
from cjo_platform.protobuf import from_timestamp, struct_to_dict, to_timestamp
from cjo_platform.rpc.auth import current_workspace
from cjo_platform.rpc.batch import BatchAnswer

DOMAIN = "decisioning.cjo"
MAX_SEND_DELAY = timedelta(days=7)
DEFAULT_SEND_DELAY = timedelta(days=1)

_KINDS = {fact_pb2.FACT_TYPE_MESSAGE_SENT: outcomes.SENT,
          fact_pb2.FACT_TYPE_MESSAGE_OPENED: outcomes.OPENED,
          fact_pb2.FACT_TYPE_MESSAGE_CLICKED: outcomes.CLICKED}
_STREAMS = {pb.FORWARDED_STREAM_EVENTS: EVENTS}
_SOURCES = {"profile": pb.SEND_TIME_SOURCE_PROFILE,
            "population": pb.SEND_TIME_SOURCE_POPULATION,
            "default": pb.SEND_TIME_SOURCE_DEFAULT}


def message_fact(fact: fact_pb2.Fact) -> MessageFact:
    # The ids as wide as decisioning stores them (cjo_platform.limits): a longer one failed
    # the whole call on PostgreSQL.
    problems = Violations()
    check_id(problems, "fact_id", fact.fact_id, required=True)
    check_id(problems, "profile_id", fact.profile_id, max_length=MAX_PROFILE_ID_LENGTH)
    check_id(problems, "decision_id", fact.decision_id)
    problems.check(fact.HasField("occur_time"), "occur_time", "is required")
    problems.raise_if_any()
    return MessageFact(fact_id=fact.fact_id, kind=_KINDS.get(fact.type, "other"),
                       profile_id=fact.profile_id, decision_id=fact.decision_id,
                       channel=fact.channel, occur_time=from_timestamp(fact.occur_time))


def track_event(forwarded: orchestration_pb.ForwardedEvent) -> TrackEvent:
    problems = Violations()
    check_id(problems, "event_id", forwarded.event_id, required=True)
    check_id(problems, "profile_id", forwarded.profile_id, max_length=MAX_PROFILE_ID_LENGTH)
    event = forwarded.event
    merged = ""
    if event.name == PROFILE_MERGED:
        merged = str(struct_to_dict(event.properties).get("merged_profile_id") or "")
        check_id(problems, "event.properties.merged_profile_id", merged,
                 max_length=MAX_PROFILE_ID_LENGTH)
    problems.raise_if_any()
    return TrackEvent(
        event_id=forwarded.event_id, profile_id=forwarded.profile_id, name=event.name,
        details=partial(_details, forwarded), merged_profile_id=merged,
        erased=event.name == PROFILE_DELETED and event.source == ERASER)


def _details(forwarded: orchestration_pb.ForwardedEvent) -> EventDetails:
    """Made only for an event a point rewards (the request validated its time and values)."""
    event = forwarded.event
    return EventDetails(
        time=from_timestamp(event.timestamp),
        event={"name": event.name, "properties": struct_to_dict(event.properties),
               "source": event.source, "message_id": event.message_id},
        profile=profile_view(struct_to_dict(forwarded.profile_traits),
                             struct_to_dict(forwarded.computed_traits),
                             (segment_id(s) for s in forwarded.segments),
                             consent_from_proto(forwarded.consents),
                             ((i.type, i.value) for i in forwarded.identifiers)))


def forwarding_watermark(request: pb.RecordForwardingWatermarkRequest) -> tuple[str, Watermark]:
    """The stream and watermark a sender reported; INVALID_ARGUMENT naming the field."""
    problems = Violations()
    stream = _STREAMS.get(request.stream, "")
    problems.check(bool(stream), "stream", "must name a stream (FORWARDED_STREAM_EVENTS)")
    problems.check(request.HasField("delivered_before"), "delivered_before", "is required")
    behind = request.behind_workspaces
    problems.check(len(behind) <= MAX_BEHIND_WORKSPACES, "behind_workspaces",
                   f"must hold at most {MAX_BEHIND_WORKSPACES} workspaces, got {len(behind)}")
    for index, item in enumerate(behind[:MAX_BEHIND_WORKSPACES + 1]):
        field = f"behind_workspaces[{index}]"
        check_id(problems, f"{field}.workspace_id", item.workspace_id, required=True,
                 max_length=MAX_WORKSPACE_ID_LENGTH)
        problems.check(item.HasField("delivered_before"), f"{field}.delivered_before",
                       "is required")
    problems.raise_if_any()
    workspaces: dict[str, datetime] = {}
    for item in behind:  # a workspace listed twice: its earliest time holds
        time = from_timestamp(item.delivered_before)
        workspaces[item.workspace_id] = min(time, workspaces.get(item.workspace_id, time))
    return stream, Watermark(from_timestamp(request.delivered_before), workspaces)


def bus_watermarks(transactions: Transactions, partitions: int
                  ) -> Callable[[int, datetime, Mapping[str, datetime]], Awaitable[None]]:
    """What decisioning's consumer of identity's events does with a watermark marker of a
    partition (of ``partitions``): records it (see service_layer.watermarks)."""

    async def record(partition: int, delivered_before: datetime,
                     behind: Mapping[str, datetime]) -> None:
        report = Watermark(delivered_before, dict(behind))
        await transactions.run(lambda uow: record_bus_watermark(
            uow, EVENTS, partition, partitions, report))

    return record


class OutcomeRpcs:
    """Needs ``transactions``."""

    transactions: Transactions

    async def RecordMessageFacts(self, request: pb.RecordMessageFactsRequest,
                                 context: grpc.aio.ServicerContext
                                 ) -> pb.RecordMessageFactsResponse:
        answer = BatchAnswer(request.facts, "facts", DOMAIN, pb.RecordMessageFactResult)
        parsed = answer.parse(message_fact)
        if parsed:
            workspace = current_workspace()
            duplicates = await self.transactions.run(lambda uow: outcomes.record_message_facts(
                uow, workspace, [fact for _, fact in parsed]))
            for (index, _), duplicate in zip(parsed, duplicates, strict=True):
                if duplicate:
                    answer.result(index).duplicate = True
        return answer.response(pb.RecordMessageFactsResponse)

    async def RecordEvents(self, request: pb.RecordEventsRequest,
                           context: grpc.aio.ServicerContext) -> pb.RecordEventsResponse:
        answer = BatchAnswer(request.events, "events", DOMAIN, pb.RecordEventResult)
        parsed = answer.parse(track_event)
        if parsed:
            workspace = current_workspace()
            duplicates = await self.transactions.run(lambda uow: outcomes.record_events(
                uow, workspace, [event for _, event in parsed]))
            for (index, _), duplicate in zip(parsed, duplicates, strict=True):
                if duplicate:
                    answer.result(index).duplicate = True
        return answer.response(pb.RecordEventsResponse)

    async def RecordForwardingWatermark(self, request: pb.RecordForwardingWatermarkRequest,
                                        context: grpc.aio.ServicerContext
                                        ) -> pb.RecordForwardingWatermarkResponse:
        stream, report = forwarding_watermark(request)
        held = await self.transactions.run(lambda uow: record_watermark(uow, stream, report))
        return pb.RecordForwardingWatermarkResponse(delivered_before=to_timestamp(held))

    async def GetSendTimes(self, request: pb.GetSendTimesRequest,
                           context: grpc.aio.ServicerContext) -> pb.GetSendTimesResponse:
        problems = Violations()
        problems.check(1 <= len(request.profile_ids) <= MAX_BATCH_ITEMS, "profile_ids",
                       f"must hold 1 to {MAX_BATCH_ITEMS} ids, got {len(request.profile_ids)}")
        for index, profile_id in enumerate(request.profile_ids[:MAX_BATCH_ITEMS + 1]):
            check_id(problems, f"profile_ids[{index}]", profile_id, required=True,
                     max_length=MAX_PROFILE_ID_LENGTH)
        problems.check(request.channel in common_pb2.Channel.values(), "channel",
                       "is not a channel")
        max_delay = (request.max_delay.ToTimedelta() if request.HasField("max_delay")
                     else DEFAULT_SEND_DELAY)
        check_duration(problems, "max_delay", max_delay, minimum=timedelta(0),
                       maximum=MAX_SEND_DELAY)
        problems.raise_if_any()
        workspace = current_workspace()
        earliest = (from_timestamp(request.earliest_time) if request.HasField("earliest_time")
                    else self.transactions.clock.now())
        ids = list(request.profile_ids)
        found = await self.transactions.run(lambda uow: send_times.send_times(
            uow, workspace, ids, request.channel, earliest, max_delay))
        return pb.GetSendTimesResponse(send_times=[
            pb.SendTime(profile_id=profile_id, send_time=to_timestamp(time),
                        source=_SOURCES[source], observations=observations)
            for profile_id, (time, source, observations) in zip(ids, found, strict=True)])
