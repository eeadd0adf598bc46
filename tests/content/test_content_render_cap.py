"""The render time limit, continued (review rendercap): a version seen fast that turns slow for
someone's data holds the event loop for INLINE_RENDER_SECONDS at most, then renders in a
thread; a template that writes as it loops ends at the limit like one that writes nothing, so a
batch short-cuts it; the requests a batch skipped are retryable; slow renders keep to their own
threads; a version that would outgrow a message is not published."""

from __future__ import annotations

import asyncio
import os
import threading
import time
from typing import Any

import grpc
import pytest
from content_support import A, B, content_service, create, render_request, rpc_error

from cjo.content.v1 import content_item_pb2 as item_pb
from cjo.content.v1 import content_service_pb2 as pb
from cjo.content.v1 import content_service_pb2_grpc as pb_grpc
from cjo_content.bootstrap import build
from cjo_content.domain import rendering, templates
from cjo_content.domain.content_items import ContentDraft, SmsTemplate
from cjo_content.domain.rendering import CompiledContent, RenderContext
from cjo_content.service_layer.rendering import Renderer
from cjo_platform.clock import ManualClock
from cjo_platform.config import Env
from cjo_platform.rpc.status import error_reason
from support import Backend, serving, settings_for

LIMIT = 0.4  # the render time limit in these tests (2 s in production)
MARGIN = 0.6  # scheduling on a busy machine, one filter call over a large string
BUILD = "{% assign s = 'abcdefghijklmnop' %}" + "{% assign s = s | append: s %}" * 15


@pytest.fixture(autouse=True)
def _short_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(templates, "MAX_RENDER_SECONDS", LIMIT)


def data_dependent(i: int, doublings: int = 15) -> str:
    """Cheap when event.n is 0; else about 100 ms a round in an email's html with the default
    15 doublings (512 KiB: one escaping join holds the GIL tens of ms), 25 ms with 13."""
    return (f"<p>{i}</p>" + "{% assign s = 'abcdefghijklmnop' %}"
            + "{% assign s = s | append: s %}" * doublings + "{% for a in (1..event.n) %}"
            "{% assign t = s | split: 'a' | join: 'b' | size %}{% endfor %}")


def test_an_inline_render_ends_at_its_short_limit_and_the_version_leaves_the_loop() -> None:
    content = CompiledContent("d", ContentDraft(sms=SmsTemplate(data_dependent(0))), {}, 1)
    for _ in range(50):  # a busy machine may make one of them slow
        content.render_for("sms", RenderContext(event={"n": 0}))
        if content.seen_fast():
            break
    assert content.seen_fast()
    inline = rendering.INLINE_RENDER_SECONDS
    started = time.monotonic()
    with pytest.raises(rendering.TooSlowInline):
        content.render_for("sms", RenderContext(event={"n": 600}), inline)
    assert time.monotonic() - started < inline + 0.1
    assert not content.seen_fast()


async def test_versions_seen_fast_turning_slow_hold_the_loop_briefly(
        sqlite_backend: Backend) -> None:
    """8 versions seen fast, then rendered at once for data that makes them slow: the loop is
    held briefly, and another workspace's render is answered meanwhile (it waited 8 x limit
    before)."""
    versions = 8
    async with content_service(sqlite_backend) as stub:
        for i in range(versions):
            await create(stub, item_pb.ContentItem(key=f"d{i}", email=item_pb.EmailTemplate(
                subject="s", html=data_dependent(i, 13))), publish=True)
        await create(stub, item_pb.ContentItem(key="light", email=item_pb.EmailTemplate(
            subject="Hi", html="<p>Hi</p>")), metadata=B, publish=True)
        for _ in range(4):
            await stub.RenderContent(render_request("light"), metadata=B)
            for i in range(versions):
                await stub.RenderContent(render_request(f"d{i}", event={"n": 0}), metadata=A)

        async def light_meanwhile() -> float:
            await asyncio.sleep(0.1)
            started = time.monotonic()
            await stub.RenderContent(render_request("light"), metadata=B)
            return time.monotonic() - started

        stalls: list[float] = []

        async def ticking() -> None:  # how long the event loop is held at a time
            while True:
                before = time.monotonic()
                await asyncio.sleep(0.005)
                stalls.append(time.monotonic() - before)

        ticker = asyncio.create_task(ticking())
        results = await asyncio.gather(
            *(stub.RenderContent(render_request(f"d{i}", event={"n": 600}), metadata=A)
              for i in range(versions)), light_meanwhile(), return_exceptions=True)
        ticker.cancel()
        for failed in results[:-1]:  # in a thread, at the full limit
            assert isinstance(failed, grpc.aio.AioRpcError)
            assert failed.code() == grpc.StatusCode.FAILED_PRECONDITION
            assert "render time limit of 0.4 s" in (failed.details() or "")
        light = results[-1]
        print(f"\nlight render waited {light:.2f} s; the loop was held at most "
              f"{max(stalls):.3f} s at a time")
        # The first version to turn slow holds the loop INLINE_RENDER_SECONDS (and one filter
        # call); the workspace's other calls then render one at a time in its slow lane for
        # INLINE_PAUSE_SECONDS. Before, each held it a whole limit, one after another (3.7 s);
        # what is left of the loop's stalls here is the busy machine's and the GIL's.
        assert isinstance(light, float) and light < 1.0, light


