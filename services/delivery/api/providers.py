"""Provider and policy RPCs of DeliveryService: protos in, domain calls, protos out.

Secrets go in and never come out: responses carry only ``secret_keys``, and the request log
(which replays answers to repeated request ids) stores responses, never requests.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import time, timedelta

import grpc

from cjo.delivery.v1 import delivery_service_pb2 as pb
from cjo.delivery.v1 import policy_pb2, provider_pb2
from cjo_delivery.adapters import provider_store
from cjo_delivery.adapters.contents import CHANNELS
from cjo_delivery.adapters.secret_box import SecretBox
from cjo_delivery.domain.messages import Channel
from cjo_delivery.domain.policies import (
    DeliveryPolicy,
    FrequencyCap,
    QuietHours,
    parse_local_time,
    validate_policy,
)
from cjo_delivery.domain.providers import (
    MAX_PROVIDERS_PER_CHANNEL,
    REQUIRED_SECRETS,
    ProviderConfig,
    ProviderKind,
    provider_id_of,
    provider_name,
    validate_provider,
)
from cjo_platform.clock import Clock
from cjo_platform.db import Database
from cjo_platform.db.idempotency import RequestLog
from cjo_platform.errors import Aborted, FailedPrecondition, InvalidArgument, NotFound
from cjo_platform.protobuf import to_timestamp
from cjo_platform.rpc.auth import current_workspace

SERVICE = "cjo.delivery.v1.DeliveryService"
KINDS = {
    provider_pb2.PROVIDER_KIND_SMTP: ProviderKind.SMTP,
    provider_pb2.PROVIDER_KIND_HTTP_JSON: ProviderKind.HTTP_JSON,
    provider_pb2.PROVIDER_KIND_TWILIO_SMS: ProviderKind.TWILIO_SMS,
    provider_pb2.PROVIDER_KIND_FCM_PUSH: ProviderKind.FCM_PUSH,
    provider_pb2.PROVIDER_KIND_WEBHOOK: ProviderKind.WEBHOOK,
}
_KINDS_OUT = {v: k for k, v in KINDS.items()}
_CHANNELS_OUT = {v: k for k, v in CHANNELS.items()}
_UPDATABLE = {"priority", "display_name", "config", "secrets", "disabled"}


StatusUrl = Callable[[str, str], str]


def provider_to_proto(config: ProviderConfig,
                      status_url: StatusUrl | None = None) -> provider_pb2.Provider:
    return provider_pb2.Provider(
        status_webhook_url=(status_url(config.workspace_id, config.provider_id)
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

    db: Database
    clock: Clock
    requests: RequestLog
    status_url: StatusUrl | None
    secret_box: SecretBox

    async def CreateProvider(self, request: pb.CreateProviderRequest,
                             context: grpc.aio.ServicerContext) -> pb.CreateProviderResponse:
        p = request.provider
        channel = CHANNELS.get(p.channel)
        kind = KINDS.get(p.kind)
        validate_provider(channel=channel, kind=kind, display_name=p.display_name,
                          config=dict(p.config), secrets=dict(p.secrets)).raise_if_any()
        assert channel is not None and kind is not None
        workspace = current_workspace()

        def create() -> pb.CreateProviderResponse:
            with self.db.transaction() as session:
                def insert() -> pb.CreateProviderResponse:
                    existing = provider_store.list_providers(session, workspace,
                                                              self.secret_box, channel)
                    if len(existing) >= MAX_PROVIDERS_PER_CHANNEL:
                        raise FailedPrecondition(
                            f"a channel has at most {MAX_PROVIDERS_PER_CHANNEL} providers",
                            reason="TOO_MANY_PROVIDERS")
                    now = self.clock.now()
                    config = ProviderConfig(
                        workspace_id=workspace, provider_id=uuid.uuid4().hex, channel=channel,
                        kind=kind, priority=p.priority, display_name=p.display_name,
                        config=dict(p.config), secrets=dict(p.secrets), disabled=p.disabled,
                        etag=provider_store.new_etag(), create_time=now, update_time=now)
                    provider_store.insert_provider(session, config, self.secret_box)
                    return pb.CreateProviderResponse(
                        provider=provider_to_proto(config, self.status_url))

                return self.requests.once(
                    session, workspace_id=workspace, method=f"/{SERVICE}/CreateProvider",
                    request_id=request.request_id, request=request,
                    response_type=pb.CreateProviderResponse, compute=insert)

        return await self.db.run(create)

    async def GetProvider(self, request: pb.GetProviderRequest,
                          context: grpc.aio.ServicerContext) -> pb.GetProviderResponse:
        provider_id = provider_id_of(request.name)
        workspace = current_workspace()

        def read() -> ProviderConfig | None:
            with self.db.transaction() as session:
                return provider_store.get_provider(session, workspace, provider_id,
                                                   self.secret_box)

        config = await self.db.run(read)
        if config is None:
            raise NotFound(f"provider {request.name!r} does not exist",
                           reason="PROVIDER_NOT_FOUND")
        return pb.GetProviderResponse(provider=provider_to_proto(config, self.status_url))

    async def ListProviders(self, request: pb.ListProvidersRequest,
                            context: grpc.aio.ServicerContext) -> pb.ListProvidersResponse:
        channel: Channel | None = None
        if request.channel:
            channel = CHANNELS.get(request.channel)
            if channel is None:
                raise InvalidArgument.one("channel", "is not a Channel")
        workspace = current_workspace()

        def read() -> list[ProviderConfig]:
            with self.db.transaction() as session:
                return provider_store.list_providers(session, workspace, self.secret_box,
                                                     channel)

        found = await self.db.run(read)
        return pb.ListProvidersResponse(
            providers=[provider_to_proto(c, self.status_url) for c in found])

    async def UpdateProvider(self, request: pb.UpdateProviderRequest,
                             context: grpc.aio.ServicerContext) -> pb.UpdateProviderResponse:
        provider_id = provider_id_of(request.provider.name, "provider.name")
        paths = set(request.update_mask.paths)
        unknown = paths - _UPDATABLE
        if not paths or unknown:
            raise InvalidArgument.one("update_mask", f"must name some of {sorted(_UPDATABLE)}"
                                      + (f"; not {sorted(unknown)}" if unknown else ""))
        p = request.provider
        workspace = current_workspace()

        def change() -> ProviderConfig:
            with self.db.transaction() as session:
                current = provider_store.get_provider(session, workspace, provider_id,
                                                      self.secret_box, for_update=True)
                if current is None:
                    raise NotFound(f"provider {p.name!r} does not exist",
                                   reason="PROVIDER_NOT_FOUND")
                if p.etag and p.etag != current.etag:
                    raise Aborted(f"provider {p.name!r} changed since etag {p.etag!r} was read",
                                  reason="ETAG_MISMATCH")
                config = dict(p.config) if "config" in paths else current.config
                if "secrets" not in paths:
                    secrets = current.secrets
                elif current.secrets_error:
                    # The stored ones cannot be read, so there is nothing to merge with: the
                    # given secrets replace them all, and the required ones must be among them.
                    secrets = dict(p.secrets)
                else:
                    secrets = {**current.secrets, **p.secrets}
                display = p.display_name if "display_name" in paths else current.display_name
                # Secrets this process cannot decrypt stay stored as they are when the update
                # leaves them alone (disabling such a provider must work); only their names,
                # which are unknown here, are taken as present.
                kept = (dict.fromkeys(REQUIRED_SECRETS.get(current.kind, ()), "")
                        if current.secrets_error and "secrets" not in paths else secrets)
                validate_provider(channel=current.channel, kind=current.kind,
                                  display_name=display, config=config,
                                  secrets=kept).raise_if_any()
                updated = ProviderConfig(
                    workspace_id=workspace, provider_id=provider_id, channel=current.channel,
                    kind=current.kind,
                    priority=p.priority if "priority" in paths else current.priority,
                    display_name=display, config=config, secrets=secrets,
                    disabled=p.disabled if "disabled" in paths else current.disabled,
                    etag=provider_store.new_etag(), create_time=current.create_time,
                    update_time=self.clock.now())
                provider_store.replace_provider(session, updated, self.secret_box,
                                                secrets_changed="secrets" in paths)
                return updated

        return pb.UpdateProviderResponse(provider=provider_to_proto(await self.db.run(change),
                                                                    self.status_url))

    async def DeleteProvider(self, request: pb.DeleteProviderRequest,
                             context: grpc.aio.ServicerContext) -> pb.DeleteProviderResponse:
        provider_id = provider_id_of(request.name)
        workspace = current_workspace()

        def remove() -> bool:
            with self.db.transaction() as session:
                return provider_store.delete_provider(session, workspace, provider_id)

        if not await self.db.run(remove):
            raise NotFound(f"provider {request.name!r} does not exist",
                           reason="PROVIDER_NOT_FOUND")
        return pb.DeleteProviderResponse()

    async def GetDeliveryPolicy(self, request: pb.GetDeliveryPolicyRequest,
                                context: grpc.aio.ServicerContext
                                ) -> pb.GetDeliveryPolicyResponse:
        workspace = current_workspace()

        def read() -> DeliveryPolicy:
            with self.db.transaction() as session:
                return provider_store.get_policy(session, workspace)

        return pb.GetDeliveryPolicyResponse(policy=policy_to_proto(await self.db.run(read)))

    async def UpdateDeliveryPolicy(self, request: pb.UpdateDeliveryPolicyRequest,
                                   context: grpc.aio.ServicerContext
                                   ) -> pb.UpdateDeliveryPolicyResponse:
        policy = policy_from_proto(request.policy)
        workspace = current_workspace()

        def write() -> None:
            with self.db.transaction() as session:
                provider_store.put_policy(session, workspace, policy, self.clock.now())

        await self.db.run(write)
        return pb.UpdateDeliveryPolicyResponse(policy=policy_to_proto(policy))



