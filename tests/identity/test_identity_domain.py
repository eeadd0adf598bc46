"""Unit tests of identity's domain rules: normalisation, resolution, trait survivorship."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from itertools import count

import pytest

from cjo_identity.domain.consent import ConsentState, decide
from cjo_identity.domain.events import Event, EventType, parse_event
from cjo_identity.domain.golden import Golden, apply_event, fold
from cjo_identity.domain.graph import Edge, partition
from cjo_identity.domain.identifiers import Identifier, parse_identifier
from cjo_identity.domain.ingest import (
    Outcome,
    Owner,
    batch_edges,
    changed_edges,
    linkable,
    plan_batch,
    plan_graph,
)
from cjo_identity.domain.settings import (
    IdentitySettings,
    Survivorship,
    TraitRule,
    TypeRule,
    check_settings,
)
from cjo_identity.domain.workspaces import check_new_workspace
from cjo_platform.errors import InvalidArgument, Violations

T0 = datetime(2026, 3, 1, tzinfo=UTC)
USER = "user_id"
ANON = "anonymous_id"
EMAIL = "email"
DEFAULTS = IdentitySettings()


def ident(kind: str, value: str) -> Identifier:
    return Identifier(kind, value)


def edge(at: int, *identifiers: Identifier) -> Edge:
    return Edge(tuple(sorted(identifiers)), T0 + timedelta(minutes=at), f"m{at}")


def groups_of(edges: list[Edge], settings: IdentitySettings = DEFAULTS
              ) -> set[frozenset[Identifier]]:
    groups, _ = partition(edges, settings)
    found: dict[Identifier, set[Identifier]] = {}
    for item, root in groups.items():
        found.setdefault(root, set()).add(item)
    return {frozenset(g) for g in found.values()}


def test_emails_are_trimmed_and_lower_cased_other_values_only_trimmed() -> None:
    problems = Violations()
    email = parse_identifier("email", "  Ada@Example.COM ", problems)
    assert email == ident(EMAIL, "ada@example.com")
    assert parse_identifier("user_id", " U-1 ", problems) == ident(USER, "U-1")
    assert not problems


def test_bad_identifiers_name_the_field() -> None:
    problems = Violations()
    assert parse_identifier("cookie", "x", problems, "identifiers[1]") is None
    assert parse_identifier("user_id", "   ", problems, "identifiers[2]") is None
    assert parse_identifier("user_id", "u" * 257, problems, "identifiers[3]") is None
    assert [v.field for v in problems.items] == [
        "identifiers[1].type", "identifiers[2].value", "identifiers[3].value"]


def test_an_event_reports_every_problem_at_once() -> None:
    with pytest.raises(InvalidArgument) as bad:
        parse_event(message_id="m" * 129, event_type=EventType.TRACK, name="",
                    identifiers=[("email", "")], properties={}, traits={}, timestamp=None,
                    source="", now=T0)
    assert {v.field for v in bad.value.violations} == {
        "message_id", "name", "identifiers[0].value"}
    with pytest.raises(InvalidArgument) as untyped:
        parse_event(message_id="m", event_type=None, name="", identifiers=[], properties={},
                    traits={}, timestamp=None, source="", now=T0)
    assert {v.field for v in untyped.value.violations} == {"type", "identifiers"}


def test_each_problem_of_an_event_says_what_is_wrong() -> None:
    with pytest.raises(InvalidArgument) as bad:
        parse_event(message_id="m" * 129, event_type=EventType.TRACK, name="n" * 129,
                    identifiers=[("user_id", "u1")], properties={}, traits={},
                    timestamp=None, source="s" * 65, now=T0, profile_id="p" * 129)
    assert [(v.field, v.description) for v in bad.value.violations] == [
        ("message_id", "at most 128 characters"), ("name", "at most 128 characters"),
        ("source", "at most 64 characters"), ("profile_id", "at most 128 characters"),
        ("identifiers", "must be empty when profile_id is set")]
    with pytest.raises(InvalidArgument) as many:
        parse_event(message_id="", event_type=EventType.TRACK, name="",
                    identifiers=[("user_id", f"u{n}") for n in range(21)], properties={},
                    traits={}, timestamp=None, source="", now=T0)
    assert [(v.field, v.description) for v in many.value.violations] == [
        ("message_id", "is required"), ("name", "is required for track events"),
        ("identifiers", "must hold 1 to 20 identifiers")]
    problems = Violations()
    # Lower-cased, "İ" is two characters: 256 of them become 512.
    assert parse_identifier("email", "İ" * 256, problems, "identifiers[0]") is None
    assert parse_identifier("email", "İ" * 256, problems) is None
    assert parse_identifier("phone", "x", problems) is None
    assert [(v.field, v.description) for v in problems.items] == [
        ("identifiers[0].value", "at most 256 characters"), ("value", "at most 256 characters"),
        ("value", "is not a phone number; write it with a country code (+...)")]


def test_an_edge_changes_only_when_new_or_first_seen_earlier_than_stored() -> None:
    """A batch's edges against the first events (time, message id) stored for their keys."""
    stored = edge(5, ident(USER, "u1"))
    same, later = edge(5, ident(USER, "u1")), edge(6, ident(USER, "u1"))
    earlier = edge(4, ident(USER, "u1"))
    # At the same time, the lower message id came first.
    tie = Edge(stored.identifiers, stored.first_time, "m0")
    new = edge(9, ident(USER, "u2"))
    known = {stored.key: (stored.first_time, stored.first_message_id)}
    assert changed_edges({same.key: same}, known) == []
    assert changed_edges({later.key: later}, known) == []
    assert changed_edges({earlier.key: earlier}, known) == [earlier]
    assert changed_edges({tie.key: tie}, known) == [tie]
    assert changed_edges({new.key: new, same.key: same}, known) == [new]