async def test_a_render_slow_for_this_person_but_within_the_limit_succeeds(
        sqlite_backend: Backend, monkeypatch: pytest.MonkeyPatch) -> None:
    """Past INLINE_RENDER_SECONDS on the event loop, it renders again in a thread, within
    the full limit."""
    monkeypatch.setattr(templates, "MAX_RENDER_SECONDS", 2.0)
    async with content_service(sqlite_backend) as stub:
        await create(stub, item_pb.ContentItem(key="d", email=item_pb.EmailTemplate(
            subject="s", html=data_dependent(0))), publish=True)
        for _ in range(4):
            await stub.RenderContent(render_request("d", event={"n": 0}), metadata=A)
        reply = await stub.RenderContent(render_request("d", event={"n": 1}), metadata=A)
        assert reply.message.email.html.startswith("<p>0</p>")
        batch = await stub.BatchRenderContent(pb.BatchRenderContentRequest(requests=[
            render_request("d", event={"n": 0}), render_request("d", event={"n": 1})]),
            metadata=A)
        assert [r.status.code for r in batch.results] == [0, 0]


async def test_a_batch_of_a_slow_template_that_writes_ends_in_about_one_limit(
        sqlite_backend: Backend) -> None:
    """The template writes as it loops: it used to end at the output buffer's own deadline
    check (another error), so the batch never skipped the rest and took 8 x limit."""
    html = ("{% assign s = 'abcdefghijklmnop' %}" + "{% assign s = s | append: s %}" * 10
            + "{% for a in (1..20000) %}{% assign t = s | split: 'a' | join: 'b' | size %}"
            + "{{ a }}{% endfor %}")
    async with content_service(sqlite_backend) as stub:
        await create(stub, item_pb.ContentItem(key="slow", email=item_pb.EmailTemplate(
            subject="s", html=html)), publish=True)
        requests = [render_request("slow", {"first_name": f"p{i}"}) for i in range(8)]
        started = time.monotonic()
        reply = await stub.BatchRenderContent(
            pb.BatchRenderContentRequest(requests=requests), metadata=A)
        assert time.monotonic() - started < LIMIT + MARGIN
        assert "render time limit" in reply.results[0].status.message
        assert {error_reason(r.status) for r in reply.results[1:]} == {"RENDER_SKIPPED"}


async def test_a_batch_skips_the_rest_of_a_slow_version_retryably(
        sqlite_backend: Backend) -> None:
    """One person's data makes the version hit the limit: that request fails for good, the 9
    others (a ms each) are skipped with a retryable status, and render when asked again."""
    async with content_service(sqlite_backend) as stub:
        await create(stub, item_pb.ContentItem(key="d", email=item_pb.EmailTemplate(
            subject="s", html=data_dependent(0))), publish=True)
        cheap = [render_request("d", event={"n": 0}) for _ in range(9)]
        reply = await stub.BatchRenderContent(pb.BatchRenderContentRequest(
            requests=[render_request("d", event={"n": 600}), *cheap]), metadata=A)
        first, rest = reply.results[0].status, [r.status for r in reply.results[1:]]
        assert first.code == grpc.StatusCode.FAILED_PRECONDITION.value[0]
        assert error_reason(first) == "RENDER_FAILED"
        assert {s.code for s in rest} == {grpc.StatusCode.UNAVAILABLE.value[0]}
        assert {error_reason(s) for s in rest} == {"RENDER_SKIPPED"}
        assert "retry" in rest[0].message
        again = await stub.BatchRenderContent(pb.BatchRenderContentRequest(requests=cheap),
                                              metadata=A)
        assert [r.status.code for r in again.results] == [0] * 9


async def test_slow_renders_keep_to_their_own_threads(sqlite_backend: Backend) -> None:
    """Concurrent renders of one workspace's template seen slow used to hold every thread of
    the loop's default executor, which another workspace's batch of light renders waits for;
    they now run one at a time in the workspace's slow lane."""
    heavy = BUILD + ("{% for a in (1..600) %}{% assign t = s | split: 'a' | join: 'b' | size %}"
                     "{% endfor %}")
    async with content_service(sqlite_backend) as stub:
        await create(stub, item_pb.ContentItem(key="heavy", email=item_pb.EmailTemplate(
            subject="s", html=heavy)), publish=True)
        await create(stub, item_pb.ContentItem(key="light", email=item_pb.EmailTemplate(
            subject="Hi", html="<p>Hi</p>")), metadata=B, publish=True)
        await stub.BatchRenderContent(pb.BatchRenderContentRequest(
            requests=[render_request("light")] * 5), metadata=B)  # compiled, seen fast
        await rpc_error(stub.RenderContent(render_request("heavy"), metadata=A))  # seen slow

        async def light_meanwhile() -> float:
            await asyncio.sleep(0.1)
            started = time.monotonic()
            await stub.BatchRenderContent(pb.BatchRenderContentRequest(
                requests=[render_request("light")] * 5), metadata=B)
            return time.monotonic() - started

        threads = min(32, (os.cpu_count() or 1) + 4)  # the default executor's
        results = await asyncio.gather(
            *(stub.RenderContent(render_request("heavy"), metadata=A) for _ in range(threads)),
            light_meanwhile(), return_exceptions=True)
        # Before: 0.44 s (a heavy render's LIMIT); 0.35 s seen in CI beside other work.
        assert isinstance(results[-1], float) and results[-1] < LIMIT, results[-1]


