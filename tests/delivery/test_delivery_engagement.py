"""Engagement feedback through the real listener: signed click and open links in HTML email,
one-click unsubscribe, provider status webhooks, and forged links refused. Each engagement
changes the message, reaches identity as an event (through the outbox, to a real gRPC stand-in
for IngestEvents) and is a fact for analytics."""

from __future__ import annotations

import re
from html import unescape

import grpc
import httpx
from delivery_support import (
    IdentityStandIn,
    SmtpSink,
    delivery_app,
    identity_stand_in,
    rendered_email,
    send_request,
    smtp_server,
)
from sqlalchemy import select

from cjo.analytics.v1 import fact_pb2
from cjo.common.v1 import common_pb2
from cjo.delivery.v1 import delivery_service_pb2 as pb
from cjo.delivery.v1 import delivery_service_pb2_grpc as pb_grpc
from cjo.delivery.v1 import message_pb2, provider_pb2
from cjo.identity.v1 import identity_service_pb2
from cjo_delivery.adapters.tables import outbox
from cjo_platform.clock import ManualClock
from cjo_platform.rpc.status import OK
from support import Backend, as_service, eventually, free_port, serving

WS = as_service("ws-a")
SENT = message_pb2.MESSAGE_STATUS_SENT
DELIVERED = message_pb2.MESSAGE_STATUS_DELIVERED
BOUNCED = message_pb2.MESSAGE_STATUS_BOUNCED
SUPPRESSED = message_pb2.MESSAGE_STATUS_SUPPRESSED


class IdentityWithEvents(IdentityStandIn):
    def __init__(self) -> None:
        super().__init__(set())
        self.events: list[tuple[str, str, dict[str, object]]] = []

    async def IngestEvents(self, request: identity_service_pb2.IngestEventsRequest,
                           context: grpc.aio.ServicerContext
                           ) -> identity_service_pb2.IngestEventsResponse:
        for e in request.events:
            self.events.append((e.message_id, e.name, dict(e.properties.items())))
        return identity_service_pb2.IngestEventsResponse(results=[
            identity_service_pb2.IngestEventResult(status=OK) for _ in request.events])


async def get(stub: pb_grpc.DeliveryServiceStub, name: str) -> message_pb2.Message:
    return (await stub.GetMessage(pb.GetMessageRequest(name=name), metadata=WS)).message


