"""Channels to other cjo services: one per target per process, traced, retried on UNAVAILABLE,
and calls made on behalf of a workspace with the service token."""

from __future__ import annotations

import json

import grpc
from opentelemetry.instrumentation.grpc import aio_client_interceptors

from cjo_platform.rpc.auth import WORKSPACE_HEADER

MAX_MESSAGE_BYTES = 32 * 1024 * 1024

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

_channels: dict[str, grpc.aio.Channel] = {}


def channel(target: str) -> grpc.aio.Channel:
    """The process-wide channel to ``target`` (created on first use, in the running loop)."""
    existing = _channels.get(target)
    if existing is None:
        existing = grpc.aio.insecure_channel(
            target,
            options=[
                ("grpc.service_config", _RETRY_POLICY),
                ("grpc.enable_retries", 1),
                ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
                ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
            ],
            interceptors=aio_client_interceptors(),
        )
        _channels[target] = existing
    return existing


async def close_channels() -> None:
    channels = list(_channels.values())
    _channels.clear()
    for ch in channels:
        await ch.close()


def on_behalf_of(service_token: str, workspace_id: str) -> tuple[tuple[str, str], ...]:
    """Call metadata for a service-to-service call acting for ``workspace_id``."""
    return (("authorization", f"Bearer {service_token}"), (WORKSPACE_HEADER, workspace_id))
