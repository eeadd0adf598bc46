"""Protos <-> domain values for the content API."""

from __future__ import annotations

from cjo.common.v1 import common_pb2
from cjo.content.v1 import content_item_pb2 as item_pb
from cjo.content.v1 import content_service_pb2 as pb
from cjo_content.domain.content_items import (
    ChannelBodies,
    ContentDraft,
    ContentItem,
    ContentVersion,
    EmailTemplate,
    InAppButtonTemplate,
    InAppTemplate,
    Localization,
    MissingVariables,
    PushTemplate,
    SmsTemplate,
    Variant,
    WebhookTemplate,
    key_from_name,
)
from cjo_content.domain.locales import is_bcp47
from cjo_content.domain.rendering import (
    RenderContext,
    RenderedContent,
    RenderedEmail,
    RenderedInApp,
    RenderedPush,
    RenderedSms,
    RenderTarget,
)
from cjo_content.domain.settings import SETTINGS_NAME, ContentSettings
from cjo_content.domain.sms import SmsEncoding
from cjo_content.domain.snippets import Snippet
from cjo_platform.errors import InvalidArgument, Violations
from cjo_platform.protobuf import struct_to_dict, to_timestamp

CHANNEL_NAMES = {
    common_pb2.CHANNEL_EMAIL: "email",
    common_pb2.CHANNEL_SMS: "sms",
    common_pb2.CHANNEL_PUSH: "push",
    common_pb2.CHANNEL_IN_APP: "in_app",
    common_pb2.CHANNEL_WEBHOOK: "webhook",
}
_CHANNEL_ENUMS = {name: value for value, name in CHANNEL_NAMES.items()}
_POLICIES = {
    item_pb.MISSING_VARIABLE_POLICY_UNSPECIFIED: MissingVariables.LENIENT,
    item_pb.MISSING_VARIABLE_POLICY_LENIENT: MissingVariables.LENIENT,
    item_pb.MISSING_VARIABLE_POLICY_STRICT: MissingVariables.STRICT,
}
_POLICY_ENUMS = {MissingVariables.LENIENT: item_pb.MISSING_VARIABLE_POLICY_LENIENT,
                 MissingVariables.STRICT: item_pb.MISSING_VARIABLE_POLICY_STRICT}
_ENCODINGS = {SmsEncoding.GSM7: common_pb2.SMS_ENCODING_GSM7,
              SmsEncoding.UCS2: common_pb2.SMS_ENCODING_UCS2}


def draft_from_proto(item: item_pb.ContentItem) -> ContentDraft:
    base = _bodies_from_proto(item)
    return ContentDraft(
        display_name=item.display_name, tags=tuple(item.tags), email=base.email, sms=base.sms,
        push=base.push, in_app=base.in_app, webhook=base.webhook,
        missing_variables=_POLICIES.get(item.missing_variables, MissingVariables.LENIENT),
        default_locale=item.default_locale,
        localizations=tuple(Localization(loc.locale, _bodies_from_proto(loc))
                            for loc in item.localizations),
        variants=tuple(Variant(v.key, v.weight, _bodies_from_proto(v)) for v in item.variants),
        experiment_key=item.experiment_key)


def _bodies_from_proto(
        item: item_pb.ContentItem | item_pb.Localization | item_pb.Variant) -> ChannelBodies:
    email = sms = push = in_app = webhook = None
    if item.HasField("email"):
        email = EmailTemplate(subject=item.email.subject, preheader=item.email.preheader,
                              html=item.email.html, text=item.email.text)
    if item.HasField("sms"):
        sms = SmsTemplate(text=item.sms.text)
    if item.HasField("push"):
        push = PushTemplate(title=item.push.title, body=item.push.body,
                            deep_link=item.push.deep_link, image_url=item.push.image_url)
    if item.HasField("in_app"):
        in_app = InAppTemplate(
            title=item.in_app.title, body=item.in_app.body,
            buttons=tuple(InAppButtonTemplate(b.label, b.link) for b in item.in_app.buttons))
    if item.HasField("webhook"):
        webhook = WebhookTemplate(json_body=item.webhook.json_body)
    return ChannelBodies(email=email, sms=sms, push=push, in_app=in_app, webhook=webhook)


def _draft_into(message: item_pb.ContentItem, draft: ContentDraft) -> None:
    message.display_name = draft.display_name
    message.tags[:] = draft.tags
    message.missing_variables = _POLICY_ENUMS[draft.missing_variables]
    message.default_locale = draft.default_locale
    message.experiment_key = draft.experiment_key
    _bodies_into(message, draft.bodies)
    for localization in draft.localizations:
        loc = message.localizations.add(locale=localization.locale)
        _bodies_into(loc, localization.bodies)
    for variant in draft.variants:
        var = message.variants.add(key=variant.key, weight=variant.weight)
        _bodies_into(var, variant.bodies)


