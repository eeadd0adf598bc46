"""Engagement from real providers through the engagement listener: each provider's documented
sample reports (tests/delivery/provider_samples/), signed as the provider signs them, change the
message, the suppression list, identity's events and analytics' facts exactly as cjo's own
webhook does; a bad signature is refused and records nothing; a report about an unknown message
is answered 200 and ignored (providers retry anything else); a repeat is recorded once."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
from collections.abc import Awaitable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import parse_qsl, quote

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.x509.oid import NameOID
from delivery_support import delivery_app, self_signed, send_request
from google.protobuf import field_mask_pb2
from grpc_status import rpc_status
from http_sink import Answer, HttpSink, Request, http_sink
from provider_webhook_support import (
    BOUNCED,
    DELIVERED,
    SENT,
    SUPPRESSED,
    WS,
    Harness,
    cert_server,
    engagement_listener,
    fixture,
    harness,
    smtp_provider,
)
from structlog.testing import capture_logs

from cjo.analytics.v1 import fact_pb2
from cjo.common.v1 import common_pb2
from cjo.delivery.v1 import delivery_service_pb2 as pb
from cjo.delivery.v1 import message_pb2, provider_pb2
from cjo_delivery.adapters.webhooks import twilio
from cjo_platform.rpc.status import field_violations
from support import Backend, eventually, serving

TOPIC = "arn:aws:sns:us-west-2:123456789012:MyTopic"  # the SNS samples' topic
WEBHOOK_PASSWORD = "pm-basic-password-never-shown-41c2"
SIGNING_KEY = "mg-signing-key-never-shown-77d1"


def p256() -> tuple[ec.EllipticCurvePrivateKey, str]:
    """A SendGrid-style key pair: the private half signs, the base64 DER public half is what
    SendGrid's settings page shows and the provider is configured with."""
    private = ec.generate_private_key(ec.SECP256R1())
    public = private.public_key().public_bytes(serialization.Encoding.DER,
                                               serialization.PublicFormat.SubjectPublicKeyInfo)
    return private, base64.b64encode(public).decode()


def sendgrid_headers(private: ec.EllipticCurvePrivateKey, body: bytes, at: datetime
                     ) -> dict[str, str]:
    """Signed as SendGrid signs a batch it posts at ``at``."""
    timestamp = str(int(at.timestamp()))
    signature = private.sign(timestamp.encode() + body, ec.ECDSA(hashes.SHA256()))
    return {"X-Twilio-Email-Event-Webhook-Signature": base64.b64encode(signature).decode(),
            "X-Twilio-Email-Event-Webhook-Timestamp": timestamp,
            "Content-Type": "application/json"}


async def bounce_reaches_suppression(h: Harness, address: str, key: str) -> None:
    """The next message to ``address`` is suppressed."""
    again = await h.send(send_request(key, address))
    assert await h.status(again) == SUPPRESSED


