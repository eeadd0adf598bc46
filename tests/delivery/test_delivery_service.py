"""DeliveryService over a real gRPC server and a real SMTP server, on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import timedelta
from email.utils import parsedate_to_datetime

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
from grpc_status import rpc_status
from sqlalchemy import func, select

from cjo.analytics.v1 import analytics_service_pb2 as apb
from cjo.analytics.v1 import analytics_service_pb2_grpc as apb_grpc
from cjo.analytics.v1 import fact_pb2
from cjo.common.v1 import common_pb2
from cjo.delivery.v1 import delivery_service_pb2 as pb
from cjo.delivery.v1 import delivery_service_pb2_grpc as pb_grpc
from cjo.delivery.v1 import message_pb2
from cjo_analytics.bootstrap import build as build_analytics
from cjo_delivery.adapters.tables import outbox
from cjo_platform.clock import ManualClock
from cjo_platform.config import Env
from cjo_platform.rpc.server import ServiceApp
from cjo_platform.rpc.status import field_violations
from support import Backend, as_service, eventually, free_port, serving, settings_for

WS = as_service("ws-a")
SENT = message_pb2.MESSAGE_STATUS_SENT


async def status_of(stub: pb_grpc.DeliveryServiceStub, name: str,
                    metadata: tuple[tuple[str, str], ...] = WS) -> message_pb2.Message:
    return (await stub.GetMessage(pb.GetMessageRequest(name=name), metadata=metadata)).message


def facts_waiting(app: ServiceApp) -> int:
    """Outbox rows not yet acknowledged by their receiver."""
    with app.db.transaction() as session:
        return int(session.execute(select(func.count()).select_from(outbox)).scalar_one())


async def wait_until_sent(stub: pb_grpc.DeliveryServiceStub, name: str,
                          metadata: tuple[tuple[str, str], ...] = WS) -> message_pb2.Message:
    async def sent() -> message_pb2.Message | None:
        message = await status_of(stub, name, metadata)
        return message if message.status == SENT else None

    result = await eventually(sent)
    assert isinstance(result, message_pb2.Message)
    return result


async def test_a_message_is_sent_once_with_its_content(backend: Backend) -> None:
    clock = ManualClock()
    port = free_port()
    with smtp_server(SmtpSink(), port) as sink:
        app = delivery_app(backend, port, clock)
        async with serving(app) as address, grpc.aio.insecure_channel(address) as ch:
            stub = pb_grpc.DeliveryServiceStub(ch)
            content = rendered_email(subject="Welcome, Ada", html="<p>Hello <b>Ada</b></p>",
                                     text="Hello Ada", preheader="Your first week")
            reply = await stub.SendMessage(
                send_request("enr1:n1:1", "ada@example.com", journey_id="j1",
                             enrollment_id="enr1", content=content), metadata=WS)
            assert not reply.duplicate
            queued = reply.message
            assert queued.name == f"messages/{queued.message_id}"
            assert queued.status in (message_pb2.MESSAGE_STATUS_QUEUED,
                                     message_pb2.MESSAGE_STATUS_SENDING)
            assert queued.content == content  # stored exactly as sent
            assert (queued.journey_id, queued.enrollment_id) == ("j1", "enr1")
            assert queued.create_time.ToDatetime().year == 2026

            sent = await wait_until_sent(stub, queued.name)
            assert sent.attempts == 1
            assert sent.provider_message_id == f"<{queued.message_id}@cjo>"
            assert sent.error == ""

    [email] = sink.received
    assert sink.envelopes == [("no-reply@cjo.localhost", ["ada@example.com"])]
    assert email["Subject"] == "Welcome, Ada"
    assert email["To"] == "ada@example.com"
    assert email["From"] == "cjo <no-reply@cjo.localhost>"
    assert email["Message-ID"] == f"<{queued.message_id}@cjo>"
    assert parsedate_to_datetime(email["Date"]) == clock.now()
    assert email.get_content_type() == "multipart/alternative"
    html = email.get_body(("html",))
    text = email.get_body(("plain",))
    assert html is not None and text is not None
    assert "<p>Hello <b>Ada</b></p>" in html.get_content()
    assert "Your first week" in html.get_content()
    assert text.get_content().strip() == "Hello Ada"


async def test_a_repeated_idempotency_key_never_sends_twice(backend: Backend) -> None:
    port = free_port()
    with smtp_server(SmtpSink(), port) as sink:
        app = delivery_app(backend, port, ManualClock())
        async with serving(app) as address, grpc.aio.insecure_channel(address) as ch:
            stub = pb_grpc.DeliveryServiceStub(ch)
            first = await stub.SendMessage(send_request("k1", "ada@example.com"), metadata=WS)
            await wait_until_sent(stub, first.message.name)

            # The same key again, even with other content, answers with the first message.
            again = await stub.SendMessage(
                send_request("k1", "eve@example.com", content=rendered_email(subject="Other")),
                metadata=WS)
            assert again.duplicate
            assert again.message.message_id == first.message.message_id
            assert again.message.status == SENT

            # Twice inside one batch: the first queues, the second points at it.
            batch = await stub.BatchSendMessages(pb.BatchSendMessagesRequest(requests=[
                send_request("k2", "bob@example.com"), send_request("k2", "bob@example.com"),
                send_request("k1", "ada@example.com"),
            ]), metadata=WS)
            assert [r.status.code for r in batch.results] == [0, 0, 0]
            assert [r.duplicate for r in batch.results] == [False, True, True]
            assert batch.results[0].message.message_id == batch.results[1].message.message_id
            assert batch.results[2].message.message_id == first.message.message_id
            await wait_until_sent(stub, batch.results[0].message.name)

            await a_send_round_passed(stub)  # nothing else goes out
            listed = await stub.ListMessages(pb.ListMessagesRequest(), metadata=WS)
            assert len(listed.messages) == 2
    assert sorted(e["To"] for e in sink.received) == ["ada@example.com", "bob@example.com"]


async def test_one_bad_item_does_not_stop_the_others(backend: Backend) -> None:
    port = free_port()
    with smtp_server(SmtpSink(), port) as sink:
        app = delivery_app(backend, port, ManualClock())
        async with serving(app) as address, grpc.aio.insecure_channel(address) as ch:
            stub = pb_grpc.DeliveryServiceStub(ch)
            sms = common_pb2.RenderedMessage(channel=common_pb2.CHANNEL_IN_APP)
            reply = await stub.BatchSendMessages(pb.BatchSendMessagesRequest(requests=[
                send_request("b1", "ada@example.com"),
                send_request("b2", "bob@example.com"),
                send_request("b3", "not an address"),
                send_request("", "cy@example.com"),
                send_request("b5", "dee@example.com", content=sms),
                send_request("b6", "eve@example.com"),
            ]), metadata=WS)
            assert [r.status.code for r in reply.results] == [0, 0, 3, 3, 3, 0]
            assert field_violations(reply.results[2].status) == {
                "requests[2].recipient.address": "is not a valid email address"}
            assert field_violations(reply.results[3].status) == {
                "requests[3].idempotency_key": "is required"}
            assert field_violations(reply.results[4].status) == {
                "requests[4].content.in_app": "is required for CHANNEL_IN_APP"}
            assert not reply.results[2].HasField("message")
            for index in (0, 1, 5):
                await wait_until_sent(stub, reply.results[index].message.name)
            listed = await stub.ListMessages(pb.ListMessagesRequest(), metadata=WS)
            assert len(listed.messages) == 3
    assert sorted(e["To"] for e in sink.received) == [
        "ada@example.com", "bob@example.com", "eve@example.com"]


async def test_bad_requests_name_the_field(sqlite_backend: Backend) -> None:
    app = delivery_app(sqlite_backend, free_port(), ManualClock())
    async with serving(app) as address, grpc.aio.insecure_channel(address) as ch:
        stub = pb_grpc.DeliveryServiceStub(ch)

        async def violations(call: object) -> tuple[grpc.StatusCode, dict[str, str]]:
            with pytest.raises(grpc.aio.AioRpcError) as error:
                await call  # type: ignore[misc]
            return error.value.code(), field_violations(rpc_status.from_call(error.value))

        code, fields = await violations(stub.SendMessage(
            send_request("", "nobody", content=rendered_email(subject="")), metadata=WS))
        assert code == grpc.StatusCode.INVALID_ARGUMENT
        assert fields == {"idempotency_key": "is required",
                          "recipient.address": "is not a valid email address",
                          "content.email.subject": "is required"}
        code, fields = await violations(stub.BatchSendMessages(
            pb.BatchSendMessagesRequest(), metadata=WS))
        assert (code, list(fields)) == (grpc.StatusCode.INVALID_ARGUMENT, ["requests"])
        code, fields = await violations(stub.BatchSendMessages(pb.BatchSendMessagesRequest(
            requests=[send_request(f"k{i}") for i in range(1001)]), metadata=WS))
        assert (code, list(fields)) == (grpc.StatusCode.INVALID_ARGUMENT, ["requests"])
        code, fields = await violations(stub.GetMessage(
            pb.GetMessageRequest(name="m1"), metadata=WS))
        assert fields == {"name": "must be messages/{message_id}"}
        with pytest.raises(grpc.aio.AioRpcError) as missing:
            await stub.GetMessage(pb.GetMessageRequest(name="messages/nope"), metadata=WS)
        assert missing.value.code() == grpc.StatusCode.NOT_FOUND
        code, fields = await violations(stub.ListMessages(
            pb.ListMessagesRequest(page_token="garbage!"), metadata=WS))
        assert list(fields) == ["page_token"]
        with pytest.raises(grpc.aio.AioRpcError) as anonymous:
            await stub.GetMessage(pb.GetMessageRequest(name="messages/x"))
        assert anonymous.value.code() == grpc.StatusCode.UNAUTHENTICATED


async def test_workspaces_cannot_see_each_others_messages(backend: Backend) -> None:
    port = free_port()
    with smtp_server(SmtpSink(), port) as sink:
        app = delivery_app(backend, port, ManualClock())
        async with serving(app) as address, grpc.aio.insecure_channel(address) as ch:
            stub = pb_grpc.DeliveryServiceStub(ch)
            mine = (await stub.SendMessage(send_request("k1"), metadata=WS)).message
            await wait_until_sent(stub, mine.name)

            other = as_service("ws-b")
            with pytest.raises(grpc.aio.AioRpcError) as hidden:
                await stub.GetMessage(pb.GetMessageRequest(name=mine.name), metadata=other)
            assert hidden.value.code() == grpc.StatusCode.NOT_FOUND
            listed = await stub.ListMessages(pb.ListMessagesRequest(), metadata=other)
            assert list(listed.messages) == []
            filtered = await stub.ListMessages(pb.ListMessagesRequest(profile_id="p1"),
                                               metadata=other)
            assert list(filtered.messages) == []

            # Idempotency keys are per workspace: the same key elsewhere is a new message.
            theirs = await stub.SendMessage(send_request("k1"), metadata=other)
            assert not theirs.duplicate
            assert theirs.message.message_id != mine.message_id
            await wait_until_sent(stub, theirs.message.name, other)
    assert len(sink.received) == 2


async def test_list_messages_newest_first_with_filters_and_pages(backend: Backend) -> None:
    clock = ManualClock()
    # Nothing listens on the SMTP port: messages stay queued, which is all listing needs.
    app = delivery_app(backend, free_port(), clock, CJO_DELIVERY_RETRY_BASE_SECONDS="3600")
    async with serving(app) as address, grpc.aio.insecure_channel(address) as ch:
        stub = pb_grpc.DeliveryServiceStub(ch)
        names = []
        for i in range(5):
            clock.advance(timedelta(seconds=1))
            profile = "p1" if i % 2 == 0 else "p2"
            reply = await stub.SendMessage(
                send_request(f"k{i}", profile_id=profile, journey_id=f"j{i % 2}"), metadata=WS)
            names.append(reply.message.name)
        # Two at once share a create_time; the keyset still orders and pages them exactly.
        clock.advance(timedelta(seconds=1))
        await stub.BatchSendMessages(pb.BatchSendMessagesRequest(requests=[
            send_request("k5", profile_id="p1"), send_request("k6", profile_id="p1")]),
            metadata=WS)

        seen: list[str] = []
        token = ""
        while True:
            page = await stub.ListMessages(pb.ListMessagesRequest(page_size=2, page_token=token),
                                           metadata=WS)
            assert len(page.messages) <= 2
            seen.extend(m.name for m in page.messages)
            token = page.next_page_token
            if not token:
                break
        assert len(seen) == len(set(seen)) == 7
        assert seen[2:] == list(reversed(names))  # newest first

        p2 = await stub.ListMessages(pb.ListMessagesRequest(profile_id="p2"), metadata=WS)
        assert [m.name for m in p2.messages] == [names[3], names[1]]
        j0 = await stub.ListMessages(pb.ListMessagesRequest(journey_id="j0", page_size=1),
                                     metadata=WS)
        assert [m.name for m in j0.messages] == [names[4]]
        with pytest.raises(grpc.aio.AioRpcError) as mixed:
            await stub.ListMessages(pb.ListMessagesRequest(
                journey_id="j1", page_token=j0.next_page_token), metadata=WS)
        assert mixed.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_sent_and_failed_messages_are_counted_by_analytics(backend: Backend) -> None:
    port = free_port()
    sink = SmtpSink(refuse={"gone@example.com": "550 5.1.1 <gone@example.com>: no such user"})
    analytics_app = build_analytics(settings_for("analytics", backend), Env({}))
    with smtp_server(sink, port):
        async with serving(analytics_app) as analytics_address, \
                grpc.aio.insecure_channel(analytics_address) as analytics_channel:
            app = delivery_app(backend, port, ManualClock(), analytics=analytics_address)
            async with serving(app) as address, grpc.aio.insecure_channel(address) as ch:
                stub = pb_grpc.DeliveryServiceStub(ch)
                for _ in range(2):  # the repeat is a duplicate and must not count again
                    await stub.BatchSendMessages(pb.BatchSendMessagesRequest(requests=[
                        send_request("e1:n1:1", "ada@example.com", profile_id="p1",
                                     journey_id="j1", enrollment_id="e1"),
                        send_request("e2:n1:1", "gone@example.com", profile_id="p2",
                                     journey_id="j1", enrollment_id="e2"),
                    ]), metadata=WS)

                reports = apb_grpc.AnalyticsServiceStub(analytics_channel)

                async def counts() -> list[tuple[int, int, int]] | None:
                    report = (await reports.GetJourneyReport(
                        apb.GetJourneyReportRequest(journey="journeys/j1"), metadata=WS)).report
                    found = [(c.type, c.count, c.profiles) for c in report.counts]
                    return found if len(found) == 2 else None

                assert await eventually(counts) == [
                    (fact_pb2.FACT_TYPE_MESSAGE_SENT, 1, 1),
                    (fact_pb2.FACT_TYPE_MESSAGE_BOUNCED, 1, 1)]  # a hard bounce
                # Nothing more to come: a later round sent nothing of this workspace, and every
                # fact written has been forwarded and acknowledged (analytics records it in the
                # call that acknowledges it).
                await a_send_round_passed(stub)
                await eventually(lambda: facts_waiting(app) == 0)
                assert await counts() == [
                    (fact_pb2.FACT_TYPE_MESSAGE_SENT, 1, 1),
                    (fact_pb2.FACT_TYPE_MESSAGE_BOUNCED, 1, 1)]  # a hard bounce
    assert len(sink.received) == 1
