"""The traits limit judged in batch order (review rmerge of d86a49f): a batch's events, its
merges and its splits are each judged against the records as the events before them left them,
as single calls would be; refusing events that shaped the identity graph costs at most a
bounded number of plans, not one per event. Through the real gRPC server on both backends,
and on the domain's plan."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from functools import partial
from itertools import count
from typing import Any

import grpc
import pytest
from identity_support import START, Identity, Recorder, event, ingest, serve_identity

from cjo.identity.v1 import event_pb2
from cjo.identity.v1 import identity_service_pb2 as pb
from cjo.orchestration.v1 import orchestration_service_pb2 as orch_pb
from cjo_identity.domain import ingest as domain
from cjo_identity.domain.events import Event, EventType, parse_event
from cjo_identity.domain.golden import Golden, Trait, apply_event, fold, trait_values
from cjo_identity.domain.graph import Edge
from cjo_identity.domain.identifiers import Identifier
from cjo_identity.domain.ingest import Refusal, Replan, TraitsLimit
from cjo_identity.domain.settings import IdentitySettings, TypeRule
from cjo_identity.service_layer import ingest as ingest_use_case
from cjo_identity.service_layer.ingest import apply_events
from cjo_platform.clock import ManualClock
from cjo_platform.db.unit_of_work import UnitOfWork
from cjo_platform.limits import MAX_PROFILE_TRAITS_BYTES
from cjo_platform.rpc.status import field_violations
from support import Backend, eventually

INVALID = grpc.StatusCode.INVALID_ARGUMENT.value[0]
T0 = datetime(2026, 1, 1, tzinfo=UTC)


def count_transactions(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """One item per attempt at a batch (each its own transaction): the events it planned."""
    attempts: list[int] = []

    def counted(uow: UnitOfWork, **arguments: Any) -> ingest_use_case.Applied:
        attempts.append(len(arguments["batch"]))
        return apply_events(uow, **arguments)

    monkeypatch.setattr(ingest_use_case, "apply_events", counted)
    return attempts


async def lookup(identity: Identity, md: Any, kind: str, value: str) -> Any:
    return (await identity.events.LookupProfile(pb.LookupProfileRequest(
        identifier=event_pb2.Identifier(type=kind, value=value)), metadata=md)).profile


def forwarded(recorder: Recorder, message_id: str) -> orch_pb.ForwardedEvent | None:
    return next((e for e in recorder.events if e.event.message_id == message_id), None)


async def test_refusing_new_identifiers_of_a_known_person_needs_no_second_plan(
        identity: Identity, monkeypatch: pytest.MonkeyPatch) -> None:
    """A known person near the limit, and 1,000 events each bringing a new anonymous_id (the
    web SDK's identify) and a trait that would pass the limit: each is refused in the plan
    itself, its edge and identifier left out (before: one transaction per event, 1,001)."""
    acme = await identity.new_workspace("acme")
    assert (await ingest(identity, acme, event(
        "a", ("user_id", "u1"), identify=True, traits={"a": "a" * 261_000})))[0].status.code == 0
    attempts = count_transactions(monkeypatch)
    results = await ingest(identity, acme, *(
        event(f"e{k}", ("user_id", "u1"), ("anonymous_id", f"anon-{k}"), identify=True,
              traits={f"k{k}": "z" * 2_000}) for k in range(1000)))
    assert [r.status.code for r in results] == [INVALID] * 1000
    assert "events[999].traits" in field_violations(results[999].status)
    assert len(attempts) <= 3
    # Nothing of them was linked: a later event of anon-7 is a new person.
    later = await ingest(identity, acme, event("later", ("anonymous_id", "anon-7")))
    assert later[0].status.code == 0
    assert later[0].profile_id != (await lookup(identity, acme, "user_id", "u1")).profile_id


async def test_refused_events_that_shaped_the_graph_are_planned_again_once(
        identity: Identity, monkeypatch: pytest.MonkeyPatch) -> None:
    """A new person's first event near the limit, then 100 events of that person each with a
    new anonymous_id and a trait too many: refusing them changes the new profile's cluster, so
    the batch is planned again, once, without all of them (before: once per event)."""
    acme = await identity.new_workspace("acme")
    attempts = count_transactions(monkeypatch)
    results = await ingest(
        identity, acme,
        event("first", ("user_id", "u9"), identify=True, traits={"a": "a" * 250_000}),
        *(event(f"e{k}", ("user_id", "u9"), ("anonymous_id", f"anon-{k}"), identify=True,
                traits={f"k{k}": "z" * 20_000}) for k in range(100)))
    assert [r.status.code for r in results] == [0] + [INVALID] * 100
    assert len(attempts) <= 3


async def test_a_split_moving_events_to_an_existing_profile_is_checked(
        identity: Identity, recorder: Recorder) -> None:
    """A late identify (earlier event time) moves email x from A to B (user_id: one per
    profile): x's stored events, 200 KB of traits, would be refolded into B (200 KB). The
    event is refused naming its identifiers; no forwarded event carries more than the limit
    (before: B's events went out with 400 KB of traits)."""
    acme = await identity.new_workspace("acme")
    h = timedelta(hours=1)
    for ev in (event("a1", ("user_id", "u1"), ("email", "x@x.io"), identify=True,
                     at=START - 3 * h),
               event("x1", ("email", "x@x.io"), identify=True, at=START - 2 * h,
                     traits={"xt": "x" * 200_000}),
               event("b1", ("user_id", "u2"), identify=True, at=START - h,
                     traits={"bt": "b" * 200_000})):
        assert (await ingest(identity, acme, ev))[0].status.code == 0
    late = await ingest(identity, acme, event("late", ("user_id", "u2"), ("email", "x@x.io"),
                                              identify=True, at=START - 4 * h))
    assert late[0].status.code == INVALID
    assert "events[0].identifiers" in field_violations(late[0].status)
    after = await ingest(identity, acme, event("after", ("user_id", "u2"),
                                               name="order_completed"))
    assert after[0].status.code == 0
    found = await eventually(partial(forwarded, recorder, "after"))
    assert isinstance(found, orch_pb.ForwardedEvent)
    assert found.profile_traits.ByteSize() <= MAX_PROFILE_TRAITS_BYTES
    assert set(found.profile_traits.fields) == {"bt"}


async def test_a_merge_is_judged_at_its_link_as_single_calls_would(identity: Identity) -> None:
    """[t (100 KB more for A, of 150 KB), link A+B (100 KB)]: as two calls t is accepted and
    the link refused; in one call the same (before: t refused, the link merged)."""
    results: dict[str, list[int]] = {}
    for mode in ("single", "batch"):
        md = await identity.new_workspace(f"acme-{mode}")
        assert {r.status.code for r in await ingest(
            identity, md,
            event("a", ("user_id", "u1"), identify=True, traits={"a": "a" * 150_000}),
            event("b", ("email", "b@x.io"), identify=True, traits={"b": "b" * 100_000}))} == {0}
        t = event("t", ("user_id", "u1"), identify=True, traits={"more": "m" * 100_000})
        link = event("link", ("user_id", "u1"), ("email", "b@x.io"), identify=True)
        if mode == "single":
            got = [(await ingest(identity, md, t))[0], (await ingest(identity, md, link))[0]]
        else:
            got = await ingest(identity, md, t, link)
        results[mode] = [r.status.code for r in got]
        field = "events[0]" if mode == "single" else "events[1]"
        assert f"{field}.identifiers" in field_violations(got[-1].status)
    assert results["batch"] == results["single"] == [0, INVALID]


async def test_a_later_call_in_a_group_does_not_refuse_an_earlier_calls_event(
        backend: Backend, recorder: Recorder) -> None:
    """Call 1 [t: 100 KB more for A] and call 2 [link A+B] share a transaction: as alone
    (call 1 first), t is accepted and the link refused (before: t refused for call 2's later
    merge, and the link accepted)."""
    async with serve_identity(backend, recorder, ManualClock(START),
                              CJO_IDENTITY_GROUP_COMMIT_MS="1000") as grouping:
        acme = await grouping.new_workspace("acme")
        await ingest(grouping, acme, event("a", ("user_id", "u1"), identify=True,
                                           traits={"a": "a" * 150_000}),
                     event("b", ("email", "b@x.io"), identify=True, traits={"b": "b" * 100_000}))
        replies = await asyncio.gather(
            ingest(grouping, acme, event("t", ("user_id", "u1"), identify=True,
                                         traits={"more": "m" * 100_000})),
            ingest(grouping, acme, event("link", ("user_id", "u1"), ("email", "b@x.io"),
                                         identify=True)))
    assert [[r.status.code for r in reply] for reply in replies] == [[0], [INVALID]]
    assert "events[0].identifiers" in field_violations(replies[1][0].status)


# The domain's plan, with a limit measured as JSON (it adds up over the traits, as a Struct's
# entries do).
LIMIT = 150
S = IdentitySettings(identifier_types=(TypeRule("user_id", limit=1), TypeRule("email", limit=1)))


def json_size(traits: Mapping[str, Trait]) -> int:
    return len(json.dumps(trait_values(traits)))


def identify(message_id: str, identifiers: list[tuple[str, str]], minute: int,
             **traits: object) -> Event:
    return parse_event(message_id=message_id, event_type=EventType.IDENTIFY, name="",
                       identifiers=identifiers, properties={}, traits=traits,
                       timestamp=T0 + timedelta(minutes=minute), source="",
                       now=T0 + timedelta(days=1))


class Store:
    """A workspace in memory: events ingested one call at a time, without a limit."""

    def __init__(self) -> None:
        ids = count()
        self.new_id = lambda: f"p{next(ids):03d}"
        self.owners: dict[Identifier, domain.Owner] = {}
        self.cluster_edges: dict[str, list[Edge]] = {}
        self.events: list[Event] = []

    def graph(self, batch: list[Event]) -> domain.GraphChange:
        known = {e.key: (e.first_time, e.first_message_id)
                 for edges in self.cluster_edges.values() for e in edges}
        changed = domain.changed_edges(domain.batch_edges(batch, S), known)
        return domain.plan_graph(changed, self.cluster_edges, self.owners, S, self.new_id)

    def add(self, event: Event) -> None:
        graph = self.graph([event])
        self.owners = graph.owners
        for edge, cluster in graph.edges:
            for edges in self.cluster_edges.values():
                edges[:] = [e for e in edges if e.key != edge.key]
            self.cluster_edges.setdefault(cluster, []).append(edge)
        self.events.append(event)

    def profile(self, event: Event) -> str:
        return next(self.owners[i].profile_id for i in domain.linkable(event, S)
                    if i in self.owners)

    def held(self) -> dict[str, Golden]:
        by_profile: dict[str, list[Event]] = {}
        for e in self.events:
            by_profile.setdefault(self.profile(e), []).append(e)
        return {p: fold(events, S) for p, events in by_profile.items()}

    def plan(self, batch: list[Event], limit: TraitsLimit | None = None,
             last_round: bool = False) -> Any:
        graph = self.graph(batch)
        refs = [domain.StoredRef(f"id-{e.message_id}", self.profile(e), e) for e in self.events]
        return domain.plan_batch(batch, seen={}, graph=graph, held=self.held(),
                                 stored=[r for r in refs if r.profile_id in graph.sources],
                                 settings=S, new_id=self.new_id,
                                 limit=limit or TraitsLimit(LIMIT, json_size),
                                 **({"last_round": True} if last_round else {}))


def test_merges_into_one_survivor_are_judged_in_batch_order() -> None:
    """Three people of about 55 bytes of traits; [link u1+b3, link u1+b2]: the first merge
    fits, the second would not (before: judged in profile id order, the first link was
    refused)."""
    store = Store()
    for mid, ids, trait in (("s1", [("user_id", "u1")], "a"), ("s2", [("anonymous_id", "b2")],
                            "b"), ("s3", [("anonymous_id", "b3")], "c")):
        store.add(identify(mid, ids, 1, **{trait: "x" * 50}))
    batch = [identify("l3", [("user_id", "u1"), ("anonymous_id", "b3")], 5),
             identify("l2", [("user_id", "u1"), ("anonymous_id", "b2")], 6)]
    b2, b3 = (store.owners[Identifier("anonymous_id", v)].profile_id for v in ("b2", "b3"))
    assert b2 < b3 and set(store.graph(batch).absorbed) == {b2, b3}
    with pytest.raises(Replan) as replan:
        store.plan(batch)
    assert replan.value.refused == {"l2": Refusal.MERGE}


def test_a_merge_through_a_stored_edge_blames_only_its_own_cluster() -> None:
    """A merge whose link is a stored edge the batch moved (no event of the batch resolves to
    the survivor): the events that shaped its cluster are refused, not an unrelated new
    person's first event (b2) (before: every event of the batch that shaped the graph)."""
    store = Store()
    for e in (identify("s0", [("anonymous_id", "a1")], 42, t0="x" * 60),
              identify("s1", [("user_id", "u1"), ("email", "e1")], 41, t1="x" * 60),
              identify("s2", [("user_id", "u2"), ("anonymous_id", "a3")], 32, t2="x" * 60),
              identify("s3", [("email", "e1")], 41, t3="x" * 60),
              identify("s4", [("user_id", "u1"), ("email", "e2")], 35, t4="x" * 60)):
        store.add(e)
    batch = [identify("b0", [("user_id", "u2"), ("anonymous_id", "a3")], 35),
             identify("b1", [("email", "e2"), ("user_id", "u2")], 24),
             identify("b2", [("user_id", "bystander")], 50, plan="pro")]
    with pytest.raises(Replan) as replan:
        store.plan(batch)
    assert "b2" not in replan.value.refused
    assert replan.value.refused.keys() <= {"b0", "b1"}


def test_refused_events_that_shaped_the_graph_are_raised_together() -> None:
    """A new person's events, each bringing a new anonymous_id and traits that pass the limit
    once the first is in: one Replan names them all (before: the first only, one Replan each);
    in the last round the events shaping their cluster are refused with them."""
    store = Store()
    batch = [identify("n0", [("user_id", "u9")], 1, a="x" * 100),
             *(identify(f"n{k}", [("user_id", "u9"), ("anonymous_id", f"a{k}")], 1 + k,
                        **{f"k{k}": "y" * 40}) for k in range(1, 5)),
             identify("n5", [("user_id", "u9"), ("anonymous_id", "a5")], 9)]
    with pytest.raises(Replan) as replan:
        store.plan(batch)
    assert replan.value.refused == {f"n{k}": Refusal.TRAITS for k in range(1, 5)}
    with pytest.raises(Replan) as last:
        store.plan(batch, last_round=True)
    assert last.value.refused == {**{f"n{k}": Refusal.TRAITS for k in range(1, 5)},
                                  "n0": Refusal.CLUSTER, "n5": Refusal.CLUSTER}


def test_a_record_is_measured_once_then_by_the_traits_that_change() -> None:
    """A profile of 50 traits and 100 events of one trait each: the limit measures the record
    once and each event's changed trait (before: the whole record per event)."""
    store = Store()
    store.add(identify("s", [("user_id", "u1")], 1, **{f"t{k}": "v" for k in range(50)}))
    measured: list[int] = []

    def size(traits: Mapping[str, Trait]) -> int:
        measured.append(len(traits))
        return json_size(traits)

    batch = [identify(f"e{k}", [("user_id", "u1")], 2 + k, **{f"t{k % 60}": "w"})
             for k in range(100)]
    plan = store.plan(batch, TraitsLimit(10_000, size))
    assert len(plan.accepted) == 100
    assert sum(measured) <= 50 + 2 * 100


def test_dropping_a_refused_edge_in_the_plan_keeps_the_others() -> None:
    """A known person's refused event that only brought a new identifier: its edge and that
    identifier are left out of the plan, an accepted one's kept."""
    store = Store()
    store.add(identify("s", [("user_id", "u1")], 1, a="x" * 100))
    batch = [identify("big", [("user_id", "u1"), ("anonymous_id", "a1")], 2, b="y" * 60),
             identify("ok", [("user_id", "u1"), ("anonymous_id", "a2")], 3, c="z")]
    plan = store.plan(batch)
    assert plan.outcomes[0] is Refusal.TRAITS
    assert {i.value for i in plan.graph.new_identifiers} == {"a2"}
    assert [e.first_message_id for e, _ in plan.graph.edges] == ["ok"]
    golden = Golden({"a": Trait("x" * 100, T0 + timedelta(minutes=1), "s")})
    apply_event(golden, batch[1], S)
    assert plan.golden[plan.outcomes[1].profile_id] == golden
