"""Endpoints + API key -> channels and stubs with the authorization metadata."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

import grpc

from cjo.analytics.v1 import analytics_service_pb2_grpc
from cjo.common.v1 import dead_letter_service_pb2_grpc
from cjo.content.v1 import content_service_pb2_grpc
from cjo.decisioning.v1 import decisioning_service_pb2_grpc
from cjo.delivery.v1 import delivery_service_pb2_grpc
from cjo.identity.v1 import identity_service_pb2_grpc, workspace_service_pb2_grpc
from cjo.orchestration.v1 import orchestration_service_pb2_grpc

# Where `make run` starts each service; also what a context without an endpoint dials.
SERVICES: dict[str, int] = {
    "identity": 50051,
    "content": 50052,
    "orchestration": 50053,
    "delivery": 50054,
    "analytics": 50055,
    "decisioning": 50056,
}

# A batch of 1,000 items with their traits stays far below this; replies with reports can be big.
_MAX_MESSAGE_BYTES = 32 * 1024 * 1024

# Retried by gRPC itself: a service restarting or a pod rolling over answers UNAVAILABLE briefly.
_RETRY_POLICY = json.dumps({
    "methodConfig": [{
        "name": [{}],
        "retryPolicy": {
            "maxAttempts": 4,
            "initialBackoff": "0.2s",
            "maxBackoff": "2s",
            "backoffMultiplier": 2,
            "retryableStatusCodes": ["UNAVAILABLE"],
        },
    }]
})


def is_loopback(target: str) -> bool:
    """Whether ``target`` (host:port) stays on this machine, where plaintext gRPC is safe."""
    host = target.rsplit(":", 1)[0] if target.count(":") == 1 or target.startswith("[") \
        else target
    host = host.strip("[]").lower()
    return host in ("localhost", "::1") or host.startswith("127.") \
        or target.startswith("unix:")


@dataclass(frozen=True)
class Endpoints:
    """host:port per service. Missing services dial 127.0.0.1 on their default port."""

    targets: Mapping[str, str] = field(default_factory=dict)

    def target(self, service: str) -> str:
        if service not in SERVICES:
            raise KeyError(f"unknown service {service!r}; one of {', '.join(SERVICES)}")
        return self.targets.get(service) or f"127.0.0.1:{SERVICES[service]}"

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Endpoints:
        """CJO_<SERVICE>_TARGET for each service that has one (the names the examples use)."""
        env = os.environ if environ is None else environ
        return cls({name: env[f"CJO_{name.upper()}_TARGET"] for name in SERVICES
                    if env.get(f"CJO_{name.upper()}_TARGET", "").strip()})


class Client:
    """One channel per service, created on first use and closed with the client (use it as an
    async context manager). Every stub call made through :attr:`metadata` is authorised as the
    API key's workspace."""

    def __init__(self, endpoints: Endpoints, api_key: str, *, secure: bool = False,
                 ca_file: str = "") -> None:
        """``secure``: TLS to every service, verified against the system's roots or, with
        ``ca_file``, against the PEM certificates in it (a private CA)."""
        if not api_key:
            raise ValueError("an API key is needed")
        self.endpoints = endpoints
        self._api_key = api_key
        self._secure = secure or bool(ca_file)
        self._roots = Path(ca_file).read_bytes() if ca_file else None
        self._channels: dict[str, grpc.aio.Channel] = {}

    def __repr__(self) -> str:
        # Never the key: a client may end up in a log line or a traceback.
        return f"Client({self.endpoints!r})"

    @property
    def metadata(self) -> tuple[tuple[str, str], ...]:
        return (("authorization", f"Bearer {self._api_key}"),)

    def channel(self, service: str) -> grpc.aio.Channel:
        existing = self._channels.get(service)
        if existing is None:
            options = [
                ("grpc.service_config", _RETRY_POLICY),
                ("grpc.enable_retries", 1),
                ("grpc.max_receive_message_length", _MAX_MESSAGE_BYTES),
                ("grpc.max_send_message_length", _MAX_MESSAGE_BYTES),
            ]
            target = self.endpoints.target(service)
            existing = (grpc.aio.secure_channel(
                target, grpc.ssl_channel_credentials(root_certificates=self._roots), options)
                        if self._secure else grpc.aio.insecure_channel(target, options))
            self._channels[service] = existing
        return existing

    @property
    def identity(self) -> identity_service_pb2_grpc.IdentityServiceStub:
        return identity_service_pb2_grpc.IdentityServiceStub(self.channel("identity"))  # type: ignore[no-untyped-call]

    @property
    def workspaces(self) -> workspace_service_pb2_grpc.WorkspaceServiceStub:
        return workspace_service_pb2_grpc.WorkspaceServiceStub(self.channel("identity"))  # type: ignore[no-untyped-call]

    @property
    def content(self) -> content_service_pb2_grpc.ContentServiceStub:
        return content_service_pb2_grpc.ContentServiceStub(self.channel("content"))  # type: ignore[no-untyped-call]

    @property
    def orchestration(self) -> orchestration_service_pb2_grpc.OrchestrationServiceStub:
        return orchestration_service_pb2_grpc.OrchestrationServiceStub(  # type: ignore[no-untyped-call]
            self.channel("orchestration"))

    @property
    def delivery(self) -> delivery_service_pb2_grpc.DeliveryServiceStub:
        return delivery_service_pb2_grpc.DeliveryServiceStub(self.channel("delivery"))  # type: ignore[no-untyped-call]

    @property
    def analytics(self) -> analytics_service_pb2_grpc.AnalyticsServiceStub:
        return analytics_service_pb2_grpc.AnalyticsServiceStub(self.channel("analytics"))  # type: ignore[no-untyped-call]

    @property
    def decisioning(self) -> decisioning_service_pb2_grpc.DecisioningServiceStub:
        return decisioning_service_pb2_grpc.DecisioningServiceStub(  # type: ignore[no-untyped-call]
            self.channel("decisioning"))

    def dead_letters(self, service: str) -> dead_letter_service_pb2_grpc.DeadLetterServiceStub:
        """Every service serves its own dead letters."""
        return dead_letter_service_pb2_grpc.DeadLetterServiceStub(  # type: ignore[no-untyped-call]
            self.channel(service))

    async def close(self) -> None:
        channels, self._channels = self._channels, {}
        for ch in channels.values():
            await ch.close()

    async def __aenter__(self) -> Client:
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None,
                        exc: BaseException | None, tb: TracebackType | None) -> None:
        await self.close()


