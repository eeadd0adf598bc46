"""Engagement as real email and SMS providers report it (SendGrid, Amazon SES, Mailgun,
Postmark, Twilio, delivery status notifications), mapped onto cjo's own engagement kinds.

A provider names the message its own way: by cjo's id when cjo could hand it one (custom
args, metadata, tags, or the ``Message-ID`` cjo writes, ``<message_id@cjo>``), by the id the
provider answered the send with, or, for push, by the device token. A report carries every
reference it has; the first that finds a message wins (adapters/webhook_store.py).
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import load_der_public_key, load_pem_public_key

from cjo_delivery.domain.engagement import EngagementKind

MAX_REASON = 500


class WebhookFormat(StrEnum):
    """What a provider's status webhook URL accepts (provider setting ``webhook_format``)."""

    SENDGRID = "sendgrid"
    SES = "ses"
    MAILGUN = "mailgun"
    POSTMARK = "postmark"
    TWILIO = "twilio"
    DSN = "dsn"


@dataclass(frozen=True)
class MessageRef:
    """How a report names its message; any of the three may be empty."""

    message_id: str = ""
    provider_message_id: str = ""
    device_token: str = ""

    def __bool__(self) -> bool:
        return bool(self.message_id or self.provider_message_id or self.device_token)


@dataclass(frozen=True)
class ProviderEvent:
    kind: EngagementKind
    ref: MessageRef
    reason: str = ""
    url: str = ""


@dataclass(frozen=True)
class OneTimeToken:
    """A value a signed report may carry once (Mailgun's ``token``): spent in the transaction
    that records the report's events, and remembered until ``expire_time``, when the report's
    own timestamp check refuses it anyway. ``content_digest`` tells the provider's retry of a
    recorded report (same content: answered as recorded, nothing recorded again) from the
    token reused with other content (refused)."""

    value: str
    expire_time: datetime
    content_digest: str = ""


_CJO_MESSAGE_ID = re.compile(r"^\s*<?([A-Za-z0-9_.-]{1,64})@cjo>?\s*$")


def cjo_message_id(header: str) -> str:
    """cjo's message id from a ``Message-ID`` cjo wrote (``<id@cjo>``, brackets optional as
    some providers drop them); "" for any other Message-ID."""
    match = _CJO_MESSAGE_ID.match(header or "")
    return match.group(1) if match else ""


def event(kind: EngagementKind | None, ref: MessageRef, reason: object = "",
          url: object = "") -> ProviderEvent | None:
    """A report worth recording: a kind cjo keeps and a reference to look up."""
    if kind is None or not ref:
        return None
    # Only a click is about a link: an unsubscribe reported with its page's URL is the same
    # unsubscribe (one engagement id) as one reported without.
    return ProviderEvent(kind, ref, " ".join(str(reason or "").split())[:MAX_REASON],
                         str(url or "") if kind is EngagementKind.CLICKED else "")


def is_permanent_status(status: str) -> bool:
    """An RFC 3463 enhanced status code of a permanent failure (5.x.x)."""
    return re.fullmatch(r"\s*5\.\d{1,3}\.\d{1,3}\s*", status or "") is not None


def valid_public_key(text: str) -> bool:
    """Whether ``text`` is an ECDSA P-256 public key, base64 DER (as SendGrid shows it) or PEM."""
    try:
        public_key(text)
    except ValueError:
        return False
    return True


def public_key(text: str) -> ec.EllipticCurvePublicKey:
    """SendGrid's verification key; ValueError when ``text`` is none."""
    text = text.strip()
    try:
        key = (load_pem_public_key(text.encode()) if text.startswith("-----")
               else load_der_public_key(base64.b64decode(text, validate=True)))
    except (ValueError, binascii.Error, TypeError, UnsupportedAlgorithm) as exc:
        raise ValueError("not a public key") from exc
    if not isinstance(key, ec.EllipticCurvePublicKey) or key.curve.name != "secp256r1":
        raise ValueError("not an ECDSA P-256 public key")
    return key


_LABEL = re.compile(r"^(\*|[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)$")


def valid_sns_hosts(text: str) -> bool:
    """Comma-separated host patterns, ``*`` one whole label (never the last two)."""
    patterns = [p.strip().lower() for p in text.split(",") if p.strip()]
    for pattern in patterns:
        labels = pattern.split(".")
        if not all(_LABEL.match(label) for label in labels) or "*" in labels[-2:]:
            return False
    return bool(patterns)


# arn:<partition>:sns:<region>:<12-digit account>:<topic name> (a FIFO topic ends in .fifo).
_TOPIC_ARN = re.compile(r"arn:aws(?:-[a-z]+)*:sns:[a-z0-9-]+:\d{12}:[A-Za-z0-9_-]{1,256}"
                        r"(?:\.fifo)?")


def sns_topic_arns(text: str) -> frozenset[str]:
    """The topics of the setting ``webhook_sns_topic_arns`` (comma-separated)."""
    return frozenset(arn.strip() for arn in text.split(",") if arn.strip())


def valid_sns_topic_arns(text: str) -> bool:
    arns = sns_topic_arns(text)
    return bool(arns) and all(_TOPIC_ARN.fullmatch(arn) for arn in arns)


CJO_MESSAGE_ID_HEADER = "X-Cjo-Message-Id"


def tagging_headers(webhook_format: str, message_id: str) -> list[tuple[str, str]]:
    """Headers an email sent through an SMTP relay carries so that the relay's reports name
    cjo's message: ``X-Cjo-Message-Id`` always (kept in bounce messages and SES's original
    headers, where a relay may rewrite the Message-ID), and the relay's own way of attaching
    data to a message for ``webhook_format``."""
    headers = [(CJO_MESSAGE_ID_HEADER, message_id)]
    if webhook_format == WebhookFormat.SENDGRID:
        headers.append(("X-SMTPAPI", json.dumps({"unique_args": {"cjo_message_id": message_id}},
                                                separators=(",", ":"))))
    elif webhook_format == WebhookFormat.MAILGUN:
        headers.append(("X-Mailgun-Variables", json.dumps({"cjo-message-id": message_id},
                                                          separators=(",", ":"))))
    elif webhook_format == WebhookFormat.POSTMARK:
        headers.append(("X-PM-Metadata-cjo-message-id", message_id))
    elif webhook_format == WebhookFormat.SES:
        headers.append(("X-SES-MESSAGE-TAGS", f"cjo-message-id={message_id}"))
    return headers
