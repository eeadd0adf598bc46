"""A workspace whose consent answers are slow holds back only its own messages, also when it
has messages in every claim: a send round waiting only for that answer lets the next rounds
start (the claims leave that workspace's messages until it came), so another workspace's
messages keep going out at once. Nothing is sent twice, and the slow workspace's messages go
once identity answers. Two slow workspaces taking turns in the claims hold back only their own
messages too (review r2: a limit on all rounds waiting aside together let them fill it while
neither was left, and the fast workspace waited for identity's 10 s timeout)."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from datetime import timedelta

import grpc
import pytest
from delivery_support import (
    IdentityStandIn,
    SmtpSink,
    all_sent,
    delivery_app,
    identity_stand_in,
    send_request,
    smtp_server,
)

from cjo.delivery.v1 import delivery_service_pb2_grpc as pb_grpc
from cjo.identity.v1 import identity_service_pb2
from cjo_platform.clock import ManualClock
from cjo_platform.rpc.client import WORKSPACE_HEADER
from support import Backend, as_service, eventually, free_port, serving

SLOW, SLOW2, FAST = "ws-slow", "ws-slow2", "ws-fast"


class SlowForSomeWorkspaces(IdentityStandIn):
    """A real identity (gRPC) that answers the ``slow`` workspaces' consent questions only once
    ``release`` is set, and every other workspace's at once."""

    def __init__(self, slow: tuple[str, ...]) -> None:
        super().__init__(set())
        self.slow = slow
        self.release = asyncio.Event()
        self.slow_calls = 0

    async def BatchCheckConsent(self, request: identity_service_pb2.BatchCheckConsentRequest,
                                context: grpc.aio.ServicerContext
                                ) -> identity_service_pb2.BatchCheckConsentResponse:
        workspace = dict(context.invocation_metadata() or ()).get(WORKSPACE_HEADER)
        if workspace in self.slow:
            self.slow_calls += 1
            await self.release.wait()
        return await super().BatchCheckConsent(request, context)


@pytest.mark.parametrize("slow", [(SLOW,), (SLOW, SLOW2)], ids=["one", "two"])
async def test_slow_workspaces_in_every_claim_do_not_delay_another_workspace(
        backend: Backend, slow: tuple[str, ...]) -> None:
    """Two rounds at most under way; each step queues a message in a slow workspace (taking
    turns), then one in the fast workspace, and waits for the fast one at the SMTP server.
    Every fast message arrives within seconds while the slow workspaces' answers are held
    (without the fix, both rounds wait for them, and a fast message for identity's 10 s
    timeout)."""
    identity, clock, smtp_port = SlowForSomeWorkspaces(slow), ManualClock(), free_port()
    latencies: list[float] = []
    async with identity_stand_in(identity) as target:
        with smtp_server(SmtpSink(), smtp_port) as sink:
            app = delivery_app(backend, smtp_port, clock, identity=target,
                               CJO_DELIVERY_ROUNDS="2", CJO_DELIVERY_CONSENT_PATIENCE_MS="100")
            async with serving(app) as address, grpc.aio.insecure_channel(address) as ch:
                stub = pb_grpc.DeliveryServiceStub(ch)
                slow_names: dict[str, list[str]] = {workspace: [] for workspace in slow}
                try:
                    for step in range(6):
                        workspace = slow[step % len(slow)]
                        reply = await stub.SendMessage(send_request(
                            f"s{step}", f"slow-{step}@example.com", profile_id=f"s{step}"),
                            metadata=as_service(workspace))
                        slow_names[workspace].append(reply.message.name)
                        address_ = f"fast-{step}@example.com"
                        started = time.monotonic()
                        await stub.SendMessage(send_request(f"f{step}", address_,
                                                            profile_id=f"f{step}"),
                                               metadata=as_service(FAST))
                        assert await eventually(lambda a=address_: bool(sink.to(a)),
                                                timeout=30)
                        latencies.append(time.monotonic() - started)
                    assert identity.slow_calls >= 1
                    assert not any(str(m["To"]).startswith("slow-") for m in sink.received)
                finally:
                    identity.release.set()
                # A consent call that timed out meanwhile put its messages back for 30 s.
                clock.advance(timedelta(seconds=31))
                for workspace, names in slow_names.items():
                    assert await eventually(
                        lambda w=workspace, n=names: all_sent(stub, n, as_service(w)),
                        timeout=30)
    assert max(latencies) < 5.0, latencies
    assert Counter(str(m["To"]) for m in sink.received) == Counter(
        [f"slow-{i}@example.com" for i in range(6)] + [f"fast-{i}@example.com" for i in range(6)])
