"""The sender: a background loop claiming due messages and sending them
(service_layer/send_round.py), woken at once when messages are queued.

Rounds overlap. A round spends most of its time waiting (on identity's consent answer, on its
providers, on recording), so the next claim is made as soon as messages are queued or a round
came back full, not when the round before has recorded its last outcome: a slow consent answer
or a slow provider holds only its own round's messages. At most ``rounds``
(CJO_DELIVERY_ROUNDS) are under way at once, each with its own claims under its own lease (two
rounds never hold one message, as two replicas never do), and their provider calls share the
CJO_DELIVERY_CONCURRENCY slots. A burst of wake-ups while every round is under way coalesces
into one claim when the next round ends.

A round whose only messages left wait for a workspace's consent answer, ``consent_patience``
after it asked (identity slow for that workspace: its timeout is 10 s), gives its place to the
next round; once ``rounds`` rounds wait aside for one workspace, this process's claims leave
its messages until an answer came. Counted by workspace: any number of slow workspaces each
take at most about ``rounds`` rounds aside, never a place of the rounds they are not in.

Messages queued in this process are announced to it with their consent questions
(:meth:`Sender.expect`): the round that the wake-up starts asks identity about them while it
claims (send_round.py). Other replicas, woken by the signal alone, ask after their claim.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Sequence

from cjo_delivery.domain.messages import Claim, Message
from cjo_delivery.domain.policies import ConsentQuery
from cjo_delivery.service_layer.send_round import SendRound, question
from cjo_platform.logging import get_logger
from cjo_platform.worker import PollingWorker

log = get_logger(__name__)

_MAX_ROUND_BACKOFF = 30.0


class Sender(PollingWorker):
    name = "sender"

    def __init__(self, send_round: SendRound) -> None:
        super().__init__(send_round.settings.poll_seconds, _MAX_ROUND_BACKOFF)
        self.send_round = send_round
        self._rounds = asyncio.Semaphore(send_round.settings.rounds)
        self._under_way: set[asyncio.Task[None]] = set()
        # Consent questions of messages queued here since the last claim, by workspace.
        self._expected: dict[str, set[ConsentQuery]] = defaultdict(set)

    def expect(self, workspace_id: str, queued: Sequence[Message]) -> None:
        """Messages just queued in this process (from any thread, right after their commit,
        before the wake-up): the next claim asks for their consent early."""
        loop = self._loop
        questions = [question(m) for m in queued if m.profile_id and not m.transactional]
        if loop is not None and questions and not loop.is_closed():
            loop.call_soon_threadsafe(self._expect, workspace_id, questions)

    def _expect(self, workspace_id: str, questions: list[ConsentQuery]) -> None:
        # A burst larger than one claim: the claim takes other messages too; ask after it.
        if sum(map(len, self._expected.values())) + len(questions) \
                <= self.send_round.settings.batch_size:
            self._expected[workspace_id].update(questions)

    async def run(self) -> None:
        try:
            await super().run()
        finally:
            # Stopping: the rounds under way finish (their claims committed, so they must be
            # followed through), but what they have not handed to a provider goes back.
            if self._under_way:
                self.send_round.stop()
                await asyncio.wait(set(self._under_way))

    async def run_once(self) -> bool:
        """Claim a batch (once a round is free) and send it in the background; True when the
        claim came back full (more may be waiting)."""
        await self._rounds.acquire()
        # Wake-ups that came while every round was under way are answered by this claim.
        self._wake.clear()
        expected, self._expected = dict(self._expected), defaultdict(set)
        claimed: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        task = asyncio.create_task(self._round(claimed, expected))
        self._under_way.add(task)
        task.add_done_callback(self._under_way.discard)
        return await asyncio.shield(claimed) >= self.send_round.settings.batch_size

    async def _round(self, claimed: asyncio.Future[int],
                     expected: dict[str, set[ConsentQuery]]) -> None:
        def on_claimed(claims: Sequence[Claim]) -> None:
            # Claimed before its wake-up's round: that round need not ask about them early.
            for claim in claims:
                if claim.workspace_id in self._expected:
                    self._expected[claim.workspace_id].discard(question(claim))
            if not claimed.done():
                claimed.set_result(len(claims))

        freed = False

        def free() -> None:
            # Every message of the round was attempted: recording the last outcomes (and
            # their linger) does not hold up the next claim.
            nonlocal freed
            if not freed:
                freed = True
                self._rounds.release()

        def wait_aside() -> bool:
            # All the round has left to send waits for slow workspaces' consent answers: the
            # next round need not wait for them. How many rounds may wait aside is bounded by
            # workspace (send_round.py: claims leave a workspace ``rounds`` rounds wait for).
            if freed:
                return False
            free()
            return True

        try:
            await self.send_round.run(on_claimed, expected, free, wait_aside)
        except Exception as exc:
            if not claimed.done():  # the claim failed: the loop backs off and tries again
                claimed.set_exception(exc)
            else:  # claimed messages are sent again once their lease runs out
                log.warning("send round failed", error=repr(exc), exc_info=exc)
        finally:
            free()
            if not claimed.done():  # stopping, or cancelled before it claimed
                claimed.set_result(0)

    async def send_due(self) -> int:
        """One whole round, in the caller's task; returns how many messages it claimed.

        Cancelling (shutdown) lets the round finish: the claim commits either way, so it must
        be followed through, but messages not yet handed to a provider go back to the queue.
        """
        current = asyncio.ensure_future(self.send_round.run())
        try:
            return await asyncio.shield(current)
        except asyncio.CancelledError:
            self.send_round.stop()
            await asyncio.wait({current})
            raise
