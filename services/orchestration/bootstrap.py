"""Wires the orchestration service: storage, peers, the engine's workers and the servicer."""

from __future__ import annotations

from pathlib import Path

from cjo.orchestration.v1 import orchestration_service_pb2_grpc
from cjo_orchestration.adapters.audience import Audience
from cjo_orchestration.adapters.erasures import erasures_forwarder
from cjo_orchestration.adapters.peers import ContentCatalog, Peers
from cjo_orchestration.adapters.tables import metadata
from cjo_orchestration.api.servicer import OrchestrationServicer
from cjo_orchestration.scheduler import ScheduleWorker
from cjo_orchestration.settings import load_engine_settings
from cjo_orchestration.workers import EventWorker, StepWorker, new_id
from cjo_platform.clock import Clock, SystemClock
from cjo_platform.config import Env, ServiceSettings
from cjo_platform.facts import facts_forwarder
from cjo_platform.rpc.server import ServiceApp, Servicer
from cjo_platform.service import open_storage, remote_authenticator

MIGRATIONS = Path(__file__).parent / "adapters" / "migrations"
SERVICE = "cjo.orchestration.v1.OrchestrationService"


def build(settings: ServiceSettings, env: Env, clock: Clock | None = None) -> ServiceApp:
    clock = clock or SystemClock()
    engine = load_engine_settings(env)
    storage = open_storage(settings, metadata, MIGRATIONS, clock)
    steps = StepWorker(storage.db, storage.outbox, clock, engine,
                       Peers(settings, engine.peer_timeout_seconds))
    events = EventWorker(storage.db, storage.outbox, clock, engine, steps)
    schedules = ScheduleWorker(storage.db, storage.outbox, clock, engine,
                               Audience(settings, engine.peer_timeout_seconds), steps, new_id)
    forwarder = facts_forwarder(settings, storage.db, storage.outbox,
                                timeout=engine.peer_timeout_seconds,
                                poll_interval=engine.poll_seconds)
    # Erasures reach delivery from the outbox, after the profile's enrollments ended.
    erasures = erasures_forwarder(settings, storage.db, storage.outbox,
                                  timeout=engine.peer_timeout_seconds,
                                  poll_interval=engine.poll_seconds)
    servicer = OrchestrationServicer(
        storage.db, storage.requests, clock, new_id, events.wake,
        content=ContentCatalog(settings, engine.peer_timeout_seconds), on_enrolled=steps.wake,
        outbox=storage.outbox)
    return ServiceApp(
        settings=settings,
        db=storage.db,
        servicers=[Servicer(servicer,
                            orchestration_service_pb2_grpc.add_OrchestrationServiceServicer_to_server,
                            SERVICE)],
        authenticator=remote_authenticator(settings),
        service_only_methods={f"/{SERVICE}/HandleEvents"},
        background=[events.run, steps.run, schedules.run, forwarder.run, erasures.run],
        migrate=storage.migrate,
    )