async def test_sendgrid_sample_events_bounce_the_message_and_reach_the_profile(
        backend: Backend) -> None:
    private, public = p256()
    async with harness(backend) as h:
        provider = await h.create(smtp_provider(h.sink_port, webhook_format="sendgrid",
                                                webhook_public_key=public))
        url = provider.status_webhook_url
        assert url.startswith(f"http://127.0.0.1:{h.tracking_port}/s/")
        message_id = await h.send_email("k1")
        [email] = h.sink.received
        # What SendGrid's SMTP relay reports back: custom args and the Message-ID.
        assert json.loads(email["X-SMTPAPI"]) == {"unique_args": {"cjo_message_id": message_id}}
        assert email["X-Cjo-Message-Id"] == message_id
        events = fixture("sendgrid_events.json", email="ada@example.com",
                         smtp_id=email["Message-ID"])
        body = json.dumps(events).encode()

        # Refused, and nothing recorded: unsigned, signed by another key, altered after signing.
        assert (await h.web.post(url, content=body)).status_code == 401
        other, _ = p256()
        assert (await h.web.post(url, content=body,
                                 headers=sendgrid_headers(other, body, h.clock.now()))
                ).status_code == 403
        altered = body.replace(b"5.0.0", b"4.0.0")
        assert (await h.web.post(url, content=altered,
                                 headers=sendgrid_headers(private, body, h.clock.now()))
                ).status_code == 403
        assert await h.status(message_id) == SENT and h.engagement_rows() == 0

        # About a message cjo never sent: acknowledged (SendGrid retries non-2xx), ignored.
        stranger = json.dumps(fixture("sendgrid_events.json", email="bo@example.com",
                                      smtp_id="<14c5d75ce93.dfd.64b469@ismtpd-555>")).encode()
        ignored = await h.web.post(url, content=stranger,
                                   headers=sendgrid_headers(private, stranger, h.clock.now()))
        assert ignored.status_code == 200 and h.engagement_rows() == 0

        answer = await h.web.post(url, content=body,
                                  headers=sendgrid_headers(private, body, h.clock.now()))
        assert answer.status_code == 200
        message = await h.message(message_id)
        assert message.status == BOUNCED and "500 unknown recipient" in message.error
        await bounce_reaches_suppression(h, "ada@example.com", "k2")

        # SendGrid retries a batch it thinks failed: the same events, recorded once.
        again = await h.web.post(url, content=body,
                                 headers=sendgrid_headers(private, body, h.clock.now()))
        assert again.status_code == 200

        # A signed batch from outside the ten minutes either way is refused, whatever it says.
        retracted = json.dumps([{**e, "event": "delivered"} for e in events]).encode()
        for skew in (timedelta(minutes=-11), timedelta(hours=-1), timedelta(minutes=11)):
            stale = await h.web.post(url, content=retracted, headers=sendgrid_headers(
                private, retracted, h.clock.now() + skew))
            assert stale.status_code == 403
        within = await h.web.post(url, content=b"[]", headers=sendgrid_headers(
            private, b"[]", h.clock.now() - timedelta(minutes=9)))
        assert within.status_code == 200
        await eventually(lambda: len(h.identity.events) >= 12)

    # delivered, open, click, bounce, spam report, unsubscribe, group unsubscribe (processed,
    # deferred, dropped and group_resubscribe are not engagement), twice.
    names = h.identity.names()
    assert names[:7] == ["email_delivered", "email_opened", "link_clicked", "email_bounced",
                         "email_complained", "unsubscribed", "unsubscribed"]
    assert names[7:] == names[:7]
    # Identity dedupes on the event id: each engagement has one, however often reported.
    assert len({e[0] for e in h.identity.events}) == 6
    bounce = h.identity.events[3]
    assert bounce[2]["message_id"] == message_id
    # The profile the message was sent to, by id: not looked up by the address.
    assert bounce[3:] == ([], "p1")
    assert h.identity.events[2][2]["url"] == "http://www.sendgrid.com/"
    facts = [f for f in h.facts() if f.message_id == message_id]
    bounced = [f for f in facts if f.type == fact_pb2.FACT_TYPE_MESSAGE_BOUNCED]
    assert {f.fact_id for f in bounced} == {bounced[0].fact_id}
    assert bounced[0].profile_id == "p1"


async def test_bad_webhook_settings_name_each_field_and_secrets_stay_hidden(
        backend: Backend) -> None:
    async with harness(backend) as h:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await h.create(smtp_provider(h.sink_port, webhook_format="sendgrid",
                                         webhook_sns_hosts="*.com"))
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        status = rpc_status.from_call(caught.value)
        assert status is not None
        assert field_violations(status) == {
            "provider.config[webhook_sns_hosts]":
                "must be comma-separated host names; * stands for one label",
            "provider.config[webhook_public_key]": "is required for webhook_format sendgrid"}
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await h.create(smtp_provider(h.sink_port, webhook_format="sparkpost",
                                         webhook_public_key="bm90IGEga2V5"))
        status = rpc_status.from_call(caught.value)
        assert status is not None and set(field_violations(status)) == {
            "provider.config[webhook_format]", "provider.config[webhook_public_key]"}
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await h.create(smtp_provider(h.sink_port, webhook_format="ses"))
        status = rpc_status.from_call(caught.value)
        assert status is not None and field_violations(status) == {
            "provider.config[webhook_sns_topic_arns]": "is required for webhook_format ses"}
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await h.create(smtp_provider(h.sink_port, webhook_format="ses",
                                         webhook_sns_topic_arns=f"{TOPIC},arn:aws:s3:::x"))
        status = rpc_status.from_call(caught.value)
        assert status is not None and set(field_violations(status)) == {
            "provider.config[webhook_sns_topic_arns]"}
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await h.create(smtp_provider(h.sink_port, webhook_format="postmark",
                                         webhook_username="cjo"))
        status = rpc_status.from_call(caught.value)
        assert status is not None and field_violations(status) == {
            "provider.secrets[webhook_password]": "is required for webhook_format postmark"}

        with capture_logs() as logs:
            created = await h.create(smtp_provider(
                h.sink_port, webhook_format="postmark", webhook_username="cjo",
                secret_webhook_password=WEBHOOK_PASSWORD))
            listed = (await h.stub.ListProviders(pb.ListProvidersRequest(),
                                                 metadata=WS)).providers
            await h.web.post(created.status_webhook_url, json={"RecordType": "Delivery"},
                             auth=("cjo", "wrong"))
        assert list(created.secret_keys) == ["webhook_password"]
        assert WEBHOOK_PASSWORD not in str(created) + str(listed) + str(logs)


