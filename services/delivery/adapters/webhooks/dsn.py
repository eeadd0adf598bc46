"""Asynchronous bounces: delivery status notifications (RFC 3464 ``multipart/report;
report-type=delivery-status``) that a bounce mailbox passes on as the raw message (an inbound
parse service or a mail filter POSTing it to the provider's status webhook URL).

A recipient whose ``Action`` is ``failed`` with a permanent ``Status`` (5.x.x) is a bounce;
temporary failures and delays (4.x.x) and anything that is no delivery status report are
ignored. The message is found from the returned original (``message/rfc822`` or
``text/rfc822-headers``): its ``X-Cjo-Message-Id`` or the ``Message-ID`` cjo wrote, or an
``Original-Message-ID`` field of the report.
"""

from __future__ import annotations

from email import message_from_bytes, policy
from email.message import Message
from email.parser import HeaderParser

from cjo_delivery.domain.engagement import EngagementKind
from cjo_delivery.domain.provider_events import (
    MessageRef,
    ProviderEvent,
    cjo_message_id,
    event,
    is_permanent_status,
)

CJO_HEADER = "X-Cjo-Message-Id"


def _original_headers(report: Message) -> Message | None:
    for part in report.walk():
        kind = part.get_content_type()
        if kind in ("message/rfc822", "message/global"):
            payload = part.get_payload()
            if isinstance(payload, list) and payload and isinstance(payload[0], Message):
                return payload[0]
        if kind in ("text/rfc822-headers", "text/global-headers"):
            text = part.get_payload(decode=True)
            if isinstance(text, bytes):
                return HeaderParser().parsestr(text.decode("utf-8", errors="replace"))
    return None


def _status_blocks(report: Message) -> list[Message]:
    for part in report.walk():
        if part.get_content_type() in ("message/delivery-status",
                                       "message/global-delivery-status"):
            payload = part.get_payload()
            if isinstance(payload, list):
                return [b for b in payload if isinstance(b, Message)]
    return []


def reference(report: Message, per_message: Message | None) -> MessageRef:
    original = _original_headers(report)
    candidates = []
    if original is not None:
        candidates += [str(original.get(CJO_HEADER, "")).strip(),
                       cjo_message_id(str(original.get("Message-ID", "")))]
    if per_message is not None:
        candidates.append(cjo_message_id(str(per_message.get("Original-Message-ID", ""))))
    return MessageRef(message_id=next((c for c in candidates if c), ""))


def events(raw: bytes) -> list[ProviderEvent]:
    report = message_from_bytes(raw, policy=policy.compat32)
    if report.get_content_type() != "multipart/report" \
            or str(report.get_param("report-type", "")).lower() != "delivery-status":
        return []
    blocks = _status_blocks(report)
    if not blocks:
        return []
    per_message, recipients = blocks[0], blocks[1:]
    for recipient in recipients:
        action = str(recipient.get("Action", "")).strip().lower()
        status = str(recipient.get("Status", ""))
        if action == "failed" and is_permanent_status(status):
            diagnostic = str(recipient.get("Diagnostic-Code", "")).partition(";")[2]
            found = event(EngagementKind.BOUNCED, reference(report, per_message),
                          f"{status.strip()} {diagnostic}")
            return [found] if found is not None else []
    return []
