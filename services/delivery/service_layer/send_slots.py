"""The process's send slots (CJO_DELIVERY_CONCURRENCY provider calls at once, every round
together), shared by the workspaces: each may hold up to its share of them
(CJO_DELIVERY_WORKSPACE_SHARE), and more only while as many slots as a share stay free for the
others. A workspace whose provider answers slowly (and successfully: no breaker opens) so holds
at most ``total - share`` slots, and another workspace's message finds one free at once. Slots
freed go to the waiting workspaces in turn, each workspace's messages in the order they asked.

Per process: two replicas each give a workspace its share of their own slots.
"""

from __future__ import annotations

import asyncio
from collections import Counter, deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager


class SendSlots:
    def __init__(self, total: int, share: int) -> None:
        self.total = total
        self.share = max(1, min(share, total))
        self._free = total
        self._held: Counter[str] = Counter()
        # By workspace, in the order they began to wait (a workspace served goes to the end).
        self._waiting: dict[str, deque[asyncio.Future[None]]] = {}

    def _may(self, workspace: str) -> bool:
        return self._free > 0 and (self._held[workspace] < self.share
                                   or self._free > self.share)

    def any_free(self) -> bool:
        return self._free > 0

    def waits_for_share(self, workspace: str) -> bool:
        """Whether a message of ``workspace`` asking for a slot now would wait because its
        workspace holds its share, not only because every slot is taken."""
        return self._held[workspace] >= self.share and (workspace in self._waiting
                                                         or not self._may(workspace))

    def crowded(self) -> frozenset[str]:
        """The workspaces with messages waiting for their share: claims may leave them."""
        return frozenset(w for w in self._waiting if self._held[w] >= self.share)

    @asynccontextmanager
    async def slot(self, workspace: str) -> AsyncIterator[None]:
        await self._take(workspace)
        try:
            yield
        finally:
            self._give(workspace)

    async def _take(self, workspace: str) -> None:
        if workspace not in self._waiting and self._may(workspace):
            self._free -= 1
            self._held[workspace] += 1
            return
        waiter = asyncio.get_running_loop().create_future()
        self._waiting.setdefault(workspace, deque()).append(waiter)
        try:
            await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():  # granted as it was cancelled
                self._give(workspace)
            else:
                queue = self._waiting.get(workspace)
                if queue is not None and waiter in queue:
                    queue.remove(waiter)
                    if not queue:
                        del self._waiting[workspace]
            raise

    def _give(self, workspace: str) -> None:
        self._free += 1
        self._held[workspace] -= 1
        if self._held[workspace] <= 0:
            del self._held[workspace]
        granted = True
        while granted and self._free > 0 and self._waiting:
            granted = False
            for waiting in list(self._waiting):
                queue = self._waiting[waiting]
                while queue and queue[0].cancelled():  # cancelled, not yet run: not granted
                    queue.popleft()
                if not queue:
                    del self._waiting[waiting]
                    continue
                if not self._may(waiting):
                    continue
                queue = self._waiting.pop(waiting)
                waiter = queue.popleft()
                self._free -= 1
                self._held[waiting] += 1
                waiter.set_result(None)
                granted = True
                if queue:  # back in line after the others
                    self._waiting[waiting] = queue
                if self._free == 0:
                    break
