"""`make bench-validation`: CPU per batch item of the shared request validation
(``cjo_platform.rpc.validation.check_item``, which ``BatchAnswer.parse`` runs on every item) for
the items of the sign-up -> email path:

- a forwarded sign-up event, as identity's forwarders send it to orchestration (`HandleEvents`)
  and decisioning (`RecordEvents`): the event with its traits and properties, the profile's
  traits, empty computed traits, one consent, two identifiers;
- a render request, as orchestration's step sends it to content (`BatchRenderContent`): the
  profile view as traits, the event's properties;
- a send request, as orchestration sends it to delivery (`BatchSendMessages`): a rendered email
  of ~2 KB.

Prints microseconds of CPU (process time, so it holds on a busy machine) per item check, the best
of several rounds. Run it with another checkout's interpreter (its venv) for that code's figures
in the same sitting: ``/path/to/other/.venv/bin/python tests/benchmarks/validation.py``.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

from google.protobuf import timestamp_pb2
from google.protobuf.message import Message

from cjo.common.v1 import common_pb2
from cjo.content.v1 import content_service_pb2
from cjo.delivery.v1 import delivery_service_pb2
from cjo.identity.v1 import consent_pb2, event_pb2
from cjo.orchestration.v1 import orchestration_service_pb2
from cjo_platform.protobuf import dict_to_struct
from cjo_platform.rpc.validation import check_item


def forwarded_signup(i: int) -> orchestration_service_pb2.ForwardedEvent:
    traits = {"email": f"u{i}@example.com", "first_name": f"N{i}"}
    identifiers = [event_pb2.Identifier(type="user_id", value=f"u{i}"),
                   event_pb2.Identifier(type="email", value=f"u{i}@example.com")]
    item = orchestration_service_pb2.ForwardedEvent(
        event_id=f"ev_{i:012d}", profile_id=f"p_{i:012d}",
        event=event_pb2.Event(
            message_id=f"bench-signup-{i}", type=event_pb2.EVENT_TYPE_TRACK, name="signed_up",
            identifiers=identifiers, traits=dict_to_struct(traits),
            properties=dict_to_struct({"path": f"/p/{i % 50}", "plan": "pro"}),
            timestamp=timestamp_pb2.Timestamp(seconds=1_796_000_000 + i), source="bench",
            profile_id=f"p_{i:012d}"),
        profile_traits=dict_to_struct(traits),
        traceparent="00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        consents=[consent_pb2.Consent(
            channel=common_pb2.CHANNEL_EMAIL, topic="news", source="web",
            state=consent_pb2.CONSENT_STATE_SUBSCRIBED,
            update_time=timestamp_pb2.Timestamp(seconds=1_790_000_000))],
        identifiers=identifiers)
    item.computed_traits.SetInParent()  # identity sets it, empty or not
    return item


def render_request(i: int) -> content_service_pb2.RenderContentRequest:
    request = content_service_pb2.RenderContentRequest(
        name="contentItems/welcome", channel=common_pb2.CHANNEL_EMAIL)
    request.context.profile_id = f"p_{i:012d}"
    request.context.traits.update({
        "email": f"u{i}@example.com", "first_name": f"N{i}", "computed": {}, "segments": [],
        "consent": {"email": "subscribed"},
        "identifiers": {"user_id": [f"u{i}"], "email": [f"u{i}@example.com"]}})
    request.context.event.update({"path": f"/p/{i % 50}", "plan": "pro"})
    return request


def send_request(i: int) -> delivery_service_pb2.SendMessageRequest:
    request = delivery_service_pb2.SendMessageRequest(
        idempotency_key=f"enr_{i:012d}:mail:1", journey_id="welcome",
        enrollment_id=f"enr_{i:012d}", topic="news")
    request.recipient.profile_id = f"p_{i:012d}"
    request.recipient.address = f"u{i}@example.com"
    request.content.channel = common_pb2.CHANNEL_EMAIL
    request.content.content_key = "welcome"
    request.content.content_revision = 3
    request.content.content_version = 2
    request.content.email.subject = f"Welcome, N{i}!"
    request.content.email.html = (f"<html><body><h1>Hi N{i}</h1>"
                                  + "<p>Thanks for signing up to our product.</p>" * 40
                                  + "</body></html>")
    request.content.email.text = f"Hi N{i}, thanks for signing up." * 10
    return request


def cpu_per_item(items: list[Message], rounds: int) -> float:
    """Microseconds of process time per ``check_item``, the best of ``rounds`` passes."""
    best = float("inf")
    for _ in range(rounds):
        start = time.process_time()
        for item in items:
            check_item(item)
        best = min(best, time.process_time() - start)
    return best / len(items) * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--items", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    kinds: list[tuple[str, Callable[[int], Message]]] = [
        ("forwarded sign-up event (HandleEvents, RecordEvents)", forwarded_signup),
        ("render request (BatchRenderContent)", render_request),
        ("send request, 2 KB email (BatchSendMessages)", send_request)]
    for label, make in kinds:
        items = [make(i) for i in range(args.items)]
        print(f"validation: {label}: {cpu_per_item(items, args.rounds):.2f} us CPU per item "
              f"(best of {args.rounds} x {args.items:,})", flush=True)


if __name__ == "__main__":
    main()
