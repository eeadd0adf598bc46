"""Policies before every send (consent, frequency caps across journeys, quiet hours in the
profile's time zone) and crash safety in the middle of a batch.

Consent is asked of a small real gRPC stand-in for identity's BatchCheckConsent (served on
loopback): identity's own consent records are being built in parallel, and the stand-in lets
the tests count the calls (one per claimed batch) and choose each answer.
"""

from __future__ import annotations

import asyncio
import dataclasses
from datetime import UTC, datetime, timedelta

import grpc
from delivery_support import (
    IdentityStandIn,
    SmtpSink,
    a_send_round_passed,
    delivery_app,
    identity_stand_in,
    send_request,
    smtp_server,
)

from cjo.common.v1 import common_pb2
from cjo.delivery.v1 import delivery_service_pb2 as pb
from cjo.delivery.v1 import delivery_service_pb2_grpc as pb_grpc
from cjo.delivery.v1 import message_pb2, policy_pb2
from cjo_delivery.adapters import repository
from cjo_delivery.adapters.routes import Routes
from cjo_delivery.adapters.smtp import SmtpProvider, SmtpSettings
from cjo_delivery.adapters.tables import outbox
from cjo_delivery.domain.messages import MessageStatus, message_id_of
from cjo_delivery.domain.sending import OutgoingMessage
from cjo_delivery.service_layer.send_round import SenderSettings, SendRound
from cjo_delivery.workers.sender import Sender
from cjo_platform.clock import ManualClock
from cjo_platform.db.outbox import Outbox
from cjo_platform.db.unit_of_work import Transactions
from support import Backend, as_service, eventually, free_port, serving

WS = as_service("ws-a")
SENT = message_pb2.MESSAGE_STATUS_SENT
QUEUED = message_pb2.MESSAGE_STATUS_QUEUED
SUPPRESSED = message_pb2.MESSAGE_STATUS_SUPPRESSED
DEFERRED = message_pb2.MESSAGE_STATUS_DEFERRED


async def get(stub: pb_grpc.DeliveryServiceStub, name: str) -> message_pb2.Message:
    return (await stub.GetMessage(pb.GetMessageRequest(name=name), metadata=WS)).message


async def settled(stub: pb_grpc.DeliveryServiceStub, names: list[str],
                  *statuses: int) -> list[message_pb2.Message]:
    async def check() -> list[message_pb2.Message] | None:
        found = [await get(stub, n) for n in names]
        return found if all(m.status in statuses for m in found) else None

    result = await eventually(check)
    assert isinstance(result, list)
    return result


async def test_consent_is_asked_once_per_batch_and_suppresses(backend: Backend) -> None:
    identity = IdentityStandIn(unsubscribed={"p-gone"})
    port = free_port()
    async with identity_stand_in(identity) as target:
        with smtp_server(SmtpSink(), port) as sink:
            app = delivery_app(backend, port, ManualClock(), identity=target)
            async with serving(app) as address, grpc.aio.insecure_channel(address) as ch:
                stub = pb_grpc.DeliveryServiceStub(ch)
                receipt = send_request("k4", "gone@example.com", profile_id="p-gone")
                receipt.transactional = True
                newsletter = send_request("k2", "gone@example.com", profile_id="p-gone")
                newsletter.topic = "newsletter"
                reply = await stub.BatchSendMessages(pb.BatchSendMessagesRequest(requests=[
                    send_request("k1", "ada@example.com", profile_id="p1"), newsletter,
                    send_request("k3", "bob@example.com", profile_id="p2"), receipt,
                ]), metadata=WS)
                names = [r.message.name for r in reply.results]
                done = await settled(stub, names, SENT, SUPPRESSED)
    assert [m.status for m in done] == [SENT, SUPPRESSED, SENT, SENT]
    assert done[1].error == "no consent: unsubscribed via unsubscribe_link"
    assert done[1].attempts == 0  # no provider was called for it
    assert sorted(m["To"] for m in sink.received) == [
        "ada@example.com", "bob@example.com", "gone@example.com"]  # only the receipt
    [call] = identity.calls  # one call for the whole batch; transactional is not asked
    # In whatever order the sender claimed them.
    assert sorted((q.profile_id, q.channel, q.topic) for q in call) == [
        ("p-gone", common_pb2.CHANNEL_EMAIL, "newsletter"), ("p1", common_pb2.CHANNEL_EMAIL, ""),
        ("p2", common_pb2.CHANNEL_EMAIL, "")]


