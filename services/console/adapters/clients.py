"""The console's clients (their channels), one per API key in use on this replica."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass

from cjo_client import Client


@dataclass
class _Held:
    client: Client
    uses: int = 0  # requests using the client now
    dropped: bool = False  # out of the pool: closed when its last request ends


class ClientPool:
    """At most ``size`` clients kept, the least recently used dropped first (an idle one before
    one in use). A client is closed only once no request uses it: closing a client's channels
    cancels its calls still in flight, and that request's page would fail."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._held: OrderedDict[str, _Held] = OrderedDict()

    def __len__(self) -> int:
        return len(self._held)

    @asynccontextmanager
    async def lease(self, key: str, make: Callable[[], Client]) -> AsyncIterator[Client]:
        """The client for ``key`` (``make`` builds one when there is none), held for the
        block."""
        held = self._held.get(key)
        if held is None:
            held = self._held[key] = _Held(make())
        self._held.move_to_end(key)
        held.uses += 1
        try:
            await self._shrink()
            yield held.client
        finally:
            held.uses -= 1
            if held.dropped and held.uses == 0:
                await held.client.close()

    async def forget(self, key: str) -> None:
        """Drops ``key``'s client (closed now, or when its last request ends)."""
        held = self._held.pop(key, None)
        if held is not None:
            await self._drop(held)

    async def close(self) -> None:
        while self._held:
            await self._drop(self._held.popitem(last=False)[1])

    async def _shrink(self) -> None:
        while len(self._held) > self.size:
            key = next((k for k, h in self._held.items() if h.uses == 0), None)
            held = self._held.pop(key) if key is not None else self._held.popitem(last=False)[1]
            await self._drop(held)

    @staticmethod
    async def _drop(held: _Held) -> None:
        held.dropped = True
        if held.uses == 0:
            await held.client.close()