async def test_ses_through_sns_confirms_verifies_and_records(
        backend: Backend, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No internet here: a local HTTPS server with a self-made certificate stands in for SNS
    (the provider's allowlist names it), serving a self-made signing certificate."""
    tls_cert, tls_key = self_signed(tmp_path)
    # Delivery's HTTP client trusts the system store, which SSL_CERT_FILE replaces.
    monkeypatch.setenv("SSL_CERT_FILE", str(tls_cert))
    signer = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "sns.amazonaws.com")])
    now = datetime.now(UTC)
    certificate = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
                   .public_key(signer.public_key()).serial_number(1)
                   .not_valid_before(now - timedelta(days=1))
                   .not_valid_after(now + timedelta(days=1)).sign(signer, hashes.SHA256()))
    pem = certificate.public_bytes(serialization.Encoding.PEM)

    def sign(envelope: dict[str, str], at: datetime | None = None) -> dict[str, str]:
        """Signed as SNS signs an envelope it sent ``at`` (default: now, the harness's clock)."""
        sent = at or clock.now()
        envelope = {**envelope, "Timestamp": sent.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"}
        fields = (("Message", "MessageId", "Subject", "Timestamp", "TopicArn", "Type")
                  if envelope["Type"] == "Notification" else
                  ("Message", "MessageId", "SubscribeURL", "Timestamp", "Token", "TopicArn",
                   "Type"))
        text = "".join(f"{k}\n{envelope[k]}\n" for k in fields if k in envelope).encode()
        algorithm = hashes.SHA1() if envelope["SignatureVersion"] == "1" else hashes.SHA256()
        signature = signer.sign(text, padding.PKCS1v15(), algorithm)
        return {**envelope, "Signature": base64.b64encode(signature).decode()}

    with cert_server(pem, tls_cert, tls_key) as sns:
        cert_url = sns.url("/SimpleNotificationService-0123456789abcdef.pem")
        async with harness(backend) as h:
            clock = h.clock
            provider = await h.create(smtp_provider(
                h.sink_port, webhook_format="ses", webhook_sns_hosts="127.0.0.1",
                webhook_sns_topic_arns=f"arn:aws:sns:eu-west-1:210987654321:other, {TOPIC}"))
            url = provider.status_webhook_url
            message_id = await h.send_email("k1")
            [email] = h.sink.received

            confirm = sign(fixture("sns_subscription_confirmation.json", version="1",
                                   cert_url=cert_url,
                                   subscribe_url=sns.url("/?Action=ConfirmSubscription"
                                                         "&Token=2336412f37")))
            # Signed by SNS, but for a topic of somebody else's account, or sent two hours ago
            # (a replay): refused, and neither the certificate nor the SubscribeURL is fetched.
            strangers = sign({**confirm, "TopicArn": "arn:aws:sns:us-west-2:999999999999:MyTopic"})
            assert (await h.web.post(url, json=strangers)).status_code == 403
            old = sign(confirm, clock.now() - timedelta(hours=2))
            assert (await h.web.post(url, json=old)).status_code == 403
            assert sns.paths == []
            assert (await h.web.post(url, json=confirm)).status_code == 200
            assert sns.paths == ["/SimpleNotificationService-0123456789abcdef.pem",
                                 "/?Action=ConfirmSubscription&Token=2336412f37"]
            # A SubscribeURL or certificate elsewhere than the allowlist is never fetched.
            elsewhere = sign({**confirm, "SubscribeURL": "https://sns.evil.example/confirm"})
            assert (await h.web.post(url, json=elsewhere)).status_code == 403
            foreign = sign({**confirm, "SigningCertURL": "https://127.0.0.2/cert.pem"})
            assert (await h.web.post(url, json=foreign)).status_code == 403
            assert len(sns.paths) == 2

            def notification(sample: dict[str, object], version: str) -> dict[str, str]:
                envelope = fixture("sns_notification.json", version=version, cert_url=cert_url)
                return sign({**envelope, "Message": json.dumps(sample)})

            delivered = notification(fixture("ses_delivery.json", email="ada@example.com",
                                             message_id_header=email["Message-ID"]), "1")
            forged = {**delivered, "Message": delivered["Message"].replace("Delivery",
                                                                         "Bounce")}
            assert (await h.web.post(url, json=forged)).status_code == 403
            assert (await h.web.post(url, json={**delivered, "Signature": "AAAA"})
                    ).status_code == 403
            assert await h.status(message_id) == SENT and h.engagement_rows() == 0
            assert (await h.web.post(url, json=delivered)).status_code == 200
            assert await h.status(message_id) == DELIVERED

            bounced = notification(fixture("ses_bounce.json", email="ada@example.com",
                                           message_id_header=email["Message-ID"]), "2")
            assert (await h.web.post(url, json=bounced)).status_code == 200
            message = await h.message(message_id)
            assert message.status == BOUNCED and "5.1.1 user unknown" in message.error
            await bounce_reaches_suppression(h, "ada@example.com", "k2")

            # Named by the message tag the email carried; the address is another one.
            second = await h.send_email("k3", "bo@example.com")
            [to_bo] = h.sink.to("bo@example.com")
            tag = to_bo["X-SES-MESSAGE-TAGS"].removeprefix("cjo-message-id=")
            assert tag == second
            complaint = notification(fixture("ses_complaint.json", email="bo@example.com",
                                             message_id=tag, ses_message_id="x"), "2")
            assert (await h.web.post(url, json=complaint)).status_code == 200
            await bounce_reaches_suppression(h, "bo@example.com", "k4")
            unknown = notification(fixture("ses_complaint.json", email="cy@example.com",
                                            message_id="no-such", ses_message_id="y"), "2")
            assert (await h.web.post(url, json=unknown)).status_code == 200
            # A notification captured and posted again an hour and more later: refused.
            clock.advance(timedelta(minutes=61))
            assert (await h.web.post(url, json=complaint)).status_code == 403
            foreign = sign({**complaint, "TopicArn": "arn:aws:sns:us-west-2:999999999999:x"})
            assert (await h.web.post(url, json=foreign)).status_code == 403
            # The certificate was fetched once and is cached.
            assert sns.paths.count("/SimpleNotificationService-0123456789abcdef.pem") == 1
            await eventually(lambda: len(h.identity.events) == 3)
        assert h.identity.names() == ["email_delivered", "email_bounced", "email_complained"]


def mailgun_signed(sample: str, key: str, timestamp: int, token: str, **values: str
                   ) -> dict[str, object]:
    signature = hmac.new(key.encode(), f"{timestamp}{token}".encode(),
                         hashlib.sha256).hexdigest()
    payload: dict[str, object] = fixture(sample, timestamp=timestamp, token=token,
                                         signature=signature, **values)
    return payload


async def test_mailgun_signed_events_with_a_replay_window(backend: Backend) -> None:
    async with harness(backend) as h:
        provider = await h.create(smtp_provider(h.sink_port, webhook_format="mailgun",
                                                secret_webhook_signing_key=SIGNING_KEY))
        url = provider.status_webhook_url
        message_id = await h.send_email("k1")
        [email] = h.sink.received
        now = int(h.clock.now().timestamp())
        # Mailgun writes the Message-ID without its brackets.
        header = email["Message-ID"].strip("<>")
        variables = json.loads(email["X-Mailgun-Variables"])
        opened = mailgun_signed("mailgun_opened.json", SIGNING_KEY, now, "tok-1",
                                email="ada@example.com",
                                message_id=variables["cjo-message-id"])
        failed = mailgun_signed("mailgun_failed.json", SIGNING_KEY, now, "tok-2",
                                email="ada@example.com", message_id_header=header)
        forged = mailgun_signed("mailgun_failed.json", "another-key", now, "tok-3",
                                email="ada@example.com", message_id_header=header)
        stale = mailgun_signed("mailgun_failed.json", SIGNING_KEY, now - 3600, "tok-4",
                               email="ada@example.com", message_id_header=header)
        assert (await h.web.post(url, json=forged)).status_code == 403
        assert (await h.web.post(url, json=stale)).status_code == 403
        assert await h.status(message_id) == SENT and h.engagement_rows() == 0
        assert (await h.web.post(url, json=opened)).status_code == 200
        assert (await h.web.post(url, json=failed)).status_code == 200
        message = await h.message(message_id)
        assert message.status == BOUNCED
        assert "Not delivering to previously bounced address" in message.error
        # Mailgun's retry of a recorded report (its 200 got lost): answered 200, or Mailgun
        # retries for hours; nothing recorded twice. The token with other content: refused.
        retried = await h.web.post(url, json=failed)
        assert (retried.status_code, retried.text) == (200, "recorded before")
        reused = mailgun_signed("mailgun_opened.json", SIGNING_KEY, now, "tok-2",
                                email="ada@example.com", message_id_header=header)
        assert (await h.web.post(url, json=reused)).status_code == 403
        unknown = mailgun_signed("mailgun_opened.json", SIGNING_KEY, now, "tok-5",
                                 email="cy@example.com", message_id="no-such")
        assert (await h.web.post(url, json=unknown)).status_code == 200
        await bounce_reaches_suppression(h, "ada@example.com", "k2")
        await eventually(lambda: len(h.identity.events) == 2)
    assert h.identity.names() == ["email_opened", "email_bounced"]


async def test_a_mailgun_token_is_recorded_once_by_any_replica(backend: Backend) -> None:
    """Mailgun signs the timestamp and token, not the event: a seen signature could carry other
    event-data. The token is spent in the database with the events, so of two reports with one
    token posted at once exactly one is recorded, and another replica refuses it too."""
    async with harness(backend) as h:
        provider = await h.create(smtp_provider(h.sink_port, webhook_format="mailgun",
                                                secret_webhook_signing_key=SIGNING_KEY))
        url = provider.status_webhook_url
        message_id = await h.send_email("k1")
        now = int(h.clock.now().timestamp())

        def signed(sample: str, token: str) -> dict[str, object]:
            return mailgun_signed(sample, SIGNING_KEY, now, token, email="ada@example.com",
                                  message_id=message_id, message_id_header=f"{message_id}@cjo")

        # The same signed token with two different event-data, posted together.
        answers = await asyncio.gather(
            h.web.post(url, json=signed("mailgun_opened.json", "tok-race")),
            h.web.post(url, json=signed("mailgun_failed.json", "tok-race")))
        assert sorted((a.status_code, a.text) for a in answers) == [
            (200, "recorded 1 of 1"), (403, "replayed")]
        assert await h.engagement_recorded() == 1

        # The replica's listener binds a port of the kernel's choosing (one picked in advance
        # could meanwhile be bound by another process, which would then answer for it); its
        # links name the same public URL, as replicas behind one Service do.
        replica = delivery_app(backend, h.sink_port, h.clock, identity=h.identity_target,
                               CJO_DELIVERY_TRACKING_PORT="0",
                               CJO_DELIVERY_TRACKING_URL=f"http://127.0.0.1:{h.tracking_port}")
        async with serving(replica):
            listener = engagement_listener(replica)
            second_port = await eventually(lambda: listener.bound_port)
            there = url.replace(f":{h.tracking_port}/", f":{second_port}/")
            # The winner's report again (a retry): 200 there too; the loser's: refused.
            won, lost = (("mailgun_opened.json", "mailgun_failed.json")
                         if answers[0].status_code == 200 else
                         ("mailgun_failed.json", "mailgun_opened.json"))
            retried = await h.web.post(there, json=signed(won, "tok-race"))
            assert (retried.status_code, retried.text) == (200, "recorded before")
            refused = await h.web.post(there, json=signed(lost, "tok-race"))
            assert refused.status_code == 403
            fresh = await h.web.post(there, json=signed("mailgun_failed.json", "tok-other"))
            assert fresh.status_code == 200 and fresh.text == "recorded 1 of 1"
            # The retry and the replay recorded nothing there either.
            assert await h.engagement_recorded() == 2


async def test_postmark_records_with_basic_auth(backend: Backend) -> None:
    async with harness(backend) as h:
        provider = await h.create(smtp_provider(
            h.sink_port, webhook_format="postmark", webhook_username="cjo-hooks",
            secret_webhook_password=WEBHOOK_PASSWORD))
        url = provider.status_webhook_url
        first = await h.send_email("k1")
        second = await h.send_email("k2", "bo@example.com")
        # The metadata Postmark's SMTP relay takes from the X-PM-Metadata-* headers.
        [to_ada], [to_bo] = h.sink.to("ada@example.com"), h.sink.to("bo@example.com")
        assert to_ada["X-PM-Metadata-cjo-message-id"] == first
        bounce = fixture("postmark_bounce.json", email="ada@example.com",
                         message_id=to_ada["X-PM-Metadata-cjo-message-id"])
        auth = ("cjo-hooks", WEBHOOK_PASSWORD)
        assert (await h.web.post(url, json=bounce)).status_code == 401
        assert (await h.web.post(url, json=bounce, auth=("cjo-hooks", "guess"))
                ).status_code == 401
        assert await h.status(first) == SENT and h.engagement_rows() == 0
        assert (await h.web.post(url, json=bounce, auth=auth)).status_code == 200
        message = await h.message(first)
        assert message.status == BOUNCED and "HardBounce" in message.error
        await bounce_reaches_suppression(h, "ada@example.com", "k3")

        change = fixture("postmark_subscription_change.json", email="bo@example.com",
                         message_id=to_bo["X-PM-Metadata-cjo-message-id"])
        assert (await h.web.post(url, json=change, auth=auth)).status_code == 200
        # Postmark's own id of a message cjo did not send through its API: ignored.
        delivery = fixture("postmark_delivery.json", email="bo@example.com",
                           postmark_id="883953f4-6105-42a2-a16a-77a8eac79483")
        assert (await h.web.post(url, json=delivery, auth=auth)).status_code == 200
        assert await h.status(second) == SENT
        await eventually(lambda: len(h.identity.events) == 2)
    assert h.identity.names() == ["email_bounced", "unsubscribed"]
    assert h.identity.events[1][2]["message_id"] == second


async def test_a_provider_s_url_reaches_only_the_messages_it_sent(backend: Backend) -> None:
    """A report through one provider's URL (here a Postmark password, or cjo's own JSON) names
    a message another provider sent: acknowledged, nothing recorded."""
    async with harness(backend) as h:
        sender = await h.create(smtp_provider(h.sink_port))
        postmark = smtp_provider(h.sink_port, webhook_format="postmark",
                                 webhook_username="cjo-hooks",
                                 secret_webhook_password=WEBHOOK_PASSWORD)
        postmark.priority = 10  # the first provider sends
        other = await h.create(postmark)
        message_id = await h.send_email("k1")
        assert (await h.message(message_id)).provider == sender.name
        bounce = fixture("postmark_bounce.json", email="ada@example.com", message_id=message_id)
        answer = await h.web.post(other.status_webhook_url, json=bounce,
                                  auth=("cjo-hooks", WEBHOOK_PASSWORD))
        assert answer.status_code == 200 and answer.text == "recorded 0 of 1"
        own_json = {"message_id": message_id, "status": "bounced", "reason": "550"}
        plain = await h.create(smtp_provider(h.sink_port))
        assert (await h.web.post(plain.status_webhook_url, json=own_json)).status_code == 404
        assert await h.status(message_id) == SENT and h.engagement_rows() == 0
        # Through the URL of the provider that sent it, the same report is recorded.
        assert (await h.web.post(sender.status_webhook_url, json=own_json)).status_code == 200
        assert await h.status(message_id) == BOUNCED


async def test_a_provider_s_status_url_is_rotated_alone(backend: Backend) -> None:
    """UpdateProvider with status_webhook_url in its mask issues a new URL: the old one is
    refused from then on, another provider's URL and other updates change nothing."""
    async with harness(backend) as h:
        provider = await h.create(smtp_provider(h.sink_port))
        second = smtp_provider(h.sink_port)
        second.priority = 10  # the first provider sends
        bystander = await h.create(second)
        old = provider.status_webhook_url
        message_id = await h.send_email("k1")
        report = {"message_id": message_id, "status": "delivered"}

        def update(*paths: str) -> Awaitable[pb.UpdateProviderResponse]:
            return h.stub.UpdateProvider(pb.UpdateProviderRequest(
                provider=provider_pb2.Provider(name=provider.name, display_name="renamed"),
                update_mask=field_mask_pb2.FieldMask(paths=list(paths))), metadata=WS)

        assert (await update("display_name")).provider.status_webhook_url == old
        rotated = (await update("status_webhook_url")).provider.status_webhook_url
        assert rotated != old
        got = (await h.stub.GetProvider(pb.GetProviderRequest(name=provider.name),
                                        metadata=WS)).provider
        assert got.status_webhook_url == rotated
        refused = await h.web.post(old, json=report)
        assert refused.status_code == 403 and h.engagement_rows() == 0
        assert (await h.web.post(rotated, json=report)).status_code == 200
        assert await h.status(message_id) == DELIVERED
        listed = (await h.stub.ListProviders(pb.ListProvidersRequest(), metadata=WS)).providers
        assert {p.status_webhook_url for p in listed} == {
            rotated, bystander.status_webhook_url}
        # A deleted provider's URL is refused.
        await h.stub.DeleteProvider(pb.DeleteProviderRequest(name=bystander.name), metadata=WS)
        gone = await h.web.post(bystander.status_webhook_url, json=report)
        assert gone.status_code == 403


async def test_twilio_status_callbacks_are_signed_over_url_and_parameters(
        backend: Backend) -> None:
    token = "tw-auth-token-never-shown-9f3a"
    def answer(request: Request) -> Answer:
        return Answer(201, {"sid": f"SM{hashlib.md5(request.body).hexdigest()}"})

    with http_sink(HttpSink(default=answer)) as sms_api:
        async with harness(backend) as h:
            provider = await h.create(provider_pb2.Provider(
                channel=common_pb2.CHANNEL_SMS, kind=provider_pb2.PROVIDER_KIND_TWILIO_SMS,
                config={"account_sid": "AC123", "from": "+15005550006",
                        "base_url": sms_api.url, "webhook_format": "twilio"},
                secrets={"auth_token": token}))
            url = provider.status_webhook_url

            def sms(key: str, to: str) -> pb.SendMessageRequest:
                return pb.SendMessageRequest(
                    idempotency_key=key,
                    recipient=message_pb2.Recipient(profile_id="p1", address=to),
                    content=common_pb2.RenderedMessage(
                        channel=common_pb2.CHANNEL_SMS,
                        sms=common_pb2.RenderedSms(text="Your code is 1234")))

            first = await h.send(sms("k1", "+14155550100"))
            sid = (await h.message(first)).provider_message_id
            second = await h.send(sms("k2", "+14155550101"))
            other_sid = (await h.message(second)).provider_message_id
            assert sid and other_sid and sid != other_sid

            def callback(message_sid: str, status: str, error: str = "") -> tuple[str, str]:
                body = fixture("twilio_status.txt", sid=message_sid, status=status,
                               error=f"&ErrorCode={error}" if error else "").strip()
                return body, twilio.signature(token, url, dict(parse_qsl(body)))

            body, signature = callback(sid, "delivered")
            form = {"Content-Type": "application/x-www-form-urlencoded"}
            assert (await h.web.post(url, content=body, headers={
                **form, "X-Twilio-Signature": twilio.signature("other", url, {})})
                ).status_code == 403
            assert (await h.web.post(url, content=body.replace("delivered", "failed"),
                                     headers={**form, "X-Twilio-Signature": signature})
                    ).status_code == 403
            assert await h.status(first) == SENT and h.engagement_rows() == 0
            assert (await h.web.post(url, content=body, headers={
                **form, "X-Twilio-Signature": signature})).status_code == 200
            assert await h.status(first) == DELIVERED

            # Unknown destination (30005) can never receive; an unreachable handset (30003)
            # may later: only the first is a bounce.
            body, signature = callback(other_sid, "undelivered", "30003")
            assert (await h.web.post(url, content=body, headers={
                **form, "X-Twilio-Signature": signature})).status_code == 200
            assert await h.status(second) == SENT
            body, signature = callback(other_sid, "undelivered", "30005")
            assert (await h.web.post(url, content=body, headers={
                **form, "X-Twilio-Signature": signature})).status_code == 200
            assert await h.status(second) == BOUNCED
            third = await h.send(sms("k3", "+14155550101"))
            assert await h.status(third) == SUPPRESSED
            body, signature = callback("SM" + "0" * 32, "delivered")
            assert (await h.web.post(url, content=body, headers={
                **form, "X-Twilio-Signature": signature})).status_code == 200
            await eventually(lambda: len(h.identity.events) == 2)
    assert h.identity.names() == ["sms_delivered", "sms_bounced"]


async def test_delivery_status_notifications_from_a_bounce_mailbox(backend: Backend) -> None:
    async with harness(backend) as h:
        provider = await h.create(smtp_provider(h.sink_port, webhook_format="dsn"))
        url = provider.status_webhook_url
        message_id = await h.send_email("k1")
        [email] = h.sink.received
        headers = {"Content-Type": "message/rfc822"}

        def dsn(action: str, status: str, header: str) -> bytes:
            text: str = fixture("dsn_permanent.eml", email="ada@example.com", action=action,
                                status=status, message_id_header=header)
            return text.encode()

        # A delay is no bounce; a report about another system's message is ignored.
        delayed = dsn("delayed", "4.4.1", email["Message-ID"])
        assert (await h.web.post(url, content=delayed, headers=headers)).status_code == 200
        elsewhere = dsn("failed", "5.1.1", "<20261203@elsewhere.example>")
        assert (await h.web.post(url, content=elsewhere, headers=headers)).status_code == 200
        assert (await h.web.post(url + "x", content=elsewhere, headers=headers)
                ).status_code == 403
        assert await h.status(message_id) == SENT and h.engagement_rows() == 0

        failed = dsn("failed", "5.1.1", email["Message-ID"])
        assert (await h.web.post(url, content=failed, headers=headers)).status_code == 200
        message = await h.message(message_id)
        assert message.status == BOUNCED and "User unknown" in message.error
        await bounce_reaches_suppression(h, "ada@example.com", "k2")
        await eventually(lambda: len(h.identity.events) == 1)
    assert h.identity.names() == ["email_bounced"]


async def test_push_engagement_by_device_token_reaches_the_message_s_profile(
        backend: Backend) -> None:
    def fcm(request: object) -> Answer:
        return Answer(200, {"name": f"projects/acme/messages/{len(fcm_calls)}"})

    fcm_calls: list[object] = []
    with http_sink(HttpSink(default=fcm)) as api:
        async with harness(backend) as h:
            provider = await h.create(provider_pb2.Provider(
                channel=common_pb2.CHANNEL_PUSH, kind=provider_pb2.PROVIDER_KIND_FCM_PUSH,
                config={"project_id": "acme", "base_url": api.url},
                secrets={"access_token": "ya29.token"}))
            url = provider.status_webhook_url

            def push(key: str, profile_id: str, token: str) -> pb.SendMessageRequest:
                return pb.SendMessageRequest(
                    idempotency_key=key, journey_id="j1", enrollment_id=f"en-{key}",
                    recipient=message_pb2.Recipient(profile_id=profile_id, address=token),
                    content=common_pb2.RenderedMessage(
                        channel=common_pb2.CHANNEL_PUSH,
                        push=common_pb2.RenderedPush(title="Cart", body="Still there?")))

            await h.send(push("k1", "p1", "device-token-1"))
            h.clock.advance(timedelta(minutes=5))
            latest = await h.send(push("k2", "p1", "device-token-1"))
            await h.send(push("k3", "p2", "device-token-2"))
            opened = await h.web.post(url, json={"device_token": "device-token-1",
                                                 "status": "opened"})
            assert opened.status_code == 200
            unknown = await h.web.post(url, json={"device_token": "never-seen",
                                                  "status": "opened"})
            assert unknown.status_code == 404
            await eventually(lambda: len(h.identity.events) == 1)
            facts = [f for f in h.facts() if f.type == fact_pb2.FACT_TYPE_MESSAGE_OPENED]
    [(_, name, properties, identifiers, profile_id)] = h.identity.events
    assert name == "push_opened"
    assert properties["message_id"] == latest and properties["enrollment_id"] == "en-k2"
    # The profile the push was sent to, by id: a token is no identifier of the person.
    assert (identifiers, profile_id) == ([], "p1")
    [fact] = facts
    assert fact.profile_id == "p1" and fact.message_id == latest


def test_sns_hosts_allowlist_matches_whole_labels() -> None:
    from cjo_delivery.adapters.webhooks.ses import DEFAULT_HOSTS, allowed, host_pattern

    hosts = host_pattern(DEFAULT_HOSTS)
    assert allowed("https://sns.us-east-1.amazonaws.com/SimpleNotificationService-1.pem", hosts)
    assert not allowed("http://sns.us-east-1.amazonaws.com/x.pem", hosts)
    assert not allowed("https://sns.evil.example.amazonaws.com.evil.example/x.pem", hosts)
    assert not allowed("https://sns.a.b.amazonaws.com/x.pem", hosts)
    assert not allowed(f"https://evil.example/{quote('sns.x.amazonaws.com')}", hosts)


def test_a_bounce_names_the_message_by_cjo_s_header_when_the_relay_rewrote_the_message_id(
        ) -> None:
    from cjo_delivery.adapters.webhooks import dsn

    # Amazon SES and others replace the Message-ID; the X-Cjo-Message-Id every email carries
    # comes back in the returned headers.
    rewritten = "<0100018c-ses-rewritten@email.amazonses.com>\nX-Cjo-Message-Id: m-123"
    raw = fixture("dsn_permanent.eml", email="ada@example.com", action="failed",
                  status="5.1.1", message_id_header=rewritten).encode()
    [bounce] = dsn.events(raw)
    assert bounce.ref.message_id == "m-123"
    assert bounce.reason.startswith("5.1.1 550 5.1.1")
    assert dsn.events(b"Subject: out of office\r\n\r\nBack on Monday.") == []
