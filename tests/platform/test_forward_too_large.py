"""An outbox row larger than its receiver takes (gRPC's RESOURCE_EXHAUSTED "message larger than
max") goes to the dead letters alone, at once, with an error naming the limit; the rows behind
it, of its workspace and of others, are delivered. (It was asked for "later" for ever, holding
up every later row of its workspace.) A real gRPC server plays the receiver, with a 1 MiB
receive limit."""

from __future__ import annotations

from collections.abc import AsyncIterator
from functools import partial

import grpc
import pytest
from google.rpc import code_pb2, status_pb2
from outbox_support import Box
from test_forwarder_isolation import box, drain, forwarder  # noqa: F401

from cjo.orchestration.v1 import orchestration_service_pb2 as pb
from cjo.orchestration.v1 import orchestration_service_pb2_grpc as pb_grpc
from cjo_platform.forwarding import stored_items_sender
from support import Backend, receiving_at_most, settings_for

LIMIT = 1024 * 1024


class Receiver(pb_grpc.OrchestrationServiceServicer):
    def __init__(self) -> None:
        self.taken: list[tuple[str, str]] = []

    async def HandleEvents(self, request: pb.HandleEventsRequest,
                           context: grpc.aio.ServicerContext) -> pb.HandleEventsResponse:
        workspace = dict(context.invocation_metadata() or ()).get("x-cjo-workspace", "")
        self.taken += [(str(workspace), e.event_id) for e in request.events]
        ok = status_pb2.Status(code=code_pb2.OK)
        return pb.HandleEventsResponse(
            results=[pb.HandleEventResult(status=ok) for _ in request.events])


@pytest.fixture
async def receiver() -> AsyncIterator[tuple[Receiver, str]]:
    receiving = Receiver()
    async with receiving_at_most(LIMIT, partial(
            pb_grpc.add_OrchestrationServiceServicer_to_server, receiving)) as address:
        yield receiving, address


def row(event_id: str, size: int = 0) -> bytes:
    event = pb.ForwardedEvent(event_id=event_id, profile_id="p")
    if size:
        event.profile_traits["notes"] = "x" * size
    payload: bytes = event.SerializeToString()
    return payload


async def test_a_row_past_the_receivers_message_limit_is_buried_alone(
        box: Box, backend: Backend, receiver: tuple[Receiver, str]) -> None:  # noqa: F811
    receiving, address = receiver
    send = stored_items_sender(
        settings_for("identity", backend, CJO_ORCHESTRATION_TARGET=address), "orchestration",
        service=pb.DESCRIPTOR.services_by_name["OrchestrationService"], method="HandleEvents",
        what="events")
    box.queue("t", "acme", [row("a1"), row("big", LIMIT + 1000), row("a2")])
    box.queue("t", "other", [row("o1")])
    await drain(forwarder(box, send, item_key=lambda r: str(r.id)))

    assert sorted(receiving.taken) == [("acme", "a1"), ("acme", "a2"), ("other", "o1")]
    assert box.queued() == 0
    [letter] = box.letters("acme")
    assert pb.ForwardedEvent.FromString(letter.payload).event_id == "big"
    assert "passes the gRPC message limit" in letter.error
    assert "larger than max" in letter.error
