"""Wires the analytics service: storage, authentication, the servicer and, with the event bus,
its facts consumer."""

from __future__ import annotations

from pathlib import Path

from cjo.analytics.v1 import analytics_service_pb2_grpc
from cjo_analytics.adapters.tables import metadata
from cjo_analytics.api.servicer import AnalyticsServicer
from cjo_platform.bus import load_bus
from cjo_platform.bus.consumer import consumer_workers
from cjo_platform.clock import Clock, SystemClock
from cjo_platform.config import Env, ServiceSettings
from cjo_platform.facts import facts_consumer
from cjo_platform.rpc.dead_letters import bus_replays, dead_letter_servicer
from cjo_platform.rpc.server import ServiceApp, Servicer
from cjo_platform.service import open_storage, remote_authenticator

MIGRATIONS = Path(__file__).parent / "adapters" / "migrations"
SERVICE = "cjo.analytics.v1.AnalyticsService"


def build(settings: ServiceSettings, env: Env, clock: Clock | None = None) -> ServiceApp:
    clock = clock or SystemClock()
    storage = open_storage(settings, metadata, MIGRATIONS, clock)
    servicer = AnalyticsServicer(storage.transactions)
    # With the event bus (CJO_EVENT_BUS), every service's facts arrive from JetStream into this
    # servicer's own RecordFacts.
    bus = load_bus(env)
    consumers = [] if bus is None else [facts_consumer(
        bus, servicer.RecordFacts, storage.db, storage.dead_letters, clock,
        linger=settings.facts_linger_seconds)]
    return ServiceApp(
        settings=settings,
        db=storage.db,
        servicers=[Servicer(servicer,
                            analytics_service_pb2_grpc.add_AnalyticsServiceServicer_to_server,
                            SERVICE),
                   # Analytics forwards nothing: only the bus's letters have a replay.
                   dead_letter_servicer(storage.transactions, storage.dead_letters,
                                        bus_replays(*consumers),
                                        f"{settings.service}.cjo")],
        authenticator=remote_authenticator(settings),
        service_only_methods={f"/{SERVICE}/RecordFacts"},
        background=[storage.retention(env, settings.service).run,
                    *consumer_workers(consumers, storage.outbox)],
        migrate=storage.migrate,
        gauges=storage.queue_gauges(clock),
    )
