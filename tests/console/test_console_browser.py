"""The web console in a real browser (Debian's Chromium, driven by Playwright) against the
suite's services as separate processes: a person signs in with an API key, watches the first
journey's graph fill in as events arrive, pauses and resumes it, opens a profile and one of its
messages. The key never appears in any page or any URL the browser asks for."""

from __future__ import annotations

import asyncio
import re
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest

from cjo.common.v1 import common_pb2
from cjo.content.v1 import content_item_pb2, content_service_pb2, content_service_pb2_grpc
from cjo.identity.v1 import (
    event_pb2,
    identity_service_pb2,
    identity_service_pb2_grpc,
    workspace_pb2,
)
from cjo.identity.v1 import workspace_service_pb2 as ws_pb
from cjo.identity.v1 import workspace_service_pb2_grpc as ws_grpc
from cjo.orchestration.v1 import journey_pb2, orchestration_service_pb2
from cjo.orchestration.v1 import orchestration_service_pb2_grpc as orch_grpc
from cjo_console.domain.sessions import SessionSealer
from cjo_platform.protobuf import dict_to_struct
from suite import Suite, running_suite
from support import SERVICE_TOKEN, Backend, bearer, eventually, free_port

pytestmark = pytest.mark.e2e

CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts" / "console"
FAST = {"CJO_ORCHESTRATION_POLL_SECONDS": "0.1", "CJO_DELIVERY_POLL_SECONDS": "0.1"}
EXPECT_MS = 30_000
COOKIE = "cjo_console_session"
SECRET = "console-test-secret-0123456789abcdefghij"
ROTATED = "console-rotated-secret-0123456789abcdefgh"

JOURNEY = journey_pb2.Journey(
    display_name="Welcome new sign-ups",
    event_trigger=journey_pb2.EventTrigger(event_name="signed_up"),
    entry_node_id="welcome",
    goal=journey_pb2.Goal(event_name="purchased", window={"seconds": 30 * 86400}),
    nodes=[
        journey_pb2.Node(id="welcome", send=journey_pb2.SendNode(
            content_key="welcome", channel=common_pb2.CHANNEL_EMAIL, next_node_id="cool-off")),
        # A long wait keeps everyone "in progress" at this node while the test looks.
        journey_pb2.Node(id="cool-off", wait=journey_pb2.WaitNode(
            duration={"seconds": 7 * 86400}, next_node_id="done")),
        journey_pb2.Node(id="done", exit=journey_pb2.ExitNode()),
    ])


def signed_up(user: str, email: str, name: str) -> event_pb2.Event:
    return event_pb2.Event(
        message_id=f"signup-{user}", type=event_pb2.EVENT_TYPE_TRACK, name="signed_up",
        identifiers=[event_pb2.Identifier(type="user_id", value=user)],
        traits=dict_to_struct({"email": email, "first_name": name}), source="web")


@dataclass
class Console:
    """One console process (as `make run` and Kubernetes run it) on the suite, on a port of its
    own that a restart keeps."""

    suite: Suite
    secrets: tuple[str, ...] = (SECRET,)
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> None:
        # Counts are cached per journey (2 s by default); 0.5 s keeps the live graph quick here.
        env = {**self.suite.env, "CJO_CONSOLE_PORT": str(self.port),
               "CJO_CONSOLE_COUNTS_CACHE_SECONDS": "0.5",
               "CJO_CONSOLE_REFRESH_SECONDS": "0.5", "CJO_CONSOLE_SECRET": self.secrets[0],
               "CJO_CONSOLE_PREVIOUS_SECRETS": ",".join(self.secrets[1:])}
        log_path = self.suite.logs / f"console-{self.port}.log"
        with log_path.open("ab") as log:
            proc = self.proc = subprocess.Popen([sys.executable, "-m", "cjo_console"], env=env,
                                                stdout=log, stderr=subprocess.STDOUT)
        async with httpx.AsyncClient() as client:
            async def up() -> bool:
                assert proc.poll() is None, log_path.read_text()
                try:
                    return (await client.get(f"{self.url}/healthz")).status_code == 200
                except httpx.TransportError:
                    return False
            await eventually(up, timeout=30)

    async def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            await asyncio.to_thread(self.proc.wait, 10)


