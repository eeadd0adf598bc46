"""Delivery's retention: final messages older than the setting lose their rendered body (the
row, status and the content's key and variant stay), messages not yet final keep theirs, and
old in-app inbox messages go."""

from __future__ import annotations

from datetime import timedelta

from retention_support import NOW, service_db

from cjo.common.v1 import common_pb2
from cjo_delivery.adapters.retention import RULES
from cjo_delivery.adapters.tables import inbox_messages, messages
from support import Backend

RENDERED = common_pb2.RenderedMessage(
    channel=common_pb2.CHANNEL_EMAIL, content_key="welcome", content_revision=3, locale="en",
    content_version=2, variant="b", variant_weight=50,
    email=common_pb2.RenderedEmail(subject="Hi Ada", html="<p>Hi Ada</p>", text="Hi Ada"))


async def test_final_messages_lose_their_body_after_thirty_days(backend: Backend) -> None:
    with service_db("delivery", backend) as db:
        def message(message_id: str, status: str, age: int) -> dict[str, object]:
            return {"workspace_id": "w1", "message_id": message_id,
                    "idempotency_key": message_id, "address": "ada@example.com",
                    "channel": "email", "content": RENDERED.SerializeToString(),
                    "status": status, "create_time": NOW - timedelta(days=age),
                    "update_time": NOW - timedelta(days=age)}

        db.insert(messages, [message("sent-old", "sent", 31),
                             message("bounced-old", "bounced", 40),
                             message("failed-old", "failed", 45),
                             message("opened", "delivered", 60),
                             message("queued-old", "queued", 31),
                             message("sending-old", "sending", 31),
                             message("sent-young", "sent", 29)])
        assert await db.retain(RULES, inbox_messages=0) == {
            "request_log": 0, "message_bodies": 4}
        rows = {r.message_id: r for r in db.rows(
            messages, messages.c.message_id, messages.c.status, messages.c.content,
            messages.c.body_removed_time)}
        assert sorted(rows) == sorted(["sent-old", "bounced-old", "failed-old", "opened",
                                       "queued-old", "sending-old", "sent-young"])
        stripped = common_pb2.RenderedMessage(
            channel=common_pb2.CHANNEL_EMAIL, content_key="welcome", content_revision=3,
            locale="en", content_version=2, variant="b", variant_weight=50)
        for message_id in ("sent-old", "bounced-old", "failed-old", "opened"):
            row = rows[message_id]
            assert common_pb2.RenderedMessage.FromString(row.content) == stripped
            assert row.body_removed_time == NOW
        for message_id in ("queued-old", "sending-old", "sent-young"):
            assert common_pb2.RenderedMessage.FromString(rows[message_id].content) == RENDERED
            assert rows[message_id].body_removed_time is None
        assert rows["opened"].status == "delivered"

        db.clock.advance(timedelta(days=2))  # only the young one comes of age, once
        assert await db.retain(RULES, inbox_messages=0) == {
            "request_log": 0, "message_bodies": 1}


async def test_in_app_inbox_messages_go_after_their_days(backend: Backend) -> None:
    with service_db("delivery", backend) as db:
        db.insert(inbox_messages, [
            {"workspace_id": w, "message_id": f"m{age}", "profile_id": "p", "state": "unread",
             "create_time": NOW - timedelta(days=age), "update_time": NOW}
            for w in ("w1", "w2") for age in (10, 181, 365)])
        assert await db.retain(RULES, message_bodies=0) == {
            "request_log": 0, "inbox_messages": 4}
        assert db.rows(inbox_messages, inbox_messages.c.workspace_id,
                       inbox_messages.c.message_id) == [("w1", "m10"), ("w2", "m10")]