def _bodies_into(message: item_pb.ContentItem | item_pb.Localization | item_pb.Variant,
                 draft: ChannelBodies) -> None:
    if draft.email is not None:
        e = draft.email
        message.email.CopyFrom(item_pb.EmailTemplate(subject=e.subject, preheader=e.preheader,
                                                     html=e.html, text=e.text))
    if draft.sms is not None:
        message.sms.CopyFrom(item_pb.SmsTemplate(text=draft.sms.text))
    if draft.push is not None:
        p = draft.push
        message.push.CopyFrom(item_pb.PushTemplate(title=p.title, body=p.body,
                                                   deep_link=p.deep_link,
                                                   image_url=p.image_url))
    if draft.in_app is not None:
        message.in_app.CopyFrom(item_pb.InAppTemplate(
            title=draft.in_app.title, body=draft.in_app.body,
            buttons=[item_pb.InAppButtonTemplate(label=b.label, link=b.link)
                     for b in draft.in_app.buttons]))
    if draft.webhook is not None:
        message.webhook.CopyFrom(item_pb.WebhookTemplate(json_body=draft.webhook.json_body))


def item_to_proto(item: ContentItem) -> item_pb.ContentItem:
    message = item_pb.ContentItem(
        name=item.name, key=item.key, revision=item.revision, etag=item.etag,
        create_time=to_timestamp(item.create_time), update_time=to_timestamp(item.update_time),
        latest_version=item.latest_version)
    _draft_into(message, item.draft)
    return message


def version_to_proto(version: ContentVersion) -> item_pb.ContentVersion:
    snapshot = item_pb.ContentItem(name=f"contentItems/{version.key}", key=version.key,
                                   revision=version.revision, latest_version=version.version)
    _draft_into(snapshot, version.draft)
    return item_pb.ContentVersion(
        name=version.name, version=version.version, revision=version.revision,
        content_item=snapshot, snippets=dict(version.snippets),
        create_time=to_timestamp(version.create_time),
        rolled_back_from=version.rolled_back_from)


def snippet_to_proto(snippet: Snippet) -> item_pb.Snippet:
    return item_pb.Snippet(name=snippet.name, key=snippet.key, source=snippet.source,
                           revision=snippet.revision, etag=snippet.etag,
                           create_time=to_timestamp(snippet.create_time),
                           update_time=to_timestamp(snippet.update_time))


def render_target(request: pb.RenderContentRequest | pb.PreviewContentRequest) -> RenderTarget:
    """Which item, version, channel and locale a render asks for; every bad field named."""
    problems = Violations()
    key = ""
    try:
        key = key_from_name(request.name)
    except InvalidArgument as exc:
        problems.items.extend(exc.violations)
    channel = CHANNEL_NAMES.get(request.channel, "")
    if not request.channel:
        problems.add("channel", "is required")
    elif not channel:
        problems.add("channel", f"unknown channel {request.channel}")
    version = request.version if isinstance(request, pb.RenderContentRequest) else 0
    problems.check(version >= 0, "version", "must be 0 (latest published) or a version number")
    problems.check(not request.locale or is_bcp47(request.locale), "locale",
                   "must be a BCP 47 language tag such as 'en' or 'ko-KR'")
    problems.raise_if_any()
    return RenderTarget(key, version, channel, request.locale)


def context_from_proto(context: pb.RenderContext, locale: str,
                       workspace_id: str) -> RenderContext:
    """Who a render is for; the workspace's default locale is the render use-case's to add."""
    return RenderContext(traits=struct_to_dict(context.traits),
                         event=struct_to_dict(context.event),
                         variables=struct_to_dict(context.variables), locale=locale,
                         profile_id=context.profile_id, workspace_id=workspace_id)


def render_request(request: pb.RenderContentRequest | pb.PreviewContentRequest,
                   workspace_id: str) -> tuple[RenderTarget, RenderContext]:
    target = render_target(request)
    return target, context_from_proto(request.context, target.locale, workspace_id)


def rendered_message(rendered: RenderedContent) -> common_pb2.RenderedMessage:
    rendering = rendered.rendering
    body = rendering.body
    message = common_pb2.RenderedMessage(
        channel=_CHANNEL_ENUMS[rendered.channel], content_key=rendered.key,
        content_revision=rendered.revision, content_version=rendered.version,
        locale=rendering.locale, variant=rendering.variant,
        variant_weight=rendering.variant_weight)
    if isinstance(body, RenderedEmail):
        message.email.CopyFrom(common_pb2.RenderedEmail(
            subject=body.subject, preheader=body.preheader, html=body.html, text=body.text))
    elif isinstance(body, RenderedSms):
        message.sms.CopyFrom(common_pb2.RenderedSms(
            text=body.text, encoding=_ENCODINGS[body.encoding], segments=body.segments))
    elif isinstance(body, RenderedPush):
        message.push.CopyFrom(common_pb2.RenderedPush(
            title=body.title, body=body.body, deep_link=body.deep_link,
            image_url=body.image_url))
    elif isinstance(body, RenderedInApp):
        message.in_app.CopyFrom(common_pb2.RenderedInApp(
            title=body.title, body=body.body,
            buttons=[common_pb2.InAppButton(label=label, link=link)
                     for label, link in body.buttons]))
    else:
        message.webhook.CopyFrom(common_pb2.RenderedWebhook(json_body=body.json_body))
    return message


def settings_to_proto(settings: ContentSettings) -> item_pb.ContentSettings:
    message = item_pb.ContentSettings(name=SETTINGS_NAME, default_locale=settings.default_locale,
                                      revision=settings.revision, etag=settings.etag)
    if settings.update_time is not None:
        message.update_time.CopyFrom(to_timestamp(settings.update_time))
    return message


def settings_from_proto(message: item_pb.ContentSettings) -> ContentSettings:
    return ContentSettings(default_locale=message.default_locale)
