"""A provider's report finds the message it was handed, whatever cjo recorded of the send
(review hdeliv): the report of a provider that took the email but answered after its timeout
(failover then sent it through another), and a bounce reported while cjo still waits for the
provider's answer, both put the address on the suppression list, so the next message to it is
not sent."""

from __future__ import annotations

import json
import threading
import urllib.request

from delivery_support import send_request
from http_sink import Answer, HttpSink, Request, http_sink
from provider_webhook_support import SUPPRESSED, harness, smtp_provider

from cjo.common.v1 import common_pb2
from cjo.delivery.v1 import provider_pb2
from support import Backend


async def test_report_of_the_provider_before_the_failover(backend: Backend) -> None:
    answered = threading.Event()

    def late(request: Request) -> Answer:
        answered.wait(10)  # past cjo's timeout: it fails over, the email went all the same
        return Answer(200, {"id": "a-1"})
    with http_sink(HttpSink(default=late)) as a_sink:
        try:
            async with harness(backend) as h:
                a = await h.create(provider_pb2.Provider(
                    channel=common_pb2.CHANNEL_EMAIL, kind=provider_pb2.PROVIDER_KIND_HTTP_JSON,
                    priority=0, config={"url": a_sink.url + "/send", "timeout_seconds": "0.5"}))
                b = smtp_provider(h.sink_port)
                b.priority = 10
                await h.create(b)
                message_id = await h.send_email("k1", "ada@example.com")
                assert a_sink.count() == 1 and len(h.sink.to("ada@example.com")) == 1
                answer = await h.web.post(a.status_webhook_url, json={
                    "message_id": message_id, "status": "complained", "reason": "abuse"})
                assert answer.status_code == 200, answer.text
                again = await h.send(send_request("k2", "ada@example.com"))
                assert await h.status(again) == SUPPRESSED
        finally:
            answered.set()


async def test_bounce_reported_before_the_provider_answered(backend: Backend) -> None:
    status_url: list[str] = []
    answers: list[tuple[int, bytes]] = []

    def reports_first(request: Request) -> Answer:
        report = {"message_id": request.json()["message_id"], "status": "bounced",
                  "reason": "550"}
        post = urllib.request.Request(status_url[0], data=json.dumps(report).encode(),
                                      headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(post, timeout=10) as response:
            answers.append((response.status, response.read()))
        return Answer(200, {"id": "a-1"})
    with http_sink(HttpSink(default=reports_first)) as a_sink:
        async with harness(backend) as h:
            a = await h.create(provider_pb2.Provider(
                channel=common_pb2.CHANNEL_EMAIL, kind=provider_pb2.PROVIDER_KIND_HTTP_JSON,
                config={"url": a_sink.url + "/send"}))
            status_url.append(a.status_webhook_url)
            await h.send(send_request("k1", "gone@example.com"))
            assert [status for status, _ in answers] == [200], answers
            again = await h.send(send_request("k2", "gone@example.com"))
            assert await h.status(again) == SUPPRESSED
