"""A send round whose messages belong to a thousand workspaces, each with its own provider:
the round's shared rate limits and circuit breakers are read in one statement each
(rate_store, breaker_store through cjo_platform.db.keys_in).

An OR of a condition per workspace failed on SQLite from ~1,000 workspaces in a round
("Expression tree is too large (maximum depth 1000)"): the rate-limited messages of such a round
waited for ever (reserving failed, round after round) and the replicas' breakers were not read
(each replica decided alone); PostgreSQL spent a large part of the round planning it.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import grpc
from delivery_support import delivery_app
from http_sink import HttpSink, http_sink
from sqlalchemy import insert
from test_delivery_limits import settled, sms
from test_delivery_rate_replicas import rate_db, sms_provider

from cjo.delivery.v1 import delivery_service_pb2 as pb
from cjo.delivery.v1 import delivery_service_pb2_grpc as pb_grpc
from cjo_delivery.adapters.routes import Route
from cjo_delivery.adapters.tables import provider_breakers
from cjo_delivery.domain.breaker import CircuitBreaker
from cjo_delivery.service_layer.breakers import SharedBreakers
from cjo_platform.clock import ManualClock
from cjo_platform.db.unit_of_work import Transactions
from support import Backend, as_service, free_port, serving

WORKSPACES = 1000  # a full round: CJO_DELIVERY_BATCH_SIZE's maximum


async def test_a_round_of_a_thousand_workspaces_reserves_their_rate_limits_at_once(
        backend: Backend) -> None:
    """Each workspace's rate-limited provider sends its burst of one, then its second message
    waits for its turn; the turns of all of them come at the same moment, so one round claims
    the thousand messages and reserves from the thousand providers in one transaction."""
    clock = ManualClock()
    with http_sink(HttpSink()) as sink:
        app = delivery_app(backend, free_port(), clock, CJO_DELIVERY_BATCH_SIZE=str(WORKSPACES))
        async with serving(app) as address, grpc.aio.insecure_channel(address) as channel:
            stub = pb_grpc.DeliveryServiceStub(channel)
            for i in range(WORKSPACES):
                workspace = as_service(f"ws{i:04d}")
                await stub.CreateProvider(pb.CreateProviderRequest(provider=sms_provider(
                    sink.url, rate_per_second="1", burst="1")), metadata=workspace)
                await stub.BatchSendMessages(pb.BatchSendMessagesRequest(
                    requests=[sms("first"), sms("second")]), metadata=workspace)
            await settled(stub, sink, WORKSPACES)  # the bursts; the clock stands still
            clock.advance(timedelta(seconds=1))  # every provider's next turn
            await settled(stub, sink, 2 * WORKSPACES)


async def test_a_round_reads_the_shared_breakers_of_1200_workspaces_at_once(
        backend: Backend) -> None:
    """Another replica opened the breakers of 1,200 providers, one per workspace: a round whose
    messages go to all of them reads every one (in one query) and calls none."""
    now = datetime(2026, 3, 1, 9, tzinfo=UTC)
    like = CircuitBreaker(3, timedelta(seconds=30))
    with rate_db(backend) as db:
        with db.transaction() as session:  # what the other replica stored
            session.execute(insert(provider_breakers), [
                {"workspace_id": f"ws{i:04d}", "provider_id": "sms", "failures": 3,
                 "open_until": now + timedelta(seconds=30), "trial_until": None}
                for i in range(1200)])
        breakers = SharedBreakers(Transactions(db, ManualClock(now)),
                                  trial_lease=timedelta(minutes=5))
        routes = [Route("sms", None, CircuitBreaker(3, timedelta(seconds=30)),  # type: ignore[arg-type]
                        workspace_id=f"ws{i:04d}") for i in range(1200)]
        routes.append(Route("smtp", None, like))  # type: ignore[arg-type]
        await breakers.refresh(routes, now)
        assert all(not breakers.stale(route, now) for route in routes)
        assert [route.breaker.open_until for route in routes] == [
            *[now + timedelta(seconds=30)] * 1200, None]
        assert not any([await breakers.allow(route, now) for route in routes[:-1]])