async def test_clicks_opens_and_unsubscribes_are_tracked_and_forgeries_refused(
        backend: Backend) -> None:
    smtp_port, tracking_port = free_port(), free_port()
    identity = IdentityWithEvents()
    html = ('<html><body><p>Sale!</p><a href="https://shop.example/sale?a=1&amp;b=2">Shop</a>'
            '</body></html>')
    async with identity_stand_in(identity) as target:
        with smtp_server(SmtpSink(), smtp_port) as sink:
            app = delivery_app(backend, smtp_port, ManualClock(), identity=target,
                               CJO_DELIVERY_TRACKING_PORT=str(tracking_port))
            async with serving(app) as address, grpc.aio.insecure_channel(address) as ch, \
                    httpx.AsyncClient() as web:
                stub = pb_grpc.DeliveryServiceStub(ch)
                request = send_request("k1", content=rendered_email(html=html))
                request.topic = "promotions"
                # Sent by a journey: its engagements name the enrollment, so that journey's
                # waits know the message is theirs.
                request.journey_id, request.enrollment_id = "j1", "en1"
                name = (await stub.SendMessage(request, metadata=WS)).message.name
                await eventually(lambda: _status(stub, name, SENT))
                [email] = sink.received
                unsubscribe = email["List-Unsubscribe"].strip("<>")
                assert unsubscribe.startswith(f"http://127.0.0.1:{tracking_port}/u/")
                assert email["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
                body = email.get_body(("html",)).get_content()
                click = unescape(re.findall(r'href="([^"]+)"', body)[0])
                pixel = unescape(re.findall(r'<img src="([^"]+)"', body)[0])
                assert "shop.example" not in click  # routed through the tracker

                # A forged link (another target, same signature) changes nothing.
                forged = click[:-3] + ("AAA" if not click.endswith("AAA") else "BBB")
                assert (await web.get(forged)).status_code == 403
                assert (await get(stub, name)).status == SENT

                redirect = await web.get(click)
                assert redirect.status_code == 302
                assert redirect.headers["location"] == "https://shop.example/sale?a=1&b=2"
                assert (await get(stub, name)).status == DELIVERED  # a click proves delivery
                await web.get(click)  # a repeat: the same event id, deduped by identity
                opened = await web.get(pixel)
                assert opened.headers["content-type"] == "image/gif"
                assert (await web.get(unsubscribe)).status_code == 200  # a page, no change
                gone = await web.post(unsubscribe, content=b"List-Unsubscribe=One-Click")
                assert gone.status_code == 200

                await eventually(lambda: len(identity.events) == 4)

                def facts() -> list[fact_pb2.Fact]:
                    with app.db.transaction() as session:
                        rows = session.execute(select(outbox.c.payload).where(
                            outbox.c.topic == "analytics.facts")).scalars().all()
                    return [fact_pb2.Fact.FromString(r) for r in rows]

                recorded = await app.db.run(facts)
    message_id = name.removeprefix("messages/")
    names = [(e[1], e[0]) for e in identity.events]
    assert [n for n, _ in names] == ["link_clicked", "link_clicked", "email_opened",
                                     "unsubscribed"]
    assert names[0][1] == names[1][1]  # repeats carry the same id
    assert identity.events[0][2]["url"] == "https://shop.example/sale?a=1&b=2"
    assert identity.events[3][2] == {"channel": "email", "topic": "promotions",
                                     "message_id": message_id, "journey_id": "j1",
                                     "enrollment_id": "en1"}
    assert all(e[2]["enrollment_id"] == "en1" for e in identity.events)
    kinds = {f.type for f in recorded if f.message_id == message_id}
    assert {fact_pb2.FACT_TYPE_MESSAGE_SENT, fact_pb2.FACT_TYPE_MESSAGE_CLICKED,
            fact_pb2.FACT_TYPE_MESSAGE_OPENED, fact_pb2.FACT_TYPE_MESSAGE_UNSUBSCRIBED} <= kinds


async def test_a_provider_bounce_report_suppresses_the_address(backend: Backend) -> None:
    smtp_port, tracking_port = free_port(), free_port()
    with smtp_server(SmtpSink(), smtp_port):
        app = delivery_app(backend, smtp_port, ManualClock(),
                           CJO_DELIVERY_TRACKING_PORT=str(tracking_port))
        async with serving(app) as address, grpc.aio.insecure_channel(address) as ch, \
                httpx.AsyncClient() as web:
            stub = pb_grpc.DeliveryServiceStub(ch)
            provider = (await stub.CreateProvider(pb.CreateProviderRequest(
                provider=provider_pb2.Provider(
                    channel=common_pb2.CHANNEL_EMAIL, kind=provider_pb2.PROVIDER_KIND_SMTP,
                    config={"host": "127.0.0.1", "port": str(smtp_port),
                            "from": "Acme <news@acme.example>"})), metadata=WS)).provider
            url = provider.status_webhook_url
            assert url.startswith(f"http://127.0.0.1:{tracking_port}/s/")
            name = (await stub.SendMessage(send_request("k1", "ada@example.com"),
                                           metadata=WS)).message.name
            await eventually(lambda: _status(stub, name, SENT))
            assert (await get(stub, name)).provider == provider.name
            message_id = name.removeprefix("messages/")
            report = {"message_id": message_id, "status": "bounced",
                      "reason": "550 5.1.1 mailbox unknown"}
            assert (await web.post(url + "x", json=report)).status_code == 403
            unknown = {**report, "message_id": "not-a-message"}
            assert (await web.post(url, json=unknown)).status_code == 404
            assert (await web.post(url, json=report)).status_code == 200
            bounced = await get(stub, name)
            assert bounced.status == BOUNCED and "mailbox unknown" in bounced.error
            again = (await stub.SendMessage(send_request("k2", "ada@example.com"),
                                            metadata=WS)).message.name
            await eventually(lambda: _status(stub, again, SUPPRESSED))
            # Transactional messages skip consent, not the suppression list.
            receipt = send_request("k3", "ada@example.com")
            receipt.transactional = True
            kept = (await stub.SendMessage(receipt, metadata=WS)).message.name
            await eventually(lambda: _status(stub, kept, SUPPRESSED))
            assert (await get(stub, kept)).error.startswith("address suppressed: bounced")


async def _status(stub: pb_grpc.DeliveryServiceStub, name: str, status: int) -> bool:
    return (await get(stub, name)).status == status
