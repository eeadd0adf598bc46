"""Wires the orchestration service: storage, peers, the workers and the servicer."""

from __future__ import annotations

from pathlib import Path

from cjo.orchestration.v1 import orchestration_service_pb2_grpc
from cjo_orchestration.adapters.audience import Audience
from cjo_orchestration.adapters.bus import events_consumer
from cjo_orchestration.adapters.erasures import erasures_forwarder
from cjo_orchestration.adapters.gauges import PROBE as QUEUES
from cjo_orchestration.adapters.journeys import TriggerCache
from cjo_orchestration.adapters.peers import DecisioningCatalog, Peers
from cjo_orchestration.adapters.retention import RULES as RETENTION
from cjo_orchestration.adapters.tables import metadata
from cjo_orchestration.api.servicer import SERVICE, OrchestrationServicer
from cjo_orchestration.service_layer.events import (
    INBOX_SOURCE,
    EventReceiver,
    InboxRound,
    replay_events,
    to_dead_letters,
)
from cjo_orchestration.service_layer.handoff import Handoff
from cjo_orchestration.service_layer.ids import new_id
from cjo_orchestration.service_layer.schedules import ScheduleRound
from cjo_orchestration.service_layer.steps import StepRound
from cjo_orchestration.settings import load_engine_settings
from cjo_orchestration.workers.events import EventWorker
from cjo_orchestration.workers.schedules import ScheduleWorker
from cjo_orchestration.workers.steps import StepWorker
from cjo_platform.backoff import RetryPolicy
from cjo_platform.bus import load_bus
from cjo_platform.bus.consumer import consumer_workers
from cjo_platform.clock import Clock, SystemClock
from cjo_platform.config import Env, ServiceSettings
from cjo_platform.content_catalog import ContentCatalog
from cjo_platform.db.signals import Signals
from cjo_platform.db.unit_of_work import UnitOfWork
from cjo_platform.facts import facts_forwarder
from cjo_platform.rpc.dead_letters import bus_replays, dead_letter_servicer, outbox_replays
from cjo_platform.rpc.server import ServiceApp, Servicer
from cjo_platform.service import open_storage, remote_authenticator

MIGRATIONS = Path(__file__).parent / "adapters" / "migrations"
EVENTS_SIGNAL = "orchestration.events"  # new events in the inbox


def build(settings: ServiceSettings, env: Env, clock: Clock | None = None) -> ServiceApp:
    clock = clock or SystemClock()
    engine = load_engine_settings(env)
    storage = open_storage(settings, metadata, MIGRATIONS, clock)
    transactions = storage.transactions
    timeout = engine.peer_timeout_seconds
    peers = Peers(settings, timeout)
    # New inbox events wake the event worker of every replica (LISTEN/NOTIFY on PostgreSQL;
    # in-process on SQLite); polling stays the safety net.
    signals = Signals(storage.db)

    def events_received(uow: UnitOfWork) -> None:
        signals.send(uow, EVENTS_SIGNAL)

    # A step that hands back a profile whose events the event round deferred sends the same.
    # New enrollments due at once reach this process's step worker leased, from the very
    # transaction that created them (no claim, no poll).
    handoff = Handoff(engine.lease_seconds)
    # Journeys' triggers kept between events, checked against the journeys' revision.
    triggers = TriggerCache()
    steps = StepWorker(StepRound(transactions, peers, engine, events_waiting=events_received),
                       engine.poll_seconds, engine.step_lanes, handoff)
    events = EventWorker(
        InboxRound(transactions, engine.event_batch, new_id, engine.event_max_attempts,
                   to_dead_letters(storage.dead_letters),
                   RetryPolicy(base_delay=engine.retry.base_delay,
                               max_delay=engine.retry.max_delay), handoff, triggers),
        engine.poll_seconds, steps.wake)
    schedules = ScheduleWorker(
        ScheduleRound(transactions, engine, Audience(settings, timeout), new_id),
        engine.poll_seconds, steps.wake)
    bus = load_bus(env)
    facts = facts_forwarder(settings, storage.db, storage.outbox, timeout=timeout,
                            poll_interval=engine.poll_seconds, bus=bus)
    # Erasures reach delivery from the outbox, after the profile's enrollments ended.
    erasures = erasures_forwarder(settings, storage.db, storage.outbox, timeout=timeout,
                                  poll_interval=engine.poll_seconds, bus=bus)
    signals.on(EVENTS_SIGNAL, lambda _: events.wake())

    # HandleEvents applies what it stores in the same transaction; the event round applies
    # what it leaves (events ordered behind others, failures, batches over event_batch).
    receiver = EventReceiver(transactions, new_id, events_received, steps.wake,
                             apply_limit=engine.event_batch, handoff=handoff,
                             triggers=triggers)
    servicer = OrchestrationServicer(transactions, new_id, receiver,
                                     content=ContentCatalog(settings, timeout),
                                     decisioning=DecisioningCatalog(settings, timeout),
                                     on_enrolled=steps.wake, profiles=peers)
    # With the event bus (CJO_EVENT_BUS), identity's events arrive from JetStream into the very
    # HandleEvents that identity's forwarder calls otherwise.
    consumers = [] if bus is None else [events_consumer(bus, servicer, storage, clock)]
    return ServiceApp(
        settings=settings,
        db=storage.db,
        servicers=[Servicer(servicer,
                            orchestration_service_pb2_grpc.add_OrchestrationServiceServicer_to_server,
                            SERVICE),
                   dead_letter_servicer(transactions, storage.dead_letters,
                                        {**outbox_replays(facts, erasures),
                                         INBOX_SOURCE: replay_events(events_received),
                                         **bus_replays(*consumers)},
                                        f"{settings.service}.cjo")],
        authenticator=remote_authenticator(settings),
        service_only_methods={f"/{SERVICE}/HandleEvents"},
        background=[signals.run, events.run, steps.run, schedules.run, facts.run,
                    erasures.run, storage.retention(env, settings.service, RETENTION).run,
                    *consumer_workers(consumers, storage.outbox)],
        migrate=storage.migrate,
        gauges=storage.queue_gauges(clock, QUEUES),
    )
