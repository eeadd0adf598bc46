"""Publishing, versions, rollback, snippets, channels, locales, variants and previews over a real
gRPC server on SQLite and PostgreSQL."""

from __future__ import annotations

from typing import Any

import grpc
from content_support import (
    A,
    B,
    content_service,
    create,
    mask,
    new_item,
    publish,
    render_request,
    rpc_error,
    violations,
)
from grpc_status import rpc_status

from cjo.common.v1 import common_pb2
from cjo.content.v1 import content_item_pb2 as item_pb
from cjo.content.v1 import content_service_pb2 as pb
from cjo.content.v1 import content_service_pb2_grpc as pb_grpc
from cjo_platform.rpc.status import error_reason
from support import Backend

SMS = common_pb2.CHANNEL_SMS


def reason(error: grpc.aio.AioRpcError) -> str:
    return error_reason(rpc_status.from_call(error))


async def render(stub: pb_grpc.ContentServiceStub, key: str, version: int = 0,
                 metadata: tuple[tuple[str, str], ...] = A, **kwargs: Any,
                 ) -> common_pb2.RenderedMessage:
    request = render_request(key, **kwargs)
    request.version = version
    return (await stub.RenderContent(request, metadata=metadata)).message


async def set_subject(stub: pb_grpc.ContentServiceStub, key: str, subject: str,
                      etag: str = "") -> item_pb.ContentItem:
    return (await stub.UpdateContentItem(pb.UpdateContentItemRequest(
        content_item=item_pb.ContentItem(name=f"contentItems/{key}", etag=etag,
                                         email=item_pb.EmailTemplate(subject=subject)),
        update_mask=mask("email.subject")), metadata=A)).content_item


async def test_drafts_versions_pins_and_rollback(backend: Backend) -> None:
    async with content_service(backend) as stub:
        created = await create(stub, new_item("promo", item_pb.EmailTemplate(
            subject="v1 {{ profile.name }}", text="t")))
        assert created.latest_version == 0
        never = await rpc_error(stub.RenderContent(render_request("promo"), metadata=A))
        assert (never.code(), reason(never)) == (grpc.StatusCode.FAILED_PRECONDITION,
                                                 "CONTENT_NOT_PUBLISHED")

        v1 = await publish(stub, "promo")
        assert (v1.name, v1.version, v1.revision) == ("contentItems/promo/versions/1", 1, 1)
        assert v1.content_item.email.subject == "v1 {{ profile.name }}"
        edited = await set_subject(stub, "promo", "v2 {{ profile.name }}", created.etag)
        assert edited.latest_version == 1
        # Edits go to the draft: renders still read version 1.
        assert (await render(stub, "promo", traits={"name": "Ann"})).email.subject == "v1 Ann"

        # A stale etag guards publishing as it guards edits.
        stale = await rpc_error(stub.PublishContentItem(pb.PublishContentItemRequest(
            name="contentItems/promo", etag=created.etag), metadata=A))
        assert stale.code() == grpc.StatusCode.ABORTED
        v2 = (await stub.PublishContentItem(pb.PublishContentItemRequest(
            name="contentItems/promo", etag=edited.etag, request_id="pub-2"),
            metadata=A)).content_version
        again = (await stub.PublishContentItem(pb.PublishContentItemRequest(
            name="contentItems/promo", etag=edited.etag, request_id="pub-2"),
            metadata=A)).content_version
        assert again == v2 and v2.version == 2  # a retried publish makes no third version

        latest = await render(stub, "promo", traits={"name": "Ann"})
        assert (latest.email.subject, latest.content_version, latest.content_revision) == (
            "v2 Ann", 2, 2)
        pinned = await render(stub, "promo", version=1, traits={"name": "Ann"})
        assert (pinned.email.subject, pinned.content_version) == ("v1 Ann", 1)
        missing = await rpc_error(stub.RenderContent(
            pb.RenderContentRequest(name="contentItems/promo", channel=common_pb2.CHANNEL_EMAIL,
                                    version=9), metadata=A))
        assert (missing.code(), reason(missing)) == (grpc.StatusCode.NOT_FOUND,
                                                     "CONTENT_VERSION_NOT_FOUND")

        rolled = (await stub.RollbackContentItem(pb.RollbackContentItemRequest(
            name="contentItems/promo", version=1), metadata=A)).content_version
        assert (rolled.version, rolled.rolled_back_from, rolled.revision) == (3, 1, 1)
        after = await render(stub, "promo", traits={"name": "Ann"})
        assert (after.email.subject, after.content_version) == ("v1 Ann", 3)
        # The draft is untouched by a rollback.
        draft = (await stub.GetContentItem(pb.GetContentItemRequest(name="contentItems/promo"),
                                           metadata=A)).content_item
        assert (draft.email.subject, draft.latest_version) == ("v2 {{ profile.name }}", 3)

        page = await stub.ListContentItemVersions(pb.ListContentItemVersionsRequest(
            parent="contentItems/promo", page_size=2), metadata=A)
        assert [v.version for v in page.content_versions] == [3, 2]
        rest = await stub.ListContentItemVersions(pb.ListContentItemVersionsRequest(
            parent="contentItems/promo", page_size=2, page_token=page.next_page_token),
            metadata=A)
        assert [v.version for v in rest.content_versions] == [1]
        assert not rest.next_page_token

        bad = await rpc_error(stub.RollbackContentItem(pb.RollbackContentItemRequest(
            name="contentItems/promo", version=7), metadata=A))
        assert bad.code() == grpc.StatusCode.NOT_FOUND
        # Other workspaces see none of it.
        hidden = await rpc_error(stub.ListContentItemVersions(pb.ListContentItemVersionsRequest(
            parent="contentItems/promo"), metadata=B))
        assert hidden.code() == grpc.StatusCode.NOT_FOUND
        for call in (stub.PublishContentItem(pb.PublishContentItemRequest(
                         name="contentItems/promo"), metadata=B),
                     stub.RenderContent(render_request("promo"), metadata=B)):
            assert (await rpc_error(call)).code() == grpc.StatusCode.NOT_FOUND


