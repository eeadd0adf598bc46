"""Wires the delivery service: storage, the providers, the sender, the outbox forwarders, the
engagement listener and the servicer."""

from __future__ import annotations

import hashlib
import hmac
import math
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import replace
from datetime import timedelta
from functools import partial
from pathlib import Path
from typing import Any

from cjo.delivery.v1 import delivery_service_pb2_grpc
from cjo_delivery.adapters import destinations
from cjo_delivery.adapters.bus import erasures_consumer
from cjo_delivery.adapters.consent import IdentityConsent
from cjo_delivery.adapters.engagement_http import EngagementListener, Tracking
from cjo_delivery.adapters.gauges import PROBE as QUEUES
from cjo_delivery.adapters.identity_events import identity_events_forwarder
from cjo_delivery.adapters.inbox import INBOX_SIGNAL, InboxHub, InboxProvider
from cjo_delivery.adapters.provider_factory import ProviderFactory
from cjo_delivery.adapters.retention import RULES as RETENTION
from cjo_delivery.adapters.routes import Routes
from cjo_delivery.adapters.smtp import SmtpProvider, SmtpSettings
from cjo_delivery.adapters.tables import metadata
from cjo_delivery.adapters.webhooks.receiver import ProviderWebhooks
from cjo_delivery.api.servicer import DeliveryServicer
from cjo_delivery.domain.engagement import Engagement
from cjo_delivery.domain.messages import Message
from cjo_delivery.domain.providers import valid_from
from cjo_delivery.service_layer.engagement import record_engagement
from cjo_delivery.service_layer.messages import QUEUED_SIGNAL
from cjo_delivery.service_layer.provider_webhooks import ProviderReports
from cjo_delivery.service_layer.secrets import SEALED
from cjo_delivery.service_layer.send_round import (
    CALLS_END,
    MESSAGE_RETRY,
    SenderSettings,
    SendRound,
)
from cjo_delivery.workers.sender import Sender
from cjo_platform.backoff import RetryPolicy
from cjo_platform.bus import load_bus
from cjo_platform.bus.consumer import consumer_workers
from cjo_platform.clock import Clock, SystemClock
from cjo_platform.config import Env, ServiceSettings
from cjo_platform.db.signals import Signals
from cjo_platform.db.unit_of_work import UnitOfWork
from cjo_platform.decisioning import decisioning_facts_forwarder
from cjo_platform.facts import facts_forwarder
from cjo_platform.rpc.dead_letters import bus_replays, dead_letter_servicer, outbox_replays
from cjo_platform.rpc.server import ServiceApp, Servicer
from cjo_platform.secret_box import RESEAL_COMMAND, load_secret_box, reseal_command
from cjo_platform.service import open_storage, remote_authenticator

MIGRATIONS = Path(__file__).parent / "adapters" / "migrations"
# The keys that encrypt the providers' stored secrets (cjo_platform.secret_box).
SECRET_KEYS = "CJO_DELIVERY_SECRET_KEYS"
SERVICE = "cjo.delivery.v1.DeliveryService"

# A send to the deployment's SMTP server is up to eight round trips (connect, greeting, EHLO,
# STARTTLS, TLS handshake, EHLO, AUTH, the pipelined MAIL/RCPT/DATA), each bounded by the
# timeout, then the content's reply, by the data timeout (SenderSettings.longest_send). Without
# PIPELINING or with AUTH mechanisms failing in turn it takes more: such a send is cut off when
# the lease has too little left (send_round.CALLS_END, send_round.hand_over_share).
_SMTP_TIMEOUTS = 8
# The lease leaves at least this share of itself for messages to wait for a send slot after
# their claim (send_round.hand_over_share): longest_send must fit in CALLS_END minus it.
_HAND_OVER_AT_LEAST = 0.25


def load_smtp_settings(env: Env, connections: int) -> SmtpSettings:
    settings = SmtpSettings(
        host=env.str("CJO_SMTP_HOST", "127.0.0.1"),
        port=env.int("CJO_SMTP_PORT", 1025, minimum=1, maximum=65535),
        sender=env.str("CJO_SMTP_FROM", "cjo <no-reply@cjo.localhost>"),
        starttls=env.bool("CJO_SMTP_STARTTLS", False),
        username=env.str("CJO_SMTP_USERNAME", ""),
        password=env.str("CJO_SMTP_PASSWORD", ""),
        timeout_seconds=env.float("CJO_SMTP_TIMEOUT_SECONDS", 10.0, minimum=0.1),
        data_timeout_seconds=env.float("CJO_SMTP_DATA_TIMEOUT_SECONDS", 60.0, minimum=0.1),
        connections=connections,
        # The operator's own relay, on the deployment's network as often as not.
        allow_private=True,
    )
    if not valid_from(settings.sender):
        env.errors.append("CJO_SMTP_FROM must be one address like "
                          "'Brand <news@brand.example>'")
    if settings.username and not settings.password:
        env.errors.append("CJO_SMTP_PASSWORD is required when CJO_SMTP_USERNAME is set")
    return settings


