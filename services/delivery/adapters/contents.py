"""Rendered content as stored (serialized cjo.common.v1.RenderedMessage) <-> domain values."""

from __future__ import annotations

from collections.abc import Callable

from google.protobuf.message import DecodeError

from cjo.common.v1 import common_pb2
from cjo_delivery.domain.messages import Channel, Claim, EmailContent
from cjo_delivery.domain.sending import OutgoingMessage, PushContent

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


def body_of(rendered: common_pb2.RenderedMessage, channel: Channel | None) -> str | None:
    """The main text of a non-email body, for validation; None when the body does not match
    ``channel``."""
    which = rendered.WhichOneof("body")
    if channel is Channel.SMS and which == "sms":
        return rendered.sms.text
    if channel is Channel.PUSH and which == "push":
        return rendered.push.title + rendered.push.body
    if channel is Channel.WEBHOOK and which == "webhook":
        return rendered.webhook.json_body
    if channel is Channel.IN_APP and which == "in_app":
        return rendered.in_app.title + rendered.in_app.body
    return None


def decode_outgoing(claim: Claim, unsubscribe_url: str = "",
                    rewrite_html: Callable[[str], str] | None = None) -> OutgoingMessage:
    """What a provider needs to send ``claim``; ValueError when the stored content does not fit
    its channel."""
    try:
        rendered = common_pb2.RenderedMessage.FromString(claim.content)
    except DecodeError as exc:
        raise ValueError(f"stored content is not a RenderedMessage: {exc}") from exc
    which = rendered.WhichOneof("body")
    channel = claim.channel
    # Exactly the body of the message's channel is set; the unsubscribe link is email's.
    email: EmailContent | None = None
    push: PushContent | None = None
    in_app: bytes | None = None
    sms_text = webhook_body = ""
    if channel is Channel.EMAIL and which == "email":
        email = email_of(rendered)
        assert email is not None
        if rewrite_html is not None and email.html:
            email = EmailContent(email.subject, email.preheader, rewrite_html(email.html),
                                 email.text)
    elif channel is Channel.SMS and which == "sms":
        sms_text = rendered.sms.text
    elif channel is Channel.PUSH and which == "push":
        p = rendered.push
        push = PushContent(p.title, p.body, p.deep_link, p.image_url, dict(p.data))
    elif channel is Channel.WEBHOOK and which == "webhook":
        webhook_body = rendered.webhook.json_body
    elif channel is Channel.IN_APP and which == "in_app":
        in_app = rendered.in_app.SerializeToString()
    else:
        raise ValueError(f"stored content has no {channel.value} body")
    return OutgoingMessage(
        message_id=claim.message_id, channel=channel, to=claim.address, email=email,
        sms_text=sms_text, push=push, webhook_body=webhook_body,
        unsubscribe_url=unsubscribe_url if email is not None else "", in_app=in_app,
        workspace_id=claim.workspace_id, journey_id=claim.journey_id)
