"""Amazon SES through Amazon SNS: SNS POSTs JSON envelopes (``SubscriptionConfirmation``,
``Notification``, ``UnsubscribeConfirmation``), each signed with RSA (SignatureVersion 1:
SHA1, 2: SHA256) by the certificate at ``SigningCertURL``.

Hosts are checked before anything is fetched: the certificate and a SubscribeURL must be https
URLs on a host matching the provider's ``webhook_sns_hosts`` (comma-separated patterns, ``*``
one DNS label; default ``sns.*.amazonaws.com``), so a forged envelope cannot make cjo fetch an
address of the sender's choosing. Certificates are cached per URL. SNS signs every topic's
messages, in every AWS account, with the same certificates, so the signature only says the
envelope came through SNS: an envelope is refused unless its ``TopicArn`` is one of the
provider's ``webhook_sns_topic_arns`` (checked before anything is fetched or confirmed, so
nobody can subscribe the URL to a topic of their own), and unless its ``Timestamp`` is within
an hour of now (a captured envelope cannot be replayed later). A subscription is confirmed by
fetching its SubscribeURL once all of that and the envelope's signature hold.

A Notification's ``Message`` is SES's own JSON: a notification (``notificationType``) or a
configuration set event (``eventType``): Bounce (permanent only), Complaint, Delivery, Open,
Click. It names cjo's message by the message tag ``cjo-message-id``, the ``X-Cjo-Message-Id``
header, the Message-ID cjo wrote (``commonHeaders.messageId``), or SES's ``messageId`` (what
its API answers a send with).
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from cjo_delivery.adapters.webhooks.request import Malformed, Refused, WebhookRequest
from cjo_delivery.domain.engagement import EngagementKind
from cjo_delivery.domain.provider_events import (
    MessageRef,
    ProviderEvent,
    cjo_message_id,
    event,
    sns_topic_arns,
)

FRESHNESS = timedelta(hours=1)
DEFAULT_HOSTS = "sns.*.amazonaws.com"
TAG = "cjo-message-id"
CJO_HEADER = "x-cjo-message-id"
_CERT_CACHE = 64

_SIGNED_FIELDS = {
    "Notification": ("Message", "MessageId", "Subject", "Timestamp", "TopicArn", "Type"),
    "SubscriptionConfirmation": ("Message", "MessageId", "SubscribeURL", "Timestamp", "Token",
                                 "TopicArn", "Type"),
    "UnsubscribeConfirmation": ("Message", "MessageId", "SubscribeURL", "Timestamp", "Token",
                                "TopicArn", "Type"),
}
_HASHES: dict[str, Callable[[], hashes.HashAlgorithm]] = {"1": hashes.SHA1, "2": hashes.SHA256}

Fetch = Callable[[str], Awaitable[bytes]]


def host_pattern(patterns: str) -> re.Pattern[str]:
    """The allowlist as one expression: ``*`` stands for one DNS label, nothing more."""
    alternatives = []
    for pattern in (p.strip().lower() for p in patterns.split(",")):
        if pattern:
            alternatives.append(r"\.".join("[a-z0-9-]+" if label == "*" else re.escape(label)
                                           for label in pattern.split(".")))
    return re.compile(f"^(?:{'|'.join(alternatives) or '(?!)'})$")


def allowed(url: str, hosts: re.Pattern[str]) -> bool:
    parts = urlsplit(url)
    return parts.scheme == "https" and hosts.match((parts.hostname or "").lower()) is not None


def canonical(envelope: dict[str, Any]) -> bytes:
    kind = str(envelope.get("Type", ""))
    fields = _SIGNED_FIELDS.get(kind)
    if fields is None:
        raise Malformed(f"unknown SNS message type {kind!r}")
    return "".join(f"{name}\n{envelope[name]}\n" for name in fields
                   if name in envelope).encode()


class SnsVerifier:
    """Verifies envelopes; shared by every SES provider of the process (its certificate cache
    holds SNS's few signing certificates)."""

    def __init__(self, fetch: Fetch) -> None:
        self.fetch = fetch
        self._certificates: dict[str, rsa.RSAPublicKey] = {}

    async def _key(self, url: str) -> rsa.RSAPublicKey:
        key = self._certificates.get(url)
        if key is None:
            try:
                found = x509.load_pem_x509_certificate(await self.fetch(url)).public_key()
            except ValueError:
                raise Refused(403, "signing certificate unreadable") from None
            if not isinstance(found, rsa.RSAPublicKey):
                raise Refused(403, "signing certificate is not RSA")
            if len(self._certificates) >= _CERT_CACHE:
                self._certificates.pop(next(iter(self._certificates)))
            key = self._certificates[url] = found
        return key

    async def verify(self, envelope: dict[str, Any], hosts: re.Pattern[str]) -> None:
        algorithm = _HASHES.get(str(envelope.get("SignatureVersion", "")))
        url = str(envelope.get("SigningCertURL", ""))
        if algorithm is None or not allowed(url, hosts):
            raise Refused(403, "signature version or certificate URL not accepted")
        try:
            signature = base64.b64decode(str(envelope.get("Signature", "")), validate=True)
        except binascii.Error:
            raise Refused(403, "bad signature") from None
        key = await self._key(url)
        try:
            key.verify(signature, canonical(envelope), padding.PKCS1v15(), algorithm())
        except InvalidSignature:
            raise Refused(403, "bad signature") from None


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _reference(mail: dict[str, Any]) -> MessageRef:
    tags = _dict(mail.get("tags")).get(TAG)
    headers = {str(h.get("name", "")).lower(): str(h.get("value", ""))
               for h in mail.get("headers", []) if isinstance(h, dict)}
    candidates = [str(tags[0]) if isinstance(tags, list) and tags else "",
                  headers.get(CJO_HEADER, ""),
                  cjo_message_id(str(_dict(mail.get("commonHeaders")).get("messageId", ""))),
                  cjo_message_id(headers.get("message-id", ""))]
    return MessageRef(message_id=next((c for c in candidates if c), ""),
                      provider_message_id=str(mail.get("messageId", "")))


def ses_events(notification: dict[str, Any]) -> list[ProviderEvent]:
    """The events of SES's JSON (the SNS envelope's ``Message``)."""
    name = str(notification.get("notificationType") or notification.get("eventType") or "")
    ref = _reference(_dict(notification.get("mail")))
    kind, reason, url = None, "", ""
    if name == "Bounce":
        bounce = _dict(notification.get("bounce"))
        recipients = [_dict(r) for r in bounce.get("bouncedRecipients", [])] or [{}]
        reason = (f"{bounce.get('bounceSubType', '')}: {recipients[0].get('status', '')} "
                  f"{recipients[0].get('diagnosticCode', '')}")
        kind = EngagementKind.BOUNCED if bounce.get("bounceType") == "Permanent" else None
    elif name == "Complaint":
        kind = EngagementKind.COMPLAINED
        reason = str(_dict(notification.get("complaint")).get("complaintFeedbackType", ""))
    elif name == "Delivery":
        kind = EngagementKind.DELIVERED
        reason = str(_dict(notification.get("delivery")).get("smtpResponse", ""))
    elif name == "Open":
        kind = EngagementKind.OPENED
    elif name == "Click":
        kind, url = EngagementKind.CLICKED, str(_dict(notification.get("click")).get("link", ""))
    found = event(kind, ref, reason, url)
    return [found] if found is not None else []


def check_topic_and_time(envelope: dict[str, Any], topics_setting: str, now: datetime) -> None:
    """Refused unless the envelope is from one of the provider's topics and was sent within
    :data:`FRESHNESS` of ``now`` (both are signed fields: checked again by the signature)."""
    if str(envelope.get("TopicArn", "")) not in sns_topic_arns(topics_setting):
        raise Refused(403, "TopicArn is not one of the provider's webhook_sns_topic_arns")
    try:
        sent = datetime.fromisoformat(str(envelope.get("Timestamp", "")))
    except ValueError:
        raise Refused(403, "Timestamp unreadable") from None
    if sent.tzinfo is None or abs(now - sent) > FRESHNESS:
        raise Refused(403, "stale or future Timestamp")


async def events(request: WebhookRequest, verifier: SnsVerifier, hosts_setting: str,
                 topics_setting: str, now: datetime) -> list[ProviderEvent]:
    try:
        envelope = request.json()
    except ValueError:
        raise Refused(403, "expected a signed SNS message") from None
    if not isinstance(envelope, dict):
        raise Refused(403, "expected a signed SNS message")
    check_topic_and_time(envelope, topics_setting, now)
    hosts = host_pattern(hosts_setting or DEFAULT_HOSTS)
    await verifier.verify(envelope, hosts)
    kind = envelope.get("Type")
    if kind == "SubscriptionConfirmation":
        subscribe = str(envelope.get("SubscribeURL", ""))
        if not allowed(subscribe, hosts):
            raise Refused(403, "SubscribeURL is not on an allowed host")
        await verifier.fetch(subscribe)
        return []
    if kind != "Notification":
        return []
    try:
        notification = json.loads(str(envelope.get("Message", "")))
    except ValueError:
        return []  # a topic's other messages (a test publish, a plain text)
    return ses_events(notification) if isinstance(notification, dict) else []
