"""Channels to other cjo services: one per target per process, traced, retried on UNAVAILABLE,
and calls made on behalf of a workspace with the service token."""

from __future__ import annotations

import asyncio
import json
import weakref
from collections.abc import Callable
from typing import Any

import grpc

from cjo_platform.limits import MAX_CALL_PAYLOAD_BYTES
from cjo_platform.rpc.auth import WORKSPACE_HEADER
from cjo_platform.rpc.tracing import UnaryStreamClientSpans, UnaryUnaryClientSpans

MAX_MESSAGE_BYTES = 32 * 1024 * 1024
"""gRPC's message limit on every cjo channel and server: well above the payload bytes of one
batch call (:data:`~cjo_platform.limits.MAX_CALL_PAYLOAD_BYTES`) plus its framing."""
assert MAX_MESSAGE_BYTES >= 2 * MAX_CALL_PAYLOAD_BYTES



def too_large(exc: grpc.aio.AioRpcError) -> bool:
    """Whether a call failed because a message passed gRPC's limit (the request at the client or
    the server, or the answer), as gRPC's own RESOURCE_EXHAUSTED says ("... message larger
    than max"), not because the peer is busy: a smaller call may pass, the same one never."""
    return (exc.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            and "larger than max" in (exc.details() or ""))


_RETRY_POLICY = json.dumps({
    "methodConfig": [{
        "name": [{}],
        "retryPolicy": {
            "maxAttempts": 4,
            "initialBackoff": "0.1s",
            "maxBackoff": "2s",
            "backoffMultiplier": 2,
            "retryableStatusCodes": ["UNAVAILABLE"],
        },
    }]
})

# Channels belong to the event loop that created them; a service has one loop for its life,
# tests have one per test.
_channels: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[str, grpc.aio.Channel]] = (
    weakref.WeakKeyDictionary())


CHANNEL_OPTIONS = (
    ("grpc.service_config", _RETRY_POLICY),
    ("grpc.enable_retries", 1),
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
)
"""The options of every cjo channel: retries on UNAVAILABLE and the message limits."""


_CACHED_METHODS = 512
"""At most this many multicallables kept per channel (a caller making serializers on the fly
gets fresh ones past it, not a cache without end)."""


def _traced(spans: type[Any], kind: str) -> Callable[..., Any]:
    """A :class:`TracedChannel` method: the inner channel's ``kind`` multicallable for the
    method and options asked, in ``spans``, made once."""
    def multicallable(self: TracedChannel, method: str, request_serializer: Any = None,
                      response_deserializer: Any = None,
                      _registered_method: bool | None = False) -> Any:
        key = (spans, method, request_serializer, response_deserializer, _registered_method)
        return self._kept.get(key) or self._keep(key, getattr(self._inner, kind))
    return multicallable


def _untraced(kind: str) -> Callable[..., Any]:
    """A :class:`TracedChannel` method: the inner channel's ``kind`` multicallable as it is."""
    def multicallable(self: TracedChannel, *args: Any, **kwargs: Any) -> Any:
        return getattr(self._inner, kind)(*args, **kwargs)
    return multicallable


# grpcio ships no type information, so its base class is Any to mypy.
class TracedChannel(grpc.aio.Channel):  # type: ignore[misc]
    """A grpc.aio channel whose unary-request methods make every call in a CLIENT span
    (:class:`~cjo_platform.rpc.tracing.UnaryUnaryClientSpans`): the layer is applied by the
    multicallable as the call is made, not by a grpc.aio client interceptor, which runs each
    call in an asyncio task of its own on top of the call's own task.

    The multicallables are kept per method: a generated stub, which services build for each
    batch call they make, asks its channel for one per method of the service (~15 µs a stub
    with grpc.aio's, a multicallable and a registered-call look-up each)."""

    def __init__(self, inner: grpc.aio.Channel) -> None:
        self._inner = inner
        self._kept: dict[tuple[Any, ...], Any] = {}

    def _keep(self, key: tuple[Any, ...], make: Callable[..., Any]) -> Any:
        """A new multicallable for ``key`` (its spans' class, then ``make``'s arguments),
        kept for the next asker."""
        spans, method, *options = key
        made = spans(make(method, *options), method)
        if len(self._kept) < _CACHED_METHODS:
            self._kept[key] = made
        return made

    unary_unary = _traced(UnaryUnaryClientSpans, "unary_unary")
    unary_stream = _traced(UnaryStreamClientSpans, "unary_stream")
    # Client-streaming calls are not traced (none crosses cjo's services).
    stream_unary = _untraced("stream_unary")
    stream_stream = _untraced("stream_stream")

    async def __aenter__(self) -> TracedChannel:
        return self

    async def __aexit__(self, *exc_info: Any) -> None:
        await self._inner.close()

    async def close(self, grace: float | None = None) -> None:
        await self._inner.close(grace)

    def get_state(self, try_to_connect: bool = False) -> grpc.ChannelConnectivity:
        return self._inner.get_state(try_to_connect)

    async def wait_for_state_change(self, last_observed_state: grpc.ChannelConnectivity) -> None:
        await self._inner.wait_for_state_change(last_observed_state)

    async def channel_ready(self) -> None:
        await self._inner.channel_ready()


def channel(target: str) -> grpc.aio.Channel:
    """The process-wide channel to ``target`` (created on first use, in the running loop)."""
    per_loop = _channels.setdefault(asyncio.get_running_loop(), {})
    existing = per_loop.get(target)
    if existing is None:
        existing = TracedChannel(grpc.aio.insecure_channel(target, options=CHANNEL_OPTIONS))
        per_loop[target] = existing
    return existing


async def close_channels() -> None:
    """Close the running loop's channels (at process exit, or at the end of a test)."""
    per_loop = _channels.pop(asyncio.get_running_loop(), {})
    for ch in per_loop.values():
        await ch.close()


def on_behalf_of(service_token: str, workspace_id: str) -> tuple[tuple[str, str], ...]:
    """Call metadata for a service-to-service call acting for ``workspace_id``."""
    return (("authorization", f"Bearer {service_token}"), (WORKSPACE_HEADER, workspace_id))
