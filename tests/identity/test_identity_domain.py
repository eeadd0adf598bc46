"""Unit tests of identity's domain rules: normalisation, resolution, trait survivorship."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from itertools import count

import pytest

from cjo_identity.domain.events import Event, EventType, parse_event
from cjo_identity.domain.identifiers import Identifier, IdentifierType, parse_identifier
from cjo_identity.domain.ingest import Outcome, plan_batch
from cjo_identity.domain.resolution import resolve
from cjo_identity.domain.traits import Trait, apply_traits
from cjo_identity.domain.workspaces import check_new_workspace
from cjo_platform.errors import InvalidArgument, Violations

T0 = datetime(2026, 3, 1, tzinfo=UTC)
USER = IdentifierType.USER_ID
ANON = IdentifierType.ANONYMOUS_ID
EMAIL = IdentifierType.EMAIL


def ident(kind: IdentifierType, value: str) -> Identifier:
    return Identifier(kind, value)


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


def test_an_event_without_time_happened_when_received_and_repeats_collapse() -> None:
    event = parse_event(message_id="m", event_type=EventType.IDENTIFY, name="",
                        identifiers=[("email", "A@x.io"), ("email", "a@x.io ")], properties={},
                        traits={}, timestamp=None, source="", now=T0)
    assert event.timestamp == T0
    assert event.identifiers == (ident(EMAIL, "a@x.io"),)


def test_the_strongest_known_identifier_decides_and_others_are_not_relinked() -> None:
    owners = {ident(ANON, "a1"): "p-anon", ident(USER, "u1"): "p-user"}
    resolution = resolve([ident(ANON, "a1"), ident(USER, "u1"), ident(EMAIL, "e@x.io")], owners)
    assert resolution.profile_id == "p-user"
    assert resolution.link == (ident(EMAIL, "e@x.io"),)
    assert resolution.conflicts == (ident(ANON, "a1"),)  # merging is issue 3


def test_unknown_identifiers_need_a_new_profile() -> None:
    resolution = resolve([ident(ANON, "a1")], {})
    assert resolution.profile_id is None
    assert resolution.link == (ident(ANON, "a1"),)


def test_traits_keep_the_value_of_the_latest_event_time() -> None:
    held = {"plan": Trait("pro", T0)}
    late = apply_traits(held, {"plan": "free", "city": "Paris"}, T0 - timedelta(hours=1))
    assert late == {"plan": Trait("pro", T0), "city": Trait("Paris", T0 - timedelta(hours=1))}
    newer = apply_traits(late, {"plan": "team"}, T0 + timedelta(hours=1))
    assert newer["plan"] == Trait("team", T0 + timedelta(hours=1))
    tie = apply_traits(newer, {"plan": "fixed"}, T0 + timedelta(hours=1))
    assert tie["plan"].value == "fixed"  # same time: the later arrival corrects it


def test_a_batch_links_identifiers_as_it_goes_and_dedupes_message_ids() -> None:
    ids = (f"id{n}" for n in count())

    def ev(message_id: str, *identifiers: Identifier,
           traits: dict[str, object] | None = None) -> Event:
        return parse_event(message_id=message_id, event_type=EventType.IDENTIFY, name="",
                           identifiers=[(i.type.value, i.value) for i in identifiers],
                           properties={}, traits=traits or {}, timestamp=None, source="",
                           now=T0)

    plan = plan_batch(
        [ev("m1", ident(ANON, "a1"), traits={"plan": "free"}),
         ev("m2", ident(USER, "u1"), ident(ANON, "a1"), traits={"plan": "pro"}),
         ev("m1", ident(ANON, "zzz")),
         ev("m0", ident(USER, "u9"))],
        seen={"m0": Outcome("e-old", "p-old", duplicate=True)}, owners={}, traits={},
        new_id=lambda: next(ids))
    profile = plan.outcomes[0].profile_id
    assert [(o.profile_id, o.duplicate) for o in plan.outcomes] == [
        (profile, False), (profile, False), (profile, True), ("p-old", True)]
    assert plan.outcomes[2].event_id == plan.outcomes[0].event_id
    assert plan.links == {ident(ANON, "a1"): profile, ident(USER, "u1"): profile}
    assert [a.profile_traits for a in plan.accepted] == [{"plan": "free"}, {"plan": "pro"}]
    assert plan.new_profiles == {profile}
    assert plan.changed_profiles == set()


def test_workspace_ids_are_dns_labels() -> None:
    check_new_workspace("acme-shop", "Acme")
    for bad in ("ab", "-acme", "acme-", "Acme", "acme_shop", "a" * 64):
        with pytest.raises(InvalidArgument):
            check_new_workspace(bad, "")
