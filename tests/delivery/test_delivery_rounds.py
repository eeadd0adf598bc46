"""Overlapping send rounds: a round waiting for identity's consent answer or for a slow provider
holds only its own messages, a profile's messages still go out in the order they were claimed,
a message whose lease is running out is not handed over late, and two delivery processes on
one database never send a message twice."""

from __future__ import annotations

import asyncio
import threading
from collections import Counter
from datetime import timedelta
from pathlib import Path

import grpc
import pytest
from delivery_support import (
    IdentityStandIn,
    SmtpSink,
    all_sent,
    delivery_app,
    delivery_processes,
    identity_stand_in,
    send_request,
    smtp_server,
)
from http_sink import Answer, HttpSink, Request, http_sink
from test_delivery_replicas import sms, sms_provider

from cjo.delivery.v1 import delivery_service_pb2 as pb
from cjo.delivery.v1 import delivery_service_pb2_grpc as pb_grpc
from cjo.delivery.v1 import message_pb2
from cjo.identity.v1 import identity_service_pb2
from cjo_platform.clock import ManualClock
from support import (
    Backend,
    as_service,
    eventually,
    free_port,
    serving,
)

WS = as_service("ws-a")
SENT = message_pb2.MESSAGE_STATUS_SENT
SENDING = message_pb2.MESSAGE_STATUS_SENDING
HELD = message_pb2.MESSAGE_STATUS_HELD


async def status_of(stub: pb_grpc.DeliveryServiceStub, name: str) -> message_pb2.Message:
    return (await stub.GetMessage(pb.GetMessageRequest(name=name), metadata=WS)).message


async def _status_is(stub: pb_grpc.DeliveryServiceStub, name: str, status: int) -> bool:
    return (await status_of(stub, name)).status == status


async def sent(stub: pb_grpc.DeliveryServiceStub, name: str) -> bool:
    return await _status_is(stub, name, SENT)


class HeldConsent(IdentityStandIn):
    """Answers consent questions at once, except those about ``topic``: held until
    ``release`` is set."""

    def __init__(self, topic: str) -> None:
        super().__init__(set())
        self.topic = topic
        self.holding = asyncio.Event()
        self.release = asyncio.Event()

    async def BatchCheckConsent(self, request: identity_service_pb2.BatchCheckConsentRequest,
                                context: grpc.aio.ServicerContext
                                ) -> identity_service_pb2.BatchCheckConsentResponse:
        if any(q.topic == self.topic for q in request.queries):
            self.holding.set()
            await self.release.wait()
        return await super().BatchCheckConsent(request, context)


def email(key: str, profile_id: str, topic: str = "") -> pb.SendMessageRequest:
    request = send_request(key, f"{key}@example.com", profile_id=profile_id)
    request.topic = topic
    return request


async def test_a_round_waiting_for_consent_holds_only_its_own_messages(
        backend: Backend) -> None:
    identity = HeldConsent("held")
    port = free_port()
    with smtp_server(SmtpSink(), port) as sink:
        async with identity_stand_in(identity) as target:
            app = delivery_app(backend, port, identity=target)
            async with serving(app) as address, grpc.aio.insecure_channel(address) as ch:
                stub = pb_grpc.DeliveryServiceStub(ch)
                first = (await stub.SendMessage(email("first", "ada", "held"),
                                                metadata=WS)).message.name
                await asyncio.wait_for(identity.holding.wait(), 10)
                # Claimed too, not only asked about: a round asks early, while it claims, and
                # may then find the message's row locked (SKIP LOCKED, on PostgreSQL) by the
                # queueing below marking it ``holds``; the next round would claim it with the
                # other person's message, which then waits for the same consent answer (one
                # per workspace and round).
                assert await eventually(lambda: _status_is(stub, first, SENDING))
                # Queued while the first round waits for identity: another person's message,
                # and Ada's next one, whose consent is answered at once.
                reply = await stub.BatchSendMessages(pb.BatchSendMessagesRequest(requests=[
                    email("next", "ada"), email("other", "bob")]), metadata=WS)
                after, other = (r.message.name for r in reply.results)
                assert await eventually(lambda: sent(stub, other))
                # Ada's next message waits for her first (held behind it).
                assert (await status_of(stub, after)).status == HELD
                waiting = await status_of(stub, first)
                assert waiting.status == SENDING, waiting  # the error says why it is not
                assert [m["To"] for m in sink.received] == ["other@example.com"]
                identity.release.set()
                assert await eventually(lambda: sent(stub, after))
    assert [m["To"] for m in sink.received] == [
        "other@example.com", "first@example.com", "next@example.com"]


def held_provider(release: threading.Event) -> HttpSink:
    """An SMS provider that answers the message "Code slow" only once ``release`` is set."""
    def answer(request: Request) -> Answer:
        if b"Code slow" in request.body:
            release.wait(20)
        return Answer(200, {"id": "ok"})

    return HttpSink(default=answer)


async def test_a_slow_provider_call_holds_only_its_own_message(backend: Backend) -> None:
    release = threading.Event()
    with http_sink(held_provider(release)) as sink:
        app = delivery_app(backend, free_port())
        async with serving(app) as address, grpc.aio.insecure_channel(address) as ch:
            stub = pb_grpc.DeliveryServiceStub(ch)
            await stub.CreateProvider(pb.CreateProviderRequest(provider=sms_provider(sink.url)),
                                      metadata=WS)
            slow = (await stub.SendMessage(sms("slow", "p1"), metadata=WS)).message.name
            await eventually(lambda: sink.count() == 1)  # with the provider, unanswered
            fast = (await stub.SendMessage(sms("fast", "p2"), metadata=WS)).message.name
            try:
                assert await eventually(lambda: sent(stub, fast))
                assert (await status_of(stub, slow)).status == SENDING
            finally:
                release.set()
            assert await eventually(lambda: sent(stub, slow))


