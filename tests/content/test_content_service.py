"""ContentService over a real gRPC server: CRUD on SQLite and PostgreSQL, rendering, batches."""

from __future__ import annotations

from datetime import timedelta

import grpc
from content_support import (
    EMAIL,
    WELCOME,
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
from cjo_platform.clock import ManualClock
from cjo_platform.rpc.status import error_reason, field_violations
from support import Backend

# --- CRUD on both databases -----------------------------------------------------------------


async def test_create_get_list_update_delete(backend: Backend) -> None:
    clock = ManualClock()
    async with content_service(backend, clock) as stub:
        created = await create(stub, new_item("welcome", display_name="Welcome", tags=["onb"]))
        assert created.name == "contentItems/welcome"
        assert (created.revision, created.display_name, list(created.tags)) == (1, "Welcome",
                                                                                 ["onb"])
        assert created.email == WELCOME
        assert created.etag
        assert created.create_time == created.update_time

        got = (await stub.GetContentItem(pb.GetContentItemRequest(name="contentItems/welcome"),
                                         metadata=A)).content_item
        assert got == created

        taken = await rpc_error(stub.CreateContentItem(
            pb.CreateContentItemRequest(content_item=new_item("welcome")), metadata=A))
        assert taken.code() == grpc.StatusCode.ALREADY_EXISTS

        for key in ("c-3", "a-1", "b_2", "d4"):
            await create(stub, new_item(key))
        seen: list[str] = []
        token = ""
        pages = 0
        while True:
            page = await stub.ListContentItems(
                pb.ListContentItemsRequest(page_size=2, page_token=token), metadata=A)
            seen += [i.key for i in page.content_items]
            pages += 1
            token = page.next_page_token
            if not token:
                break
        assert seen == ["a-1", "b_2", "c-3", "d4", "welcome"]
        assert pages == 3

        clock.advance(timedelta(minutes=5))
        updated = (await stub.UpdateContentItem(pb.UpdateContentItemRequest(
            content_item=item_pb.ContentItem(
                name="contentItems/welcome", etag=created.etag, display_name="Welcome v2",
                email=item_pb.EmailTemplate(subject="Hello {{ profile.first_name }}")),
            update_mask=mask("display_name", "email.subject")), metadata=A)).content_item
        assert updated.revision == 2
        assert updated.etag != created.etag
        assert updated.display_name == "Welcome v2"
        assert updated.email.subject == "Hello {{ profile.first_name }}"
        assert updated.email.html == WELCOME.html  # not in the mask: kept
        assert list(updated.tags) == ["onb"]
        assert updated.create_time == created.create_time
        assert updated.update_time.ToDatetime() - created.update_time.ToDatetime() == timedelta(
            minutes=5)

        stale = await rpc_error(stub.UpdateContentItem(pb.UpdateContentItemRequest(
            content_item=item_pb.ContentItem(name="contentItems/welcome", etag=created.etag,
                                             display_name="lost update"),
            update_mask=mask("display_name")), metadata=A))
        assert stale.code() == grpc.StatusCode.ABORTED
        assert error_reason(rpc_status.from_call(stale)) == "ETAG_MISMATCH"

        unknown_path = await rpc_error(stub.UpdateContentItem(pb.UpdateContentItemRequest(
            content_item=item_pb.ContentItem(name="contentItems/welcome"),
            update_mask=mask("revision")), metadata=A))
        assert unknown_path.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert set(violations(unknown_path)) == {"update_mask"}

        no_mask = await rpc_error(stub.UpdateContentItem(pb.UpdateContentItemRequest(
            content_item=item_pb.ContentItem(name="contentItems/welcome")), metadata=A))
        assert set(violations(no_mask)) == {"update_mask"}

        no_body = await rpc_error(stub.UpdateContentItem(pb.UpdateContentItemRequest(
            content_item=item_pb.ContentItem(name="contentItems/welcome"),
            update_mask=mask("email")), metadata=A))
        assert set(violations(no_body)) == {"content_item.email"}

        missing = await rpc_error(stub.UpdateContentItem(pb.UpdateContentItemRequest(
            content_item=item_pb.ContentItem(name="contentItems/nope", display_name="x"),
            update_mask=mask("display_name")), metadata=A))
        assert missing.code() == grpc.StatusCode.NOT_FOUND

        stale_delete = await rpc_error(stub.DeleteContentItem(pb.DeleteContentItemRequest(
            name="contentItems/welcome", etag=created.etag), metadata=A))
        assert stale_delete.code() == grpc.StatusCode.ABORTED

        await stub.DeleteContentItem(pb.DeleteContentItemRequest(
            name="contentItems/welcome", etag=updated.etag), metadata=A)
        await stub.DeleteContentItem(pb.DeleteContentItemRequest(name="contentItems/a-1"),
                                     metadata=A)
        gone = await rpc_error(stub.GetContentItem(
            pb.GetContentItemRequest(name="contentItems/welcome"), metadata=A))
        assert gone.code() == grpc.StatusCode.NOT_FOUND
        again = await rpc_error(stub.DeleteContentItem(
            pb.DeleteContentItemRequest(name="contentItems/welcome"), metadata=A))
        assert again.code() == grpc.StatusCode.NOT_FOUND
        left = await stub.ListContentItems(pb.ListContentItemsRequest(), metadata=A)
        assert [i.key for i in left.content_items] == ["b_2", "c-3", "d4"]


async def test_a_repeated_request_id_returns_the_first_answer(backend: Backend) -> None:
    clock = ManualClock()
    async with content_service(backend, clock) as stub:
        first = await create(stub, new_item("promo"), request_id="req-1")
        clock.advance(timedelta(hours=1))
        repeat = await create(stub, new_item("promo"), request_id="req-1")
        assert repeat == first  # not ALREADY_EXISTS, and the original times

        reused = await rpc_error(stub.CreateContentItem(pb.CreateContentItemRequest(
            content_item=new_item("other"), request_id="req-1"), metadata=A))
        assert reused.code() == grpc.StatusCode.FAILED_PRECONDITION

        change = pb.UpdateContentItemRequest(
            content_item=item_pb.ContentItem(name="contentItems/promo", display_name="Promo",
                                             etag=first.etag),
            update_mask=mask("display_name"), request_id="req-2")
        once = (await stub.UpdateContentItem(change, metadata=A)).content_item
        twice = (await stub.UpdateContentItem(change, metadata=A)).content_item
        assert once == twice
        assert once.revision == 2  # applied once, although its etag is stale by now

        delete = pb.DeleteContentItemRequest(name="contentItems/promo", request_id="req-3")
        await stub.DeleteContentItem(delete, metadata=A)
        await stub.DeleteContentItem(delete, metadata=A)  # a retry, not NOT_FOUND


async def test_a_template_syntax_error_names_field_line_and_column(backend: Backend) -> None:
    async with content_service(backend) as stub:
        broken = item_pb.EmailTemplate(
            subject="Hi", html="<p>\n  Hello\n  {% if profile.vip %}VIP {{ profile.name }</p>")
        error = await rpc_error(stub.CreateContentItem(
            pb.CreateContentItemRequest(content_item=new_item("broken", broken)), metadata=A))
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
        found = violations(error)
        assert set(found) == {"content_item.email.html"}
        assert "line 3, column 27" in found["content_item.email.html"]

        missing = await rpc_error(stub.GetContentItem(
            pb.GetContentItemRequest(name="contentItems/broken"), metadata=A))
        assert missing.code() == grpc.StatusCode.NOT_FOUND  # nothing was saved

        good = await create(stub, new_item("good"))
        bad_update = await rpc_error(stub.UpdateContentItem(pb.UpdateContentItemRequest(
            content_item=item_pb.ContentItem(
                name="contentItems/good", email=item_pb.EmailTemplate(text="{% for x in %}")),
            update_mask=mask("email.text")), metadata=A))
        assert "line 1, column 4" in violations(bad_update)["content_item.email.text"]
        after = (await stub.GetContentItem(pb.GetContentItemRequest(name="contentItems/good"),
                                           metadata=A)).content_item
        assert after == good


async def test_bad_items_name_every_field(sqlite_backend: Backend) -> None:
    async with content_service(sqlite_backend) as stub:
        error = await rpc_error(stub.CreateContentItem(pb.CreateContentItemRequest(
            content_item=item_pb.ContentItem(key="Not A Key", tags=["x", "x"])), metadata=A))
        assert set(violations(error)) == {"content_item.key", "content_item.email",
                                          "content_item.tags[1]"}

        oversized = item_pb.EmailTemplate(subject="s" * 999, html="<p>" + "x" * 256 * 1024)
        error = await rpc_error(stub.CreateContentItem(pb.CreateContentItemRequest(
            content_item=new_item("big", oversized)), metadata=A))
        assert violations(error) == {"content_item.email.subject": "at most 998 characters",
                                     "content_item.email.html": "at most 256 KiB"}

        error = await rpc_error(stub.CreateContentItem(pb.CreateContentItemRequest(
            content_item=new_item("no-subject", item_pb.EmailTemplate(html="<p>x</p>"))),
            metadata=A))
        assert set(violations(error)) == {"content_item.email.subject"}

        error = await rpc_error(stub.GetContentItem(pb.GetContentItemRequest(name="welcome"),
                                                    metadata=A))
        assert set(violations(error)) == {"name"}

        error = await rpc_error(stub.ListContentItems(
            pb.ListContentItemsRequest(page_token="garbage!"), metadata=A))
        assert set(violations(error)) == {"page_token"}


# --- rendering ------------------------------------------------------------------------------


async def test_render_with_traits_and_event_properties(sqlite_backend: Backend) -> None:
    async with content_service(sqlite_backend) as stub:
        created = await create(stub, publish=True, item=new_item("welcome"))
        reply = await stub.RenderContent(render_request(
            "welcome", {"first_name": "Ann", "age": 42},
            {"plan": "Pro", "url": "https://app.example/account?ref=mail&x=1"}), metadata=A)
        message = reply.message
        assert message.channel == EMAIL
        assert (message.content_key, message.content_revision) == ("welcome", created.revision)
        assert message.WhichOneof("body") == "email"
        email = message.email
        assert email.subject == "Welcome, Ann!"
        assert email.preheader == "Your Pro plan is ready"
        assert "<h1>Hi Ann</h1>" in email.html
        assert 'href="https://app.example/account?ref=mail&amp;x=1"' in email.html
        # No text template: derived from the rendered HTML, links kept.
        assert email.text == ("Hi Ann\n\nThanks for choosing Pro.\n\n"
                              "Open your account (https://app.example/account?ref=mail&x=1)")

        numbers = await create(stub, publish=True, item=new_item("numbers", item_pb.EmailTemplate(
            subject="{{ profile.age }} / {{ profile.score }}", text="t")))
        out = (await stub.RenderContent(render_request(
            numbers.key, {"age": 42, "score": 2.5}), metadata=A)).message.email
        assert out.subject == "42 / 2.5"


async def test_values_are_escaped_in_html_only(sqlite_backend: Backend) -> None:
    async with content_service(sqlite_backend) as stub:
        await create(stub, publish=True, item=new_item("escape", item_pb.EmailTemplate(
            subject="Hi {{ profile.name }}", html="<p>Hi {{ profile.name }}</p>",
            text="Hi {{ profile.name }}")))
        email = (await stub.RenderContent(render_request(
            "escape", {"name": "<script>alert(1)</script>"}), metadata=A)).message.email
        assert email.html == "<p>Hi &lt;script&gt;alert(1)&lt;/script&gt;</p>"
        assert "<script>" not in email.html
        assert email.subject == "Hi <script>alert(1)</script>"
        assert email.text == "Hi <script>alert(1)</script>"


async def test_missing_variables_render_empty(sqlite_backend: Backend) -> None:
    async with content_service(sqlite_backend) as stub:
        await create(stub, publish=True, item=new_item("sparse", item_pb.EmailTemplate(
            subject="Hi {{ profile.first_name }}{{ vars.nothing.deeper }}",
            html="<p>[{{ event.missing }}]</p>")))
        email = (await stub.RenderContent(render_request("sparse"), metadata=A)).message.email
        assert (email.subject, email.html, email.text) == ("Hi", "<p>[]</p>", "[]")


async def test_render_errors_and_bad_requests(sqlite_backend: Backend) -> None:
    async with content_service(sqlite_backend) as stub:
        await create(stub, new_item("with-include", item_pb.EmailTemplate(
            subject="s", html="<p>{% include 'footer' %}</p>")))
        failed = await rpc_error(publish(stub, "with-include"))
        assert failed.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert error_reason(rpc_status.from_call(failed)) == "SNIPPET_NOT_FOUND"
        assert "footer" in (failed.details() or "")
        unpublished = await rpc_error(stub.RenderContent(render_request("with-include"),
                                                         metadata=A))
        assert unpublished.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert error_reason(rpc_status.from_call(unpublished)) == "CONTENT_NOT_PUBLISHED"

        unknown = await rpc_error(stub.RenderContent(render_request("nope"), metadata=A))
        assert unknown.code() == grpc.StatusCode.NOT_FOUND

        await create(stub, publish=True, item=new_item("email-only"))
        sms = await rpc_error(stub.RenderContent(
            render_request("email-only", channel=common_pb2.CHANNEL_SMS), metadata=A))
        assert sms.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert error_reason(rpc_status.from_call(sms)) == "CHANNEL_BODY_MISSING"
        bad = await rpc_error(stub.RenderContent(
            render_request("email-only", channel=42), metadata=A))
        assert set(violations(bad)) == {"channel"}


async def test_a_new_revision_renders_new_text(sqlite_backend: Backend) -> None:
    async with content_service(sqlite_backend) as stub:
        first = await create(stub, publish=True,
                             item=new_item("hot", item_pb.EmailTemplate(subject="v1", text="t")))
        assert (await stub.RenderContent(render_request("hot"), metadata=A)).message.email.subject \
            == "v1"
        await stub.UpdateContentItem(pb.UpdateContentItemRequest(
            content_item=item_pb.ContentItem(name="contentItems/hot", etag=first.etag,
                                             email=item_pb.EmailTemplate(subject="v2")),
            update_mask=mask("email.subject")), metadata=A)
        message = (await stub.RenderContent(render_request("hot"), metadata=A)).message
        assert (message.email.subject, message.content_version) == ("v1", 1)  # draft only
        await publish(stub, "hot")
        message = (await stub.RenderContent(render_request("hot"), metadata=A)).message
        assert (message.email.subject, message.content_revision) == ("v2", 2)
        assert message.content_version == 2

        # Deleted and created again: same key and revision as before, different text.
        await stub.DeleteContentItem(pb.DeleteContentItemRequest(name="contentItems/hot"),
                                     metadata=A)
        await create(stub, publish=True,
                     item=new_item("hot", item_pb.EmailTemplate(subject="v3", text="t")))
        await stub.UpdateContentItem(pb.UpdateContentItemRequest(
            content_item=item_pb.ContentItem(name="contentItems/hot",
                                             email=item_pb.EmailTemplate(subject="v4")),
            update_mask=mask("email.subject")), metadata=A)
        await publish(stub, "hot")
        message = (await stub.RenderContent(render_request("hot"), metadata=A)).message
        assert (message.email.subject, message.content_revision) == ("v4", 2)
        assert message.content_version == 2


async def test_batch_render_gives_a_status_per_request(sqlite_backend: Backend) -> None:
    async with content_service(sqlite_backend) as stub:
        await create(stub, publish=True, item=new_item("welcome"))
        await create(stub, publish=True, item=new_item("bye", item_pb.EmailTemplate(
            subject="Bye {{ profile.first_name }}", text="See you, {{ profile.first_name }}")))
        await create(stub, publish=True, item=new_item(
            "broken-at-render", item_pb.EmailTemplate(subject="s", html="{{ profile.missing }}"),
            missing_variables=item_pb.MISSING_VARIABLE_POLICY_STRICT))
        reply = await stub.BatchRenderContent(pb.BatchRenderContentRequest(requests=[
            render_request("welcome", {"first_name": "Ann"}, {"plan": "Pro"}),
            render_request("unknown-key", {"first_name": "Bob"}),
            render_request("bye", {"first_name": "Cy"}, channel=42),
            render_request("bye", {"first_name": "Di"}),
            render_request("x", name="bye"),
            render_request("broken-at-render"),
            render_request("welcome", {"first_name": "Eve"}, {"plan": "Free"}),
        ]), metadata=A)
        codes = [r.status.code for r in reply.results]
        assert codes == [0, grpc.StatusCode.NOT_FOUND.value[0],
                         grpc.StatusCode.INVALID_ARGUMENT.value[0], 0,
                         grpc.StatusCode.INVALID_ARGUMENT.value[0],
                         grpc.StatusCode.FAILED_PRECONDITION.value[0], 0]
        assert field_violations(reply.results[2].status) == {
            "requests[2].channel": "unknown channel 42"}
        assert set(field_violations(reply.results[4].status)) == {"requests[4].name"}
        assert error_reason(reply.results[1].status) == "CONTENT_ITEM_NOT_FOUND"
        assert error_reason(reply.results[5].status) == "RENDER_FAILED"
        assert reply.results[0].message.email.subject == "Welcome, Ann!"
        assert reply.results[3].message.email.text == "See you, Di"
        assert reply.results[6].message.email.preheader == "Your Free plan is ready"
        assert not reply.results[1].HasField("message")

        empty = await rpc_error(stub.BatchRenderContent(pb.BatchRenderContentRequest(),
                                                        metadata=A))
        assert set(violations(empty)) == {"requests"}
        too_many = await rpc_error(stub.BatchRenderContent(pb.BatchRenderContentRequest(
            requests=[render_request("welcome")] * 1001), metadata=A))
        assert set(violations(too_many)) == {"requests"}


# --- workspaces -----------------------------------------------------------------------------


async def test_another_workspace_cannot_see_or_change_an_item(backend: Backend) -> None:
    async with content_service(backend) as stub:
        mine = await create(stub, new_item("secret", display_name="A's"), metadata=A,
                            publish=True)
        mine = (await stub.GetContentItem(pb.GetContentItemRequest(name=mine.name),
                                          metadata=A)).content_item
        name = "contentItems/secret"

        get = await rpc_error(stub.GetContentItem(pb.GetContentItemRequest(name=name),
                                                  metadata=B))
        assert get.code() == grpc.StatusCode.NOT_FOUND
        listed = await stub.ListContentItems(pb.ListContentItemsRequest(), metadata=B)
        assert list(listed.content_items) == []
        update = await rpc_error(stub.UpdateContentItem(pb.UpdateContentItemRequest(
            content_item=item_pb.ContentItem(name=name, display_name="B's"),
            update_mask=mask("display_name")), metadata=B))
        assert update.code() == grpc.StatusCode.NOT_FOUND
        delete = await rpc_error(stub.DeleteContentItem(pb.DeleteContentItemRequest(name=name),
                                                        metadata=B))
        assert delete.code() == grpc.StatusCode.NOT_FOUND
        render = await rpc_error(stub.RenderContent(render_request("secret"), metadata=B))
        assert render.code() == grpc.StatusCode.NOT_FOUND
        batch = await stub.BatchRenderContent(pb.BatchRenderContentRequest(
            requests=[render_request("secret")]), metadata=B)
        assert batch.results[0].status.code == grpc.StatusCode.NOT_FOUND.value[0]
        assert not batch.results[0].HasField("message")

        # B may use the same key for its own item; A's stays as it was.
        theirs = await create(stub, new_item("secret", display_name="B's"), metadata=B)
        assert theirs.display_name == "B's"
        again = (await stub.GetContentItem(pb.GetContentItemRequest(name=name),
                                           metadata=A)).content_item
        assert again == mine

        anonymous = await rpc_error(stub.GetContentItem(pb.GetContentItemRequest(name=name)))
        assert anonymous.code() == grpc.StatusCode.UNAUTHENTICATED