BIG = [("grpc.max_receive_message_length", 64 * 2**20),
       ("grpc.max_send_message_length", 64 * 2**20)]


async def test_a_version_that_would_outgrow_a_message_is_not_published(
        backend: Backend) -> None:
    """Templates within the item bound (7.75 MiB) including 100 snippets of 250 KiB: 32+ MiB
    as a version. Publish used to store it and answer RESOURCE_EXHAUSTED; the item's versions
    could then never be listed."""
    app = build(settings_for("content", backend), Env({}), clock=ManualClock())
    async with serving(app) as address, grpc.aio.insecure_channel(address, options=BIG) as ch:
        stub = pb_grpc.ContentServiceStub(ch)
        for i in range(100):
            await stub.CreateSnippet(pb.CreateSnippetRequest(snippet=item_pb.Snippet(
                key=f"s{i}", source="y" * (250 * 1024))), metadata=A)
        item = item_pb.ContentItem(key="big", email=item_pb.EmailTemplate(
            subject="s", html="".join(f"{{% render 's{i}' %}}" for i in range(100))))
        for i in range(31):
            loc = item.localizations.add(locale=f"a{chr(97 + i % 26)}{chr(97 + i // 26)}")
            loc.email.subject, loc.email.html = "s", "x" * (256 * 1024 - 100)
        await create(stub, item)
        err = await rpc_error(stub.PublishContentItem(
            pb.PublishContentItemRequest(name="contentItems/big"), metadata=A))
        assert err.code() == grpc.StatusCode.FAILED_PRECONDITION, err.details()
        assert "at most 25165824 (24 MiB)" in (err.details() or "")
        listed = await stub.ListContentItemVersions(pb.ListContentItemVersionsRequest(
            parent="contentItems/big", page_size=1), metadata=A)
        assert not listed.content_versions


def _seen_fast(content: CompiledContent) -> CompiledContent:
    for _ in range(50):  # a busy machine may make one of them slow
        content.render_for("sms", RenderContext(event={"n": 0}))
        if content.seen_fast():
            break
    assert content.seen_fast()
    return content


def test_other_threads_holding_the_gil_neither_demote_nor_pause_a_fast_version(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Review rendercap2 M2: on the event loop a render's time was read from the wall clock,
    which counts other threads' turns with the GIL: a fast version was demoted, or interrupted
    and its workspace paused. A sleep in the render stands for those turns (wall time, no CPU
    of this thread): the version stays seen fast, and an interrupted one is not demoted."""
    content = _seen_fast(CompiledContent("d", ContentDraft(sms=SmsTemplate("Hi")), {}, 1))
    render = CompiledContent._render

    def waiting(self: CompiledContent, *args: Any) -> Any:
        time.sleep(wait)
        return render(self, *args)

    monkeypatch.setattr(CompiledContent, "_render", waiting)
    inline = rendering.INLINE_RENDER_SECONDS
    wait = 0.01  # past FAST_RENDER_SECONDS of wall time, within the inline budget
    content.render_for("sms", RenderContext(), inline)
    assert content.seen_fast()
    wait = inline + 0.02  # past the inline budget: interrupted once the sleep returns
    with pytest.raises(rendering.TooSlowInline) as raised:
        content.render_for("sms", RenderContext(), inline)
    assert not raised.value.demoted
    assert content.seen_fast() and not content.seen_slow()


async def test_a_cancelled_call_holds_the_slow_lane_until_its_render_ends() -> None:
    """Review rendercap2 M3: the lane's lock was released when its caller was cancelled (its
    deadline) while the render went on in its thread, so the next call started another."""
    renderer = Renderer.__new__(Renderer)
    renderer._lanes, renderer._paused = {}, {}
    release = threading.Event()
    call = asyncio.ensure_future(renderer._in_thread("ws", release.wait, 10.0))
    while "ws" not in renderer._lanes or not renderer._lanes["ws"].lock.locked():
        await asyncio.sleep(0.001)
    lane = renderer._lanes["ws"]
    call.cancel()
    with pytest.raises(asyncio.CancelledError):
        await call
    assert lane.lock.locked()  # the render still runs
    assert await asyncio.wait_for(renderer._in_thread("other", lambda: "other"), 5) == "other"
    release.set()
    while "ws" in renderer._lanes or lane.lock.locked():
        await asyncio.sleep(0.001)
