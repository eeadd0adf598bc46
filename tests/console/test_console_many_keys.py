"""More API keys in use at once than the console keeps clients for: every page still loads.
The client of a key dropped from the pool is closed only once its requests end (closing it
would cancel a call in flight, and that page would fail with HTTP 500)."""

from __future__ import annotations

import asyncio
import contextlib
import re

import grpc
import httpx

from cjo.orchestration.v1 import orchestration_service_pb2 as orch_pb
from cjo.orchestration.v1 import orchestration_service_pb2_grpc as orch_grpc
from cjo_console.api.app import MAX_CLIENTS, create_app
from cjo_console.config import load

KEYS = MAX_CLIENTS + 16


class Orchestration(orch_grpc.OrchestrationServiceServicer):
    """A busy orchestration: once ``hold`` is set, each listing answers only when every key's
    listing has arrived (all of them in flight at once)."""

    def __init__(self) -> None:
        self.hold = False
        self.waiting = 0
        self.all_in = asyncio.Event()

    async def ListJourneys(self, request: orch_pb.ListJourneysRequest,
                           context: grpc.aio.ServicerContext) -> orch_pb.ListJourneysResponse:
        if self.hold:
            self.waiting += 1
            if self.waiting == KEYS:
                self.all_in.set()
            # Bounded: a call cancelled on its way never arrives, and the rest answer anyway.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.all_in.wait(), 10)
        return orch_pb.ListJourneysResponse()

    async def PauseJourney(self, request: orch_pb.PauseJourneyRequest,
                           context: grpc.aio.ServicerContext) -> orch_pb.PauseJourneyResponse:
        await context.abort(grpc.StatusCode.NOT_FOUND, "no such journey")


async def test_every_page_loads_with_more_keys_in_use_than_clients_kept() -> None:
    servicer = Orchestration()
    server = grpc.aio.server()
    orch_grpc.add_OrchestrationServiceServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    app = create_app(load({"CJO_CONSOLE_SECRET": "x" * 40,
                           "CJO_ORCHESTRATION_TARGET": f"127.0.0.1:{port}"}))
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    browsers = [httpx.AsyncClient(transport=transport, base_url="http://console")
                for _ in range(KEYS)]
    try:
        for n, browser in enumerate(browsers):  # each signed in with their workspace's key
            page = await browser.get("/sign-in")
            found = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
            assert found is not None
            signed = await browser.post("/sign-in", data={"csrf_token": found.group(1),
                                                          "api_key": f"cjo_k{n}_secret"})
            assert signed.status_code == 303, signed.text
        servicer.hold = True
        replies = await asyncio.gather(*(b.get("/journeys") for b in browsers))
        assert [r.status_code for r in replies] == [200] * KEYS
        assert servicer.all_in.is_set()
        # The dropped keys' clients were closed once their pages were done: a key back later
        # gets a working client.
        servicer.hold = False
        again = await asyncio.gather(*(b.get("/journeys") for b in browsers))
        assert [r.status_code for r in again] == [200] * KEYS
    finally:
        for browser in browsers:
            await browser.aclose()
        await server.stop(None)