def test_an_event_without_time_happened_when_received_and_repeats_collapse() -> None:
    event = parse_event(message_id="m", event_type=EventType.IDENTIFY, name="",
                        identifiers=[("email", "A@x.io"), ("email", "a@x.io ")], properties={},
                        traits={}, timestamp=None, source="", now=T0)
    assert event.timestamp == T0
    assert event.identifiers == (ident(EMAIL, "a@x.io"),)


def test_phones_become_e164_with_the_workspace_region_or_fail_naming_the_field() -> None:
    problems = Violations()
    assert parse_identifier("phone", "06 12 34 56 78", problems,
                            phone_region="FR") == ident("phone", "+33612345678")
    assert parse_identifier("phone", "+33 6 12 34 56 78", problems) == \
        ident("phone", "+33612345678")
    assert not problems
    assert parse_identifier("phone", "06 12 34 56 78", problems, "identifiers[0]") is None
    assert parse_identifier("phone", "call me", problems, "identifiers[1]",
                            phone_region="FR") is None
    assert [v.field for v in problems.items] == ["identifiers[0].value", "identifiers[1].value"]


def test_an_events_identifiers_link_strongest_first_without_the_blocked_ones() -> None:
    event = parse_event(message_id="m", event_type=EventType.IDENTIFY, name="",
                        identifiers=[("anonymous_id", "a1"), ("email", "null"),
                                     ("user_id", "u1")], properties={}, traits={},
                        timestamp=None, source="", now=T0)
    assert linkable(event, DEFAULTS) == (
        ident(USER, "u1"), ident(EMAIL, "null"), ident(ANON, "a1"))
    blocking = IdentitySettings(identifier_types=(TypeRule(EMAIL, blocked_values=("null",)),))
    assert linkable(event, blocking) == (ident(USER, "u1"), ident(ANON, "a1"))


def test_a_login_joins_the_anonymous_history_to_the_known_person() -> None:
    groups = groups_of([edge(1, ident(ANON, "a1")), edge(2, ident(USER, "u1")),
                        edge(3, ident(USER, "u1"), ident(ANON, "a1"))])
    assert groups == {frozenset({ident(ANON, "a1"), ident(USER, "u1")})}


def test_a_limit_drops_the_lower_priority_link_instead_of_merging() -> None:
    # A shared computer: a1 was u1's first; u2 logging in on it does not make u1 and u2 one.
    groups = groups_of([edge(1, ident(USER, "u1"), ident(ANON, "a1")),
                        edge(2, ident(USER, "u2"), ident(ANON, "a1"), ident(EMAIL, "b@x.io"))])
    assert groups == {frozenset({ident(USER, "u1"), ident(ANON, "a1")}),
                      frozenset({ident(USER, "u2"), ident(EMAIL, "b@x.io")})}
    unlimited = IdentitySettings(identifier_types=())
    assert len(groups_of([edge(1, ident(USER, "u1"), ident(ANON, "a1")),
                          edge(2, ident(USER, "u2"), ident(ANON, "a1"))], unlimited)) == 1


def test_the_partition_depends_on_event_time_not_on_arrival() -> None:
    edges = [edge(3, ident(USER, "u2"), ident(ANON, "a1")),
             edge(1, ident(USER, "u1"), ident(ANON, "a1")),
             edge(2, ident(ANON, "a1"), ident(EMAIL, "e@x.io"))]
    assert groups_of(edges) == groups_of(list(reversed(edges))) == {
        frozenset({ident(USER, "u1"), ident(ANON, "a1"), ident(EMAIL, "e@x.io")}),
        frozenset({ident(USER, "u2")})}