@asynccontextmanager
async def consoles(suite: Suite, count: int) -> AsyncIterator[list[Console]]:
    """``count`` console replicas sharing one secret, with no affinity of any kind."""
    started = [Console(suite) for _ in range(count)]
    try:
        await asyncio.gather(*(c.start() for c in started))
        yield started
    finally:
        await asyncio.gather(*(c.stop() for c in started))


async def set_up(suite: Suite) -> tuple[str, str]:
    """A workspace with the welcome email and the journey, published. Returns (key, journey)."""
    identity_channel = grpc.aio.insecure_channel(suite.target("identity"))
    key = (await ws_grpc.WorkspaceServiceStub(identity_channel).CreateWorkspace(
        ws_pb.CreateWorkspaceRequest(workspace_id="acme", display_name="Acme"),
        metadata=bearer(SERVICE_TOKEN))).api_key.secret
    auth = bearer(key)
    async with grpc.aio.insecure_channel(suite.target("content")) as channel:
        content = content_service_pb2_grpc.ContentServiceStub(channel)
        await content.CreateContentItem(content_service_pb2.CreateContentItemRequest(
            content_item=content_item_pb2.ContentItem(key="welcome", email=(
                content_item_pb2.EmailTemplate(
                    subject="Welcome, {{ profile.first_name }}!",
                    # A script in a body must never run in the console's origin.
                    html=("<h1 id='greeting'>Hi {{ profile.first_name }}!</h1>"
                          "<script>parent.document.title = 'pwned';</script>")))),
            request_id="create-welcome"), metadata=auth)
        await content.PublishContentItem(content_service_pb2.PublishContentItemRequest(
            name="contentItems/welcome", request_id="publish-welcome"), metadata=auth)
    async with grpc.aio.insecure_channel(suite.target("orchestration")) as channel:
        orchestration = orch_grpc.OrchestrationServiceStub(channel)
        created = (await orchestration.CreateJourney(
            orchestration_service_pb2.CreateJourneyRequest(journey=JOURNEY),
            metadata=auth)).journey
        await orchestration.PublishJourney(orchestration_service_pb2.PublishJourneyRequest(
            name=created.name), metadata=auth)
    await identity_channel.close()
    return key, created.journey_id


async def ingest(suite: Suite, key: str, events: list[event_pb2.Event]) -> None:
    async with grpc.aio.insecure_channel(suite.target("identity")) as channel:
        reply = await identity_service_pb2_grpc.IdentityServiceStub(channel).IngestEvents(
            identity_service_pb2.IngestEventsRequest(events=events), metadata=bearer(key))
    assert [r.status.code for r in reply.results] == [0] * len(events)


async def forms_refuse_forged_and_unsigned_requests(url: str, key: str, journey_id: str) -> None:
    """Without the browser: the cookie's flags, CSRF on every POST, a wrong key refused."""
    async with httpx.AsyncClient(base_url=url) as client:
        assert (await client.get("/journeys")).headers["location"] == "/sign-in"
        page = await client.get("/sign-in")
        cookie = page.headers["set-cookie"].lower()
        assert "httponly" in cookie and "samesite=strict" in cookie
        csrf = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
        assert csrf is not None
        # No token, or another's: refused before the key is even looked at.
        forged = await client.post("/sign-in", data={"api_key": key})
        assert forged.status_code == 403
        wrong = await client.post("/sign-in", data={"api_key": "cjo_not-a-key",
                                                     "csrf_token": csrf.group(1)})
        assert wrong.status_code == 401 and "not accepted" in wrong.text
        signed = await client.post("/sign-in", data={"api_key": key,
                                                      "csrf_token": csrf.group(1)})
        assert signed.status_code == 303
        journeys = await client.get("/journeys")
        assert "Welcome new sign-ups" in journeys.text and key not in journeys.text
        # A pause posted without the session's token (a cross-site form) does nothing.
        refused = await client.post(f"/journeys/{journey_id}/pause", data={})
        assert refused.status_code == 403
        shown = await client.get(f"/journeys/{journey_id}")
        assert 'id="journey-state">active<' in shown.text
        assert (await client.get("/journeys/no-such-journey")).status_code == 404
        for path, heading in (("/experiments", "Experiments"), ("/decisions", "Decision points")):
            reply = await client.get(path)
            assert reply.status_code == 200 and f"<h1>{heading}</h1>" in reply.text
        # Signing out deletes the session (it lives only in the cookie): this browser is
        # signed out. A copy taken before stays good until its idle timeout (README).
        token = re.search(r'name="csrf_token" value="([^"]+)"', shown.text)
        assert token is not None
        assert (await client.post("/sign-out", data={})).status_code == 403
        await client.post("/sign-out", data={"csrf_token": token.group(1)})
        assert COOKIE not in client.cookies
        assert (await client.get("/journeys")).headers["location"] == "/sign-in"