async def test_snippets_are_frozen_into_each_published_version(backend: Backend) -> None:
    async with content_service(backend) as stub:
        footer = (await stub.CreateSnippet(pb.CreateSnippetRequest(snippet=item_pb.Snippet(
            key="footer", source="Bye {{ profile.name }} {% render 'legal' %}")),
            metadata=A)).snippet
        await stub.CreateSnippet(pb.CreateSnippetRequest(snippet=item_pb.Snippet(
            key="legal", source="(c) Acme")), metadata=A)
        assert (footer.name, footer.revision) == ("snippets/footer", 1)
        await create(stub, new_item("news", item_pb.EmailTemplate(
            subject="News", html="<p>{% render 'footer' %}</p>")), publish=True)
        await create(stub, item_pb.ContentItem(key="text", sms=item_pb.SmsTemplate(
            text="Hi. {% render 'footer' %}")), publish=True)
        first = await render(stub, "news", traits={"name": "<Ann>"})
        assert first.email.html == "<p>Bye &lt;Ann&gt; (c) Acme</p>"
        assert (await render(stub, "text", channel=SMS, traits={"name": "<Ann>"})).sms.text \
            == "Hi. Bye <Ann> (c) Acme"

        stale = await rpc_error(stub.UpdateSnippet(pb.UpdateSnippetRequest(
            snippet=item_pb.Snippet(name="snippets/legal", source="x", etag="nope")),
            metadata=A))
        assert stale.code() == grpc.StatusCode.ABORTED
        await stub.UpdateSnippet(pb.UpdateSnippetRequest(snippet=item_pb.Snippet(
            name="snippets/legal", source="(c) Acme Inc.")), metadata=A)
        # Published versions keep the snippet as it was; the next publish picks it up.
        assert (await render(stub, "news", traits={"name": "A"})).email.html \
            == "<p>Bye A (c) Acme</p>"
        v2 = await publish(stub, "news")
        assert dict(v2.snippets) == {"footer": "Bye {{ profile.name }} {% render 'legal' %}",
                                     "legal": "(c) Acme Inc."}
        assert (await render(stub, "news", traits={"name": "A"})).email.html \
            == "<p>Bye A (c) Acme Inc.</p>"

        # Deleting a snippet leaves published versions working but blocks the next publish.
        await stub.DeleteSnippet(pb.DeleteSnippetRequest(name="snippets/legal"), metadata=A)
        assert (await render(stub, "news")).email.html == "<p>Bye  (c) Acme Inc.</p>"
        blocked = await rpc_error(publish(stub, "news"))
        assert (blocked.code(), reason(blocked)) == (grpc.StatusCode.FAILED_PRECONDITION,
                                                     "SNIPPET_NOT_FOUND")

        listed = await stub.ListSnippets(pb.ListSnippetsRequest(), metadata=A)
        assert [s.key for s in listed.snippets] == ["footer"]
        assert list((await stub.ListSnippets(pb.ListSnippetsRequest(), metadata=B)).snippets) \
            == []
        other = await rpc_error(stub.GetSnippet(pb.GetSnippetRequest(name="snippets/footer"),
                                                metadata=B))
        assert other.code() == grpc.StatusCode.NOT_FOUND
        # Workspace B cannot include A's snippets.
        await create(stub, new_item("b-news", item_pb.EmailTemplate(
            subject="s", html="{% render 'footer' %}")), metadata=B)
        foreign = await rpc_error(publish(stub, "b-news", metadata=B))
        assert reason(foreign) == "SNIPPET_NOT_FOUND"

        broken = await rpc_error(stub.CreateSnippet(pb.CreateSnippetRequest(
            snippet=item_pb.Snippet(key="Bad Key", source="{% if %}")), metadata=A))
        assert set(violations(broken)) == {"snippet.key", "snippet.source"}
        assert "line 1" in violations(broken)["snippet.source"]


