"""The test balancer's count of items forwarded more than once (tests/grpc_balancer.py): a
call whose caller gave up (its deadline passed while the replica worked) is sent again
legitimately, and the replica took its items all the same: not a repeat. An item sent again
after its call was answered is one."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import grpc
import pytest
from grpc_balancer import Balancer, balancing

from support import eventually

METHOD = "/test.Items/Take"


class Replica(grpc.GenericRpcHandler):
    """Takes items (the request's bytes); holds a call while ``hold`` is set."""

    def __init__(self) -> None:
        self.taken: list[bytes] = []
        self.hold = asyncio.Event()
        self.go_on = asyncio.Event()

    def service(self, details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler:
        async def take(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
            self.taken.append(request)
            if self.hold.is_set():
                await self.go_on.wait()
            return b"ok"

        return grpc.unary_unary_rpc_method_handler(take)


@pytest.fixture
async def balancer() -> AsyncIterator[tuple[Balancer, Replica]]:
    replica = Replica()
    server = grpc.aio.server()
    server.add_generic_rpc_handlers((replica,))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        async with balancing([f"127.0.0.1:{port}"],
                             {METHOD: lambda request: [request.decode()]}) as b:
            yield b, replica
    finally:
        replica.go_on.set()
        await server.stop(None)


async def test_a_call_past_its_deadline_sent_again_is_a_retry_not_a_repeat(
        balancer: tuple[Balancer, Replica]) -> None:
    b, replica = balancer
    async with grpc.aio.insecure_channel(b.address) as channel:
        take = channel.unary_unary(METHOD)
        replica.hold.set()
        # The replica takes the item but answers only after the caller gave up.
        first = asyncio.ensure_future(take(b"item-1", timeout=3))
        await eventually(lambda: replica.taken == [b"item-1"])
        with pytest.raises(grpc.aio.AioRpcError) as failed:
            await first
        assert failed.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        replica.hold.clear()
        replica.go_on.set()
        assert await take(b"item-1", timeout=30) == b"ok"
        assert replica.taken == [b"item-1", b"item-1"]
        assert b.repeated(METHOD) == {} and b.failed[METHOD] == 1

        # Answered, then sent again: a repeat.
        assert await take(b"item-2", timeout=30) == b"ok"
        assert await take(b"item-2", timeout=30) == b"ok"
        assert b.repeated(METHOD) == {"item-2": 2}
