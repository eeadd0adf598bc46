"""Consent from identity: one BatchCheckConsent call per workspace per claimed batch."""

from __future__ import annotations

import grpc

from cjo.common.v1 import common_pb2
from cjo.identity.v1 import consent_pb2, identity_service_pb2
from cjo_delivery.adapters import stubs
from cjo_delivery.domain.messages import Channel
from cjo_delivery.domain.policies import ConsentDecision, ConsentQuery, ConsentUnavailable
from cjo_platform.config import ServiceSettings
from cjo_platform.logging import get_logger
from cjo_platform.rpc.client import channel, on_behalf_of

log = get_logger(__name__)

_CHANNELS = {Channel.EMAIL: common_pb2.CHANNEL_EMAIL, Channel.SMS: common_pb2.CHANNEL_SMS,
             Channel.PUSH: common_pb2.CHANNEL_PUSH, Channel.IN_APP: common_pb2.CHANNEL_IN_APP,
             Channel.WEBHOOK: common_pb2.CHANNEL_WEBHOOK}
_BATCH = 1000


class IdentityConsent:
    """A ConsentDirectory asking identity."""

    def __init__(self, settings: ServiceSettings, timeout: float = 10.0) -> None:
        self.settings = settings
        self.timeout = timeout
        self._warned = False

    async def check(self, workspace_id: str,
                    queries: list[ConsentQuery]) -> list[ConsentDecision]:
        stub = stubs.identity(channel(self.settings.peer("identity")))
        decisions: list[ConsentDecision] = []
        for start in range(0, len(queries), _BATCH):
            chunk = queries[start:start + _BATCH]
            request = identity_service_pb2.BatchCheckConsentRequest(queries=[
                consent_pb2.ConsentQuery(profile_id=q.profile_id, channel=_CHANNELS[q.channel],
                                         topic=q.topic) for q in chunk])
            try:
                reply = await stub.BatchCheckConsent(
                    request, metadata=on_behalf_of(self.settings.service_token, workspace_id),
                    timeout=self.timeout)
            except grpc.aio.AioRpcError as exc:
                if exc.code() == grpc.StatusCode.UNIMPLEMENTED:
                    # An identity that keeps no consent records has none to honour.
                    if not self._warned:
                        log.warning("identity does not answer consent questions; sending "
                                    "without a consent check")
                        self._warned = True
                    decisions.extend(ConsentDecision(True, "consent not checked")
                                     for _ in chunk)
                    continue
                raise ConsentUnavailable(
                    f"identity did not answer the consent check: {exc.code().name}") from exc
            for result in reply.results:
                if result.status.code != 0:
                    decisions.append(ConsentDecision(
                        False, f"consent could not be checked: {result.status.message}"))
                else:
                    d = result.decision
                    decisions.append(ConsentDecision(d.allowed, d.reason or (
                        "allowed" if d.allowed else "not allowed")))
        if len(decisions) != len(queries):
            raise ConsentUnavailable("identity answered a different number of consent questions")
        return decisions