async def test_every_channel_renders_through_the_api(backend: Backend) -> None:
    async with content_service(backend) as stub:
        item = item_pb.ContentItem(
            key="cart", tags=["cart-campaign"],
            sms=item_pb.SmsTemplate(text="{{ profile.name }}, your cart: {{ event.count }} items"),
            push=item_pb.PushTemplate(title="Cart", body="{{ event.count }} items",
                                      deep_link="acme://cart/{{ event.cart }}"),
            in_app=item_pb.InAppTemplate(title="Cart", body="Come back",
                                         buttons=[item_pb.InAppButtonTemplate(
                                             label="Open", link="acme://cart/{{ event.cart }}")]),
            webhook=item_pb.WebhookTemplate(
                json_body='{"profile": {{ profile.name | json }}, "n": {{ event.count }}}'))
        created = await create(stub, item, publish=True)
        assert created.sms.text and list(created.tags) == ["cart-campaign"]
        await create(stub, new_item("cart-email", tags=["other", "cart-campaign"]))
        await create(stub, new_item("unrelated", tags=["other"]))
        tagged = await stub.ListContentItems(pb.ListContentItemsRequest(
            tag="cart-campaign", page_size=1), metadata=A)
        assert [i.key for i in tagged.content_items] == ["cart"]
        tagged = await stub.ListContentItems(pb.ListContentItemsRequest(
            tag="cart-campaign", page_size=1, page_token=tagged.next_page_token), metadata=A)
        assert [i.key for i in tagged.content_items] == ["cart-email"]
        ctx = {"traits": {"name": "Ann"}, "event": {"count": 3, "cart": "c9"}}
        sms = await render(stub, "cart", channel=SMS, **ctx)
        assert (sms.channel, sms.sms.text, sms.sms.encoding, sms.sms.segments) == (
            SMS, "Ann, your cart: 3 items", common_pb2.SMS_ENCODING_GSM7, 1)
        korean = await render(stub, "cart", channel=SMS, traits={"name": "김" * 60},
                              event={"count": 3})
        assert (korean.sms.encoding, korean.sms.segments) == (common_pb2.SMS_ENCODING_UCS2, 2)
        push = await render(stub, "cart", channel=common_pb2.CHANNEL_PUSH, **ctx)
        assert (push.push.body, push.push.deep_link) == ("3 items", "acme://cart/c9")
        in_app = await render(stub, "cart", channel=common_pb2.CHANNEL_IN_APP, **ctx)
        assert [(b.label, b.link) for b in in_app.in_app.buttons] == [("Open", "acme://cart/c9")]
        webhook = await render(stub, "cart", channel=common_pb2.CHANNEL_WEBHOOK, **ctx)
        assert webhook.webhook.json_body == '{"profile": "Ann", "n": 3}'
        no_email = await rpc_error(stub.RenderContent(render_request("cart"), metadata=A))
        assert reason(no_email) == "CHANNEL_BODY_MISSING"

        # Replacing one channel body by mask leaves the others.
        updated = (await stub.UpdateContentItem(pb.UpdateContentItemRequest(
            content_item=item_pb.ContentItem(name="contentItems/cart",
                                              sms=item_pb.SmsTemplate(text="New €")),
            update_mask=mask("sms")), metadata=A)).content_item
        assert (updated.sms.text, updated.push.body) == ("New €", "{{ event.count }} items")
        preview = (await stub.PreviewContent(pb.PreviewContentRequest(
            name="contentItems/cart", channel=SMS), metadata=A)).message
        assert (preview.sms.text, preview.content_version, preview.content_revision) == (
            "New €", 0, 2)


