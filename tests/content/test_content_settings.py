"""Workspace content settings: the default locale that ends the locale fallback chain."""

from __future__ import annotations

import grpc
from content_support import (
    A,
    B,
    content_service,
    mask,
    rpc_error,
    struct,
    violations,
)

from cjo.common.v1 import common_pb2
from cjo.content.v1 import content_item_pb2 as item_pb
from cjo.content.v1 import content_service_pb2 as pb
from cjo.content.v1 import content_service_pb2_grpc as pb_grpc
from cjo_content.domain.content_items import ChannelBodies, ContentDraft, Localization, SmsTemplate
from cjo_content.domain.locales import locale_chain
from cjo_content.domain.rendering import CompiledContent, RenderContext
from support import Backend

SMS = common_pb2.CHANNEL_SMS


def promo(**fields: object) -> item_pb.ContentItem:
    """English base body, a German localization, no French one."""
    return item_pb.ContentItem(
        key="promo", sms=item_pb.SmsTemplate(text="Hello {{ profile.name }}"),
        localizations=[item_pb.Localization(
            locale="de", sms=item_pb.SmsTemplate(text="Hallo {{ profile.name }}"))],
        **fields)  # type: ignore[arg-type]


def sms_request(locale_trait: str, profile: str = "p1") -> pb.RenderContentRequest:
    return pb.RenderContentRequest(
        name="contentItems/promo", channel=SMS,
        context=pb.RenderContext(profile_id=profile,
                                 traits=struct({"name": "Ann", "locale": locale_trait})))


async def set_default(stub: pb_grpc.ContentServiceStub, tag: str,
                      metadata: tuple[tuple[str, str], ...] = A, etag: str = "",
                      request_id: str = "") -> item_pb.ContentSettings:
    reply = await stub.UpdateContentSettings(pb.UpdateContentSettingsRequest(
        content_settings=item_pb.ContentSettings(default_locale=tag, etag=etag),
        update_mask=mask("default_locale"), request_id=request_id), metadata=metadata)
    return reply.content_settings


async def get_settings(stub: pb_grpc.ContentServiceStub,
                       metadata: tuple[tuple[str, str], ...] = A) -> item_pb.ContentSettings:
    reply = await stub.GetContentSettings(pb.GetContentSettingsRequest(), metadata=metadata)
    return reply.content_settings


async def test_workspace_default_locale_picks_the_fallback_body(backend: Backend) -> None:
    async with content_service(backend) as stub:
        for ws in (A, B):
            created = await stub.CreateContentItem(
                pb.CreateContentItemRequest(content_item=promo()), metadata=ws)
            await stub.PublishContentItem(pb.PublishContentItemRequest(
                name=created.content_item.name), metadata=ws)

        before = (await stub.RenderContent(sms_request("fr-FR"), metadata=A)).message
        assert (before.sms.text, before.locale) == ("Hello Ann", "en")

        settings = await set_default(stub, "de")
        assert (settings.name, settings.default_locale, settings.revision) == (
            "contentSettings", "de", 1)

        # fr-FR -> fr -> (no item default) -> workspace default de: the German body.
        after = (await stub.RenderContent(sms_request("fr-FR"), metadata=A)).message
        assert (after.sms.text, after.locale) == ("Hallo Ann", "de")
        batch = await stub.BatchRenderContent(pb.BatchRenderContentRequest(
            requests=[sms_request("fr-FR", f"p{n}") for n in range(5)]
            + [sms_request("de-AT"), sms_request("")]), metadata=A)
        assert [r.message.sms.text for r in batch.results] == ["Hallo Ann"] * 7
        preview = await stub.PreviewContent(pb.PreviewContentRequest(
            name="contentItems/promo", channel=SMS, context=sms_request("fr-FR").context),
            metadata=A)
        assert preview.message.sms.text == "Hallo Ann"

        # Workspace B keeps its own (default) settings and its English fallback.
        assert (await get_settings(stub, B)).default_locale == "en"
        other = (await stub.RenderContent(sms_request("fr-FR"), metadata=B)).message
        assert other.sms.text == "Hello Ann"
        assert (await get_settings(stub, A)) == settings