def test_blocked_values_and_bad_settings() -> None:
    settings = IdentitySettings(identifier_types=(
        TypeRule(EMAIL, blocked_values=("test@example\\.com", "null")),
        TypeRule("loyalty_card", limit=2)))
    assert settings.is_blocked(ident(EMAIL, "test@example.com"))
    assert not settings.is_blocked(ident(EMAIL, "xtest@example.com"))
    assert settings.type_order[:3] == (EMAIL, "loyalty_card", USER)
    assert "loyalty_card" in settings.known_types
    with pytest.raises(InvalidArgument) as bad:
        check_settings(IdentitySettings(
            default_phone_region="XX",
            identifier_types=(TypeRule("phone", blocked_values=("(",)), TypeRule("Bad!")),
            trait_rules=(TraitRule("tier", Survivorship.SOURCE_PRIORITY),)))
    assert {v.field for v in bad.value.violations} == {
        "settings.default_phone_region", "settings.identifier_types[0].blocked_values[0]",
        "settings.identifier_types[1].type", "settings.trait_rules[0].source_priority"}


def test_a_secret_looking_sealed_is_refused_and_the_secret_is_never_in_a_repr() -> None:
    """Stored values beginning with "enc:" are sealed ones: a plaintext secret so written
    would be taken for one (adapters/settings.py)."""
    with pytest.raises(InvalidArgument) as bad:
        check_settings(IdentitySettings(verification_secret="enc:v1:" + "s" * 40))
    assert [v.field for v in bad.value.violations] == ["settings.identity_verification.secret"]
    check_settings(IdentitySettings(verification_secret="s" * 40))
    assert "s" * 40 not in repr(IdentitySettings(verification_secret="s" * 40))


def test_merging_profiles_keeps_the_oldest_and_records_the_link() -> None:
    ids = (f"id{n}" for n in count())
    owners = {ident(ANON, "a1"): Owner("p-anon", "c-anon"),
              ident(USER, "u1"): Owner("p-user", "c-user")}
    cluster_edges = {"c-anon": [edge(5, ident(ANON, "a1"))],
                     "c-user": [edge(1, ident(USER, "u1"))]}
    change = plan_graph([edge(9, ident(USER, "u1"), ident(ANON, "a1"))], cluster_edges, owners,
                        DEFAULTS, lambda: next(ids))
    assert [(m.merged_profile_id, m.survivor_profile_id, m.link.identifier)
            for m in change.merges] == [("p-anon", "p-user", ident(ANON, "a1"))]
    assert change.owners[ident(ANON, "a1")] == Owner("p-user", "c-anon")
    # A whole profile merged into one that lost nothing: records combine, no refold needed.
    assert change.absorbed == {"p-anon": "p-user"}
    assert not change.refold and not change.sources


def test_a_known_identifier_seen_alone_is_stored_without_relinking() -> None:
    """The fast path for the usual event of a known person: its edge cannot move a link, even
    when earlier than everything stored and under the default user_id limit, so it is stored in
    the cluster its identifier ends up in; when that cluster is recomputed in the same batch
    (renamed here by a merge), the edge is stored once, with it, at its earlier first event
    (it was stored twice: the batch failed on the edges' unique key)."""
    owners = {ident(ANON, "a1"): Owner("p-anon", "c-anon"),
              ident(USER, "u1"): Owner("p-user", "c-user"),
              ident(USER, "u2"): Owner("p-two", "c-two")}
    cluster_edges = {"c-anon": [edge(5, ident(ANON, "a1"))],
                     "c-user": [edge(1, ident(USER, "u1"))],
                     "c-two": [edge(2, ident(USER, "u2"))]}
    login = edge(9, ident(USER, "u1"), ident(ANON, "a1"))
    lone = edge(0, ident(USER, "u1"))
    other = edge(3, ident(USER, "u2"))
    plain = plan_graph([login], cluster_edges, owners, DEFAULTS, lambda: "new")
    fast = plan_graph([login, lone, other], cluster_edges, owners, DEFAULTS, lambda: "new")
    assert (fast.owners, fast.merges, fast.absorbed) == (plain.owners, plain.merges,
                                                          plain.absorbed)
    assert sorted((e.key, c) for e, c in fast.edges) == sorted(
        [*((e.key, c) for e, c in plain.edges), (other.key, "c-two")])
    assert lone.key in {e.key for e, _ in plain.edges}  # c-user's stored edge, moved
    assert [e.order for e, _ in fast.edges if e.key == lone.key] == [lone.order]
    # What a full recomputation would give: the lone edges change no group.
    stored = [e for es in cluster_edges.values() for e in es] + [login]
    assert groups_of([*stored, lone, other]) == groups_of(stored)
    # An identifier nobody owns yet still makes its profile.
    fresh = plan_graph([edge(4, ident(USER, "u3"))], {}, owners, DEFAULTS, lambda: "p-new")
    assert fresh.new_profiles == {"p-new"}
    assert fresh.new_identifiers[ident(USER, "u3")].profile_id == "p-new"