async def test_messages_wait_while_identity_is_down(backend: Backend) -> None:
    clock = ManualClock()
    smtp_port, identity_port = free_port(), free_port()
    with smtp_server(SmtpSink(), smtp_port) as sink:
        app = delivery_app(backend, smtp_port, clock, identity=f"127.0.0.1:{identity_port}")
        async with serving(app) as address, grpc.aio.insecure_channel(address) as ch:
            stub = pb_grpc.DeliveryServiceStub(ch)
            name = (await stub.SendMessage(send_request("k1"), metadata=WS)).message.name
            waiting = await eventually(lambda: _waiting(stub, name))
            assert isinstance(waiting, message_pb2.Message)
            assert "consent" in waiting.error and waiting.attempts == 0
            assert sink.received == []
            async with identity_stand_in(IdentityStandIn(set()), identity_port):
                async def sent_once_retried() -> message_pb2.Message | None:
                    # A consent check that still failed (the channel reconnecting) put the
                    # message back for 30 s: each look that finds it waiting moves the clock
                    # past that wait (never while it is claimed: leaps of 31 s every look
                    # would run its lease out, and another round would take it over).
                    message = await get(stub, name)
                    if message.status == QUEUED:
                        clock.advance(timedelta(seconds=31))
                    return message if message.status == SENT else None

                sent = await eventually(sent_once_retried)
                assert isinstance(sent, message_pb2.Message)
    assert sent.attempts == 1 and len(sink.received) == 1


async def _waiting(stub: pb_grpc.DeliveryServiceStub, name: str) -> message_pb2.Message | None:
    message = await get(stub, name)
    return message if message.status == QUEUED and message.error else None


async def set_policy(stub: pb_grpc.DeliveryServiceStub, policy: policy_pb2.DeliveryPolicy
                     ) -> policy_pb2.DeliveryPolicy:
    await stub.UpdateDeliveryPolicy(pb.UpdateDeliveryPolicyRequest(policy=policy), metadata=WS)
    return (await stub.GetDeliveryPolicy(pb.GetDeliveryPolicyRequest(), metadata=WS)).policy


async def test_a_frequency_cap_counts_across_journeys(backend: Backend) -> None:
    clock = ManualClock()
    port = free_port()
    with smtp_server(SmtpSink(), port) as sink:
        app = delivery_app(backend, port, clock)
        async with serving(app) as address, grpc.aio.insecure_channel(address) as ch:
            stub = pb_grpc.DeliveryServiceStub(ch)
            stored = await set_policy(stub, policy_pb2.DeliveryPolicy(frequency_caps=[
                policy_pb2.FrequencyCap(channel=common_pb2.CHANNEL_EMAIL, max_messages=2,
                                        window_seconds=86400)]))
            assert stored.frequency_caps[0].max_messages == 2
            first = (await stub.SendMessage(send_request("j1:1", journey_id="j1"),
                                            metadata=WS)).message.name
            await settled(stub, [first], SENT)
            sent_at = clock.now()
            clock.advance(timedelta(hours=1))
            reply = await stub.BatchSendMessages(pb.BatchSendMessagesRequest(requests=[
                send_request("j2:1", journey_id="j2"), send_request("j2:2", journey_id="j2"),
                send_request("other", "bob@example.com", profile_id="p2", journey_id="j2"),
            ]), metadata=WS)
            names = [r.message.name for r in reply.results]
            done = await settled(stub, names, SENT, DEFERRED)
            assert sorted(m.status for m in done[:2]) == [SENT, DEFERRED]
            assert done[2].status == SENT  # another profile has its own count
            [late] = [m for m in done if m.status == DEFERRED]
            assert late.error.startswith("frequency cap: 2 per 86400 s on email")
            # Allowed again when the first send leaves the 24-hour window.
            assert late.next_attempt_time.ToDatetime(UTC) == sent_at + timedelta(days=1)
            listed = (await stub.ListMessages(pb.ListMessagesRequest(status=DEFERRED),
                                              metadata=WS)).messages
            assert [m.name for m in listed] == [late.name]
            await a_send_round_passed(stub)  # the deferred one stays deferred
            assert len(sink.received) == 3
            clock.advance(timedelta(hours=23, seconds=1))
            [sent] = await settled(stub, [late.name], SENT)
            assert sent.attempts == 1
    assert len(sink.received) == 4