async def test_bad_channel_bodies_locales_and_variants_name_their_fields(
        sqlite_backend: Backend) -> None:
    async with content_service(sqlite_backend) as stub:
        error = await rpc_error(stub.CreateContentItem(pb.CreateContentItemRequest(
            content_item=item_pb.ContentItem(
                key="bad", sms=item_pb.SmsTemplate(text="{{ x"),
                push=item_pb.PushTemplate(deep_link="x"),
                webhook=item_pb.WebhookTemplate(json_body="{% for %}"),
                default_locale="english",
                localizations=[item_pb.Localization(locale="ko_KR",
                                                    sms=item_pb.SmsTemplate(text="hi"))],
                variants=[item_pb.Variant(key="a", weight=0)])), metadata=A))
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert set(violations(error)) == {
            "content_item.sms.text", "content_item.push.body", "content_item.webhook.json_body",
            "content_item.default_locale", "content_item.localizations[0].locale",
            "content_item.variants[0].weight"}
        listed = await stub.ListContentItems(pb.ListContentItemsRequest(), metadata=A)
        assert list(listed.content_items) == []  # nothing saved half-way

        await create(stub, new_item("ok"), publish=True)
        bad_locale = await rpc_error(stub.RenderContent(pb.RenderContentRequest(
            name="contentItems/ok", channel=common_pb2.CHANNEL_EMAIL, locale="en_US"),
            metadata=A))
        assert set(violations(bad_locale)) == {"locale"}
        batch = await stub.BatchRenderContent(pb.BatchRenderContentRequest(requests=[
            pb.RenderContentRequest(name="contentItems/ok", channel=common_pb2.CHANNEL_EMAIL,
                                    locale="??"),
            render_request("ok", {"first_name": "A"})]), metadata=A)
        assert batch.results[0].status.code == grpc.StatusCode.INVALID_ARGUMENT.value[0]
        assert batch.results[1].message.email.subject == "Welcome, A!"


async def test_locales_and_variants_through_the_api(backend: Backend) -> None:
    async with content_service(backend) as stub:
        await create(stub, item_pb.ContentItem(
            key="sale", sms=item_pb.SmsTemplate(text="Sale: {{ event.price | money: 'KRW' }}"),
            localizations=[item_pb.Localization(locale="ko", sms=item_pb.SmsTemplate(
                text="세일: {{ event.price | money: 'KRW' }}"))],
            variants=[item_pb.Variant(key="a", weight=1),
                      item_pb.Variant(key="b", weight=1,
                                      sms=item_pb.SmsTemplate(text="B: {{ event.price }}"))]),
            publish=True)
        seen: dict[str, set[str]] = {"a": set(), "b": set()}
        for n in range(40):
            request = render_request("sale", {"locale": "ko-KR"}, {"price": 15000},
                                     channel=SMS)
            request.context.profile_id = f"p{n}"
            message = (await stub.RenderContent(request, metadata=A)).message
            seen[message.variant].add(message.sms.text)
            again = (await stub.RenderContent(request, metadata=A)).message
            assert again.variant == message.variant  # sticky
            if message.variant == "a":
                assert message.locale == "ko"
        assert seen == {"a": {"세일: ₩15,000"}, "b": {"B: 15000"}}
        english = await render(stub, "sale", channel=SMS, traits={"locale": "fr"},
                               event={"price": 15000})
        assert english.locale == "en"