def test_survivorship_rules_give_the_same_record_in_any_order() -> None:
    settings = IdentitySettings(trait_rules=(
        TraitRule("first_seen", Survivorship.FIRST),
        TraitRule("tier", Survivorship.SOURCE_PRIORITY, ("crm", "web")),
        TraitRule("interests", Survivorship.UNION)))

    def ev(at: int, source: str, **traits: object) -> Event:
        return parse_event(message_id=f"m{at}", event_type=EventType.IDENTIFY, name="",
                           identifiers=[("user_id", "u1")], properties={}, traits=traits,
                           timestamp=T0 + timedelta(minutes=at), source=source, now=T0)

    events = [ev(1, "web", first_seen="a", tier="gold", interests=["ski"], city="Oslo"),
              ev(2, "crm", first_seen="b", tier="silver", interests="golf"),
              ev(3, "web", first_seen="c", tier="bronze", interests=["ski", "chess"],
                 city="Rome")]
    record = fold(events, settings)
    again = Golden()
    for event in reversed(events):
        apply_event(again, event, settings)
    assert again == record
    values = {n: t.value for n, t in record.traits.items()}
    assert values == {"first_seen": "a", "tier": "silver", "interests": ["chess", "golf", "ski"],
                      "city": "Rome"}
    assert (record.traits["tier"].source, record.traits["city"].message_id) == ("crm", "m3")


def test_consent_decisions() -> None:
    def ev(at: int, name: str, channel: str, topic: str = "") -> Event:
        return parse_event(message_id=f"m{at}", event_type=EventType.TRACK, name=name,
                           identifiers=[("user_id", "u1")],
                           properties={"channel": channel, "topic": topic}, traits={},
                           timestamp=T0 + timedelta(minutes=at), source="link", now=T0)

    record = fold([ev(1, "subscribed", "sms"), ev(2, "unsubscribed", "email", "promo"),
                   ev(0, "unsubscribed", "sms")], DEFAULTS)
    assert decide(record.consents, "sms", "", DEFAULTS).allowed  # the later subscribe wins
    promo = decide(record.consents, "email", "promo", DEFAULTS)
    assert (promo.state, promo.allowed, promo.reason) == (
        ConsentState.UNSUBSCRIBED, False, "unsubscribed via link")
    assert decide(record.consents, "email", "news", DEFAULTS).allowed  # email is opt-out by default
    assert not decide({}, "sms", "", DEFAULTS).allowed  # sms is opt-in by default
    assert not decide(None, "email", "", DEFAULTS).allowed
    with pytest.raises(InvalidArgument) as bad:
        ev(3, "unsubscribed", "fax")
    assert [v.field for v in bad.value.violations] == ["properties.channel"]


def test_a_batch_dedupes_message_ids() -> None:
    ids = (f"id{n}" for n in count())

    def ev(message_id: str, *identifiers: Identifier,
           traits: dict[str, object] | None = None) -> Event:
        return parse_event(message_id=message_id, event_type=EventType.IDENTIFY, name="",
                           identifiers=[(i.type, i.value) for i in identifiers],
                           properties={}, traits=traits or {}, timestamp=None, source="",
                           now=T0)

    batch = [ev("m1", ident(ANON, "a1"), traits={"plan": "free"}),
             ev("m2", ident(USER, "u1"), ident(ANON, "a1"), traits={"plan": "pro"}),
             ev("m1", ident(ANON, "zzz")),
             ev("m0", ident(USER, "u9"))]

    edges = list(batch_edges(batch[:2], DEFAULTS).values())
    graph = plan_graph(edges, {}, {}, DEFAULTS, lambda: next(ids))
    plan = plan_batch(batch, seen={"m0": Outcome("e-old", "p-old", duplicate=True)},
                      graph=graph, held={}, stored=[], settings=DEFAULTS,
                      new_id=lambda: next(ids))
    profile = plan.outcomes[0].profile_id
    assert [(o.profile_id, o.duplicate) for o in plan.outcomes] == [
        (profile, False), (profile, False), (profile, True), ("p-old", True)]
    assert plan.outcomes[2].event_id == plan.outcomes[0].event_id
    assert set(graph.new_identifiers) == {ident(ANON, "a1"), ident(USER, "u1")}
    assert [{n: t.value for n, t in a.golden.traits.items()} for a in plan.accepted] == [
        {"plan": "free"}, {"plan": "pro"}]
    assert plan.new_profiles == {profile}


def test_workspace_ids_are_dns_labels() -> None:
    check_new_workspace("acme-shop", "Acme")
    for bad in ("ab", "-acme", "acme-", "Acme", "acme_shop", "a" * 64):
        with pytest.raises(InvalidArgument):
            check_new_workspace(bad, "")
