"""Messages sent for a decisioning decision: the decision id is stored on the message, named on
every fact of it, and its SENT fact goes to decisioning (a real gRPC stand-in for
RecordMessageFacts) as the decision's exposure; a suppressed message is none. Every open and
click goes to decisioning too, with or without a decision (send-time learning), unless
CJO_DELIVERY_FORWARD_TO_DECISIONING is off."""

from __future__ import annotations

import re
from dataclasses import dataclass
from html import unescape

import grpc
import httpx
import pytest
from delivery_support import (
    IdentityStandIn,
    SmtpSink,
    identity_stand_in,
    rendered_email,
    send_request,
    smtp_server,
)
from sqlalchemy import select

from cjo.analytics.v1 import fact_pb2
from cjo.decisioning.v1 import decisioning_service_pb2 as dpb
from cjo.decisioning.v1 import decisioning_service_pb2_grpc as dpb_grpc
from cjo.delivery.v1 import delivery_service_pb2 as pb
from cjo.delivery.v1 import delivery_service_pb2_grpc as pb_grpc
from cjo.delivery.v1 import message_pb2
from cjo_delivery.adapters.tables import outbox
from cjo_delivery.bootstrap import build
from cjo_platform.clock import ManualClock
from cjo_platform.config import ConfigError, Env
from cjo_platform.decisioning import DECISIONING_FACTS_TOPIC
from cjo_platform.limits import MAX_ID_LENGTH
from cjo_platform.rpc.status import OK
from support import Backend, as_service, eventually, free_port, serving, settings_for

WS = as_service("ws-a")
SENT = message_pb2.MESSAGE_STATUS_SENT
SUPPRESSED = message_pb2.MESSAGE_STATUS_SUPPRESSED
HTML = '<html><body><a href="https://shop.example/offer">Offer</a></body></html>'


class DecisioningStandIn(dpb_grpc.DecisioningServiceServicer):
    def __init__(self) -> None:
        self.facts: list[fact_pb2.Fact] = []

    async def RecordMessageFacts(self, request: dpb.RecordMessageFactsRequest,
                                 context: grpc.aio.ServicerContext
                                 ) -> dpb.RecordMessageFactsResponse:
        self.facts.extend(request.facts)
        return dpb.RecordMessageFactsResponse(results=[
            dpb.RecordMessageFactResult(status=OK) for _ in request.facts])


@dataclass
class Run:
    names: list[str]  # the decided message, the suppressed decided one, one without a decision
    decisioning: list[fact_pb2.Fact]  # what decisioning received
    analytics: list[fact_pb2.Fact]  # what waits in the outbox for analytics
    waiting: int  # outbox rows for decisioning still waiting


async def send_open_and_click(backend: Backend, **env_vars: str) -> Run:
    """Three messages sent (one suppressed), each sent email opened and clicked; returns once
    analytics' facts of the opens and clicks are written (and, with forwarding on, decisioning
    has its five facts)."""
    smtp_port, tracking_port = free_port(), free_port()
    decisioning = DecisioningStandIn()
    server = grpc.aio.server()
    dpb_grpc.add_DecisioningServiceServicer_to_server(decisioning, server)
    decisioning_port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        async with identity_stand_in(IdentityStandIn({"p-gone"})) as identity:
            with smtp_server(SmtpSink(), smtp_port) as sink:
                settings = settings_for(
                    "delivery", backend, CJO_ANALYTICS_TARGET=f"127.0.0.1:{free_port()}",
                    CJO_IDENTITY_TARGET=identity,
                    CJO_DECISIONING_TARGET=f"127.0.0.1:{decisioning_port}")
                env = Env({"CJO_SMTP_PORT": str(smtp_port), "CJO_DELIVERY_POLL_SECONDS": "0.05",
                           "CJO_DELIVERY_TRACKING_PORT": str(tracking_port), **env_vars})
                app = build(settings, env, ManualClock())
                env.check()
                async with serving(app) as address, grpc.aio.insecure_channel(address) as ch, \
                        httpx.AsyncClient() as web:
                    stub = pb_grpc.DeliveryServiceStub(ch)
                    decided = send_request("k1", content=rendered_email(html=HTML))
                    decided.decision_id = "d-1"
                    gone = send_request("k2", "gone@example.com", profile_id="p-gone")
                    gone.decision_id = "d-2"
                    plain = send_request("k3", "bo@example.com", profile_id="p3",
                                         content=rendered_email(html=HTML))
                    names = [(await stub.SendMessage(r, metadata=WS)).message.name
                             for r in (decided, gone, plain)]

                    async def statuses() -> list[int] | None:
                        found = [(await stub.GetMessage(pb.GetMessageRequest(name=n),
                                                        metadata=WS)).message for n in names]
                        done = [m.status for m in found]
                        # Every message's outcome, not just the two sends: the suppressed one's
                        # consent answer may come in a later wave than theirs.
                        pending = {message_pb2.MESSAGE_STATUS_QUEUED,
                                   message_pb2.MESSAGE_STATUS_SENDING}
                        return None if pending & set(done) else done

                    assert await eventually(statuses) == [SENT, SUPPRESSED, SENT]
                    message = (await stub.GetMessage(pb.GetMessageRequest(name=names[0]),
                                                     metadata=WS)).message
                    assert message.decision_id == "d-1"
                    for email in sink.received:
                        body = email.get_body(("html",)).get_content()
                        await web.get(unescape(re.findall(r'href="([^"]+)"', body)[0]))
                        await web.get(unescape(re.findall(r'<img src="([^"]+)"', body)[0]))

                    def outbox_rows() -> tuple[list[fact_pb2.Fact], int]:
                        with app.db.transaction() as session:
                            rows = session.execute(select(outbox.c.payload).where(
                                outbox.c.topic == "analytics.facts")).scalars().all()
                            waiting = len(session.execute(select(outbox.c.payload).where(
                                outbox.c.topic == DECISIONING_FACTS_TOPIC)).all())
                        return [fact_pb2.Fact.FromString(r) for r in rows], waiting

                    async def engaged() -> bool:
                        recorded, _ = await app.db.run(outbox_rows)
                        return sum(f.type in (fact_pb2.FACT_TYPE_MESSAGE_OPENED,
                                              fact_pb2.FACT_TYPE_MESSAGE_CLICKED)
                                   for f in recorded) == 4

                    await eventually(engaged)
                    if env.bool("CJO_DELIVERY_FORWARD_TO_DECISIONING", True):
                        await eventually(lambda: len(decisioning.facts) == 5)
                    recorded, waiting = await app.db.run(outbox_rows)
    finally:
        await server.stop(None)
    return Run(names, list(decisioning.facts), recorded, waiting)


