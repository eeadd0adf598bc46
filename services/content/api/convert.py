"""Protos <-> domain values for the content API."""

from __future__ import annotations

from cjo.common.v1 import common_pb2
from cjo.content.v1 import content_item_pb2
from cjo.content.v1 import content_service_pb2 as pb
from cjo_content.domain.content_items import ContentDraft, ContentItem, EmailTemplate
from cjo_content.domain.rendering import RenderContext, RenderedEmail
from cjo_platform.protobuf import struct_to_dict, to_timestamp


def draft_from_proto(item: content_item_pb2.ContentItem) -> ContentDraft:
    email = None
    if item.HasField("email"):
        email = EmailTemplate(subject=item.email.subject, preheader=item.email.preheader,
                              html=item.email.html, text=item.email.text)
    return ContentDraft(display_name=item.display_name, tags=tuple(item.tags), email=email)


def item_to_proto(item: ContentItem) -> content_item_pb2.ContentItem:
    message = content_item_pb2.ContentItem(
        name=item.name, key=item.key, display_name=item.display_name, tags=item.tags,
        revision=item.revision, etag=item.etag, create_time=to_timestamp(item.create_time),
        update_time=to_timestamp(item.update_time))
    if item.email is not None:
        message.email.CopyFrom(content_item_pb2.EmailTemplate(
            subject=item.email.subject, preheader=item.email.preheader, html=item.email.html,
            text=item.email.text))
    return message


def context_from_proto(context: pb.RenderContext) -> RenderContext:
    return RenderContext(traits=struct_to_dict(context.traits),
                         event=struct_to_dict(context.event),
                         variables=struct_to_dict(context.variables))


def email_message(item: ContentItem, email: RenderedEmail) -> common_pb2.RenderedMessage:
    return common_pb2.RenderedMessage(
        channel=common_pb2.CHANNEL_EMAIL, content_key=item.key, content_revision=item.revision,
        email=common_pb2.RenderedEmail(subject=email.subject, preheader=email.preheader,
                                       html=email.html, text=email.text))