async def read_keys_see_no_buttons_and_get_403(suite: Suite, url: str, key: str,
                                               journey_id: str) -> None:
    """A READ key reads every page but has no pause, resume or archive button, and a forged
    press is 403 (it was a 502, and signed the person out); counts are cached per journey."""
    async with grpc.aio.insecure_channel(suite.target("identity")) as channel:
        read_key = (await ws_grpc.WorkspaceServiceStub(channel).CreateApiKey(
            ws_pb.CreateApiKeyRequest(display_name="viewer", request_id="viewer",
                                      scope=workspace_pb2.API_KEY_SCOPE_READ),
            metadata=bearer(key))).api_key.secret
    async with httpx.AsyncClient(base_url=url) as client:
        page = await client.get("/sign-in")
        csrf = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
        assert csrf is not None
        signed = await client.post("/sign-in", data={"api_key": read_key,
                                                      "csrf_token": csrf.group(1)})
        assert signed.status_code == 303
        shown = await client.get(f"/journeys/{journey_id}")
        assert shown.status_code == 200 and 'id="journey-state">active<' in shown.text
        assert f"/journeys/{journey_id}/pause" not in shown.text
        token = re.search(r'name="csrf_token" value="([^"]+)"', shown.text)
        assert token is not None
        pressed = await client.post(f"/journeys/{journey_id}/pause",
                                    data={"csrf_token": token.group(1)})
        assert pressed.status_code == 403, pressed.text
        still = await client.get(f"/journeys/{journey_id}")  # still signed in
        assert still.status_code == 200 and 'id="journey-state">active<' in still.text
    async with httpx.AsyncClient(base_url=url) as client:  # an ADMIN key keeps its buttons
        page = await client.get("/sign-in")
        csrf = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
        assert csrf is not None
        await client.post("/sign-in", data={"api_key": key, "csrf_token": csrf.group(1)})
        shown = await client.get(f"/journeys/{journey_id}")
        assert f"/journeys/{journey_id}/pause" in shown.text


def carry(client: httpx.AsyncClient, cookie: str) -> None:
    """The browser's cookie for 127.0.0.1, which every port (every replica here) shares."""
    client.cookies.set(COOKIE, cookie, domain="127.0.0.1")


def journeys_shown(reply: httpx.Response, key: str) -> bool:
    assert key not in reply.text and key not in str(reply.url)
    return reply.status_code == 200 and "Welcome new sign-ups" in reply.text