async def test_a_decision_s_message_is_its_exposure_and_opens_and_clicks_go_to_decisioning(
        backend: Backend) -> None:
    run = await send_open_and_click(backend)
    names = run.names
    ids = {n: n.removeprefix("messages/") for n in names}
    got = sorted((f.message_id, f.type, f.decision_id) for f in run.decisioning)
    first, third = ids[names[0]], ids[names[2]]
    # The exposure is the decided message's SENT fact only: the suppressed decision's message
    # showed nothing, and a message without a decision exposes nothing.
    assert got == sorted([
        (first, fact_pb2.FACT_TYPE_MESSAGE_SENT, "d-1"),
        (first, fact_pb2.FACT_TYPE_MESSAGE_CLICKED, "d-1"),
        (first, fact_pb2.FACT_TYPE_MESSAGE_OPENED, "d-1"),
        (third, fact_pb2.FACT_TYPE_MESSAGE_CLICKED, ""),
        (third, fact_pb2.FACT_TYPE_MESSAGE_OPENED, "")])
    # Analytics' facts of the decided message name the decision too.
    assert {f.decision_id for f in run.analytics if f.message_id == first} == {"d-1"}
    assert {f.decision_id for f in run.analytics if f.message_id == third} == {""}


async def test_forwarding_to_decisioning_can_be_switched_off(backend: Backend) -> None:
    """Where decisioning is not deployed: no exposure, open or click is queued for it (its rows
    would wait in the outbox for good), and analytics still gets every fact."""
    run = await send_open_and_click(backend, CJO_DELIVERY_FORWARD_TO_DECISIONING="false")
    assert run.decisioning == []
    assert run.waiting == 0  # none was written, rather than stuck
    first = run.names[0].removeprefix("messages/")
    assert {f.type for f in run.analytics if f.message_id == first} >= {
        fact_pb2.FACT_TYPE_MESSAGE_SENT, fact_pb2.FACT_TYPE_MESSAGE_OPENED,
        fact_pb2.FACT_TYPE_MESSAGE_CLICKED}


def test_the_off_switch_is_validated_at_start_up(backend: Backend) -> None:
    env = Env({"CJO_DELIVERY_FORWARD_TO_DECISIONING": "perhaps"})
    build(settings_for("delivery", backend), env).db.dispose()
    with pytest.raises(ConfigError, match="CJO_DELIVERY_FORWARD_TO_DECISIONING"):
        env.check()


@pytest.mark.parametrize("length", [MAX_ID_LENGTH + 1])
async def test_a_decision_id_longer_than_the_id_limit_is_refused(
        backend: Backend, length: int) -> None:
    settings = settings_for("delivery", backend, CJO_ANALYTICS_TARGET=f"127.0.0.1:{free_port()}",
                            CJO_IDENTITY_TARGET=f"127.0.0.1:{free_port()}")
    env = Env({"CJO_SMTP_PORT": str(free_port()), "CJO_DELIVERY_CHECK_CONSENT": "false"})
    app = build(settings, env, ManualClock())
    async with serving(app) as address, grpc.aio.insecure_channel(address) as ch:
        stub = pb_grpc.DeliveryServiceStub(ch)
        request = send_request("k1")
        request.decision_id = "d" * length
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await stub.SendMessage(request, metadata=WS)
        assert refused.value.code() is grpc.StatusCode.INVALID_ARGUMENT
        assert "decision_id" in (refused.value.details() or "")
        listed = await stub.ListMessages(pb.ListMessagesRequest(), metadata=WS)
        assert not listed.messages  # nothing was written
        request.decision_id = "d" * MAX_ID_LENGTH
        stored = (await stub.SendMessage(request, metadata=WS)).message
        assert stored.decision_id == "d" * MAX_ID_LENGTH