async def test_item_default_locale_comes_before_the_workspace_default(backend: Backend) -> None:
    async with content_service(backend) as stub:
        created = await stub.CreateContentItem(pb.CreateContentItemRequest(
            content_item=promo(default_locale="en")), metadata=A)
        await stub.PublishContentItem(pb.PublishContentItemRequest(
            name=created.content_item.name), metadata=A)
        await set_default(stub, "de")
        message = (await stub.RenderContent(sms_request("fr-FR"), metadata=A)).message
        assert (message.sms.text, message.locale) == ("Hello Ann", "en")


async def test_settings_update_is_validated_guarded_and_idempotent(backend: Backend) -> None:
    async with content_service(backend) as stub:
        fresh = await get_settings(stub)
        assert (fresh.default_locale, fresh.revision) == ("en", 0)
        assert not fresh.HasField("update_time")

        for bad in ("en_US", "", "x" * 70, "de-!"):
            error = await rpc_error(set_default(stub, bad))
            assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert set(violations(error)) == {"content_settings.default_locale"}
        error = await rpc_error(stub.UpdateContentSettings(pb.UpdateContentSettingsRequest(
            content_settings=item_pb.ContentSettings(default_locale="de"),
            update_mask=mask("locale")), metadata=A))
        assert set(violations(error)) == {"update_mask"}
        error = await rpc_error(stub.UpdateContentSettings(pb.UpdateContentSettingsRequest(
            content_settings=item_pb.ContentSettings(default_locale="de")), metadata=A))
        assert set(violations(error)) == {"update_mask"}
        assert await get_settings(stub) == fresh  # nothing saved

        first = await set_default(stub, "ko-KR", etag=fresh.etag, request_id="r1")
        assert (first.default_locale, first.revision) == ("ko-KR", 1)
        assert first.etag != fresh.etag and first.HasField("update_time")
        # A retry of the same request is answered from the log, not applied again.
        assert await set_default(stub, "ko-KR", etag=fresh.etag, request_id="r1") == first
        assert (await get_settings(stub)).revision == 1
        stale = await rpc_error(set_default(stub, "ja", etag=fresh.etag))
        assert stale.code() == grpc.StatusCode.ABORTED
        second = await set_default(stub, "ja", etag=first.etag)
        assert (second.default_locale, second.revision) == ("ja", 2)
        assert await set_default(stub, "ja") == second  # no change: same revision and etag
        assert (await get_settings(stub, B)).revision == 0


def test_locale_chain() -> None:
    assert locale_chain("ko-KR", "", "en") == ("ko-KR", "ko", "en")
    assert locale_chain("ko-KR", "ja", "en") == ("ko-KR", "ko", "")
    assert locale_chain("", "", "de-CH") == ("de-CH", "de")
    assert locale_chain("de-DE", "", "de") == ("de-DE", "de")
    assert locale_chain("bad_tag", "", "en") == ("en",)


def test_base_body_of_an_item_without_default_is_in_the_workspace_locale() -> None:
    draft = ContentDraft(sms=SmsTemplate("{{ 1234.5 | number }}"), localizations=(
        Localization("fr", ChannelBodies(sms=SmsTemplate("FR {{ 1234.5 | number }}"))),))
    content = CompiledContent("k", draft, {}, 1)
    german = content.render_for("sms", RenderContext(workspace_locale="de"))
    assert (german.body.text, german.locale) == ("1.234,5", "de")  # type: ignore[union-attr]
    english = content.render_for("sms", RenderContext())
    assert (english.body.text, english.locale) == ("1,234.5", "en")  # type: ignore[union-attr]
    french = content.render_for("sms", RenderContext(workspace_locale="fr-CA"))
    assert french.locale == "fr"
