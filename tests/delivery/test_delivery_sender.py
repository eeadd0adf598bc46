"""The sender against a real SMTP server: retries, permanent failures, crashes and shutdowns."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import grpc
import pytest
from delivery_support import (
    SmtpSink,
    a_send_round_passed,
    delivery_app,
    rendered_email,
    send_request,
    smtp_server,
)
from sqlalchemy import event

from cjo.delivery.v1 import delivery_service_pb2 as pb
from cjo.delivery.v1 import delivery_service_pb2_grpc as pb_grpc
from cjo.delivery.v1 import message_pb2
from cjo_delivery.adapters import repository
from cjo_delivery.adapters.tables import messages
from cjo_delivery.domain.messages import Channel, MessageStatus, NewMessage
from cjo_delivery.domain.sending import Transition, after_success
from cjo_platform.clock import ManualClock
from support import Backend, as_service, eventually, free_port, serving

WS = as_service("ws-a")
QUEUED = message_pb2.MESSAGE_STATUS_QUEUED
SENDING = message_pb2.MESSAGE_STATUS_SENDING
SENT = message_pb2.MESSAGE_STATUS_SENT
FAILED = message_pb2.MESSAGE_STATUS_FAILED
BOUNCED = message_pb2.MESSAGE_STATUS_BOUNCED
AFTER_ANY_BACKOFF = timedelta(hours=2)


async def get(stub: pb_grpc.DeliveryServiceStub, name: str) -> message_pb2.Message:
    return (await stub.GetMessage(pb.GetMessageRequest(name=name), metadata=WS)).message


async def reaches(stub: pb_grpc.DeliveryServiceStub, name: str, status: int,
                  attempts: int) -> message_pb2.Message:
    async def check() -> message_pb2.Message | None:
        message = await get(stub, name)
        return message if (message.status, message.attempts) == (status, attempts) else None

    found = await eventually(check)
    assert isinstance(found, message_pb2.Message)
    return found


async def test_server_down_at_first_is_retried_and_delivered_once(backend: Backend) -> None:
    clock = ManualClock()
    port = free_port()  # nothing listens here yet
    app = delivery_app(backend, port, clock)
    async with serving(app) as address, grpc.aio.insecure_channel(address) as ch:
        stub = pb_grpc.DeliveryServiceStub(ch)
        name = (await stub.SendMessage(send_request("k1"), metadata=WS)).message.name
        waiting = await reaches(stub, name, QUEUED, 1)
        assert f"SMTP server 127.0.0.1:{port}" in waiting.error

        with smtp_server(SmtpSink(), port) as sink:
            await a_send_round_passed(stub)  # up again, but the backoff has not run out
            assert (await get(stub, name)).attempts == 1
            clock.advance(AFTER_ANY_BACKOFF)
            sent = await reaches(stub, name, SENT, 2)
            assert sent.error == ""
            await a_send_round_passed(stub)
    assert len(sink.received) == 1


async def test_a_4xx_answer_is_retried_and_delivered_once(backend: Backend) -> None:
    clock = ManualClock()
    port = free_port()
    with smtp_server(SmtpSink(data_replies=["451 4.3.0 try later"]), port) as sink:
        app = delivery_app(backend, port, clock)
        async with serving(app) as address, grpc.aio.insecure_channel(address) as ch:
            stub = pb_grpc.DeliveryServiceStub(ch)
            name = (await stub.SendMessage(send_request("k1"), metadata=WS)).message.name
            waiting = await reaches(stub, name, QUEUED, 1)
            assert waiting.error == "451 4.3.0 try later"
            clock.advance(AFTER_ANY_BACKOFF)
            await reaches(stub, name, SENT, 2)
            await a_send_round_passed(stub)
    assert sink.data_attempts == 2
    assert len(sink.received) == 1


async def test_a_5xx_answer_fails_for_good_with_the_servers_words(backend: Backend) -> None:
    clock = ManualClock()
    port = free_port()
    sink = SmtpSink(refuse={"gone@example.com": "550 5.1.1 <gone@example.com>: no such user"},
                    data_replies=["554 5.7.1 rejected as spam"])
    with smtp_server(sink, port):
        app = delivery_app(backend, port, clock)
        async with serving(app) as address, grpc.aio.insecure_channel(address) as ch:
            stub = pb_grpc.DeliveryServiceStub(ch)
            gone = (await stub.SendMessage(send_request("k1", "gone@example.com"),
                                           metadata=WS)).message.name
            refused = await reaches(stub, gone, BOUNCED, 1)  # a hard bounce
            assert refused.error == ("recipient refused: 550 5.1.1 <gone@example.com>: "
                                     "no such user")
            spam = (await stub.SendMessage(send_request("k2", "ada@example.com"),
                                           metadata=WS)).message.name
            rejected = await reaches(stub, spam, FAILED, 1)
            assert rejected.error == "554 5.7.1 rejected as spam"

            clock.advance(AFTER_ANY_BACKOFF)
            await a_send_round_passed(stub)  # failed is final: no further attempt
            assert (await get(stub, gone)).attempts == 1
            assert (await get(stub, spam)).attempts == 1
    assert sink.received == []
    assert sink.data_attempts == 1


async def test_transient_failures_end_after_the_last_attempt(backend: Backend) -> None:
    clock = ManualClock()
    app = delivery_app(backend, free_port(), clock, CJO_DELIVERY_MAX_ATTEMPTS="3")
    async with serving(app) as address, grpc.aio.insecure_channel(address) as ch:
        stub = pb_grpc.DeliveryServiceStub(ch)
        name = (await stub.SendMessage(send_request("k1"), metadata=WS)).message.name
        for attempt in (1, 2):
            await reaches(stub, name, QUEUED, attempt)
            clock.advance(AFTER_ANY_BACKOFF)
        failed = await reaches(stub, name, FAILED, 3)
        assert "SMTP server" in failed.error


async def test_a_message_left_sending_by_a_crash_is_delivered_after_its_lease(
        backend: Backend) -> None:
    clock = ManualClock()
    port = free_port()
    with smtp_server(SmtpSink(), port) as sink:
        app = delivery_app(backend, port, clock)
        await app.db.run(app.migrate)
        now = clock.now()
        content = rendered_email(subject="Left behind").SerializeToString()
        row = {"workspace_id": "ws-a", "idempotency_key": "", "profile_id": "p1",
               "address": "ada@example.com", "channel": "email", "content": content,
               "journey_id": "", "enrollment_id": "", "status": "sending", "attempts": 1,
               "error": "", "provider_message_id": "", "next_attempt_time": now,
               "traceparent": "", "create_time": now, "update_time": now}

        def crashed() -> None:
            # Two senders died mid-send: one lease has run out, the other has not.
            with app.db.transaction() as session:
                session.execute(messages.insert(), [
                    {**row, "message_id": "expired", "idempotency_key": "k1",
                     "lease_until": now - timedelta(seconds=1)},
                    {**row, "message_id": "leased", "idempotency_key": "k2",
                     "lease_until": now + timedelta(minutes=5)},
                ])

        await app.db.run(crashed)
        async with serving(app) as address, grpc.aio.insecure_channel(address) as ch:
            stub = pb_grpc.DeliveryServiceStub(ch)
            sent = await reaches(stub, "messages/expired", SENT, 2)
            assert sent.provider_message_id == "<expired@cjo>"
            await a_send_round_passed(stub)  # a live lease is respected
            assert (await get(stub, "messages/leased")).status == SENDING
            clock.advance(timedelta(minutes=6))
            await reaches(stub, "messages/leased", SENT, 2)
    assert [m["Message-ID"] for m in sink.received] == ["<expired@cjo>", "<leased@cjo>"]
    assert sink.received[0]["Subject"] == "Left behind"


async def test_a_sender_whose_lease_ran_out_cannot_overwrite_its_successor(
        backend: Backend) -> None:
    clock = ManualClock()
    app = delivery_app(backend, free_port(), clock)
    await app.db.run(app.migrate)
    new = NewMessage(idempotency_key="k1", profile_id="p1", address="ada@example.com",
                     channel=Channel.EMAIL, content=rendered_email().SerializeToString(),
                     journey_id="", enrollment_id="")

    def scenario() -> tuple[bool, bool, int]:
        with app.db.transaction() as session:
            repository.queue_messages(session, "ws-a", [new], clock.now(), "", lambda: "m1")
        lease = timedelta(minutes=5)
        with app.db.transaction() as session:
            [slow] = repository.claim_due(session, clock.now(), clock.now() + lease, 10,
                                          holder="test")
            assert repository.claim_due(session, clock.now(), clock.now() + lease, 10,
                                        holder="test") == []
        clock.advance(lease + timedelta(seconds=1))
        with app.db.transaction() as session:
            [successor] = repository.claim_due(session, clock.now(), clock.now() + lease, 10,
                                               holder="test")
        with app.db.transaction() as session:
            late = repository.record(session, slow, after_success(slow.attempts, "slow"),
                                     clock.now())
            current = repository.record(session, successor,
                                        after_success(successor.attempts, "successor"),
                                        clock.now())
            stored = repository.get_message(session, "ws-a", "m1")
        assert stored is not None and stored.provider_message_id == "successor"
        return late, current, successor.attempts

    try:
        assert await app.db.run(scenario) == (False, True, 2)
    finally:
        app.db.dispose()


async def test_shutdown_finishes_the_send_under_way_and_requeues_the_rest(
        backend: Backend) -> None:
    clock = ManualClock()
    port = free_port()
    with smtp_server(SmtpSink(delay=1.5), port) as sink:
        app = delivery_app(backend, port, clock, CJO_DELIVERY_CONCURRENCY="1")
        async with serving(app) as address, grpc.aio.insecure_channel(address) as ch:
            stub = pb_grpc.DeliveryServiceStub(ch)
            reply = await stub.BatchSendMessages(pb.BatchSendMessagesRequest(requests=[
                send_request(f"k{i}", f"user{i}@example.com") for i in range(3)]), metadata=WS)
            names = [r.message.name for r in reply.results]
            await eventually(lambda: sink.data_attempts >= 1)
        # Stopped while an email was in the server's hands: it was finished, the rest waits.
        assert 1 <= len(sink.received) < 3

        sink.delay = 0.0
        app = delivery_app(backend, port, clock)
        async with serving(app) as address, grpc.aio.insecure_channel(address) as ch:
            stub = pb_grpc.DeliveryServiceStub(ch)
            # The clock stands still, so nothing waits for a lease; and the attempts that were
            # never made were not counted.
            attempts = [(await reaches(stub, name, SENT, 1)).attempts for name in names]
            assert attempts == [1, 1, 1]
    assert sorted(m["To"] for m in sink.received) == [
        "user0@example.com", "user1@example.com", "user2@example.com"]


async def test_outcomes_are_recorded_in_bulk_unless_a_successor_took_one_over(
        backend: Backend) -> None:
    clock = ManualClock()
    app = delivery_app(backend, free_port(), clock)
    await app.db.run(app.migrate)
    news = [NewMessage(idempotency_key=f"k{i}", profile_id=f"p{i}", address=f"u{i}@example.com",
                       channel=Channel.EMAIL, content=rendered_email().SerializeToString(),
                       journey_id="", enrollment_id="") for i in range(3)]
    lease = timedelta(minutes=5)
    ids = iter(["m0", "m1", "m2"])

    def scenario() -> tuple[list[tuple[str, int, str, bool]], list[tuple[str, int, str, bool]]]:
        with app.db.transaction() as session:
            repository.queue_messages(session, "ws-a", news, clock.now(), "", lambda: next(ids))
        with app.db.transaction() as session:
            claims = repository.claim_due(session, clock.now(), clock.now() + lease, 10,
                                          holder="test")
        by_id = {c.message_id: c for c in claims}
        # m2's lease runs out and a successor takes it while this sender still holds m0, m1.
        clock.advance(lease + timedelta(seconds=1))
        with app.db.transaction() as session:
            session.execute(messages.update().where(messages.c.message_id != "m2")
                            .values(lease_until=clock.now() + lease))
            [successor] = repository.claim_due(session, clock.now(), clock.now() + lease, 10,
                                               holder="test")
        assert successor.message_id == "m2"
        changes = [(by_id["m0"], after_success(1, "p-0")),
                   (by_id["m1"], Transition(MessageStatus.QUEUED, 1, clock.now(), "busy", "")),
                   (by_id["m2"], after_success(1, "late"))]

        def state() -> list[tuple[str, int, str, bool]]:
            with app.db.transaction() as session:
                found = [repository.get_message(session, "ws-a", f"m{i}") for i in range(3)]
            return [(m.status.value, m.attempts, m.error, m.provider_message_id == "late")
                    for m in found if m is not None]

        with pytest.raises(repository.LeaseLost), app.db.transaction() as session:
            repository.record_all(session, changes, clock.now())
        rolled_back = state()
        with app.db.transaction() as session:  # the two still held go in one call
            repository.record_all(session, changes[:2], clock.now())
        return rolled_back, state()

    try:
        rolled_back, recorded = await app.db.run(scenario)
    finally:
        app.db.dispose()
    assert rolled_back == [("sending", 1, "", False), ("sending", 1, "", False),
                           ("sending", 2, "", False)]
    assert recorded == [("sent", 1, "", False), ("queued", 1, "busy", False),
                        ("sending", 2, "", False)]


async def test_a_round_claims_and_reads_its_context_in_one_transaction(backend: Backend) -> None:
    """The claim and the reads the policies and the failover need (providers, policies,
    suppressions) share one transaction: one commit fewer per round."""
    transactions: list[list[str]] = []
    current: dict[int, list[str]] = {}

    def began(conn: Any) -> None:
        current[id(conn)] = []

    def executed(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        current.setdefault(id(conn), []).append(statement)

    def committed(conn: Any) -> None:
        transactions.append(current.pop(id(conn), []))

    port = free_port()
    with smtp_server(SmtpSink(), port) as sink:
        app = delivery_app(backend, port, ManualClock())
        for name, listener in (("begin", began), ("before_cursor_execute", executed),
                               ("commit", committed)):
            event.listen(app.db.engine, name, listener)
        async with serving(app) as address, grpc.aio.insecure_channel(address) as ch:
            stub = pb_grpc.DeliveryServiceStub(ch)
            name = (await stub.SendMessage(send_request("k1"), metadata=WS)).message.name
            await reaches(stub, name, SENT, 1)
    assert len(sink.received) == 1

    def has(statements: list[str], *words: str) -> bool:
        return any(all(w in s for w in words) for s in statements)

    reading = [t for t in transactions if has(t, "FROM policies")]
    assert reading and all(has(t, "UPDATE messages SET status") for t in reading)


async def test_a_claim_takes_due_messages_in_queue_order_in_one_statement(
        backend: Backend, monkeypatch: pytest.MonkeyPatch) -> None:
    """The claim hands due messages over in the order they were queued (``queue_order``): a
    retry queued before a batch comes first, though due after it, and the batch's messages,
    due together, come in the order they were queued (a profile's messages of one batch go
    out in that order), on both databases, in one statement. (Queued as before migration
    0017: since, a profile's later messages on a channel are HELD, test_delivery_held_release.)"""
    monkeypatch.setattr(repository, "_hold", lambda *args: set())
    clock = ManualClock()
    app = delivery_app(backend, free_port(), clock)
    await app.db.run(app.migrate)
    lease = timedelta(minutes=5)
    ids = iter(f"m{i}" for i in range(100))
    statements: list[str] = []

    def count(conn: object, cursor: object, statement: str, *args: object) -> None:
        statements.append(statement)

    def scenario() -> list[tuple[str, int]]:
        def queue(keys: list[str], profile: str) -> None:
            with app.db.transaction() as session:
                repository.queue_messages(session, "ws-a", [NewMessage(
                    idempotency_key=k, profile_id=profile, address=f"{k}@example.com",
                    channel=Channel.EMAIL, content=rendered_email().SerializeToString(),
                    journey_id="", enrollment_id="") for k in keys],
                    clock.now(), "", lambda: next(ids))

        queue(["first"], "p0")  # m0: sent once, failed, due again later than the batch below
        with app.db.transaction() as session:
            [claim] = repository.claim_due(session, clock.now(), clock.now() + lease, 10,
                                           holder="test")
            repository.record_all(session, [(claim, Transition(
                MessageStatus.QUEUED, 1, clock.now() + timedelta(seconds=2), "busy", ""))],
                clock.now())
        clock.advance(timedelta(seconds=1))
        queue([f"k{i}" for i in range(12)], "ada")  # m1..m12, due together
        clock.advance(timedelta(seconds=5))
        event.listen(app.db.engine, "before_cursor_execute", count)
        try:
            with app.db.transaction() as session:
                claims = repository.claim_due(session, clock.now(), clock.now() + lease, 20,
                                              holder="test")
        finally:
            event.remove(app.db.engine, "before_cursor_execute", count)
        return [(c.message_id, c.attempts) for c in claims]

    try:
        claimed = await app.db.run(scenario)
    finally:
        app.db.dispose()
    assert claimed == [("m0", 2)] + [(f"m{i}", 1) for i in range(1, 13)]
    assert len([s for s in statements if "messages" in s]) == 1
