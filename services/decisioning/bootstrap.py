"""Wires the decisioning service: storage, authentication, the servicer and the learning
worker."""

from __future__ import annotations

import secrets
from dataclasses import replace
from datetime import timedelta
from functools import partial
from pathlib import Path

from cjo.decisioning.v1 import decisioning_service_pb2_grpc
from cjo_decisioning.adapters.gauges import PROBE as QUEUES
from cjo_decisioning.adapters.identity import ProfileBook
from cjo_decisioning.adapters.retention import RULES as RETENTION
from cjo_decisioning.adapters.tables import metadata
from cjo_decisioning.api.outcomes import bus_watermarks
from cjo_decisioning.api.servicer import SERVICE, SERVICE_ONLY_METHODS, DecisioningServicer
from cjo_decisioning.service_layer.decide import Engine
from cjo_decisioning.service_layer.learning import LearningRound, LearningSettings
from cjo_decisioning.settings import load_decisioning_settings
from cjo_decisioning.workers.learning import LearningWorker
from cjo_platform.bus import load_bus
from cjo_platform.bus.consumer import consumer_workers
from cjo_platform.clock import Clock, SystemClock
from cjo_platform.config import Env, ServiceSettings
from cjo_platform.content_catalog import ContentCatalog
from cjo_platform.decisioning import decisioning_events_consumer, decisioning_facts_consumer
from cjo_platform.rpc.dead_letters import bus_replays, dead_letter_servicer
from cjo_platform.rpc.server import ServiceApp, Servicer
from cjo_platform.service import open_storage, remote_authenticator

MIGRATIONS = Path(__file__).parent / "adapters" / "migrations"


def new_id(clock: Clock) -> str:
    """A decision id: the clock's milliseconds (12 hex digits) then 80 random bits (20 hex
    digits), unguessable and short enough for message metadata. The time in front only puts a
    batch's decisions next to each other in the log's primary key: with 80 random bits alone
    every insert landed on its own page of that index, and on SQLite a 100-decision batch wrote
    ~100 more pages once the log outgrew the page cache (2-3 ms of CPU per batch at 100,000
    decisions, issue 14). Nothing reads the time back."""
    return f"{int(clock.now().timestamp() * 1000):012x}{secrets.token_hex(10)}"


def build(settings: ServiceSettings, env: Env, clock: Clock | None = None) -> ServiceApp:
    clock = clock or SystemClock()
    storage = open_storage(settings, metadata, MIGRATIONS, clock)
    engine = load_decisioning_settings(env)
    timeout = engine.peer_timeout_seconds
    learning = load_learning_settings(env)
    # With the event bus (CJO_EVENT_BUS), delivery's message facts and identity's events arrive
    # from JetStream into the servicer's own RecordMessageFacts and RecordEvents.
    bus = load_bus(env)
    if bus is not None:
        # Identity's watermark comes as markers through the partitions, which the consumer
        # passes on: it holds once every partition has (one left from the gRPC days does not).
        learning = replace(learning, bus_partitions=bus.settings.partitions)
    learner = LearningWorker(LearningRound(storage.transactions, learning),
                             learning.poll_seconds)
    servicer = DecisioningServicer(
        storage.transactions, ContentCatalog(settings, timeout), ProfileBook(settings, timeout),
        Engine(partial(new_id, clock), seed=engine.seed, draws=engine.draws,
               model_refresh_seconds=engine.model_refresh_seconds))
    consumers = [] if bus is None else [
        decisioning_facts_consumer(bus, servicer.RecordMessageFacts, storage.db,
                                   storage.dead_letters, clock,
                                   linger=settings.facts_linger_seconds),
        decisioning_events_consumer(bus, servicer.RecordEvents, storage.db,
                                    storage.dead_letters, clock,
                                    linger=settings.facts_linger_seconds,
                                    on_watermark=bus_watermarks(storage.transactions,
                                                                bus.settings.partitions))]
    return ServiceApp(
        settings=settings,
        db=storage.db,
        servicers=[Servicer(servicer,
                            decisioning_service_pb2_grpc.add_DecisioningServiceServicer_to_server,
                            SERVICE),
                   dead_letter_servicer(storage.transactions, storage.dead_letters,
                                        bus_replays(*consumers),
                                        f"{settings.service}.cjo")],
        authenticator=remote_authenticator(settings),
        service_only_methods=SERVICE_ONLY_METHODS,
        background=[learner.run, storage.retention(env, settings.service, RETENTION).run,
                    *consumer_workers(consumers, storage.outbox)],
        migrate=storage.migrate,
        gauges=storage.queue_gauges(clock, QUEUES),
    )


# A smaller maximum hold than a few reports' interval drops and re-creates the watermark
# between identity's reports (review rmark2).
_MIN_WATERMARK_HOLD_HOURS = 0.1


def load_learning_settings(env: Env) -> LearningSettings:
    hold = env.float("CJO_DECISIONING_WATERMARK_MAX_HOLD_HOURS", 24.0, minimum=0.0)
    if 0 < hold < _MIN_WATERMARK_HOLD_HOURS:
        env.errors.append("CJO_DECISIONING_WATERMARK_MAX_HOLD_HOURS must be 0 (watermarks off) "
                          f"or at least {_MIN_WATERMARK_HOLD_HOURS:g}")
    return LearningSettings(
        batch=env.int("CJO_DECISIONING_LEARN_BATCH", 1000, minimum=1, maximum=1000),
        lease=timedelta(seconds=env.float("CJO_DECISIONING_LEARN_LEASE_SECONDS", 60.0,
                                          minimum=1.0)),
        # Closed reward windows are found by this poll.
        poll_seconds=env.float("CJO_DECISIONING_LEARN_POLL_SECONDS", 1.0, minimum=0.01),
        # A window is learned as lapsed only this long after it closed, so a conversion inside
        # it that identity forwards late (outbox polls, retries, restarts) still rewards.
        reward_grace=timedelta(seconds=env.float("CJO_DECISIONING_REWARD_GRACE_SECONDS", 300.0,
                                                 minimum=0.0)),
        # A forwarding watermark that stopped moving (identity's forwarder down, behind, or
        # gone) holds lapsed windows at most this long (domain.watermarks); 0: watermarks off.
        max_watermark_hold=timedelta(hours=hold),
        # Forwarders re-send an item within minutes (retries, restarts): its id is kept for
        # dedupe this long, then pruned by the learning worker.
        received_retention=timedelta(hours=env.float(
            "CJO_DECISIONING_RECEIVED_RETENTION_HOURS", 24.0, minimum=1.0)))
