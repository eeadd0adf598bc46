"""AnalyticsService: each RPC turns its request into domain inputs, runs one use-case and
turns the result into its reply (conversions in :mod:`convert`)."""

from __future__ import annotations

import grpc

from cjo.analytics.v1 import analytics_service_pb2 as pb
from cjo.analytics.v1 import analytics_service_pb2_grpc as pb_grpc
from cjo.analytics.v1 import reports_pb2 as rpb
from cjo_analytics.api import convert
from cjo_analytics.service_layer import facts, reports
from cjo_platform.db.item_writes import write_each
from cjo_platform.db.unit_of_work import Transactions
from cjo_platform.rpc.auth import current_workspace
from cjo_platform.rpc.batch import BatchAnswer

DOMAIN = "analytics.cjo"


class AnalyticsServicer(pb_grpc.AnalyticsServiceServicer):
    def __init__(self, transactions: Transactions) -> None:
        self.transactions = transactions

    async def RecordFacts(self, request: pb.RecordFactsRequest,
                          context: grpc.aio.ServicerContext) -> pb.RecordFactsResponse:
        answer = BatchAnswer(request.facts, "facts", DOMAIN, pb.RecordFactResult)
        parsed = answer.parse(convert.to_fact)
        workspace = current_workspace()
        # A fact the database cannot store fails alone; the others are recorded.
        recorded = await write_each(answer, parsed, lambda batch: self.transactions.run(
            lambda uow: facts.record_facts(uow, workspace, batch)))
        for index, duplicate in recorded:
            if duplicate:
                answer.result(index).duplicate = True
        # The plain OK answers come from one cached encoding, not a message each.
        return answer.response(pb.RecordFactsResponse)

    async def GetJourneyReport(self, request: pb.GetJourneyReportRequest,
                               context: grpc.aio.ServicerContext) -> pb.GetJourneyReportResponse:
        journey_id = convert.journey_id_of(request.journey, "journey")
        workspace = current_workspace()
        counts = await self.transactions.run(
            lambda uow: reports.journey_report(uow, workspace, journey_id))
        return convert.journey_report(request.journey, counts)

    async def GetJourneyFunnel(self, request: rpb.GetJourneyFunnelRequest,
                               context: grpc.aio.ServicerContext
                               ) -> rpb.GetJourneyFunnelResponse:
        query = convert.funnel_query(request)
        workspace = current_workspace()
        funnels = await self.transactions.run(
            lambda uow: reports.journey_funnel(uow, workspace, query))
        return convert.journey_funnel(request.journey, query, funnels)

    async def GetChannelPerformance(self, request: rpb.GetChannelPerformanceRequest,
                                    context: grpc.aio.ServicerContext
                                    ) -> rpb.GetChannelPerformanceResponse:
        journey_id, window = convert.channel_query(request)
        workspace = current_workspace()
        report = await self.transactions.run(
            lambda uow: reports.channel_performance(uow, workspace, journey_id, window))
        return convert.channel_performance(report)

    async def GetExperimentResults(self, request: rpb.GetExperimentResultsRequest,
                                   context: grpc.aio.ServicerContext
                                   ) -> rpb.GetExperimentResultsResponse:
        convert.check_experiment_request(request)
        workspace = current_workspace()
        weights = dict(request.expected_weights)
        results = await self.transactions.run(lambda uow: reports.experiment_results(
            uow, workspace, request.experiment_id, request.control_arm, weights))
        return convert.experiment_results(request.experiment_id, results)

    async def ListExperiments(self, request: rpb.ListExperimentsRequest,
                              context: grpc.aio.ServicerContext) -> rpb.ListExperimentsResponse:
        after, page_size = convert.experiments_page(request)
        workspace = current_workspace()
        rows = await self.transactions.run(
            lambda uow: reports.list_experiments(uow, workspace, after, page_size + 1))
        return convert.experiments_reply(rows, page_size)

    async def GetAttribution(self, request: rpb.GetAttributionRequest,
                             context: grpc.aio.ServicerContext) -> rpb.GetAttributionResponse:
        query = convert.attribution_query(request)
        result = await reports.attribution(self.transactions, current_workspace(), query)
        return convert.attribution_reply(result)
