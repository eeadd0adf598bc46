"""A send round's reads by profile of a workspace the planner's statistics do not know yet (a
new tenant inside big tables, until autovacuum's ANALYZE) probe the index on
(workspace_id, profile_id) per profile: the frequency caps' locks and the cap usage. With the
workspace a constant, PostgreSQL rated such a workspace at one row and read its every message
(or cap lock) through another index with the workspace as prefix, filtered by the profiles: a
round's cost grew with the new workspace's messages."""

from __future__ import annotations

import re
from datetime import timedelta

from delivery_support import delivery_app, rendered_email
from query_plans import plans
from sqlalchemy import text
from sqlalchemy.orm import Session

from cjo_delivery.adapters import repository
from cjo_delivery.domain.messages import Channel, NewMessage
from cjo_platform.clock import ManualClock
from support import Backend, free_port


def new(key: str, profile: str) -> NewMessage:
    return NewMessage(idempotency_key=key, profile_id=profile, address=f"{key}@example.com",
                      channel=Channel.EMAIL, content=rendered_email().SerializeToString(),
                      journey_id="", enrollment_id="")


async def test_a_new_workspaces_caps_are_probed_by_profile(backend: Backend) -> None:
    clock = ManualClock()
    app = delivery_app(backend, free_port(), clock)
    await app.db.run(app.migrate)
    ids = iter(f"m{i}" for i in range(100_000))
    keys = [(f"p{i}", Channel.EMAIL.value) for i in range(0, 300, 3)]

    def load(session: Session, workspace_id: str) -> None:
        for start in range(0, 3000, 500):
            repository.queue_messages(
                session, workspace_id,
                [new(f"k{i}", f"p{i % 1000}") for i in range(start, start + 500)],
                clock.now(), "", lambda: next(ids))
        repository.lock_caps(session, workspace_id,
                             [(f"p{i}", c) for i in range(1000) for c in ("email", "sms")])

    def scenario() -> list[tuple[str, str]]:
        with app.db.transaction() as session:
            load(session, "ws-a")
            if backend.kind == "postgresql":
                session.execute(text("ANALYZE messages"))
                session.execute(text("ANALYZE cap_locks"))
        with app.db.transaction() as session:  # its own: a transaction locks its scopes once
            load(session, "newcomer")  # the statistics know ws-a only
        since = clock.now() - timedelta(days=1)
        return [*plans(app.db, lambda s: repository.lock_caps(s, "newcomer", keys), "cap_locks"),
                *plans(app.db, lambda s: repository.cap_usage(s, "newcomer", keys, since),
                       "messages")]

    try:
        found = await app.db.run(scenario)
    finally:
        app.db.dispose()
    filtered = [f"{statement}\n{plan}" for statement, plan in found
                if not (backend.kind == "sqlite" and "profile_id=?" in plan)
                and not any(re.search(r"\bprofile_id\b", line) for line in plan.splitlines()
                            if "Index Cond" in line)]
    assert not filtered, "\n\n".join(filtered)
