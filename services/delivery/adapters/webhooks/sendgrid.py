"""SendGrid's Event Webhook: a JSON array of events, signed (Signed Event Webhook) with ECDSA
P-256 / SHA-256 over ``<timestamp><body>``; the verification key is the provider setting
``webhook_public_key`` (the base64 key SendGrid shows, or PEM). A timestamp more than ten
minutes from now (SendGrid's guidance) is refused, so a captured batch cannot be replayed later
(a replayed bounce would suppress an address taken off the list since).

An event names cjo's message by the custom arg ``cjo_message_id``, by ``smtp-id`` (the
Message-ID cjo wrote, when sent through SendGrid's SMTP relay), or by ``sg_message_id``
(its prefix is the ``X-Message-Id`` SendGrid's API answers a send with).
"""

from __future__ import annotations

import base64
import binascii

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

from cjo_delivery.adapters.webhooks.request import Malformed, Refused, WebhookRequest
from cjo_delivery.domain.engagement import EngagementKind
from cjo_delivery.domain.provider_events import (
    MessageRef,
    ProviderEvent,
    cjo_message_id,
    event,
    public_key,
)

SIGNATURE_HEADER = "X-Twilio-Email-Event-Webhook-Signature"
TIMESTAMP_HEADER = "X-Twilio-Email-Event-Webhook-Timestamp"
CUSTOM_ARG = "cjo_message_id"
TIMESTAMP_WINDOW_SECONDS = 10 * 60

_KINDS = {"delivered": EngagementKind.DELIVERED, "bounce": EngagementKind.BOUNCED,
          "open": EngagementKind.OPENED, "click": EngagementKind.CLICKED,
          "spamreport": EngagementKind.COMPLAINED, "unsubscribe": EngagementKind.UNSUBSCRIBED,
          "group_unsubscribe": EngagementKind.UNSUBSCRIBED}


def verify(request: WebhookRequest, key_text: str, now: float) -> None:
    signature, timestamp = request.header(SIGNATURE_HEADER), request.header(TIMESTAMP_HEADER)
    if not signature or not timestamp:
        raise Refused(401, "unsigned: the Signed Event Webhook must be on")
    try:
        public_key(key_text).verify(base64.b64decode(signature),
                                    timestamp.encode() + request.body,
                                    ec.ECDSA(hashes.SHA256()))
    except (InvalidSignature, ValueError, binascii.Error):
        raise Refused(403, "bad signature") from None
    if not timestamp.isdigit() or abs(now - int(timestamp)) > TIMESTAMP_WINDOW_SECONDS:
        raise Refused(403, "stale or future timestamp")


def events(request: WebhookRequest, key_text: str, now: float) -> list[ProviderEvent]:
    """The events of a signed batch; ``now`` in Unix seconds (the service's clock)."""
    verify(request, key_text, now)
    try:
        batch = request.json()
    except ValueError:
        raise Malformed("expected a JSON array of events") from None
    if not isinstance(batch, list):
        raise Malformed("expected a JSON array of events")
    found = []
    for item in batch:
        if not isinstance(item, dict):
            continue
        name = str(item.get("event", ""))
        # "blocked" is SendGrid's temporary refusal (the address may work later): no bounce.
        if name == "bounce" and item.get("type") == "blocked":
            continue
        ref = MessageRef(
            message_id=str(item.get(CUSTOM_ARG) or cjo_message_id(str(item.get("smtp-id", "")))),
            provider_message_id=str(item.get("sg_message_id", "")).split(".", 1)[0])
        reason = " ".join(str(item.get(k, "")) for k in ("status", "reason") if item.get(k))
        found.append(event(_KINDS.get(name), ref, reason, item.get("url", "")))
    return [e for e in found if e is not None]