async def test_a_transactional_message_is_neither_held_back_by_a_cap_nor_counted(
        backend: Backend) -> None:
    port = free_port()
    with smtp_server(SmtpSink(), port) as sink:
        app = delivery_app(backend, port, ManualClock())
        async with serving(app) as address, grpc.aio.insecure_channel(address) as ch:
            stub = pb_grpc.DeliveryServiceStub(ch)
            await set_policy(stub, policy_pb2.DeliveryPolicy(frequency_caps=[
                policy_pb2.FrequencyCap(channel=common_pb2.CHANNEL_EMAIL, max_messages=1,
                                        window_seconds=86400)]))

            async def send(key: str, transactional: bool) -> message_pb2.Message:
                request = send_request(key)
                request.transactional = transactional
                name = (await stub.SendMessage(request, metadata=WS)).message.name
                [done] = await settled(stub, [name], SENT, DEFERRED)
                return done

            # A receipt first: the day's one marketing email is still to come.
            assert (await send("receipt-1", True)).status == SENT
            assert (await send("promo-1", False)).status == SENT
            # The cap is full now, for marketing only.
            assert (await send("receipt-2", True)).status == SENT
            held = await send("promo-2", False)
            assert held.status == DEFERRED
            assert held.error.startswith("frequency cap: 1 per 86400 s on email")
    assert len(sink.received) == 3


async def test_quiet_hours_defer_to_the_morning_in_the_profiles_time_zone(
        backend: Backend) -> None:
    # 03:30 UTC is 22:30 the evening before in New York (EST, UTC-5) and 04:30 in Paris.
    clock = ManualClock(datetime(2026, 1, 15, 3, 30, tzinfo=UTC))
    port = free_port()
    with smtp_server(SmtpSink(), port) as sink:
        app = delivery_app(backend, port, clock)
        async with serving(app) as address, grpc.aio.insecure_channel(address) as ch:
            stub = pb_grpc.DeliveryServiceStub(ch)
            await set_policy(stub, policy_pb2.DeliveryPolicy(quiet_hours=policy_pb2.QuietHours(
                start="21:00", end="08:00", default_time_zone="Asia/Tokyo")))
            ny = send_request("k1", "ny@example.com", profile_id="ny")
            ny.time_zone = "America/New_York"
            paris = send_request("k2", "paris@example.com", profile_id="paris")
            paris.time_zone = "Europe/Paris"
            # 12:30 in Tokyo: awake
            tokyo = send_request("k3", "tokyo@example.com", profile_id="tokyo")
            urgent = send_request("k4", "urgent@example.com", profile_id="urgent")
            urgent.time_zone, urgent.transactional = "America/New_York", True
            reply = await stub.BatchSendMessages(pb.BatchSendMessagesRequest(
                requests=[ny, paris, tokyo, urgent]), metadata=WS)
            names = [r.message.name for r in reply.results]
            done = await settled(stub, names, SENT, DEFERRED)
            assert [m.status for m in done] == [DEFERRED, DEFERRED, SENT, SENT]
            assert done[0].next_attempt_time.ToDatetime(UTC) == datetime(
                2026, 1, 15, 13, 0, tzinfo=UTC)  # 08:00 in New York
            assert done[1].next_attempt_time.ToDatetime(UTC) == datetime(
                2026, 1, 15, 7, 0, tzinfo=UTC)  # 08:00 in Paris
            clock.set(datetime(2026, 1, 15, 7, 0, tzinfo=UTC))
            await settled(stub, [names[1]], SENT)
            await a_send_round_passed(stub)  # still 02:00 in New York
            assert (await get(stub, names[0])).status == DEFERRED
            clock.set(datetime(2026, 1, 15, 13, 0, tzinfo=UTC))
            await settled(stub, [names[0]], SENT)
    assert sorted(m["To"] for m in sink.received[:2]) == ["tokyo@example.com",
                                                         "urgent@example.com"]
    assert [m["To"] for m in sink.received[2:]] == ["paris@example.com", "ny@example.com"]


