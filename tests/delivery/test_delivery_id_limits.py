"""Ids as long as the shared limits allow go through every service that stores them: a message
to a 128-character profile id (an external id) is counted by analytics on both backends, and one
character more is refused at the edge, naming the field."""

from __future__ import annotations

import grpc
import pytest
from delivery_support import SmtpSink, delivery_app, send_request, smtp_server
from grpc_status import rpc_status
from sqlalchemy import func, select

from cjo.analytics.v1 import analytics_service_pb2 as apb
from cjo.analytics.v1 import analytics_service_pb2_grpc as apb_grpc
from cjo.analytics.v1 import fact_pb2
from cjo.delivery.v1 import delivery_service_pb2_grpc as pb_grpc
from cjo_analytics.bootstrap import build as build_analytics
from cjo_delivery.adapters.tables import outbox
from cjo_platform.clock import ManualClock
from cjo_platform.config import Env
from cjo_platform.limits import MAX_ID_LENGTH, MAX_PROFILE_ID_LENGTH
from cjo_platform.rpc.server import ServiceApp
from cjo_platform.rpc.status import field_violations
from support import Backend, as_service, eventually, free_port, serving, settings_for

WS = as_service("ws-a")
OTHER = as_service("ws-b")


def _facts_waiting(app: ServiceApp) -> int:
    with app.db.transaction() as session:
        return int(session.execute(select(func.count()).select_from(outbox)).scalar_one())


async def test_the_longest_ids_reach_analytics(backend: Backend) -> None:
    profile_id = "p" * MAX_PROFILE_ID_LENGTH
    journey_id = "j" * MAX_ID_LENGTH
    enrollment_id = "e" * MAX_ID_LENGTH
    port = free_port()
    analytics_app = build_analytics(settings_for("analytics", backend), Env({}))
    with smtp_server(SmtpSink(), port):
        async with serving(analytics_app) as analytics_address, \
                grpc.aio.insecure_channel(analytics_address) as analytics_channel:
            app = delivery_app(backend, port, ManualClock(), analytics=analytics_address)
            async with serving(app) as address, grpc.aio.insecure_channel(address) as channel:
                stub = pb_grpc.DeliveryServiceStub(channel)
                await stub.SendMessage(send_request(
                    "k" * MAX_ID_LENGTH, "ada@example.com", profile_id=profile_id,
                    journey_id=journey_id, enrollment_id=enrollment_id), metadata=WS)
                # Another workspace's message behind it is counted too: nothing is stuck.
                await stub.SendMessage(send_request(
                    "short", "bob@example.com", profile_id="p2", journey_id="j2",
                    enrollment_id="e2"), metadata=OTHER)

                with pytest.raises(grpc.aio.AioRpcError) as refused:
                    await stub.SendMessage(send_request(
                        "too-long", "eve@example.com", profile_id=profile_id + "x"),
                        metadata=WS)
                assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
                status = rpc_status.from_call(refused.value)
                assert status is not None
                assert field_violations(status) == {
                    "recipient.profile_id": f"at most {MAX_PROFILE_ID_LENGTH} characters"}

                reports = apb_grpc.AnalyticsServiceStub(analytics_channel)

                async def sent(journey: str, metadata: tuple[tuple[str, str], ...]) -> bool:
                    report = (await reports.GetJourneyReport(apb.GetJourneyReportRequest(
                        journey=f"journeys/{journey}"), metadata=metadata)).report
                    return [(c.type, c.count, c.profiles) for c in report.counts] == [
                        (fact_pb2.FACT_TYPE_MESSAGE_SENT, 1, 1)]

                await eventually(lambda: sent(journey_id, WS))
                await eventually(lambda: sent("j2", OTHER))
                await eventually(lambda: _facts_waiting(app) == 0)
