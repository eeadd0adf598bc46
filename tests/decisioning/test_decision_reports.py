"""GetDecisionReport over a real gRPC server on a decision log with known decisions, on SQLite
and PostgreSQL."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import grpc
import pytest
from decision_log_support import LogServer, candidate, log_server, logged, point
from google.protobuf import duration_pb2
from grpc_status import rpc_status
from scipy import stats

from cjo.decisioning.v1 import decisioning_service_pb2 as pb
from cjo_decisioning.adapters.tables import EXPOSED, NO_ACTION, NOT_REWARDED, PENDING, REWARDED
from cjo_decisioning.domain.catalogue import Action
from cjo_platform.protobuf import from_timestamp, to_timestamp
from cjo_platform.rpc.status import error_reason, field_violations
from support import Backend, as_service

WS = as_service("ws-a")
T0 = datetime(2026, 3, 2, 9, 15, tzinfo=UTC)


@pytest.fixture
async def server(backend: Backend) -> AsyncIterator[LogServer]:
    async with log_server(backend) as started:
        started.catalogue("ws-a", point("offers", ["a", "b", "c"]),
                          [Action(key=k) for k in "abc"], T0)
        yield started


def known_log() -> list[dict[str, Any]]:
    """a won 10 decisions (8 exposed: 3 rewarded, 4 failed, 1 open; 2 pending), b won 5
    (1 rewarded, 4 failed), 2 found no eligible action; c never won."""
    def of(action: str, propensity: float) -> list[dict[str, Any]]:
        return [candidate(action, propensity, 0.7),
                candidate("c", 0.01, 0.3)]

    at = [T0 + timedelta(minutes=20 * i) for i in range(17)]  # 09:15 to 14:35
    a = ([REWARDED] * 3 + [NOT_REWARDED] * 4 + [EXPOSED] + [PENDING] * 2)
    rows = [logged("ws-a", "offers", at[i], outcome, of("a", 0.1 if i % 2 else 0.3))
            for i, outcome in enumerate(a)]
    rows += [logged("ws-a", "offers", at[10 + i], outcome, of("b", 0.2))
             for i, outcome in enumerate([REWARDED] + [NOT_REWARDED] * 4)]
    rows += [logged("ws-a", "offers", at[15 + i], NO_ACTION, []) for i in range(2)]
    return rows


def noise() -> list[dict[str, Any]]:
    """Decisions the report must not count: before the period, another point, another
    workspace."""
    return [logged("ws-a", "offers", T0 - timedelta(days=2), REWARDED, [candidate("b", .2, 1)]),
            logged("ws-a", "other", T0, REWARDED, [candidate("a", 0.2, 1.0)]),
            logged("ws-b", "offers", T0, REWARDED, [candidate("a", 0.2, 1.0)])]


def report_request(**fields: Any) -> pb.GetDecisionReportRequest:
    return pb.GetDecisionReportRequest(
        decision_point="decisionPoints/offers", start_time=to_timestamp(T0 - timedelta(hours=1)),
        end_time=to_timestamp(T0 + timedelta(days=1)), **fields)


async def test_report_counts_each_action_with_its_beta_posterior(server: LogServer) -> None:
    server.log(known_log() + noise())
    reply = await server.stub.GetDecisionReport(report_request(), metadata=WS)

    assert (reply.decisions, reply.no_action) == (17, 2)
    by_action = {a.action: a for a in reply.actions}
    assert list(by_action) == ["a", "b", "c"]
    a, b, c = by_action["a"], by_action["b"], by_action["c"]
    assert (a.decisions, a.exposures, a.rewards, a.failures) == (10, 8, 3, 4)
    assert (b.decisions, b.exposures, b.rewards, b.failures) == (5, 5, 1, 4)
    assert (c.decisions, c.exposures, c.rewards, c.failures) == (0, 0, 0, 0)
    assert (a.share, b.share, c.share) == pytest.approx((10 / 17, 5 / 17, 0.0))
    for figures, (alpha, beta) in ((a, (4, 5)), (b, (2, 5)), (c, (1, 1))):
        assert figures.posterior_mean == pytest.approx(alpha / (alpha + beta))
        assert (figures.posterior_lower, figures.posterior_upper) == pytest.approx(
            stats.beta.interval(0.95, alpha, beta), rel=1e-9)
    assert a.mean_propensity == pytest.approx(0.2)  # five at 0.3, five at 0.1
    assert b.mean_propensity == pytest.approx(0.2)
    assert c.mean_propensity == 0.0


async def test_traffic_buckets_hold_each_actions_share(server: LogServer) -> None:
    server.log(known_log())
    hourly = await server.stub.GetDecisionReport(
        report_request(bucket=duration_pb2.Duration(seconds=3600)), metadata=WS)
    buckets = [(from_timestamp(b.start_time).hour, b.decisions,
                {s.action: (s.decisions, round(s.share, 6)) for s in b.actions})
               for b in hourly.buckets]
    # Every 20 minutes from 09:15: a until 12:35, b until 14:15, then none eligible.
    assert buckets == [
        (9, 3, {"a": (3, 1.0)}),
        (10, 3, {"a": (3, 1.0)}),
        (11, 3, {"a": (3, 1.0)}),
        (12, 3, {"a": (1, round(1 / 3, 6)), "b": (2, round(2 / 3, 6))}),
        (13, 3, {"b": (3, 1.0)}),
        (14, 2, {})]
    assert sum(b.decisions for b in hourly.buckets) == hourly.decisions

    daily = await server.stub.GetDecisionReport(report_request(), metadata=WS)
    assert [(from_timestamp(b.start_time), b.decisions) for b in daily.buckets] == [
        (datetime(2026, 3, 2, tzinfo=UTC), 17)]
    assert {s.action: s.decisions for s in daily.buckets[0].actions} == {"a": 10, "b": 5}


async def test_the_period_selects_the_decisions(server: LogServer) -> None:
    server.log(known_log())
    reply = await server.stub.GetDecisionReport(pb.GetDecisionReportRequest(
        decision_point="decisionPoints/offers", start_time=to_timestamp(T0 + timedelta(hours=1)),
        end_time=to_timestamp(T0 + timedelta(hours=2))), metadata=WS)
    # [10:15, 11:15): a's decisions at 10:15, 10:35 and 10:55.
    assert reply.decisions == 3
    assert {a.action: a.decisions for a in reply.actions} == {"a": 3, "b": 0, "c": 0}


async def test_an_empty_log_reports_every_candidate_with_its_prior(server: LogServer) -> None:
    reply = await server.stub.GetDecisionReport(
        pb.GetDecisionReportRequest(decision_point="decisionPoints/offers"), metadata=WS)
    assert (reply.decisions, reply.no_action, list(reply.buckets)) == (0, 0, [])
    assert [(a.action, a.posterior_mean, a.share) for a in reply.actions] == [
        ("a", 0.5, 0.0), ("b", 0.5, 0.0), ("c", 0.5, 0.0)]


async def error_of(server: LogServer, request: pb.GetDecisionReportRequest) -> Any:
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await server.stub.GetDecisionReport(request, metadata=WS)
    return error.value


async def test_an_unknown_point_is_not_found(server: LogServer) -> None:
    error = await error_of(server, pb.GetDecisionReportRequest(
        decision_point="decisionPoints/nowhere"))
    assert error.code() == grpc.StatusCode.NOT_FOUND
    assert error_reason(rpc_status.from_call(error)) == "DECISION_POINT_NOT_FOUND"
    # Another workspace's point is not this one's.
    with pytest.raises(grpc.aio.AioRpcError) as other:
        await server.stub.GetDecisionReport(pb.GetDecisionReportRequest(
            decision_point="decisionPoints/offers"), metadata=as_service("ws-b"))
    assert other.value.code() == grpc.StatusCode.NOT_FOUND


@pytest.mark.parametrize(("fields", "field"), [
    ({"decision_point": "offers"}, "decision_point"),
    ({"bucket": duration_pb2.Duration(seconds=5400)}, "bucket"),
    ({"bucket": duration_pb2.Duration(seconds=600)}, "bucket"),
    ({"bucket": duration_pb2.Duration(seconds=32 * 86400)}, "bucket"),
    ({"start_time": to_timestamp(T0), "end_time": to_timestamp(T0)}, "end_time"),
])
async def test_bad_requests_name_the_field(server: LogServer, fields: dict[str, Any],
                                           field: str) -> None:
    request = pb.GetDecisionReportRequest(decision_point="decisionPoints/offers")
    for name, value in fields.items():
        if isinstance(value, str):
            setattr(request, name, value)
        else:
            getattr(request, name).CopyFrom(value)
    error = await error_of(server, request)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field in field_violations(rpc_status.from_call(error))
