"""Postmark webhooks: one JSON record per POST, ``RecordType`` Delivery, Bounce, SpamComplaint,
Open, Click or SubscriptionChange. Postmark signs nothing: the URL carries HTTP basic auth
(``https://user:password@...``), checked against the provider's ``webhook_username`` and
secret ``webhook_password``.

A record names cjo's message by its metadata ``cjo-message-id`` (``X-PM-Metadata-cjo-message-id``
or the API's ``Metadata``) or by Postmark's ``MessageID`` (what its API answers a send with).
"""

from __future__ import annotations

import base64
import binascii
from typing import Any

from cjo_delivery.adapters.webhooks.request import Malformed, Refused, WebhookRequest, same
from cjo_delivery.domain.engagement import EngagementKind
from cjo_delivery.domain.provider_events import MessageRef, ProviderEvent, event

METADATA = "cjo-message-id"
# Bounce types that say the address will never take mail (the others are soft or
# informational: https://postmarkapp.com/developer/api/bounce-api#bounce-types).
PERMANENT_BOUNCES = frozenset({"HardBounce", "BadEmailAddress", "ManuallyDeactivated",
                               "Blocked", "DMARCPolicy"})


def check_auth(request: WebhookRequest, username: str, password: str) -> None:
    scheme, _, encoded = request.header("Authorization").partition(" ")
    try:
        given = base64.b64decode(encoded, validate=True).decode()
    except (binascii.Error, UnicodeDecodeError):
        given = ""
    if scheme.lower() != "basic" or not password or not same(given, f"{username}:{password}"):
        raise Refused(401, "basic auth required")


def events(request: WebhookRequest, username: str, password: str) -> list[ProviderEvent]:
    check_auth(request, username, password)
    try:
        record: Any = request.json()
    except ValueError:
        raise Malformed("expected a JSON record") from None
    if not isinstance(record, dict):
        raise Malformed("expected a JSON record")
    metadata = record["Metadata"] if isinstance(record.get("Metadata"), dict) else {}
    ref = MessageRef(message_id=str(metadata.get(METADATA, "")),
                     provider_message_id=str(record.get("MessageID", "")))
    kind = {"Delivery": EngagementKind.DELIVERED, "Open": EngagementKind.OPENED,
            "Click": EngagementKind.CLICKED,
            "SpamComplaint": EngagementKind.COMPLAINED}.get(str(record.get("RecordType")))
    reason: object = record.get("Details", "")
    if record.get("RecordType") == "Bounce" and record.get("Type") in PERMANENT_BOUNCES:
        kind = EngagementKind.BOUNCED
        reason = f"{record.get('Type')}: {record.get('Description', '')}"
    if record.get("RecordType") == "SubscriptionChange" and record.get("SuppressSending") is True \
            and record.get("SuppressionReason") in ("ManualSuppression", "Unsubscribe"):
        kind = EngagementKind.UNSUBSCRIBED
    found = event(kind, ref, reason, record.get("OriginalLink", ""))
    return [found] if found is not None else []
