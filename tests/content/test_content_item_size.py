"""An item's templates together are bounded (MAX_ITEM_TEMPLATE_BYTES), so an item, its versions
and a page of either always fit one gRPC message; a change past the bound is refused before
anything is written, and list pages end early rather than outgrow a message."""

from __future__ import annotations

from typing import Any

import grpc
import pytest
from content_support import (
    A,
    content_service,
    create,
    mask,
    publish,
    rpc_error,
    violations,
)

from cjo.content.v1 import content_item_pb2 as item_pb
from cjo.content.v1 import content_service_pb2 as pb
from cjo_content.domain import content_items
from cjo_content.domain.content_items import ContentDraft, EmailTemplate
from cjo_content.domain.rendering import CompiledContent, RenderContext
from cjo_platform.errors import FailedPrecondition
from support import Backend

FIELD = "x" * (200 * 1024)  # within the 256 KiB a field may take


async def test_an_item_past_the_total_bound_is_refused_and_not_stored(backend: Backend) -> None:
    async with content_service(backend) as stub:
        item = item_pb.ContentItem(key="big", email=item_pb.EmailTemplate(subject="s",
                                                                          html="<p>hi</p>"))
        for i in range(18):  # 3.7 MB: accepted
            loc = item.localizations.add(locale=f"a{chr(97 + i)}")
            loc.email.subject, loc.email.html = "s", FIELD
        created = await create(stub, item)

        patch = item_pb.ContentItem(name="contentItems/big")
        for i in range(26):  # 5.3 MB more: 9 MB, past 8 MiB
            variant = patch.variants.add(key=f"v{i}", weight=1)
            variant.email.subject, variant.email.html = "s", FIELD
        refused = await rpc_error(stub.UpdateContentItem(pb.UpdateContentItemRequest(
            content_item=patch, update_mask=mask("variants")), metadata=A))
        assert refused.code() == grpc.StatusCode.INVALID_ARGUMENT
        [(field, why)] = violations(refused).items()
        assert field.startswith("content_item.variants[") and field.endswith("].email.html")
        assert "8 MiB" in why
        got = (await stub.GetContentItem(pb.GetContentItemRequest(name="contentItems/big"),
                                         metadata=A)).content_item
        assert (got.revision, len(got.variants)) == (created.revision, 0)

        whole = item_pb.ContentItem()
        whole.CopyFrom(item)
        whole.key = "whole"
        whole.variants.extend(patch.variants)
        refused = await rpc_error(stub.CreateContentItem(
            pb.CreateContentItemRequest(content_item=whole), metadata=A))
        assert refused.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert (await rpc_error(stub.GetContentItem(pb.GetContentItemRequest(
            name="contentItems/whole"), metadata=A))).code() == grpc.StatusCode.NOT_FOUND


async def test_list_pages_end_before_they_outgrow_a_message(
        backend: Backend, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(content_items, "MAX_PAGE_TEMPLATE_BYTES", 450 * 1024, raising=False)
    async with content_service(backend) as stub:
        for key in ("a", "b", "c"):
            await create(stub, item_pb.ContentItem(key=key, email=item_pb.EmailTemplate(
                subject="s", html=FIELD)))
        for _ in range(3):
            await publish(stub, "a")

        pages: list[list[str]] = []
        token = ""
        while True:
            page = await stub.ListContentItems(
                pb.ListContentItemsRequest(page_size=10, page_token=token), metadata=A)
            pages.append([i.key for i in page.content_items])
            token = page.next_page_token
            if not token:
                break
        assert pages == [["a", "b"], ["c"]]

        versions: list[list[int]] = []
        token = ""
        while True:
            found = await stub.ListContentItemVersions(pb.ListContentItemVersionsRequest(
                parent="contentItems/a", page_size=10, page_token=token), metadata=A)
            versions.append([v.version for v in found.content_versions])
            token = found.next_page_token
            if not token:
                break
        assert versions == [[3, 2], [1]]


def test_a_rendered_email_delivery_would_refuse_fails_its_render() -> None:
    """Content counts its output limit in characters (4 Mi); delivery refuses an email whose
    html and text pass MAX_EMAIL_BODY_BYTES in UTF-8: 2 Mi Korean characters are 6 MiB."""
    email = CompiledContent("k", ContentDraft(email=EmailTemplate(
        subject="s", html="{% for i in (1..4096) %}<p>{{ event.block }}</p>{% endfor %}")),
        {}, 1)
    block = "안" * 512
    with pytest.raises(FailedPrecondition, match="at most 5242880 can be sent") as err:
        email.render("email", RenderContext(event={"block": block}))
    assert err.value.metadata["field"] == "email.html"
    within = email.render("email", RenderContext(event={"block": block[:100]}))
    assert len(within.html.encode()) + len(within.text.encode()) <= 5 * 1024 * 1024


async def test_an_item_stored_past_the_bound_may_change_without_growing(
        backend: Backend, monkeypatch: pytest.MonkeyPatch) -> None:
    """An item stored before the bound existed (here: the bound lowered under it) is not
    stuck: an update that does not grow its templates is accepted, one that grows them is
    refused."""
    async with content_service(backend) as stub:
        item = item_pb.ContentItem(key="old", email=item_pb.EmailTemplate(subject="s",
                                                                          html=FIELD))
        for i in range(4):
            loc = item.localizations.add(locale=f"a{chr(97 + i)}")
            loc.email.subject, loc.email.html = "s", FIELD
        await create(stub, item)  # 1 MB
        monkeypatch.setattr(content_items, "MAX_ITEM_TEMPLATE_BYTES", 512 * 1024)

        def update(html: str) -> Any:
            patch = item_pb.ContentItem(name="contentItems/old", email=item_pb.EmailTemplate(
                subject="s", html=html))
            return stub.UpdateContentItem(pb.UpdateContentItemRequest(
                content_item=patch, update_mask=mask("email")), metadata=A)

        await update("<p>smaller</p>")  # accepted: the item shrinks
        refused = await rpc_error(update(FIELD))  # back to where it was: grows
        assert refused.code() == grpc.StatusCode.INVALID_ARGUMENT
        [(field, why)] = violations(refused).items()
        assert "no more than the" in why and field.startswith("content_item.")
