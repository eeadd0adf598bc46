"""trim_profile, the bound on a copy of a profile grown past the limits by merges: it leaves out
what makes the size, and never what its readers need for little room (the address trait, the
newest identifier of each type)."""

from __future__ import annotations

from cjo.identity.v1 import profile_pb2
from cjo_orchestration.domain.journeys import Channel
from cjo_orchestration.domain.orders import recipient_address
from cjo_platform.logging import LogOnce
from cjo_platform.profiles import trim_profile, view_from_proto

BOUND = 768 * 1024
ANSWERED = (("merged_from", True, ""), ("identifiers", True, "type"), ("consents", False, ""))


def profile(traits: dict[str, str], anonymous_ids: int) -> profile_pb2.Profile:
    """Identifiers in link order: an old email and a phone, ``anonymous_ids`` of 200 characters,
    the new email last."""
    p = profile_pb2.Profile(profile_id="p1")
    p.traits.update(traits)
    for key in traits:
        p.trait_provenance[key].source = "web"
    p.identifiers.add(type="email", value="old@example.com")
    p.identifiers.add(type="phone", value="+15550100")
    for i in range(anonymous_ids):
        p.identifiers.add(type="anonymous_id", value=f"{i:06d}" + "a" * 194)
    p.identifiers.add(type="email", value="new@example.com")
    return p


def test_when_the_identifiers_make_the_size_the_oldest_go_and_every_trait_stays() -> None:
    traits = {"email": "new@example.com", "first_name": "Ada", "preferences": "x" * 5000}
    p = profile(traits, 4000)
    assert p.ByteSize() > BOUND

    assert trim_profile(p, BOUND, "traits", ANSWERED, provenance="trait_provenance")

    assert p.ByteSize() <= BOUND
    assert p.ByteSize() > BOUND - 1024  # as few left out as fit
    assert dict(p.traits) == traits and set(p.trait_provenance) == set(traits)
    kept = [(i.type, i.value) for i in p.identifiers]
    # The oldest anonymous ids went; the newest of each type stayed, in link order per type.
    assert ("phone", "+15550100") in kept and ("email", "old@example.com") not in kept
    assert [v for t, v in kept if t == "email"] == ["new@example.com"]
    assert [v for t, v in kept if t == "anonymous_id"][-1] == "003999" + "a" * 194
    assert recipient_address(Channel.EMAIL, view_from_proto(p)) == "new@example.com"
    assert recipient_address(Channel.SMS, view_from_proto(p)) == "+15550100"


def test_when_large_traits_make_the_size_the_largest_go_and_the_lists_stay() -> None:
    traits = {"email": "new@example.com", "first_name": "Ada", "notes": "n" * 5000,
              **{f"blob_{i}": chr(97 + i) * 240_000 for i in range(4)}}
    p = profile(traits, 100)
    identifiers = list(p.identifiers)

    assert trim_profile(p, BOUND, "traits", ANSWERED, provenance="trait_provenance")

    assert p.ByteSize() <= BOUND
    # One blob covers the excess (~200 KB): the others, the 5 KB notes and the small traits stay.
    assert len([k for k in p.traits if k.startswith("blob_")]) == 3
    assert {"email", "first_name", "notes"} <= set(p.traits)
    assert set(p.trait_provenance) == set(p.traits)
    assert list(p.identifiers) == identifiers


def test_small_traits_and_the_newest_identifiers_go_only_when_nothing_else_is_left() -> None:
    # 1,000 traits of 900 bytes: nothing else to leave out.
    p = profile({f"t{i:04d}": "v" * 900 for i in range(1000)}, 10)
    assert trim_profile(p, BOUND, "traits", ANSWERED, provenance="trait_provenance")
    assert p.ByteSize() <= BOUND
    assert 800 < len(p.traits) < 1000
    assert [i.value for i in p.identifiers if i.type == "email"] == ["new@example.com"]

    within = profile({"email": "a@example.com"}, 10)
    before = within.SerializeToString()
    assert not trim_profile(within, BOUND, "traits", ANSWERED, provenance="trait_provenance")
    assert within.SerializeToString() == before


def test_a_warning_is_logged_once_per_key_per_period() -> None:
    once = LogOnce(3600.0, size=2)
    assert once("p1") and not once("p1") and once("p2")
    assert once("p3")  # p1 forgotten: at most size keys remembered
    assert once("p1")
    always = LogOnce(0.0)
    assert always("p1") and always("p1")
