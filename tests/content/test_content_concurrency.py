"""Concurrent calls on both databases: repeats of one request_id all get the first answer and
change things once; concurrent changes without an etag all apply (last writer wins)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import grpc
import pytest
from content_support import A, content_service, create, mask, new_item, publish, rpc_error
from google.protobuf.message import Message

from cjo.content.v1 import content_item_pb2 as item_pb
from cjo.content.v1 import content_service_pb2 as pb
from cjo.content.v1 import content_service_pb2_grpc as pb_grpc
from support import Backend, same_answer_to_concurrent_repeats

Stub = pb_grpc.ContentServiceStub
LOCALES = ("de", "fr", "ja", "ko", "es", "it", "nl", "pt")


async def nothing(stub: Stub) -> None:
    return None


async def item_and_snippet(stub: Stub) -> None:
    await create(stub, new_item("promo"))
    await stub.CreateSnippet(pb.CreateSnippetRequest(
        snippet=item_pb.Snippet(key="footer", source="Bye")), metadata=A)


async def two_versions(stub: Stub) -> None:
    await create(stub, new_item("promo"), publish=True)
    await publish(stub, "promo")


async def item_revision(stub: Stub) -> object:
    return (await stub.GetContentItem(pb.GetContentItemRequest(name="contentItems/promo"),
                                      metadata=A)).content_item.revision


async def version_count(stub: Stub) -> object:
    return len((await stub.ListContentItemVersions(pb.ListContentItemVersionsRequest(
        parent="contentItems/promo"), metadata=A)).content_versions)


async def snippet_revision(stub: Stub) -> object:
    return (await stub.GetSnippet(pb.GetSnippetRequest(name="snippets/footer"),
                                  metadata=A)).snippet.revision


async def settings_revision(stub: Stub) -> object:
    return (await stub.GetContentSettings(pb.GetContentSettingsRequest(),
                                          metadata=A)).content_settings.revision


def gone(read: Callable[[Stub], Awaitable[object]]) -> Callable[[Stub], Awaitable[object]]:
    async def code(stub: Stub) -> object:
        return (await rpc_error(read(stub))).code()
    return code


@dataclass(frozen=True)
class Case:
    rpc: str
    request: Message
    given: Callable[[Stub], Awaitable[None]]
    effect: Callable[[Stub], Awaitable[object]]  # read once the repeats answered
    expected: object  # what ``effect`` reads when the change happened exactly once


CASES = [
    Case("CreateContentItem",
         pb.CreateContentItemRequest(content_item=new_item("promo"), request_id="r"),
         nothing, item_revision, 1),
    Case("UpdateContentItem",
         pb.UpdateContentItemRequest(
             content_item=item_pb.ContentItem(name="contentItems/promo", display_name="Promo"),
             update_mask=mask("display_name"), request_id="r"),
         item_and_snippet, item_revision, 2),
    Case("DeleteContentItem", pb.DeleteContentItemRequest(name="contentItems/promo",
                                                          request_id="r"),
         item_and_snippet, gone(item_revision), grpc.StatusCode.NOT_FOUND),
    Case("PublishContentItem", pb.PublishContentItemRequest(name="contentItems/promo",
                                                            request_id="r"),
         item_and_snippet, version_count, 1),
    Case("RollbackContentItem", pb.RollbackContentItemRequest(name="contentItems/promo",
                                                              version=1, request_id="r"),
         two_versions, version_count, 3),
    Case("CreateSnippet",
         pb.CreateSnippetRequest(snippet=item_pb.Snippet(key="footer", source="Bye"),
                                 request_id="r"),
         nothing, snippet_revision, 1),
    Case("UpdateSnippet",
         pb.UpdateSnippetRequest(snippet=item_pb.Snippet(name="snippets/footer",
                                                         source="Bye now"), request_id="r"),
         item_and_snippet, snippet_revision, 2),
    Case("DeleteSnippet", pb.DeleteSnippetRequest(name="snippets/footer", request_id="r"),
         item_and_snippet, gone(snippet_revision), grpc.StatusCode.NOT_FOUND),
    Case("UpdateContentSettings",
         pb.UpdateContentSettingsRequest(
             content_settings=item_pb.ContentSettings(default_locale="de"),
             update_mask=mask("default_locale"), request_id="r"),
         nothing, settings_revision, 1),
]


def test_every_mutating_rpc_with_a_request_id_is_covered() -> None:
    methods = pb.DESCRIPTOR.services_by_name["ContentService"].methods
    with_request_id = {m.name for m in methods if "request_id" in m.input_type.fields_by_name}
    assert with_request_id == {case.rpc for case in CASES}


@pytest.mark.parametrize("case", CASES, ids=[case.rpc for case in CASES])
async def test_concurrent_repeats_of_a_request_id_get_the_first_answer_and_change_once(
        backend: Backend, case: Case) -> None:
    async with content_service(backend) as stub:
        await case.given(stub)
        first = await same_answer_to_concurrent_repeats(getattr(stub, case.rpc), case.request, A)
        assert await case.effect(stub) == case.expected
        # A later repeat still gets the first answer and changes nothing.
        assert await getattr(stub, case.rpc)(case.request, metadata=A) == first
        assert await case.effect(stub) == case.expected


async def test_concurrent_changes_without_an_etag_all_apply(backend: Backend) -> None:
    async with content_service(backend) as stub:
        await create(stub, new_item("promo"))
        await stub.CreateSnippet(pb.CreateSnippetRequest(
            snippet=item_pb.Snippet(key="footer", source="Bye")), metadata=A)
        calls: list[Awaitable[Any]] = []
        for n in range(8):
            calls.append(stub.UpdateContentSettings(pb.UpdateContentSettingsRequest(
                content_settings=item_pb.ContentSettings(default_locale=LOCALES[n]),
                update_mask=mask("default_locale")), metadata=A))
            calls.append(stub.UpdateContentItem(pb.UpdateContentItemRequest(
                content_item=item_pb.ContentItem(name="contentItems/promo",
                                                 display_name=f"Promo {n}"),
                update_mask=mask("display_name")), metadata=A))
            calls.append(stub.UpdateSnippet(pb.UpdateSnippetRequest(
                snippet=item_pb.Snippet(name="snippets/footer", source=f"Bye {n}")), metadata=A))
            calls.append(stub.PublishContentItem(
                pb.PublishContentItemRequest(name="contentItems/promo"), metadata=A))
        await asyncio.gather(*calls)  # none ABORTED
        assert await settings_revision(stub) == 8
        assert await item_revision(stub) == 9
        assert await snippet_revision(stub) == 9
        assert await version_count(stub) == 8


async def test_concurrent_creates_of_one_key_with_different_request_ids(
        backend: Backend) -> None:
    async with content_service(backend) as stub:
        outcomes = await asyncio.gather(*(stub.CreateContentItem(pb.CreateContentItemRequest(
            content_item=new_item("promo"), request_id=f"r-{n}"), metadata=A)
            for n in range(8)), return_exceptions=True)
        codes = sorted(o.code().name if isinstance(o, grpc.aio.AioRpcError) else "OK"
                       for o in outcomes)
        assert codes == ["ALREADY_EXISTS"] * 7 + ["OK"]


async def test_a_stale_etag_under_concurrency_is_aborted(backend: Backend) -> None:
    async with content_service(backend) as stub:
        fresh = (await stub.GetContentSettings(pb.GetContentSettingsRequest(),
                                               metadata=A)).content_settings
        outcomes = await asyncio.gather(*(stub.UpdateContentSettings(
            pb.UpdateContentSettingsRequest(
                content_settings=item_pb.ContentSettings(default_locale=LOCALES[n],
                                                         etag=fresh.etag),
                update_mask=mask("default_locale")), metadata=A)
            for n in range(8)), return_exceptions=True)
        codes = sorted(o.code().name if isinstance(o, grpc.aio.AioRpcError) else "OK"
                       for o in outcomes)
        assert codes == ["ABORTED"] * 7 + ["OK"]
        assert await settings_revision(stub) == 1
