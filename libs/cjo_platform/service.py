"""Wiring every service repeats: its database with the shared tables, and how it authenticates
callers. A service's ``bootstrap.py`` adds its own adapters and servicers on top."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import MetaData, Table

from cjo_platform.clock import Clock
from cjo_platform.config import Env, ServiceSettings
from cjo_platform.db.dead_letters import DeadLetters, define_dead_letters
from cjo_platform.db.engine import Database
from cjo_platform.db.idempotency import RequestLog, define_request_log
from cjo_platform.db.migrations import upgrade
from cjo_platform.db.outbox import Outbox, define_outbox
from cjo_platform.db.retention import RetentionWorker, Rule, retention_worker
from cjo_platform.db.unit_of_work import Transactions
from cjo_platform.errors import Unavailable
from cjo_platform.metrics import Probe, QueueGauges, outbox_probe
from cjo_platform.protobuf import from_timestamp
from cjo_platform.rpc.auth import Authenticator, CachingResolver, Principal
from cjo_platform.rpc.client import channel
from cjo_platform.rpc.scopes import Scope


def shared_tables(metadata: MetaData) -> tuple[Table, Table]:
    """Add the outbox, request-log and dead-letter tables every service has to its metadata
    (returns the first two; the dead letters are ``metadata.tables["dead_letters"]``)."""
    define_dead_letters(metadata)
    return define_outbox(metadata), define_request_log(metadata)


@dataclass
class Storage:
    """A service's database with the platform tables bound to it."""

    db: Database
    outbox: Outbox
    requests: RequestLog
    migrations: Path
    transactions: Transactions
    dead_letters: DeadLetters

    def migrate(self, **attributes: Any) -> None:
        """Migrate to the newest revision; ``attributes`` go to the data migrations (alembic's
        ``config.attributes``)."""
        upgrade(self.db, self.migrations, attributes)

    def queue_gauges(self, clock: Clock, *probes: Probe) -> QueueGauges:
        """The outbox's gauges, which every service has, and the service's own ``probes``."""
        return QueueGauges(self.db, clock, [outbox_probe(self.outbox.table), *probes])

    def retention(self, env: Env, service: str, rules: Sequence[Rule] = ()) -> RetentionWorker:
        """The worker that keeps the request log, the dead letters and ``rules``' kinds only
        as long as ``CJO_<SERVICE>_RETENTION_<KIND>_DAYS`` say (cjo_platform.db.retention)."""
        return retention_worker(env, service, self.transactions, self.requests.table,
                                self.dead_letters.table, rules)


def open_storage(settings: ServiceSettings, metadata: MetaData, migrations: Path,
                 clock: Clock) -> Storage:
    outbox_table = metadata.tables["outbox"]
    request_table = metadata.tables["request_log"]
    db = Database(settings.database_url, schema=settings.database_schema)
    dead_letters = DeadLetters(metadata.tables["dead_letters"], clock)
    outbox = Outbox(outbox_table, clock, dead_letters)
    requests = RequestLog(request_table, clock)
    return Storage(db, outbox, requests, migrations, Transactions(db, clock, outbox, requests),
                   dead_letters)


def remote_authenticator(settings: ServiceSettings) -> Authenticator:
    """Authenticates API keys by asking identity (which owns workspaces), with a cache."""
    from cjo.identity.v1 import workspace_service_pb2, workspace_service_pb2_grpc

    async def resolve(secret: str) -> Principal | None:
        import grpc

        # The generated *_pb2_grpc modules carry no annotations (no .pyi is generated for them).
        stub = workspace_service_pb2_grpc.WorkspaceServiceStub(  # type: ignore[no-untyped-call]
            channel(settings.peer("identity")))
        try:
            reply = await stub.AuthenticateApiKey(
                workspace_service_pb2.AuthenticateApiKeyRequest(secret=secret),
                metadata=(("authorization", f"Bearer {settings.service_token}"),),
                timeout=5.0,
            )
        except grpc.aio.AioRpcError as exc:
            if exc.code() == grpc.StatusCode.UNAUTHENTICATED:
                return None
            raise Unavailable("cannot verify the API key right now: identity did not answer",
                              reason="AUTH_UNAVAILABLE") from exc
        return Principal(workspace_id=reply.workspace_id, key_id=reply.key_id, is_service=False,
                         scope=Scope.of(reply.scope),
                         expire_time=(from_timestamp(reply.expire_time)
                                      if reply.HasField("expire_time") else None))

    return Authenticator(settings.service_token,
                         CachingResolver(resolve, ttl=settings.api_key_cache_seconds))