async def sessions_need_no_affinity_and_survive_restarts(a: Console, b: Console,
                                                         key: str) -> None:
    """Signed in on one replica, the next request on the other works; a restarted replica still
    knows the session; a tampered, foreign or expired cookie is sent to sign in; a rotated
    secret keeps the sessions sealed under the previous one."""
    async with httpx.AsyncClient(base_url=a.url) as on_a, \
            httpx.AsyncClient(base_url=b.url) as on_b:
        page = await on_a.get("/sign-in")
        csrf = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
        assert csrf is not None
        # The sign-in form from A, posted to B: the CSRF token is in the sealed cookie.
        carry(on_b, on_a.cookies[COOKIE])
        signed = await on_b.post("/sign-in", data={"api_key": key, "csrf_token": csrf.group(1)})
        assert signed.status_code == 303
        cookie = on_b.cookies[COOKIE]
        assert key not in cookie
        carry(on_a, cookie)
        assert journeys_shown(await on_a.get("/journeys"), key)

        await a.stop()
        await a.start()
        assert journeys_shown(await on_a.get("/journeys"), key)

        def sent_to_sign_in(reply: httpx.Response) -> bool:
            return reply.status_code == 303 and reply.headers["location"] == "/sign-in"

        async def with_cookie(value: str) -> httpx.Response:
            async with httpx.AsyncClient(base_url=a.url, cookies={COOKIE: value}) as other:
                return await other.get("/journeys")

        tampered = cookie[:50] + ("A" if cookie[50] != "A" else "B") + cookie[51:]
        assert sent_to_sign_in(await with_cookie(tampered))
        now = datetime.now(UTC)
        same_secret = SessionSealer([SECRET], timedelta(hours=8), timedelta(minutes=30))
        expired = same_secret.sign_in(key, "x", now - timedelta(hours=9))
        assert sent_to_sign_in(await with_cookie(same_secret.seal(
            same_secret.touch(expired, now - timedelta(minutes=1)))))
        idle = same_secret.sign_in(key, "x", now - timedelta(minutes=31))
        assert sent_to_sign_in(await with_cookie(same_secret.seal(idle)))
        fresh = same_secret.sign_in(key, "x", now)
        assert journeys_shown(await with_cookie(same_secret.seal(fresh)), key)
        foreign = SessionSealer([ROTATED], timedelta(hours=8), timedelta(minutes=30))
        assert sent_to_sign_in(await with_cookie(foreign.seal(foreign.sign_in(key, "x", now))))

        # Rotation: B restarts sealing under a new secret, still opening the previous one's.
        await b.stop()
        b.secrets = (ROTATED, SECRET)
        await b.start()
        carry(on_b, on_a.cookies[COOKIE])
        assert journeys_shown(await on_b.get("/journeys"), key)
        resealed = on_b.cookies[COOKIE]
        assert foreign.open(resealed, datetime.now(UTC)) is not None
        await a.stop()
        a.secrets = (ROTATED, SECRET)
        await a.start()
        carry(on_a, resealed)
        assert journeys_shown(await on_a.get("/journeys"), key)


