"""Backend CPU of decisioning's reads by key (a Decide call's replays, contacts and send-time
hours, an exposure's decisions, a reward's aliases and open decisions, a merge's survivors),
identity's reads by profile in segments.py (an ingest batch's memberships, stored states
and computed traits' events) and delivery's look-ups by key (a send request's idempotency keys
stored before, a provider report's messages) and analytics' attribution (a 2-hour window's
conversions and its week of touches), for a workspace the planner's statistics do not
know (a new tenant inside big tables, until autovacuum's next ANALYZE) and for a known one, on
PostgreSQL, each beside the same read of another revision of the adapters.

    .venv/bin/python tests/benchmarks/new_workspace_reads.py
        [--service decisioning|identity|delivery|analytics] [--before main] [--known 200000]
        [--new 100000] [--keys 2] [--rounds 15]

The service's schema gets ``--known`` rows in each table read (decisioning: decisions, hour
rows, aliases; identity: profiles, identifiers, memberships, events; delivery: messages;
analytics: facts, a hundredth as many aliases) spread over 20 workspaces, analyzed, then
``--new`` of a new workspace (autovacuum off for these tables, so the statistics stay as they
were). Each read runs for ``--keys`` keys (analytics: one window) in a transaction rolled
back, this tree's adapters and ``--before``'s (``git show <rev>:<adapter>``) alternating;
prints the median backend CPU (/proc/<pid>/schedstat) per call.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import types
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from new_workspace import known_then_new, print_row
from sqlalchemy.orm import Session

import cjo_analytics.adapters
import cjo_decisioning.adapters
import cjo_delivery.adapters
import cjo_identity.adapters
from cjo_analytics.adapters import repository as analytics_repository
from cjo_analytics.domain.reports import Window
from cjo_decisioning.adapters import decisions, engagement, outcomes
from cjo_delivery.adapters import repository, webhook_store
from cjo_delivery.domain.messages import Channel, NewMessage
from cjo_delivery.domain.provider_events import MessageRef
from cjo_identity.adapters import segments
from cjo_identity.domain.computed import Aggregation, ComputedTrait
from cjo_identity.domain.settings import IdentitySettings
from cjo_platform.db import Database
from cjo_platform.db.migrations import upgrade
from support import PG_URL, drop_schemas, new_backend

NOW = datetime(2026, 3, 1, tzinfo=UTC)
WORKSPACE = "CASE WHEN :split THEN 'ws' || (i % 20) ELSE :ws END"
DECISIONING = {
    "decisions": f"""INSERT INTO decisions (workspace_id, decision_id, decision_point,
        profile_id, action, pick_probability, control, request_id, decide_time, decide_hour,
        candidates, ineligible, features, context, outcome, expose_time, reward_deadline,
        reward_time, reward_event_id, learned, lease_owner, lease_until)
        SELECT {WORKSPACE}, 'd' || i, 'p' || (i % 3), 'person-' || (i / 3), 'a', 0.5, false,
        'r' || i, :now, 1, '[]', '[]', '{{}}', '{{}}', 2, :now, :now, NULL, '', false, '', NULL
        FROM generate_series(1, :n) AS i""",
    "engagement_hours": f"""INSERT INTO engagement_hours (workspace_id, profile_id, channel,
        hour, engagements) SELECT {WORKSPACE}, 'person-' || (i / 24), 1, i % 24, 1
        FROM generate_series(1, :n) AS i""",
    "profile_aliases": f"""INSERT INTO profile_aliases (workspace_id, profile_id,
        survivor_profile_id, merge_time) SELECT {WORKSPACE}, 'm' || i, 'person-' || (i / 2),
        :now FROM generate_series(1, :n) AS i"""}
IDENTITY = {
    "profiles": f"""INSERT INTO profiles (workspace_id, profile_id, traits, trait_times,
        create_time, update_time, computed) SELECT {WORKSPACE}, 'p' || i, '{{}}', '{{}}', :now,
        :now, '{{}}' FROM generate_series(1, :n) AS i""",
    "identifiers": f"""INSERT INTO identifiers (workspace_id, type, value, profile_id,
        create_time) SELECT {WORKSPACE}, 'user_id', 'u' || i, 'p' || i, :now
        FROM generate_series(1, :n) AS i""",
    "segment_members": f"""INSERT INTO segment_members (workspace_id, segment_id, profile_id,
        enter_time) SELECT {WORKSPACE}, 's' || (i % 5), 'p' || (i / 5), :now
        FROM generate_series(1, :n) AS i""",
    "events": f"""INSERT INTO events (workspace_id, event_id, message_id, profile_id, type,
        name, identifiers, properties, traits, timestamp, source, receive_time)
        SELECT {WORKSPACE}, 'e' || i, 'm' || i, 'p' || (i / 5), 'track',
        CASE WHEN i % 2 = 0 THEN 'order_completed' ELSE 'page_viewed' END, '[]', '{{}}',
        '{{}}', :now, '', :now FROM generate_series(1, :n) AS i"""}
# A workspace counting orders, all-time and over a week (the read of a windowed trait's
# events is bounded by time).
DELIVERY = {
    "messages": f"""INSERT INTO messages (workspace_id, message_id, idempotency_key, profile_id,
        address, channel, content, journey_id, enrollment_id, status, attempts, error,
        provider_message_id, traceparent, create_time, update_time, sent_time, provider_id)
        SELECT {WORKSPACE}, 'm' || i, 'k' || i, 'p' || (i / 3), 'tok' || i,
        CASE WHEN i % 2 = 1 THEN 'push' ELSE 'email' END, '\\x00'::bytea, '', '', 'sent', 1,
        '', 'pm' || i, '', :now, :now, :now, 'prov' FROM generate_series(1, :n) AS i"""}
ANALYTICS = {
    "facts": f"""INSERT INTO facts (workspace_id, fact_id, type, profile_id, journey_id,
        enrollment_id, message_id, occur_time, record_time, channel, content_key, revenue,
        source_event_id) SELECT {WORKSPACE}, 'f' || i, (ARRAY['message_delivered',
        'message_opened', 'message_clicked', 'node_visited', 'converted', 'goal_reached'])[
        i % 6 + 1], 'p' || (i % 2999), 'j' || (i % 4), 'e' || i, 'm' || (i / 6),
        :now - i * interval '1 minute', :now, 1 + i % 3, 'c' || (i % 5), i % 7, 'ev' || (i / 6)
        FROM generate_series(1, :n) AS i""",
    "profile_aliases": f"""INSERT INTO profile_aliases (workspace_id, merged_profile_id,
        survivor_profile_id) SELECT {WORKSPACE}, 'p' || i, 'p' || (i + 1)
        FROM generate_series(1, :n / 100) AS i"""}
COUNTED = IdentitySettings(computed_traits=(
    ComputedTrait("orders", Aggregation.COUNT, "order_completed"),))
WINDOWED = IdentitySettings(computed_traits=(
    ComputedTrait("orders", Aggregation.COUNT, "order_completed", window=timedelta(days=7)),))


def module_at(revision: str, module: types.ModuleType) -> types.ModuleType:
    """``module`` as it is at ``revision`` (its source from git, run as a new module)."""
    path = Path(str(module.__file__))
    source = subprocess.run(
        ["git", "show", f"{revision}:{path.relative_to(Path(__file__).resolve().parents[2])}"],
        capture_output=True, text=True, check=True, cwd=path.parent).stdout
    old = types.ModuleType(f"{module.__name__}_at_{revision}")
    sys.modules[old.__name__] = old  # dataclasses look their module up
    exec(compile(source, f"{revision}:{path.name}", "exec"), old.__dict__)
    return old


def identity_reads(states: Any, ws: str, keys: int) -> dict[str, Callable[[Session], Any]]:
    ids = [f"p{i}" for i in range(7, 20000, 20000 // keys)][:keys]
    return {
        "memberships (ingest)": lambda s: states.memberships(s, ws, ids),
        "profile_states (ingest)": lambda s: states.profile_states(s, ws, ids),
        "computed_values, all-time (ingest)": lambda s: states.computed_values(
            s, ws, ids, COUNTED, NOW),
        "computed_values, a week (ingest)": lambda s: states.computed_values(
            s, ws, ids, WINDOWED, NOW)}


def decisioning_reads(log: Any, hours: Any, people: Any, ws: str, keys: int
                      ) -> dict[str, Callable[[Session], Any]]:
    step = 2900 // keys
    persons = [f"person-{i}" for i in range(7, 30000, 30000 // keys)][:keys]
    return {
        "replays (Decide)": lambda s: log.replays(
            s, ws, "p1", [f"r{i}" for i in range(1, 2900, step)][:keys]),
        "contacts (Decide)": lambda s: log.contacts(s, ws, persons, ["a"],
                                                    NOW - timedelta(days=1)),
        "hour_counts (Decide)": lambda s: hours.hour_counts(s, ws, persons, 0),
        "for_exposure": lambda s: log.for_exposure(
            s, ws, [f"d{i}" for i in range(5, 2900, step)][:keys]),
        "open_decisions (reward)": lambda s: people.open_decisions(s, ws, persons, {"p1"}),
        "people (reward)": lambda s: people.people(s, ws, persons),
        "survivors (merge)": lambda s: people.survivors(
            s, ws, [f"m{i}" for i in range(3, 2900, step)][:keys])}


def delivery_reads(queue: Any, webhooks: Any, ws: str, keys: int
                   ) -> dict[str, Callable[[Session], Any]]:
    # Numbers of messages both workspaces hold (ws7's are 7, 27, ...), all pushes.
    numbers = list(range(7, 100_000, 20))[::max(1, 5000 // keys)][:keys]
    repeated = [NewMessage(idempotency_key=f"k{i}", profile_id="p", address="a",
                           channel=Channel.EMAIL, content=b"", journey_id="", enrollment_id="")
                for i in numbers]
    ids = (f"new-{i}" for i in range(10**9))
    return {
        "queue_messages, keys stored (SendMessages)": lambda s: queue.queue_messages(
            s, ws, repeated, NOW, "", lambda: next(ids)),
        "resolve by message id (report)": lambda s: webhooks.resolve(
            s, ws, [MessageRef(message_id=f"m{i}") for i in numbers]),
        "resolve by provider's id (report)": lambda s: webhooks.resolve(
            s, ws, [MessageRef(provider_message_id=f"pm{i}") for i in numbers], "prov"),
        "resolve by device token (report)": lambda s: webhooks.resolve(
            s, ws, [MessageRef(device_token=f"tok{i}") for i in numbers])}


def analytics_reads(facts: Any, ws: str, keys: int) -> dict[str, Callable[[Session], Any]]:
    # A workspace's fact a minute back from NOW (the known ones one in 20 minutes): a 2-hour
    # window a day back, a week's look-back.
    window = Window(NOW - timedelta(hours=26), NOW - timedelta(hours=24))

    def report(every: bool) -> Callable[[Session], Any]:
        return lambda s: facts.attribution_data(s, ws, window, timedelta(days=7), every)

    return {"attribution_data, converting (report)": report(False),
            "attribution_data, all profiles (report)": report(True)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--service",
                        choices=["decisioning", "identity", "delivery", "analytics"],
                        default="decisioning")
    parser.add_argument("--before", default="main")
    parser.add_argument("--known", type=int, default=200_000)
    parser.add_argument("--new", type=int, default=100_000)
    parser.add_argument("--keys", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=15)
    args = parser.parse_args()
    if args.service == "delivery":
        package: types.ModuleType = cjo_delivery.adapters
        fill, modules = DELIVERY, [repository, webhook_store]
        reads: Callable[..., dict[str, Callable[[Session], Any]]] = delivery_reads
    elif args.service == "analytics":
        fill, package, modules = ANALYTICS, cjo_analytics.adapters, [analytics_repository]
        reads = analytics_reads
    elif args.service == "identity":
        fill, package, modules, reads = IDENTITY, cjo_identity.adapters, [segments], identity_reads
    else:
        fill, package = DECISIONING, cjo_decisioning.adapters
        modules, reads = [decisions, engagement, outcomes], decisioning_reads
    old = [module_at(args.before, m) for m in modules]
    backend = new_backend("postgresql", Path(tempfile.mkdtemp()))
    db = Database(PG_URL, schema=backend.schema_prefix + args.service)
    upgrade(db, Path(str(package.__file__)).parent / "migrations")
    try:
        known_then_new(db, fill, args.known, args.new, NOW)
        print(f"| read, {args.keys} keys | workspace | {args.before} | this tree "
              f"(backend CPU ms per call, median) |")
        print("|---|---|---|---|")
        for ws in ("newcomer", "ws7"):
            before = reads(*old, ws, args.keys)
            after = reads(*modules, ws, args.keys)
            for name in after:
                print_row(db, name, ws, (before[name], after[name]), args.rounds)
    finally:
        db.dispose()
        drop_schemas(backend)


if __name__ == "__main__":
    main()
