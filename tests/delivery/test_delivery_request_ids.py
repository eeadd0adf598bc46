"""Every mutating DeliveryService RPC with a ``request_id`` answers concurrent repeats of one
request with the first answer, and does its work once, on both databases; and concurrent policy
updates without a request_id all succeed."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import grpc
import pytest
from delivery_support import delivery_app

from cjo.common.v1 import common_pb2
from cjo.delivery.v1 import delivery_service_pb2 as pb
from cjo.delivery.v1 import delivery_service_pb2_grpc as pb_grpc
from cjo.delivery.v1 import policy_pb2, provider_pb2
from support import Backend, as_service, free_port, same_answer_to_concurrent_repeats, serving

WS = as_service("ws-a")
Stub = pb_grpc.DeliveryServiceStub


def sms_provider(display_name: str = "Primary") -> provider_pb2.Provider:
    return provider_pb2.Provider(channel=common_pb2.CHANNEL_SMS,
                                 kind=provider_pb2.PROVIDER_KIND_HTTP_JSON,
                                 display_name=display_name,
                                 config={"url": "http://127.0.0.1:9/sms"},
                                 secrets={"api_key": "k"})


async def existing_provider(stub: Stub) -> str:
    reply = await stub.CreateProvider(pb.CreateProviderRequest(provider=sms_provider()),
                                      metadata=WS)
    return str(reply.provider.name)


def capped(most: int) -> policy_pb2.DeliveryPolicy:
    return policy_pb2.DeliveryPolicy(frequency_caps=[policy_pb2.FrequencyCap(
        channel=common_pb2.CHANNEL_EMAIL, max_messages=most, window_seconds=3600)])


@dataclass(frozen=True)
class Case:
    """A mutating RPC: how to make its request (after any set-up) and how to check its effect
    happened once."""

    method: Callable[[Stub], Any]
    request: Callable[[Stub], Awaitable[Any]]
    happened_once: Callable[[Stub, Any], Awaitable[bool]]


async def _create(stub: Stub) -> Any:
    return pb.CreateProviderRequest(provider=sms_provider(), request_id="r-create")


async def _one_provider(stub: Stub, answer: Any) -> bool:
    listed = await stub.ListProviders(pb.ListProvidersRequest(), metadata=WS)
    return [p.name for p in listed.providers] == [answer.provider.name]


async def _update(stub: Stub) -> Any:
    name = await existing_provider(stub)
    return pb.UpdateProviderRequest(provider=provider_pb2.Provider(name=name,
                                                                   display_name="Renamed"),
                                    update_mask={"paths": ["display_name"]},
                                    request_id="r-update")


async def _updated_once(stub: Stub, answer: Any) -> bool:
    got = await stub.GetProvider(pb.GetProviderRequest(name=answer.provider.name), metadata=WS)
    # One change: the stored etag is the one the first answer carried.
    return bool(got.provider.display_name == "Renamed" and got.provider.etag
                == answer.provider.etag)


async def _delete(stub: Stub) -> Any:
    return pb.DeleteProviderRequest(name=await existing_provider(stub), request_id="r-delete")


async def _no_provider(stub: Stub, answer: Any) -> bool:
    listed = await stub.ListProviders(pb.ListProvidersRequest(), metadata=WS)
    return not listed.providers


async def _policy(stub: Stub) -> Any:
    return pb.UpdateDeliveryPolicyRequest(policy=capped(3), request_id="r-policy")


async def _policy_stored(stub: Stub, answer: Any) -> bool:
    got = await stub.GetDeliveryPolicy(pb.GetDeliveryPolicyRequest(), metadata=WS)
    return bool(got.policy == answer.policy)


CASES = {
    "CreateProvider": Case(lambda s: s.CreateProvider, _create, _one_provider),
    "UpdateProvider": Case(lambda s: s.UpdateProvider, _update, _updated_once),
    "DeleteProvider": Case(lambda s: s.DeleteProvider, _delete, _no_provider),
    "UpdateDeliveryPolicy": Case(lambda s: s.UpdateDeliveryPolicy, _policy, _policy_stored),
}


@pytest.mark.parametrize("rpc", sorted(CASES))
async def test_concurrent_repeats_of_a_request_id_get_the_first_answer(
        backend: Backend, rpc: str) -> None:
    case = CASES[rpc]
    async with serving(delivery_app(backend, free_port())) as address, \
            grpc.aio.insecure_channel(address) as ch:
        stub = Stub(ch)
        request = await case.request(stub)
        answer = await same_answer_to_concurrent_repeats(case.method(stub), request, WS)
        assert await case.happened_once(stub, answer)
        # A later repeat still gets the first answer, although the state moved on.
        assert await case.method(stub)(request, metadata=WS) == answer


async def test_concurrent_policy_updates_without_a_request_id_all_succeed(
        backend: Backend) -> None:
    async with serving(delivery_app(backend, free_port())) as address, \
            grpc.aio.insecure_channel(address) as ch:
        stub = Stub(ch)
        answers = await asyncio.gather(*(stub.UpdateDeliveryPolicy(
            pb.UpdateDeliveryPolicyRequest(policy=capped(most)), metadata=WS)
            for most in range(1, 9)))
        got = await stub.GetDeliveryPolicy(pb.GetDeliveryPolicyRequest(), metadata=WS)
    assert [a.policy.frequency_caps[0].max_messages for a in answers] == list(range(1, 9))
    assert got.policy.frequency_caps[0].max_messages in range(1, 9)