def load_sender_settings(env: Env) -> SenderSettings:
    base = env.float("CJO_DELIVERY_RETRY_BASE_SECONDS", 30.0, minimum=0.0)
    return SenderSettings(
        poll_seconds=env.float("CJO_DELIVERY_POLL_SECONDS", 0.5, minimum=0.01),
        batch_size=env.int("CJO_DELIVERY_BATCH_SIZE", 100, minimum=1, maximum=1000),
        concurrency=(concurrency := env.int("CJO_DELIVERY_CONCURRENCY", 8, minimum=1,
                                            maximum=256)),
        workspace_share=env.int("CJO_DELIVERY_WORKSPACE_SHARE", max(1, concurrency // 4),
                                minimum=1, maximum=256),
        rounds=env.int("CJO_DELIVERY_ROUNDS", 4, minimum=1, maximum=32),
        lease=timedelta(seconds=env.float("CJO_DELIVERY_LEASE_SECONDS", 300.0, minimum=1.0)),
        max_lease_expiries=env.int("CJO_DELIVERY_MAX_LEASE_EXPIRIES", 3, minimum=1,
                                   maximum=100),
        retry=RetryPolicy(
            max_attempts=env.int("CJO_DELIVERY_MAX_ATTEMPTS", 5, minimum=1, maximum=100),
            base_delay=timedelta(seconds=base),
            max_delay=timedelta(seconds=env.float("CJO_DELIVERY_RETRY_MAX_SECONDS", 3600.0,
                                                  minimum=base)),
            jitter=MESSAGE_RETRY.jitter,
        ),
        breaker_failures=env.int("CJO_DELIVERY_BREAKER_FAILURES", 5, minimum=1, maximum=1000),
        breaker_cool_down=timedelta(seconds=env.float("CJO_DELIVERY_BREAKER_COOL_DOWN_SECONDS",
                                                      30.0, minimum=0.0)),
        forward_to_decisioning=env.bool("CJO_DELIVERY_FORWARD_TO_DECISIONING", True),
        consent_patience=timedelta(milliseconds=env.float("CJO_DELIVERY_CONSENT_PATIENCE_MS",
                                                          1000.0, minimum=0.0,
                                                          maximum=60000.0)),
        # Sent messages wait for their record no longer than a second: a replica that dies
        # meanwhile leaves them to be sent again once their lease ends.
        record_linger=timedelta(milliseconds=env.float("CJO_DELIVERY_RECORD_LINGER_MS", 40.0,
                                                       maximum=1000.0)),
    )


def load_tracking(settings: ServiceSettings, env: Env) -> tuple[Tracking, int] | None:
    """The engagement listener's links and port; None when CJO_DELIVERY_TRACKING_PORT is unset
    (no tracking links, no listener)."""
    port_text = env.str("CJO_DELIVERY_TRACKING_PORT", "")
    if not port_text:
        return None
    if not port_text.isdigit() or int(port_text) > 65535:
        env.errors.append("CJO_DELIVERY_TRACKING_PORT must be a port number")
        return None
    port = int(port_text)
    base = env.str("CJO_DELIVERY_TRACKING_URL", f"http://127.0.0.1:{port}")
    if not base.startswith(("http://", "https://")):
        env.errors.append("CJO_DELIVERY_TRACKING_URL must be an http(s) URL")
    secret = env.str("CJO_DELIVERY_TRACKING_SECRET", "")
    if secret and len(secret) < 24:
        env.errors.append("CJO_DELIVERY_TRACKING_SECRET must be at least 24 characters")
    # Derived from the service token unless given, so every replica signs alike.
    key = secret.encode() if secret else hmac.new(
        settings.service_token.encode(), b"cjo delivery tracking", hashlib.sha256).digest()
    return Tracking(base, key), port


def build(settings: ServiceSettings, env: Env, clock: Clock | None = None) -> ServiceApp:
    clock = clock or SystemClock()
    storage = open_storage(settings, metadata, MIGRATIONS, clock)
    secret_box = load_secret_box(env, settings.environment, SECRET_KEYS, SEALED.what)
    sending = load_sender_settings(env)
    smtp = load_smtp_settings(env, connections=sending.concurrency)
    longest = _SMTP_TIMEOUTS * smtp.timeout_seconds + smtp.data_timeout_seconds
    sending = replace(sending, longest_send=timedelta(seconds=longest))
    shortest = longest / (CALLS_END - _HAND_OVER_AT_LEAST)
    if sending.lease.total_seconds() < shortest:
        env.errors.append(
            f"CJO_DELIVERY_LEASE_SECONDS must be at least ({_SMTP_TIMEOUTS} x "
            f"CJO_SMTP_TIMEOUT_SECONDS + CJO_SMTP_DATA_TIMEOUT_SECONDS) / "
            f"{CALLS_END - _HAND_OVER_AT_LEAST:g} = {math.ceil(shortest)} s, or a slow send "
            "would be cut off before its timeouts")
    provider = SmtpProvider(smtp, clock)
    # Workspaces' providers dial only public addresses unless the operator allows private ones.
    private_destinations = env.bool(destinations.SETTING, False)
    # At most one HTTP connection per provider call in flight (CJO_DELIVERY_CONCURRENCY).
    factory = ProviderFactory(clock, smtp_connections=max(1, sending.concurrency // 2),
                              http_connections=sending.concurrency,
                              allow_private=private_destinations)
    consent = (IdentityConsent(settings)
               if env.bool("CJO_DELIVERY_CHECK_CONSENT", True) else None)
    tracking = load_tracking(settings, env)
    hub = InboxHub()
    transactions = storage.transactions
    # Wake-ups that reach every replica (LISTEN/NOTIFY on PostgreSQL); polls stay the net.
    signals = Signals(storage.db)
    signals.on(INBOX_SIGNAL, hub.on_signal)
    routes = Routes(provider, breaker_failures=sending.breaker_failures,
                    breaker_cool_down=sending.breaker_cool_down, build_provider=factory.build,
                    inbox=InboxProvider(transactions, signals))
    sender = Sender(SendRound(transactions, routes, clock, sending, consent=consent,
                              links=tracking[0].links if tracking else None,
                              secret_box=secret_box, signals=signals))
    signals.on(QUEUED_SIGNAL, lambda _: sender.wake())

    def announce_queued(uow: UnitOfWork, workspace_id: str, queued: Sequence[Message]) -> None:
        # This process's sender learns what was queued before the wake-up reaches it.
        uow.after_commit(partial(sender.expect, workspace_id, queued))
        signals.send(uow, QUEUED_SIGNAL)

    # CJO_EVENT_BUS set: the facts go to JetStream instead of the receivers' RPCs.
    bus = load_bus(env)
    forwarder = facts_forwarder(settings, storage.db, storage.outbox, bus=bus)
    events = identity_events_forwarder(settings, storage.db, storage.outbox, bus=bus)
    # Exposures of decisions, opens and clicks for decisioning (rewards, send times). With
    # CJO_DELIVERY_FORWARD_TO_DECISIONING off none is written; rows written before still drain.
    outcomes = decisioning_facts_forwarder(settings, storage.db, storage.outbox, bus=bus)

    async def record(engagement: Engagement) -> bool:
        return await transactions.run(lambda uow: record_engagement(
            uow, engagement, forward_to_decisioning=sending.forward_to_decisioning))

    async def send_messages() -> None:
        await sender.run()

    async def forward_facts() -> None:
        await forwarder.run()

    async def forward_events() -> None:
        await events.run()

    async def forward_outcomes() -> None:
        await outcomes.run()

    background: list[Callable[[], Coroutine[Any, Any, None]]] = [
        signals.run, send_messages, forward_facts, forward_events, forward_outcomes,
        storage.retention(env, settings.service, RETENTION).run]
    if tracking is not None:
        # Reports of real providers; SNS certificates are fetched with the providers' client.
        reports = ProviderReports(transactions, secret_box,
                                  ProviderWebhooks(factory.client, clock),
                                  forward_to_decisioning=sending.forward_to_decisioning)
        listener = EngagementListener(tracking[0], record, settings.host, tracking[1],
                                      reports)
        background.append(listener.run)

    servicer = DeliveryServicer(transactions, announce_queued,
                                tracking[0].status_url if tracking else None, hub, secret_box,
                                private_destinations=private_destinations)
    # With the bus, orchestration's erasures arrive from JetStream into this EraseProfiles.
    consumers = [] if bus is None else [erasures_consumer(bus, servicer, storage, clock)]
    background.extend(consumer_workers(consumers, storage.outbox))
    return ServiceApp(
        settings=settings,
        db=storage.db,
        servicers=[Servicer(servicer,
                            delivery_service_pb2_grpc.add_DeliveryServiceServicer_to_server,
                            SERVICE),
                   dead_letter_servicer(transactions, storage.dead_letters,
                                        {**outbox_replays(forwarder, events, outcomes),
                                         **bus_replays(*consumers)},
                                        f"{settings.service}.cjo")],
        authenticator=remote_authenticator(settings),
        service_only_methods={f"/{SERVICE}/EraseProfiles"},
        background=background,
        # Schema only: stored secrets are rewritten by `reseal-secrets`, never by the
        # initContainer, while pods that may not read the new form still run.
        migrate=storage.migrate,
        gauges=storage.queue_gauges(clock, QUEUES),
        commands={RESEAL_COMMAND: partial(reseal_command, transactions, secret_box, SEALED)},
        on_stop=[provider.close, routes.close, factory.close],
    )
