"""Channels to other cjo services: one per target per process, traced, retried on UNAVAILABLE,
and calls made on behalf of a workspace with the service token."""

from __future__ import annotations

import asyncio
import json
import weakref

import grpc

from cjo_platform.limits import MAX_CALL_PAYLOAD_BYTES
from cjo_platform.rpc.auth import WORKSPACE_HEADER
from cjo_platform.rpc.tracing import UnaryStreamClientSpans, UnaryUnaryClientSpans

MAX_MESSAGE_BYTES = 32 * 1024 * 1024
"""gRPC's message limit on every cjo channel and server: well above the payload bytes of one
batch call (:data:`~cjo_platform.limits.MAX_CALL_PAYLOAD_BYTES`) plus its framing."""
assert MAX_MESSAGE_BYTES >= 2 * MAX_CALL_PAYLOAD_BYTES

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


def client_interceptors() -> list[grpc.aio.ClientInterceptor]:
    """The interceptors of every cjo channel: the client span, which carries the trace to the
    server in the ``traceparent`` metadata (:mod:`cjo_platform.rpc.tracing`)."""
    return [UnaryUnaryClientSpans(), UnaryStreamClientSpans()]


def channel(target: str) -> grpc.aio.Channel:
    """The process-wide channel to ``target`` (created on first use, in the running loop)."""
    per_loop = _channels.setdefault(asyncio.get_running_loop(), {})
    existing = per_loop.get(target)
    if existing is None:
        existing = grpc.aio.insecure_channel(target, options=CHANNEL_OPTIONS,
                                             interceptors=client_interceptors())
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
