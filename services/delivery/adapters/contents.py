"""Rendered content as stored (serialized cjo.common.v1.RenderedMessage) <-> domain values."""

from __future__ import annotations

from google.protobuf.message import DecodeError

from cjo.common.v1 import common_pb2
from cjo_delivery.domain.messages import Channel, EmailContent

CHANNELS = {
    common_pb2.CHANNEL_EMAIL: Channel.EMAIL,
    common_pb2.CHANNEL_SMS: Channel.SMS,
    common_pb2.CHANNEL_PUSH: Channel.PUSH,
    common_pb2.CHANNEL_IN_APP: Channel.IN_APP,
    common_pb2.CHANNEL_WEBHOOK: Channel.WEBHOOK,
}


def email_of(rendered: common_pb2.RenderedMessage) -> EmailContent | None:
    if rendered.WhichOneof("body") != "email":
        return None
    e = rendered.email
    return EmailContent(subject=e.subject, preheader=e.preheader, html=e.html, text=e.text)


def decode_email(content: bytes) -> EmailContent:
    """The email body of stored content; ValueError when there is none (never, for content
    that passed validation, unless the row was written by something else)."""
    try:
        rendered = common_pb2.RenderedMessage.FromString(content)
    except DecodeError as exc:
        raise ValueError(f"stored content is not a RenderedMessage: {exc}") from exc
    email = email_of(rendered)
    if email is None:
        raise ValueError("stored content has no email body")
    return email
