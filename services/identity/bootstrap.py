"""Wires the identity service: storage, its own API key authentication, the two servicers, the
outbox forwarders to orchestration (events), analytics (conversion and merge facts) and
decisioning (track events and merges: rewards), and the time worker (lapsing computed traits,
backfills)."""

from __future__ import annotations

from datetime import timedelta
from functools import partial
from pathlib import Path

from cjo.identity.v1 import identity_service_pb2_grpc, workspace_service_pb2_grpc
from cjo_identity.adapters.bus import engagement_consumer
from cjo_identity.adapters.gauges import PROBE as QUEUES
from cjo_identity.adapters.orchestration import events_forwarder
from cjo_identity.adapters.retention import RULES as RETENTION
from cjo_identity.adapters.tables import metadata
from cjo_identity.api import identity_servicer, workspace_servicer
from cjo_identity.api.identity_servicer import IdentityServicer
from cjo_identity.api.workspace_servicer import WorkspaceServicer
from cjo_identity.domain.events import DEFAULT_MAX_CLOCK_SKEW
from cjo_identity.service_layer.backfills import BackfillRound
from cjo_identity.service_layer.lapses import LapseRound
from cjo_identity.service_layer.settings import SEALED
from cjo_identity.service_layer.workspaces import local_key_resolver
from cjo_identity.settings import load_group_commit, load_time_settings
from cjo_identity.workers.time import TimeWorker
from cjo_platform.bus import load_bus
from cjo_platform.bus.consumer import consumer_workers
from cjo_platform.clock import Clock, SystemClock
from cjo_platform.config import Env, ServiceSettings
from cjo_platform.decisioning import (
    WATERMARK_SECONDS,
    decisioning_events_forwarder,
    decisioning_events_watermark,
)
from cjo_platform.facts import facts_forwarder
from cjo_platform.rpc.auth import Authenticator, CachingResolver
from cjo_platform.rpc.dead_letters import bus_replays, dead_letter_servicer, outbox_replays
from cjo_platform.rpc.server import ServiceApp, Servicer
from cjo_platform.secret_box import RESEAL_COMMAND, load_secret_box, reseal_command
from cjo_platform.service import open_storage

MIGRATIONS = Path(__file__).parent / "adapters" / "migrations"
# The keys that encrypt the workspaces' verification secrets (cjo_platform.secret_box).
SECRET_KEYS = "CJO_IDENTITY_SECRET_KEYS"


def build(settings: ServiceSettings, env: Env, clock: Clock | None = None) -> ServiceApp:
    clock = clock or SystemClock()
    storage = open_storage(settings, metadata, MIGRATIONS, clock)
    transactions = storage.transactions
    secret_box = load_secret_box(env, settings.environment, SECRET_KEYS, SEALED.what)
    # Identity owns the keys: it checks them in its own database instead of calling itself.
    from_database = local_key_resolver(transactions)
    resolve_key = CachingResolver(from_database, ttl=settings.api_key_cache_seconds,
                                  now=clock.now)
    # CJO_EVENT_BUS set: the events and facts go to JetStream instead of the receivers' RPCs.
    bus = load_bus(env)
    events = events_forwarder(settings, storage.db, storage.outbox, bus)
    # Conversion and merge facts share the outbox; each forwarder drains only its own topic.
    facts = facts_forwarder(settings, storage.db, storage.outbox, bus=bus)
    # Decisioning learns from the track events (its rewards): one more outbox row per event.
    to_decisioning = env.bool("CJO_IDENTITY_FORWARD_TO_DECISIONING", True)
    rewards = decisioning_events_forwarder(settings, storage.db, storage.outbox, bus=bus)
    # How far those events have been delivered, so decisioning learns no lapsed window before
    # a conversion queued here arrived (over the bus: a marker through every partition, after
    # the events it covers, which decisioning's consumer passes on once it took them).
    every = env.float("CJO_IDENTITY_WATERMARK_SECONDS", WATERMARK_SECONDS, minimum=0.05)
    watermark = [] if not to_decisioning else [decisioning_events_watermark(
        settings, storage.db, storage.outbox, poll_seconds=every, bus=bus).run]
    timing = load_time_settings(env)
    time = TimeWorker(LapseRound(transactions, timing.lapses),
                      BackfillRound(transactions, timing.backfills), timing.poll_seconds)
    # An event dated further ahead of its receive time than this is taken as received then.
    skew = env.float("CJO_IDENTITY_MAX_CLOCK_SKEW_SECONDS",
                     DEFAULT_MAX_CLOCK_SKEW.total_seconds(), minimum=0.0)
    ingest = IdentityServicer(transactions, on_backfill=time.wake,
                              forward_to_decisioning=to_decisioning,
                              max_clock_skew=timedelta(seconds=skew),
                              group_commit=load_group_commit(env), secret_box=secret_box)
    # With the bus, delivery's engagement events arrive from JetStream into the very
    # IngestEvents that delivery's forwarder calls otherwise.
    consumers = [] if bus is None else [engagement_consumer(bus, ingest, storage, clock)]
    return ServiceApp(
        settings=settings,
        db=storage.db,
        servicers=[
            Servicer(ingest, identity_service_pb2_grpc.add_IdentityServiceServicer_to_server,
                     identity_servicer.SERVICE),
            Servicer(WorkspaceServicer(transactions, from_database, resolve_key.forget_key),
                     workspace_service_pb2_grpc.add_WorkspaceServiceServicer_to_server,
                     workspace_servicer.SERVICE),
            dead_letter_servicer(transactions, storage.dead_letters,
                                 {**outbox_replays(events, facts, rewards),
                                  **bus_replays(*consumers)},
                                 f"{settings.service}.cjo"),
        ],
        authenticator=Authenticator(settings.service_token, resolve_key),
        service_only_methods=workspace_servicer.SERVICE_ONLY_METHODS,
        # With forwarding off, rows written before still drain.
        background=[events.run, facts.run, rewards.run, *watermark, time.run,
                    storage.retention(env, settings.service, RETENTION).run,
                    *consumer_workers(consumers, storage.outbox)],
        # Migration 0009 seals the verification secrets stored in plaintext with these keys.
        migrate=partial(storage.migrate, secret_box=secret_box),
        gauges=storage.queue_gauges(clock, QUEUES),
        commands={RESEAL_COMMAND: partial(reseal_command, transactions, secret_box, SEALED)},
    )
