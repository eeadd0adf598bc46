"""Orchestration migrations that move data: answers stored before the upgrade still answer."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from pathlib import Path

from alembic import command
from sqlalchemy import insert

from cjo.orchestration.v1 import journey_pb2
from cjo.orchestration.v1 import orchestration_service_pb2 as pb
from cjo_orchestration import adapters
from cjo_orchestration.adapters.tables import outbox, request_log
from cjo_platform.clock import ManualClock
from cjo_platform.db import Database
from cjo_platform.db.idempotency import RequestLog
from cjo_platform.db.migrations import alembic_config, upgrade
from cjo_platform.db.outbox import Outbox
from cjo_platform.db.unit_of_work import Transactions, UnitOfWork
from support import PG_URL, Backend

MIGRATIONS = Path(str(adapters.__file__)).parent / "migrations"


async def test_a_request_id_answered_before_the_upgrade_is_answered_once(
        backend: Backend) -> None:
    url = PG_URL if backend.kind == "postgresql" else f"sqlite:///{backend.data_dir}/o.db"
    backend.data_dir.mkdir(parents=True, exist_ok=True)
    db = Database(url, schema=backend.schema_prefix + "orchestration")
    try:
        db.create_schema()
        command.upgrade(alembic_config(db, MIGRATIONS), "0006")
        request = pb.CreateJourneyRequest(journey=journey_pb2.Journey(display_name="Welcome"),
                                          request_id="r-1")
        first = pb.CreateJourneyResponse(journey=journey_pb2.Journey(name="journeys/j-first"))
        with db.engine.begin() as conn:
            # The release before stored orchestration's answers under bare method names.
            conn.execute(insert(request_log).values(
                workspace_id="ws-a", method="CreateJourney", request_id="r-1",
                request_hash=hashlib.sha256(
                    request.SerializeToString(deterministic=True)).hexdigest(),
                response=first.SerializeToString(), create_time=datetime.now(UTC)))
        upgrade(db, MIGRATIONS)
        clock = ManualClock()
        transactions = Transactions(db, clock, Outbox(outbox, clock),
                                    RequestLog(request_log, clock))

        def create_again(uow: UnitOfWork) -> pb.CreateJourneyResponse:
            raise AssertionError("a repeat must not create a second journey")

        answer = await transactions.once(
            workspace_id="ws-a", method="/cjo.orchestration.v1.OrchestrationService/CreateJourney",
            request_id="r-1", request=request, response_type=pb.CreateJourneyResponse,
            work=create_again)
        assert answer == first
    finally:
        db.dispose()
