"""The unit of work: one transaction per use-case, the first answer for every repeat of a
request id (concurrent repeats included), conflict retries, outbox rows and wake-ups only after
commit."""

from __future__ import annotations

import asyncio
import uuid

import pytest
from google.protobuf import wrappers_pb2
from sqlalchemy import Column, MetaData, String, Table, func, select
from sqlalchemy.exc import IntegrityError

from cjo_platform.clock import ManualClock
from cjo_platform.db import Database
from cjo_platform.db.idempotency import RequestLog, define_request_log
from cjo_platform.db.outbox import Outbox, define_outbox
from cjo_platform.db.unit_of_work import Transactions, UnitOfWork
from cjo_platform.errors import FailedPrecondition, InvalidArgument, NotFound
from support import Backend


def make(backend: Backend) -> tuple[Transactions, Table]:
    metadata = MetaData()
    things = Table("things", metadata, Column("id", String(64), primary_key=True),
                   Column("name", String(64), nullable=False, unique=True))
    outbox, requests = define_outbox(metadata), define_request_log(metadata)
    url = backend.env().get("CJO_DATABASE_URL", f"sqlite:///{backend.data_dir}/uow.db")
    db = Database(url, schema=backend.schema_prefix + "uow")
    db.create_schema()
    metadata.create_all(db.engine)
    clock = ManualClock()
    return Transactions(db, clock, Outbox(outbox, clock), RequestLog(requests, clock)), things


def count(transactions: Transactions, table: Table) -> int:
    return transactions.run_sync(
        lambda uow: int(uow.session.execute(select(func.count()).select_from(table)).scalar_one()))


async def test_concurrent_repeats_of_one_request_id_all_get_the_first_answer(
        backend: Backend) -> None:
    transactions, things = make(backend)
    request = wrappers_pb2.StringValue(value="create thing")

    def create(uow: UnitOfWork) -> wrappers_pb2.StringValue:
        # A fresh id each run: only one run may ever commit.
        thing_id = uuid.uuid4().hex
        uow.session.execute(things.insert().values(id=thing_id, name="thing"))
        return wrappers_pb2.StringValue(value=thing_id)

    answers = await asyncio.gather(*(transactions.once(
        workspace_id="ws", method="/Create", request_id="r-1", request=request,
        response_type=wrappers_pb2.StringValue, work=create) for _ in range(8)))
    assert len({a.value for a in answers}) == 1
    assert count(transactions, things) == 1
    # A later repeat gets the same answer; a different request with the id is refused.
    again = await transactions.once(workspace_id="ws", method="/Create", request_id="r-1",
                                    request=request, response_type=wrappers_pb2.StringValue,
                                    work=create)
    assert again == answers[0]
    with pytest.raises(FailedPrecondition):
        await transactions.once(workspace_id="ws", method="/Create", request_id="r-1",
                                request=wrappers_pb2.StringValue(value="other"),
                                response_type=wrappers_pb2.StringValue, work=create)
    # The id is per workspace and method.
    other = await transactions.once(workspace_id="ws-2", method="/Create", request_id="r-1",
                                    request=request, response_type=wrappers_pb2.StringValue,
                                    work=lambda uow: wrappers_pb2.StringValue(value="second"))
    assert other.value == "second"


async def test_a_failed_use_case_keeps_nothing_and_its_request_id_can_run_again(
        backend: Backend) -> None:
    transactions, things = make(backend)
    request = wrappers_pb2.StringValue(value="x")
    woken: list[str] = []

    def failing(uow: UnitOfWork) -> wrappers_pb2.StringValue:
        uow.session.execute(things.insert().values(id="a", name="a"))
        uow.publish("topic", "ws", [(b"payload", "")])
        uow.after_commit(lambda: woken.append("failing"))
        raise NotFound("nothing here")

    with pytest.raises(NotFound):
        await transactions.once(workspace_id="ws", method="/M", request_id="r", request=request,
                                response_type=wrappers_pb2.StringValue, work=failing)
    assert count(transactions, things) == 0
    assert transactions.outbox is not None
    assert count(transactions, transactions.outbox.table) == 0
    assert woken == []

    def working(uow: UnitOfWork) -> wrappers_pb2.StringValue:
        uow.publish("topic", "ws", [(b"payload", "")])
        uow.after_commit(lambda: woken.append("working"))
        return wrappers_pb2.StringValue(value="done")

    answer = await transactions.once(workspace_id="ws", method="/M", request_id="r",
                                     request=request, response_type=wrappers_pb2.StringValue,
                                     work=working)
    assert answer.value == "done"
    assert woken == ["working"]
    assert count(transactions, transactions.outbox.table) == 1


async def test_a_use_case_that_lost_a_race_runs_again_and_wakes_once(backend: Backend) -> None:
    transactions, things = make(backend)
    attempts: list[int] = []
    woken: list[int] = []

    def insert_once(uow: UnitOfWork) -> str:
        attempts.append(1)
        uow.after_commit(lambda: woken.append(len(attempts)))
        if len(attempts) == 1:
            # Another writer commits the key between this attempt's read and its write: the
            # insert below is a unique violation, which rolls this attempt back.
            transactions.run_sync(lambda other: other.session.execute(
                things.insert().values(id="k", name="k")))
            uow.session.execute(things.insert().values(id="k", name="k"))
        exists = uow.session.execute(select(things.c.id).where(things.c.id == "k")).first()
        if exists is None:
            uow.session.execute(things.insert().values(id="k", name="k"))
        return "ok"

    assert await transactions.run(insert_once) == "ok"
    assert len(attempts) == 2
    assert woken == [2]  # the rolled-back attempt's wake-up never ran
    assert count(transactions, things) == 1


def test_request_ids_are_limited(sqlite_backend: Backend) -> None:
    transactions, _ = make(sqlite_backend)
    with pytest.raises(InvalidArgument) as raised:
        asyncio.run(transactions.once(
            workspace_id="ws", method="/M", request_id="r" * 129,
            request=wrappers_pb2.StringValue(), response_type=wrappers_pb2.StringValue,
            work=lambda uow: wrappers_pb2.StringValue()))
    assert raised.value.violations[0].field == "request_id"


async def test_a_constraint_that_would_fail_again_is_not_retried(backend: Backend) -> None:
    transactions, things = make(backend)
    attempts: list[int] = []

    def missing_name(uow: UnitOfWork) -> None:
        attempts.append(1)
        uow.session.execute(things.insert().values(id="k", name=None))  # NOT NULL

    with pytest.raises(IntegrityError):
        await transactions.run(missing_name)
    assert len(attempts) == 1


async def test_a_failing_wake_up_does_not_fail_a_committed_change(backend: Backend) -> None:
    transactions, things = make(backend)

    def insert(uow: UnitOfWork) -> str:
        uow.after_commit(lambda: 1 / 0)  # type: ignore[arg-type,return-value]
        uow.session.execute(things.insert().values(id="k", name="k"))
        return "ok"

    assert await transactions.run(insert) == "ok"
    assert count(transactions, things) == 1