async def test_messages_waiting_for_their_profile_hold_up_no_other_message(
        backend: Backend) -> None:
    """Three send slots; Ada's first message is held by the provider, and three more of hers
    are queued before Bob's. Hers wait for her first (HELD behind it: no claim takes them, so
    they take no worker): Bob's goes out meanwhile, hers in order after her first."""
    release = threading.Event()
    with http_sink(held_provider(release)) as sink:
        app = delivery_app(backend, free_port(), CJO_DELIVERY_CONCURRENCY="3")
        async with serving(app) as address, grpc.aio.insecure_channel(address) as ch:
            stub = pb_grpc.DeliveryServiceStub(ch)
            await stub.CreateProvider(pb.CreateProviderRequest(provider=sms_provider(sink.url)),
                                      metadata=WS)
            slow = (await stub.SendMessage(sms("slow", "ada"), metadata=WS)).message.name
            await eventually(lambda: sink.count() == 1)  # with the provider, unanswered
            reply = await stub.BatchSendMessages(pb.BatchSendMessagesRequest(requests=[
                sms("a2", "ada"), sms("a3", "ada"), sms("a4", "ada"), sms("bob", "bob")]),
                metadata=WS)
            *hers, bobs = (r.message.name for r in reply.results)
            try:
                assert await eventually(lambda: sent(stub, bobs))
                assert (await status_of(stub, slow)).status == SENDING
                for name in hers:
                    assert (await status_of(stub, name)).status == HELD
            finally:
                release.set()
            for name in (slow, *hers):
                assert await eventually(lambda: sent(stub, name))  # noqa: B023
    assert [r.json()["sms"]["text"] for r in sink.requests] == [
        "Code slow", "Code bob", "Code a2", "Code a3", "Code a4"]


async def test_a_message_whose_lease_is_running_out_is_not_handed_over(
        backend: Backend) -> None:
    """One send slot, held by a slow call past the lease of the message waiting for it: the
    message went to the next round meanwhile (its lease ran out), and the first round must not
    hand it over too when the slot frees."""
    clock = ManualClock()
    release = threading.Event()
    with http_sink(held_provider(release)) as sink:
        app = delivery_app(backend, free_port(), clock, CJO_DELIVERY_CONCURRENCY="1")
        async with serving(app) as address, grpc.aio.insecure_channel(address) as ch:
            stub = pb_grpc.DeliveryServiceStub(ch)
            await stub.CreateProvider(pb.CreateProviderRequest(provider=sms_provider(sink.url)),
                                      metadata=WS)
            reply = await stub.BatchSendMessages(pb.BatchSendMessagesRequest(requests=[
                sms("slow", "p1"), sms("waiting", "p2")]), metadata=WS)
            slow, waiting = (r.message.name for r in reply.results)
            try:
                await eventually(lambda: sink.count() == 1)
                clock.advance(timedelta(minutes=6))  # past the 5-minute lease
                # Another round takes the waiting message over (it waits for the slot too).
                assert await eventually(
                    lambda: _attempts(stub, waiting, 2), timeout=10)
            finally:
                release.set()
            # The takeover goes after the first round's turn of it: by now both were decided.
            assert await eventually(lambda: sent(stub, waiting))
            assert await eventually(lambda: sent(stub, slow))
    bodies = Counter(r.json()["sms"]["text"] for r in sink.requests)
    assert bodies["Code waiting"] == 1


async def _attempts(stub: pb_grpc.DeliveryServiceStub, name: str, attempts: int) -> bool:
    return (await status_of(stub, name)).attempts == attempts


async def test_two_delivery_processes_never_send_a_message_twice(backend: Backend,
                                                                 tmp_path: Path) -> None:
    """Two delivery processes on one database, each with four rounds under way and few sends at
    a time, share 300 emails queued through both; one is stopped (SIGTERM) half-way and gives
    back what it had not handed over. Every email reaches the SMTP server exactly once."""
    if backend.kind != "postgresql":
        pytest.skip("replicas share a database on PostgreSQL only")
    sink = SmtpSink(delay=0.05)
    smtp_port = free_port()
    with smtp_server(sink, smtp_port):
        async with delivery_processes(
                backend, tmp_path / "logs", smtp_port, CJO_DELIVERY_BATCH_SIZE="5",
                CJO_DELIVERY_ROUNDS="4", CJO_DELIVERY_CONCURRENCY="4",
                CJO_DELIVERY_POLL_SECONDS="0.05") as (suite, names, stubs):
            queued: list[str] = []
            for b in range(60):
                reply = await stubs[b % 2].BatchSendMessages(pb.BatchSendMessagesRequest(
                    requests=[send_request(f"k{b}-{i}", f"u{b}-{i}@example.com",
                                           profile_id=f"p{(5 * b + i) % 40}")
                              for i in range(5)]), metadata=WS)
                queued += [r.message.name for r in reply.results]
            await eventually(lambda: len(sink.received) >= 60, timeout=60)
            assert await suite.stop(names[0]) == 0, suite.log(names[0])
            assert await eventually(lambda: all_sent(stubs[1], queued, WS), timeout=60)
    received = Counter(m["Message-ID"] for m in sink.received)
    assert len(received) == 300
    assert received.most_common(1)[0][1] == 1
