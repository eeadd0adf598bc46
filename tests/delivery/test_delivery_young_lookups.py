"""Delivery's look-ups by key of a workspace the planner's statistics do not know yet (a new
tenant inside big tables, until autovacuum's ANALYZE): a send request's messages whose
idempotency keys were stored before, and a provider report's messages by cjo's id, by the
provider's id and by a push's device token. Each probes its index on (workspace_id, key) per
key; with the workspace a constant, PostgreSQL rated such a workspace at one row and read its
every message through ix_messages_address's workspace prefix (for the tokens, by workspace and
channel), filtered by the keys, on every call."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta

from delivery_support import delivery_app, rendered_email
from query_plans import plans, probed_by
from sqlalchemy import literal, text, update
from sqlalchemy.orm import Session

from cjo_delivery.adapters import repository, webhook_store
from cjo_delivery.adapters.tables import messages
from cjo_delivery.domain.messages import Channel, NewMessage
from cjo_delivery.domain.provider_events import MessageRef
from cjo_platform.clock import ManualClock
from support import Backend, free_port

MESSAGES = 3000
m = messages.c


def new(key: str, channel: Channel = Channel.EMAIL) -> NewMessage:
    return NewMessage(idempotency_key=key, profile_id=f"p{key}", address=f"tok-{key}",
                      channel=channel, content=rendered_email().SerializeToString(),
                      journey_id="", enrollment_id="")


async def test_a_new_workspaces_lookups_by_key_are_probed_by_key(backend: Backend) -> None:
    clock = ManualClock()
    app = delivery_app(backend, free_port(), clock)
    await app.db.run(app.migrate)
    ids = iter(f"m{i}" for i in range(100_000))

    def load(session: Session, workspace_id: str) -> None:
        for start in range(0, MESSAGES, 500):
            repository.queue_messages(
                session, workspace_id,
                [new(f"k{i}", Channel.PUSH if i % 2 else Channel.EMAIL)
                 for i in range(start, start + 500)], clock.now(), "", lambda: next(ids))
        # Every message reached provider "prov", which answered with "pm" + cjo's id ("pmm1"
        # for "m1"); a push's token is "tok-" + its idempotency key.
        session.execute(update(messages).where(m.workspace_id == workspace_id).values(
            status="sent", provider_id="prov", provider_message_id=literal("pm") + m.message_id,
            sent_time=clock.now()))

    ws = "newcomer"
    refs = [MessageRef(message_id=f"m{MESSAGES + i}") for i in range(0, 300, 7)]
    refs += [MessageRef(provider_message_id=f"pmm{MESSAGES + i}") for i in range(1, 300, 7)]
    refs += [MessageRef(device_token=f"tok-k{i}") for i in range(1, 300, 14)]

    def resolving(key: str, provider: str | None) -> Callable[[Session], object]:
        asked = [r for r in refs if getattr(r, "device_token" if key == "address" else key)]
        return lambda s: webhook_store.resolve(s, ws, asked, provider)

    def scenario() -> list[tuple[str, str, str]]:
        with app.db.transaction() as session:
            load(session, "ws-a")
            if backend.kind == "postgresql":
                session.execute(text("ANALYZE messages"))
        with app.db.transaction() as session:  # its own: a transaction locks its scopes once
            load(session, ws)  # the statistics know ws-a only
        repeated = [new(f"k{i}") for i in range(0, 300, 3)]
        reads: list[tuple[str, Callable[[Session], object]]] = [
            ("idempotency_key", lambda s: repository.queue_messages(
                s, ws, repeated, clock.now(), "", lambda: next(ids)))]
        reads += [(key, resolving(key, provider)) for provider in (None, "prov")
                  for key in ("message_id", "provider_message_id", "address")]
        return [(key, statement, plan) for key, read in reads
                for statement, plan in plans(app.db, read, " messages ")]

    def found() -> None:
        with app.db.transaction() as session:
            # What the probes find is what the keys name.
            accepted = repository.queue_messages(
                session, ws, [new("k4"), new("k4"), new("fresh")], clock.now(), "",
                lambda: "m-fresh")
            assert [(a.message.message_id, a.duplicate) for a in accepted] == [
                (f"m{MESSAGES + 4}", True), (f"m{MESSAGES + 4}", True), ("m-fresh", False)]
            assert accepted[0].message.address == "tok-k4"
            assert accepted[0].message.content == rendered_email().SerializeToString()
            # Two later pushes to tok-k1: the one that failed does not count.
            for key, status in (("k3", "sent"), ("k5", "failed")):
                session.execute(update(messages).where(
                    m.workspace_id == ws, m.idempotency_key == key).values(
                    address="tok-k1", status=status, sent_time=clock.now() + timedelta(minutes=1)))
            asked = [MessageRef(message_id=f"m{MESSAGES + 2}"), MessageRef(message_id="m1"),
                     MessageRef(provider_message_id=f"pmm{MESSAGES + 9}"),
                     MessageRef(provider_message_id="pm-none"),
                     MessageRef(device_token="tok-k1"), MessageRef(device_token="tok-k7"),
                     MessageRef(device_token="tok-k2")]  # k2 went by email
            expected = {asked[0]: f"m{MESSAGES + 2}", asked[2]: f"m{MESSAGES + 9}",
                        asked[4]: f"m{MESSAGES + 3}", asked[5]: f"m{MESSAGES + 7}"}
            assert webhook_store.resolve(session, ws, asked) == expected
            assert webhook_store.resolve(session, ws, asked, "prov") == expected
            assert webhook_store.resolve(session, ws, asked, "other") == {}
            assert webhook_store.resolve(session, "ws-a", asked[:1]) == {}
            assert webhook_store.resolve(session, "ws-a", [MessageRef(
                device_token="tok-k1")]) == {MessageRef(device_token="tok-k1"): "m1"}

    try:
        captured = await app.db.run(scenario)
        await app.db.run(found)
    finally:
        app.db.dispose()
    # Queueing also marks the profiles' unfinished messages a new one is held behind
    # (adapters/held.py): a probe per profile.
    filtered = [f"{key}: {statement}\n{plan}" for key, statement, plan in captured
                if not probed_by(app.db, plan, "profile_id" if "SET holds" in statement
                                 else key)]
    assert not filtered, "\n\n".join(filtered)