async def test_console_over_http_and_in_a_browser(sqlite_backend: Backend,
                                                  tmp_path: Path) -> None:
    """One suite for both parts (starting it is most of the time): the forms' protections over
    plain HTTP, then what a person sees in Chromium."""
    from playwright.async_api import async_playwright, expect

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    async with running_suite(sqlite_backend, tmp_path, extra_env=FAST) as suite, \
            consoles(suite, 2) as (a, b), async_playwright() as pw:
        url = a.url
        key, journey_id = await set_up(suite)
        await forms_refuse_forged_and_unsigned_requests(url, key, journey_id)
        await read_keys_see_no_buttons_and_get_403(suite, url, key, journey_id)
        await sessions_need_no_affinity_and_survive_restarts(a, b, key)
        if not CHROMIUM.exists():
            pytest.skip("the browser part needs Debian's Chromium at /usr/bin/chromium "
                        "(make install adds it)")
        # Ada says yes to email before she signs up: the profile page shows her consent.
        await ingest(suite, key, [event_pb2.Event(
            message_id="ada-consent", type=event_pb2.EVENT_TYPE_TRACK, name="subscribed",
            identifiers=[event_pb2.Identifier(type="user_id", value="ada")],
            properties=dict_to_struct({"channel": "email"}), source="web")])

        browser = await pw.chromium.launch(executable_path=str(CHROMIUM),
                                           args=["--no-sandbox", "--headless"])
        page = await browser.new_page(viewport={"width": 1280, "height": 900})
        page.set_default_timeout(EXPECT_MS)
        asked: list[str] = []
        page.on("request", lambda request: asked.append(request.url))
        seen: list[str] = []

        async def look(name: str) -> None:
            seen.append(await page.content())
            await page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)

        try:
            await page.goto(f"{url}/journeys")
            await expect(page).to_have_url(f"{url}/sign-in")
            await page.fill("input[name=api_key]", key)
            await page.click("button[type=submit]")
            await expect(page.get_by_role("link", name="Welcome new sign-ups")).to_be_visible()
            await look("journeys")
            # The other replica (same host, so the same cookie) and a restarted one: still in.
            await page.goto(f"{b.url}/journeys")
            await expect(page.get_by_role("link", name="Welcome new sign-ups")).to_be_visible()
            await a.stop()
            await a.start()
            await page.goto(f"{url}/journeys")
            await expect(page.get_by_role("link", name="Welcome new sign-ups")).to_be_visible()

            await page.get_by_role("link", name="Welcome new sign-ups").click()
            graph = page.locator("svg.graph")
            for node_id, kind in (("welcome", "send"), ("cool-off", "wait"), ("done", "exit")):
                node = graph.locator(f"g.node[data-node='{node_id}']")
                await expect(node.locator("text.node-id")).to_have_text(node_id)
                await expect(node.locator("text.kind")).to_have_text(kind)
            await expect(graph.locator("path.edge")).to_have_count(2)

            def count(node_id: str, field: str) -> Any:
                return graph.locator(f"tspan.count[data-node='{node_id}'][data-field='{field}']")

            await expect(count("welcome", "entered")).to_have_text("0")
            await look("journey-empty")

            # Events arrive while the page is open: its counts rise without a reload.
            await ingest(suite, key, [signed_up("ada", "ada@example.com", "Ada"),
                                      signed_up("bob", "bob@example.com", "Bob")])
            await expect(count("welcome", "entered")).to_have_text("2")
            await expect(count("welcome", "completed")).to_have_text("2")
            await expect(count("cool-off", "in_progress")).to_have_text("2")
            await expect(page.locator("#conv-entered")).to_have_text("2")
            await ingest(suite, key, [event_pb2.Event(
                message_id="ada-buys", type=event_pb2.EVENT_TYPE_TRACK, name="purchased",
                identifiers=[event_pb2.Identifier(type="user_id", value="ada")],
                properties=dict_to_struct({"revenue": 30}), source="web")])
            await expect(page.locator("#conv-converted")).to_have_text("1")
            await expect(page.locator("#conv-rate")).to_have_text("50.0%")
            await expect(page.locator("#versions tbody tr")).to_have_text(
                ["1 (published)2150.0%"])
            await look("journey-live")

            await page.get_by_role("button", name="Pause").click()
            await expect(page.locator("#journey-state")).to_have_text("paused")
            await expect(page.get_by_role("button", name="Resume")).to_be_enabled()
            await look("journey-paused")
            await page.get_by_role("button", name="Resume").click()
            await expect(page.locator("#journey-state")).to_have_text("active")

            await page.get_by_role("link", name="Profiles").click()
            await page.select_option("select[name=type]", "email")
            await page.fill("input[name=value]", "ada@example.com")
            await page.get_by_role("button", name="Find").click()
            identifiers = page.locator("#identifiers")
            await expect(identifiers).to_contain_text("ada@example.com")
            await expect(identifiers).to_contain_text("user_id")
            await expect(page.locator("#traits")).to_contain_text("first_name")
            await expect(page.locator("#consent")).to_contain_text("subscribed")
            await expect(page.locator("#enrollments")).to_contain_text("Welcome new sign-ups")
            await expect(page.locator("#enrollments")).to_contain_text("cool-off")
            message_link = page.locator("#messages").get_by_role("link", name="Welcome, Ada!")
            await expect(message_link).to_be_visible()
            await look("profile")

            await message_link.click()
            await expect(page.locator("h1")).to_have_text("Welcome, Ada!")
            body = page.frame_locator("iframe.rendered")
            await expect(body.locator("#greeting")).to_have_text("Hi Ada!")
            await expect(page.locator("iframe.rendered")).to_have_attribute("sandbox", "")
            assert await page.title() != "pwned"  # the body's script never ran
            await look("message")
        finally:
            await browser.close()

        for html in seen:
            assert key not in html
        assert asked and not [u for u in asked if key in u]
