"""Provider and policy RPCs of DeliveryService: protos in, use-cases called, protos out.

Secrets go in and never come out: responses carry only ``secret_keys``, and the request log
(which replays answers to repeated request ids) stores responses, never requests.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import time, timedelta

import grpc

from cjo.delivery.v1 import delivery_service_pb2 as pb
from cjo.delivery.v1 import policy_pb2, provider_pb2
from cjo_delivery.adapters.contents import CHANNELS
from cjo_delivery.domain.messages import Channel
from cjo_delivery.domain.policies import (
    DeliveryPolicy,
    FrequencyCap,
    QuietHours,
    parse_local_time,
    validate_policy,
)
from cjo_delivery.domain.providers import (
    ProviderConfig,
    ProviderKind,
    provider_id_of,
    provider_name,
)
from cjo_delivery.service_layer import policies, providers
from cjo_platform.db.unit_of_work import Transactions, UnitOfWork
from cjo_platform.errors import InvalidArgument
from cjo_platform.protobuf import to_timestamp
from cjo_platform.rpc.auth import current_workspace
from cjo_platform.rpc.idempotent import once
from cjo_platform.secret_box import SecretBox

KINDS = {
    provider_pb2.PROVIDER_KIND_SMTP: ProviderKind.SMTP,
    provider_pb2.PROVIDER_KIND_HTTP_JSON: ProviderKind.HTTP_JSON,
    provider_pb2.PROVIDER_KIND_TWILIO_SMS: ProviderKind.TWILIO_SMS,
    provider_pb2.PROVIDER_KIND_FCM_PUSH: ProviderKind.FCM_PUSH,
    provider_pb2.PROVIDER_KIND_WEBHOOK: ProviderKind.WEBHOOK,
}
_KINDS_OUT = {v: k for k, v in KINDS.items()}
_CHANNELS_OUT = {v: k for k, v in CHANNELS.items()}


StatusUrl = Callable[[str, str, str], str]  # workspace, provider, nonce


def provider_to_proto(config: ProviderConfig,
                      status_url: StatusUrl | None = None) -> provider_pb2.Provider:
    return provider_pb2.Provider(
        status_webhook_url=(status_url(config.workspace_id, config.provider_id,
                                       config.webhook_nonce)
                            if status_url is not None else ""),
        name=provider_name(config.provider_id), provider_id=config.provider_id,
        channel=_CHANNELS_OUT[config.channel], kind=_KINDS_OUT[config.kind],
        priority=config.priority, display_name=config.display_name, config=config.config,
        secret_keys=sorted(config.secrets), create_time=to_timestamp(config.create_time),
        update_time=to_timestamp(config.update_time), etag=config.etag,
        disabled=config.disabled)


def policy_to_proto(policy: DeliveryPolicy) -> policy_pb2.DeliveryPolicy:
    out = policy_pb2.DeliveryPolicy(name="deliveryPolicy", frequency_caps=[
        policy_pb2.FrequencyCap(channel=_CHANNELS_OUT[c.channel], max_messages=c.max_messages,
                                window_seconds=int(c.window.total_seconds()))
        for c in policy.caps.values()])
    if policy.quiet_hours is not None:
        q = policy.quiet_hours
        out.quiet_hours.CopyFrom(policy_pb2.QuietHours(
            start=q.start.strftime("%H:%M"), end=q.end.strftime("%H:%M"),
            default_time_zone=q.default_time_zone))
    return out


def policy_from_proto(message: policy_pb2.DeliveryPolicy) -> DeliveryPolicy:
    caps = [(CHANNELS.get(c.channel), c.max_messages, c.window_seconds)
            for c in message.frequency_caps]
    quiet = None
    if message.HasField("quiet_hours"):
        q = message.quiet_hours
        quiet = (q.start, q.end, q.default_time_zone)
    validate_policy(caps, quiet).raise_if_any()
    hours = None
    if quiet is not None:
        start, end = parse_local_time(quiet[0]), parse_local_time(quiet[1])
        assert isinstance(start, time) and isinstance(end, time)
        hours = QuietHours(start, end, quiet[2] or "UTC")
    return DeliveryPolicy(
        {ch: FrequencyCap(ch, most, timedelta(seconds=seconds))
         for ch, most, seconds in caps if ch is not None}, hours)


class ProviderRpcs:
    """Mixed into DeliveryServicer."""

    transactions: Transactions
    status_url: StatusUrl | None
    secret_box: SecretBox
    # CJO_DELIVERY_ALLOW_PRIVATE_DESTINATIONS: providers may name private IP addresses.
    private_destinations: bool

    async def CreateProvider(self, request: pb.CreateProviderRequest,
                             context: grpc.aio.ServicerContext) -> pb.CreateProviderResponse:
        draft = _draft(request.provider, channel=CHANNELS.get(request.provider.channel),
                       kind=KINDS.get(request.provider.kind))
        workspace = current_workspace()
        return await once(
            self.transactions, request, pb.CreateProviderResponse,
            work=lambda uow: pb.CreateProviderResponse(provider=provider_to_proto(
                providers.create_provider(uow, workspace, draft, box=self.secret_box,
                                          private_destinations=self.private_destinations),
                self.status_url)))

    async def GetProvider(self, request: pb.GetProviderRequest,
                          context: grpc.aio.ServicerContext) -> pb.GetProviderResponse:
        provider_id = provider_id_of(request.name)
        workspace = current_workspace()
        config = await self.transactions.run(lambda uow: providers.get_provider(
            uow, workspace, provider_id, request.name, box=self.secret_box))
        return pb.GetProviderResponse(provider=provider_to_proto(config, self.status_url))

    async def ListProviders(self, request: pb.ListProvidersRequest,
                            context: grpc.aio.ServicerContext) -> pb.ListProvidersResponse:
        channel: Channel | None = None
        if request.channel:
            channel = CHANNELS.get(request.channel)
            if channel is None:
                raise InvalidArgument.one("channel", "is not a Channel")
        workspace = current_workspace()
        found = await self.transactions.run(lambda uow: providers.list_providers(
            uow, workspace, channel, box=self.secret_box))
        return pb.ListProvidersResponse(
            providers=[provider_to_proto(c, self.status_url) for c in found])

    async def UpdateProvider(self, request: pb.UpdateProviderRequest,
                             context: grpc.aio.ServicerContext) -> pb.UpdateProviderResponse:
        provider_id = provider_id_of(request.provider.name, "provider.name")
        paths = frozenset(request.update_mask.paths)
        unknown = paths - providers.UPDATABLE
        if not paths or unknown:
            raise InvalidArgument.one(
                "update_mask", f"must name some of {sorted(providers.UPDATABLE)}"
                + (f"; not {sorted(unknown)}" if unknown else ""))
        p = request.provider
        changes = _draft(p, channel=None, kind=None)
        workspace = current_workspace()
        return await once(
            self.transactions, request, pb.UpdateProviderResponse,
            work=lambda uow: pb.UpdateProviderResponse(provider=provider_to_proto(
                providers.update_provider(uow, workspace, provider_id, p.name, changes, paths,
                                          p.etag, box=self.secret_box,
                                          private_destinations=self.private_destinations),
                self.status_url)))

    async def DeleteProvider(self, request: pb.DeleteProviderRequest,
                             context: grpc.aio.ServicerContext) -> pb.DeleteProviderResponse:
        provider_id = provider_id_of(request.name)
        workspace = current_workspace()

        def delete(uow: UnitOfWork) -> pb.DeleteProviderResponse:
            providers.delete_provider(uow, workspace, provider_id, request.name)
            return pb.DeleteProviderResponse()

        return await once(
            self.transactions, request, pb.DeleteProviderResponse,
            work=delete)

    async def GetDeliveryPolicy(self, request: pb.GetDeliveryPolicyRequest,
                                context: grpc.aio.ServicerContext
                                ) -> pb.GetDeliveryPolicyResponse:
        workspace = current_workspace()
        policy = await self.transactions.run(lambda uow: policies.get_policy(uow, workspace))
        return pb.GetDeliveryPolicyResponse(policy=policy_to_proto(policy))

    async def UpdateDeliveryPolicy(self, request: pb.UpdateDeliveryPolicyRequest,
                                   context: grpc.aio.ServicerContext
                                   ) -> pb.UpdateDeliveryPolicyResponse:
        policy = policy_from_proto(request.policy)
        workspace = current_workspace()
        return await once(
            self.transactions, request, pb.UpdateDeliveryPolicyResponse,
            work=lambda uow: pb.UpdateDeliveryPolicyResponse(policy=policy_to_proto(
                policies.update_policy(uow, workspace, policy))))


def _draft(p: provider_pb2.Provider, *, channel: Channel | None,
           kind: ProviderKind | None) -> providers.ProviderDraft:
    return providers.ProviderDraft(channel=channel, kind=kind, priority=p.priority,
                                   display_name=p.display_name, config=dict(p.config),
                                   secrets=dict(p.secrets), disabled=p.disabled)
