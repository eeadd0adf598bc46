"""Wires the content service: storage, the template cache, authentication and the servicer."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from cjo.content.v1 import content_service_pb2_grpc
from cjo_content.adapters.tables import metadata
from cjo_content.api.servicer import SERVICE, ContentServicer
from cjo_content.domain.rendering import CompiledCache
from cjo_content.service_layer.published_cache import PublishedCache
from cjo_content.service_layer.rendering import Renderer
from cjo_platform.clock import Clock, SystemClock
from cjo_platform.config import Env, ServiceSettings
from cjo_platform.db.signals import Signals
from cjo_platform.rpc.dead_letters import dead_letter_servicer
from cjo_platform.rpc.server import ServiceApp, Servicer
from cjo_platform.service import open_storage, remote_authenticator

MIGRATIONS = Path(__file__).parent / "adapters" / "migrations"


def build(settings: ServiceSettings, env: Env, clock: Clock | None = None) -> ServiceApp:
    clock = clock or SystemClock()
    storage = open_storage(settings, metadata, MIGRATIONS, clock)
    # One entry is every template of one published version (all channels, its snippets).
    cache = CompiledCache(
        max_entries=env.int("CJO_CONTENT_TEMPLATE_CACHE_ENTRIES", 2048, minimum=1))
    # What renders read from the database, kept until a change is signalled (LISTEN/NOTIFY on
    # PostgreSQL) or for at most this long (the bound on staleness when a signal is lost).
    signals = Signals(storage.db)
    published = PublishedCache(signals, clock, max_age=timedelta(
        seconds=env.float("CJO_CONTENT_PUBLISHED_CACHE_SECONDS", 2.0, minimum=0.0)))
    servicer = ContentServicer(storage.transactions,
                               Renderer(storage.transactions, cache, published))
    return ServiceApp(
        settings=settings,
        db=storage.db,
        servicers=[Servicer(servicer, content_service_pb2_grpc.add_ContentServiceServicer_to_server,
                            SERVICE),
                   # Content forwards nothing yet: its dead letters can be listed, none replayed.
                   dead_letter_servicer(storage.transactions, storage.dead_letters, {},
                                        f"{settings.service}.cjo")],
        authenticator=remote_authenticator(settings),
        background=[signals.run, storage.retention(env, settings.service).run],
        migrate=storage.migrate,
        gauges=storage.queue_gauges(clock),
    )