async def test_bad_policies_and_time_zones_are_refused(backend: Backend) -> None:
    app = delivery_app(backend, free_port(), ManualClock())
    async with serving(app) as address, grpc.aio.insecure_channel(address) as ch:
        stub = pb_grpc.DeliveryServiceStub(ch)
        try:
            await set_policy(stub, policy_pb2.DeliveryPolicy(
                frequency_caps=[policy_pb2.FrequencyCap(channel=common_pb2.CHANNEL_SMS,
                                                        max_messages=0, window_seconds=5)],
                quiet_hours=policy_pb2.QuietHours(start="25:00", end="08:00",
                                                  default_time_zone="Mars/Olympus")))
        except grpc.aio.AioRpcError as exc:
            assert exc.code() == grpc.StatusCode.INVALID_ARGUMENT
        else:
            raise AssertionError("a bad policy was accepted")
        request = send_request("k1")
        request.time_zone = "Not/AZone"
        reply = await stub.BatchSendMessages(pb.BatchSendMessagesRequest(requests=[request]),
                                             metadata=WS)
        assert reply.results[0].status.code == grpc.StatusCode.INVALID_ARGUMENT.value[0]


class _Crash(Exception):
    pass


class HangingProvider:
    """Passes the first ``healthy`` messages to SMTP, then hangs as a process that died would:
    the message it holds never reaches the server and its outcome is never recorded."""

    def __init__(self, inner: SmtpProvider, healthy: int) -> None:
        self.inner = inner
        self.healthy = healthy
        self.release = asyncio.Event()

    async def send(self, message: OutgoingMessage) -> str:
        if self.healthy <= 0:
            await self.release.wait()
            raise _Crash("the process is gone")
        self.healthy -= 1
        return await self.inner.send(message)

    async def close(self) -> None:
        await self.inner.close()


async def test_a_crash_in_the_middle_of_a_batch_neither_loses_nor_doubles(
        backend: Backend) -> None:
    clock = ManualClock()
    port = free_port()
    with smtp_server(SmtpSink(), port) as sink:
        app = delivery_app(backend, port, clock)
        await app.db.run(app.migrate)
        # Queue five messages through the API of a first process whose sender is replaced by
        # one that dies after handing over two of them. The API process runs no background
        # work: its own sender, woken by the accepted batch, must not claim the messages first.
        accepting = dataclasses.replace(delivery_app(backend, port, clock), background=())
        async with serving(accepting) as address, grpc.aio.insecure_channel(address) as ch:
            stub = pb_grpc.DeliveryServiceStub(ch)
            reply = await stub.BatchSendMessages(pb.BatchSendMessagesRequest(requests=[
                send_request(f"k{i}", f"user{i}@example.com", profile_id=f"user{i}")
                for i in range(5)]), metadata=WS)
            names = [r.message.name for r in reply.results]
        hanging = HangingProvider(SmtpProvider(SmtpSettings(port=port, allow_private=True),
                                               clock), healthy=2)
        settings = SenderSettings(concurrency=1, batch_size=10)
        doomed = Sender(SendRound(
            Transactions(app.db, clock, Outbox(outbox, clock)),
            Routes(hanging, breaker_failures=settings.breaker_failures,
                   breaker_cool_down=settings.breaker_cool_down), clock, settings))
        round_ = asyncio.create_task(doomed.send_due())
        await eventually(lambda: len(sink.received) == 2)

        def recorded_sent() -> int:
            with app.db.transaction() as session:
                found = [repository.get_message(session, "ws-a", message_id_of(n)) for n in names]
            return sum(1 for m in found if m is not None and m.status is MessageStatus.SENT)

        # Both hand-overs recorded before the lease runs out, as they would be before a crash.
        await eventually(lambda: recorded_sent() == 2)

        clock.advance(timedelta(minutes=6))  # the dead sender's lease runs out
        async with serving(delivery_app(backend, port, clock)) as address, \
                grpc.aio.insecure_channel(address) as ch:
            stub = pb_grpc.DeliveryServiceStub(ch)
            done = await settled(stub, names, SENT)
            hanging.release.set()  # the old sender's late outcome must not overwrite
            # The old round ends once it has recorded (or been refused) every outcome.
            assert await asyncio.wait_for(round_, timeout=10) == 5
            after = [await get(stub, n) for n in names]
        app.db.dispose()
    assert [m.status for m in after] == [SENT] * 5
    assert sorted(m["To"] for m in sink.received) == [f"user{i}@example.com" for i in range(5)]
    assert [m.attempts for m in done[:2]] == [1, 1]  # recorded before the crash: not resent
