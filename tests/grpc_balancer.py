"""A gRPC balancer on loopback for tests that run several replicas of a service: one address for
the service, as a Kubernetes Service gives, that hands each call to the next replica in turn.

It forwards any unary call as raw bytes (metadata and deadline kept, errors passed back with
their details), and counts, per method, every item id it was sent (``counted``): a forwarder
that sends one outbox row twice shows here as an id received twice, even though the receiver's
deduplication hides it from every report. A call whose caller may not have had the answer (an
error, the caller's deadline passed or the call cancelled, even after the replica took the
items) may be sent again, legitimately: :meth:`Balancer.repeated` counts only the sends beyond
those.
"""

from __future__ import annotations

import asyncio
import itertools
from collections import Counter, defaultdict
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from contextlib import asynccontextmanager
from typing import Any, TypeVar

import grpc

# Metadata gRPC sets itself on every hop; the rest (authorization, workspace, traceparent, ...)
# is the caller's and travels on.
_HOP_HEADERS = frozenset({"user-agent", "content-type", "te", "grpc-timeout", "grpc-encoding",
                          "grpc-accept-encoding", "accept-encoding"})
# An answer handed back with less time than this left before the caller's deadline may arrive
# too late: the call counts as failed (its items may be sent again).
_ANSWER_MARGIN_SECONDS = 0.5
_OPTIONS = [("grpc.max_receive_message_length", 32 * 1024 * 1024),
            ("grpc.max_send_message_length", 32 * 1024 * 1024)]

ItemIds = Callable[[bytes], Iterable[str]]
B = TypeVar("B", bound="Balancer")


class Balancer(grpc.GenericRpcHandler):
    """Round-robin over ``upstreams``; ``counted`` maps a full method name to a function that
    reads the item ids out of a serialized request."""

    def __init__(self, upstreams: list[str], counted: Mapping[str, ItemIds]) -> None:
        self.upstreams = upstreams
        self.counted = dict(counted)
        self.channels: list[grpc.aio.Channel] = []
        self._turn = itertools.cycle(range(len(upstreams)))
        # Calls handed to each upstream, per method: proof that both replicas served.
        self.calls: Counter[tuple[int, str]] = Counter()
        # method -> item id -> how many times a request carried it.
        self.received: dict[str, Counter[str]] = defaultdict(Counter)
        # method -> calls that failed (the caller will send their items again, legitimately).
        self.failed: Counter[str] = Counter()
        # method -> item id -> how many of the calls that failed carried it.
        self.unanswered: dict[str, Counter[str]] = defaultdict(Counter)
        self.in_flight = 0
        self.address = ""

    def service(self, handler_call_details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler:
        method: str = handler_call_details.method

        async def forward(request: bytes, context: grpc.aio.ServicerContext[Any, Any]) -> bytes:
            return await self.forward(method, request, context)

        # No (de)serializers: requests and responses pass through as bytes.
        return grpc.unary_unary_rpc_method_handler(forward)

    async def forward(self, method: str, request: bytes,
                      context: grpc.aio.ServicerContext[Any, Any]) -> bytes:
        ids = self.counted.get(method)
        items = list(ids(request)) if ids is not None else []
        self.received[method].update(items)
        upstream = next(self._turn)
        self.calls[(upstream, method)] += 1
        metadata = tuple((m.key, m.value) for m in context.invocation_metadata() or ()
                         if not m.key.startswith(":") and m.key not in _HOP_HEADERS)
        self.in_flight += 1
        answered = False
        try:
            call = self.channels[upstream].unary_unary(method)
            reply: bytes = await call(request, metadata=metadata,
                                      timeout=context.time_remaining())
            # An answer that comes back at the caller's deadline may not reach it in time.
            remaining = context.time_remaining()
            answered = remaining is None or remaining > _ANSWER_MARGIN_SECONDS
            return reply
        except grpc.aio.AioRpcError as exc:
            trailing = tuple((k, v) for k, v in (exc.trailing_metadata() or ())
                             if not k.startswith(":"))
            await context.abort(exc.code(), exc.details() or "", trailing)
            raise  # abort raises; this line only tells type checkers so
        finally:
            # An error, or the caller gone (its deadline passed: this call is cancelled).
            if not answered:
                self.failed[method] += 1
                self.unanswered[method].update(items)
            self.in_flight -= 1

    def served(self, upstream: int) -> int:
        return sum(n for (u, _), n in self.calls.items() if u == upstream)

    def repeated(self, method: str) -> dict[str, int]:
        """Item ids of ``method`` received more than once, with how often, leaving out the
        sends that follow a failed call carrying the item (a retry, not a repeat)."""
        unanswered = self.unanswered[method]
        return {i: n for i, n in self.received[method].items() if n - unanswered[i] > 1}


@asynccontextmanager
async def balancing(upstreams: list[str],
                    counted: Mapping[str, ItemIds] | None = None,
                    kind: type[B] = Balancer) -> AsyncIterator[B]:  # type: ignore[assignment]
    """Run a :class:`Balancer` (or ``kind``, a subclass) in this event loop; its ``address``
    is set while it runs."""
    balancer = kind(upstreams, counted or {})
    balancer.channels = [grpc.aio.insecure_channel(u, options=_OPTIONS) for u in upstreams]
    server = grpc.aio.server(options=_OPTIONS)
    server.add_generic_rpc_handlers((balancer,))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    balancer.address = f"127.0.0.1:{port}"
    try:
        yield balancer
    finally:
        await server.stop(1)
        await asyncio.gather(*(ch.close() for ch in balancer.channels))
