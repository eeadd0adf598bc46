"""Consent is asked of identity for every workspace of a send round at once, once: a workspace
whose answer is slow, or fails, holds back only its own messages; another workspace's go out
without waiting for it and never meet its error."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from cjo.common.v1 import common_pb2
from cjo_delivery.adapters.routes import Routes
from cjo_delivery.adapters.tables import metadata
from cjo_delivery.bootstrap import MIGRATIONS
from cjo_delivery.domain.messages import Channel, MessageStatus, NewMessage
from cjo_delivery.domain.policies import ConsentDecision, ConsentQuery, ConsentUnavailable
from cjo_delivery.domain.sending import OutgoingMessage
from cjo_delivery.service_layer import messages
from cjo_delivery.service_layer.send_round import SenderSettings, SendRound, question
from cjo_platform.clock import ManualClock
from cjo_platform.db.unit_of_work import Transactions
from cjo_platform.service import open_storage
from support import Backend, eventually, settings_for

SLOW, FAILING, OTHER, QUICK = "ws-slow", "ws-failing", "ws-other", "ws-quick"


@dataclass
class Identity:
    """Answers consent questions at once (everyone subscribed), except for ``SLOW``, answered
    once ``release`` is set, and ``FAILING``, never answered. Logs the workspace of each call."""

    release: asyncio.Event = field(default_factory=asyncio.Event)
    calls: list[str] = field(default_factory=list)

    async def check(self, workspace_id: str,
                    queries: list[ConsentQuery]) -> list[ConsentDecision]:
        self.calls.append(workspace_id)
        if workspace_id == FAILING:
            raise ConsentUnavailable("identity did not answer the consent check: UNAVAILABLE")
        if workspace_id == SLOW:
            await self.release.wait()
        return [ConsentDecision(True, "subscribed") for _ in queries]


@dataclass
class Mailbox:
    sent: list[str] = field(default_factory=list)

    async def send(self, message: OutgoingMessage) -> str:
        self.sent.append(message.message_id)
        return f"<{message.message_id}@mailbox>"

    async def close(self) -> None:
        pass


@dataclass
class Storage:
    transactions: Transactions
    clock: ManualClock


@pytest.fixture
def storage(backend: Backend, tmp_path: Path) -> Iterator[Storage]:
    clock = ManualClock()
    backend.data_dir.mkdir(parents=True, exist_ok=True)
    opened = open_storage(settings_for("delivery", backend), metadata, MIGRATIONS, clock)
    opened.migrate()
    yield Storage(opened.transactions, clock)
    opened.db.dispose()


def queue(storage: Storage, workspace: str, key: str) -> tuple[str, ConsentQuery]:
    content = common_pb2.RenderedMessage(
        channel=common_pb2.CHANNEL_EMAIL,
        email=common_pb2.RenderedEmail(subject="Hi", html="<p>Hi</p>", text="Hi"))
    (accepted,) = storage.transactions.run_sync(lambda uow: messages.queue_messages(
        uow, workspace, [NewMessage(idempotency_key=key, profile_id="p1",
                                    address="ada@example.com", channel=Channel.EMAIL,
                                    content=content.SerializeToString(), journey_id="",
                                    enrollment_id="")], "", lambda *announced: None))
    return accepted.message.message_id, question(accepted.message)


def status(storage: Storage, workspace: str, message_id: str) -> tuple[MessageStatus, str]:
    found = storage.transactions.run_sync(
        lambda uow: messages.get_message(uow, workspace, message_id, message_id))
    return found.status, found.error


def sending(storage: Storage, identity: Identity, mailbox: Mailbox) -> SendRound:
    settings = SenderSettings()
    routes = Routes(mailbox, breaker_failures=settings.breaker_failures,
                    breaker_cool_down=settings.breaker_cool_down)
    return SendRound(storage.transactions, routes, storage.clock, settings, consent=identity)


def two_workspaces(storage: Storage, troubled: str, early: bool
                   ) -> tuple[str, str, dict[str, set[ConsentQuery]] | None]:
    """A message queued in ``troubled`` and one in ``OTHER`` (their ids), and the consent
    questions a round asks while it claims: theirs when ``early``, else none."""
    first, first_question = queue(storage, troubled, "k1")
    other, other_question = queue(storage, OTHER, "k1")
    return first, other, ({troubled: {first_question}, OTHER: {other_question}} if early
                          else None)


@pytest.mark.parametrize("early", [False, True], ids=["asked-after-claim", "asked-early"])
async def test_a_workspace_whose_consent_answer_is_slow_holds_back_only_its_messages(
        storage: Storage, early: bool) -> None:
    slow, other, expected = two_workspaces(storage, SLOW, early)
    identity, mailbox = Identity(), Mailbox()
    running = asyncio.create_task(sending(storage, identity, mailbox).run(expected=expected))
    try:
        # The other workspace's message goes out while the slow workspace's answer is awaited.
        assert await eventually(lambda: mailbox.sent == [other], timeout=10)
        assert not running.done()
        identity.release.set()
        assert await asyncio.wait_for(running, 10) == 2
    finally:
        identity.release.set()
    assert mailbox.sent == [other, slow]
    assert sorted(identity.calls) == [OTHER, SLOW]  # each asked once


@pytest.mark.parametrize("early", [False, True], ids=["asked-after-claim", "asked-early"])
async def test_a_workspace_whose_consent_check_fails_is_asked_once_and_waits_alone(
        storage: Storage, early: bool) -> None:
    failing, other, expected = two_workspaces(storage, FAILING, early)
    identity, mailbox = Identity(), Mailbox()
    assert await sending(storage, identity, mailbox).run(expected=expected) == 2
    assert mailbox.sent == [other]
    assert status(storage, OTHER, other) == (MessageStatus.SENT, "")
    assert status(storage, FAILING, failing) == (
        MessageStatus.QUEUED, "identity did not answer the consent check: UNAVAILABLE")
    assert sorted(identity.calls) == [FAILING, OTHER]  # the failing one not asked twice


async def test_a_round_whose_consent_answers_all_come_in_time_starts_no_watch_for_slow_ones(
        storage: Storage) -> None:
    """The guard against slow consent answers costs a round nothing but a timer while every
    answer comes within ``consent_patience``: no task of its own (it was one per round)."""
    two_workspaces(storage, QUICK, early=False)
    started: list[str] = []
    loop = asyncio.get_running_loop()

    def counting(loop: asyncio.AbstractEventLoop, coro: Any, **kwargs: Any) -> asyncio.Task[Any]:
        started.append(coro.__qualname__)
        return asyncio.Task(coro, loop=loop, **kwargs)

    loop.set_task_factory(counting)
    try:
        mailbox = Mailbox()
        assert await sending(storage, Identity(), mailbox).run() == 2
    finally:
        loop.set_task_factory(None)
    assert len(mailbox.sent) == 2
    assert "SendRound._wave" in started  # the factory saw the round's tasks
    assert "SendRound._wait_for_slow_consent" not in started
