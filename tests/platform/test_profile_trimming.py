"""trim_profile, the bound on a copy of a profile grown past the limits by merges: it leaves out
what makes the size, and never what its readers need for little room (the address, time zone,
locale and name traits, the newest identifier of each type)."""

from __future__ import annotations

from cjo.common.v1 import common_pb2
from cjo.identity.v1 import consent_pb2, profile_pb2
from cjo_orchestration.domain.journeys import Channel
from cjo_orchestration.domain.orders import recipient_address
from cjo_platform.logging import LogOnce
from cjo_platform.profiles import (
    KEPT_MERGES,
    PROFILE_TRIM_FIELDS,
    trim_profile,
    view_from_proto,
)

BOUND = 768 * 1024
EMAIL, SMS = common_pb2.CHANNEL_EMAIL, common_pb2.CHANNEL_SMS


def profile(traits: dict[str, str], anonymous_ids: int) -> profile_pb2.Profile:
    """Identifiers in link order: an old email and a phone, ``anonymous_ids`` of 200 characters,
    the new email last; one merge made just now; the person unsubscribed from email."""
    p = profile_pb2.Profile(profile_id="p1")
    p.traits.update(traits)
    for key in traits:
        p.trait_provenance[key].source = "web"
    p.identifiers.add(type="email", value="old@example.com")
    p.identifiers.add(type="phone", value="+15550100")
    for i in range(anonymous_ids):
        p.identifiers.add(type="anonymous_id", value=f"{i:06d}" + "a" * 194)
    p.identifiers.add(type="email", value="new@example.com")
    merge = p.merged_from.add(merged_profile_id="visitor", survivor_profile_id="p1")
    merge.merge_time.GetCurrentTime()
    p.consents.add(channel=EMAIL, state=consent_pb2.CONSENT_STATE_UNSUBSCRIBED)
    return p


def trimmed(p: profile_pb2.Profile, slack: int = 1024) -> profile_pb2.Profile:
    """``p`` bounded, twice over: the same profile is always cut the same way, and no more
    than ``slack`` (the last element left out) below the bound."""
    again = profile_pb2.Profile()
    again.CopyFrom(p)
    assert trim_profile(p, BOUND, "traits", **PROFILE_TRIM_FIELDS)
    assert trim_profile(again, BOUND, "traits", **PROFILE_TRIM_FIELDS)
    assert p.SerializeToString(deterministic=True) == again.SerializeToString(deterministic=True)
    assert BOUND - slack < p.ByteSize() <= BOUND  # as little left out as fits
    return p


def test_when_the_identifiers_make_the_size_the_oldest_go_and_the_rest_stays() -> None:
    # The review's case: ~4,000 anonymous ids and a merge made just now. The oldest identifiers
    # cover the excess, so only as many of them go and every trait stays, the 5 KB one a
    # template reads too (review rbigrow3: it went first).
    traits = {"email": "new@example.com", "first_name": "Ada", "preferences": "x" * 5000}
    p = trimmed(profile(traits, 4000))

    assert dict(p.traits) == traits and set(p.trait_provenance) == set(traits)
    kept = [(i.type, i.value) for i in p.identifiers]
    # The oldest anonymous ids went; the newest of each type stayed, in link order.
    assert kept[0] == ("phone", "+15550100") and kept[-1] == ("email", "new@example.com")
    assert ("email", "old@example.com") not in kept
    assert [v for t, v in kept if t == "anonymous_id"][-1] == "003999" + "a" * 194
    assert [m.merged_profile_id for m in p.merged_from] == ["visitor"]  # the merge wait's
    assert view_from_proto(p)["consent"]["email"] == "unsubscribed"
    assert recipient_address(Channel.EMAIL, view_from_proto(p)) == "new@example.com"
    assert recipient_address(Channel.SMS, view_from_proto(p)) == "+15550100"


def test_when_large_traits_make_the_size_the_largest_go_and_the_lists_stay() -> None:
    traits = {"email": "new@example.com", "first_name": "Ada", "notes": "n" * 5000,
              **{f"blob_{i}": chr(97 + i) * 240_000 for i in range(4)}}
    p = profile(traits, 100)
    lists = (list(p.identifiers), list(p.merged_from), list(p.consents))

    trimmed(p, slack=240_100)

    # One blob covers the excess (~200 KB): the others, the 5 KB notes and the small traits stay.
    assert sorted(k for k in p.traits if k.startswith("blob_")) == ["blob_0", "blob_1",
                                                                     "blob_2"]
    assert {"email", "first_name", "notes"} <= set(p.traits)
    assert set(p.trait_provenance) == set(p.traits)
    assert (list(p.identifiers), list(p.merged_from), list(p.consents)) == lists


def test_when_small_traits_make_the_size_they_go_and_the_lists_stay_whole() -> None:
    # The review's case: 4 people with ~200 KB of small traits each, joined by one identify.
    # The lists cannot cover the excess, so they stay whole (the merge wait reads merged_from,
    # conditions the consent); only as many of the largest small traits go as cover it.
    p = profile({f"p{n}_t{i:03d}": chr(97 + n) * (500 + n) for n in range(4)
                 for i in range(400)}, 6)
    for n in range(1, 4):
        p.merged_from.add(merged_profile_id=f"m{n}", survivor_profile_id="p1")
    lists = (list(p.identifiers), list(p.merged_from), list(p.consents))

    trimmed(p)

    assert (list(p.identifiers), list(p.merged_from), list(p.consents)) == lists
    left_out = {f"p{n}_t{i:03d}" for n in range(4) for i in range(400)} - set(p.traits)
    assert left_out and {key[:2] for key in left_out} == {"p3"}  # the largest (503 bytes)
    assert max(left_out) == "p3_t399"  # largest first, then by name
    assert set(p.trait_provenance) == set(p.traits)
    assert view_from_proto(p)["consent"]["email"] == "unsubscribed"


def test_the_lists_shorten_last_keeping_the_newest_merges_and_the_channel_consents() -> None:
    # No traits to leave out: ~50 KB of merges, ~790 KB of consents to topics. The oldest
    # merges go (the newest KEPT_MERGES stay), then the topic consents said first; the
    # channel-wide consents and the newest identifier of each type stay.
    p = profile({}, 0)
    for n in range(300):
        merge = p.merged_from.add(merged_profile_id=f"m{n:04d}" + "m" * 150,
                                  survivor_profile_id="p1")
        merge.merge_time.seconds = 1_000_000 + n
    for n in range(4500):
        consent = p.consents.add(channel=SMS, topic=f"t{n:04d}" + "t" * 60,
                                 state=consent_pb2.CONSENT_STATE_SUBSCRIBED, source="s" * 100)
        consent.update_time.seconds = 2_000_000 - n  # the last in the list said first
    p.consents.add(channel=SMS, state=consent_pb2.CONSENT_STATE_SUBSCRIBED)
    p.traits["email"] = "new@example.com"

    trimmed(p)

    assert [m.merged_profile_id[:5] for m in p.merged_from] == [
        f"m{n:04d}" for n in range(300 - KEPT_MERGES, 300)]
    topics = [c.topic[:5] for c in p.consents if c.topic]
    assert 4000 < len(topics) < 4500 and topics == [f"t{n:04d}" for n in range(len(topics))]
    consent = view_from_proto(p)["consent"]
    assert consent["email"] == "unsubscribed" and consent["sms"] == "subscribed"
    assert [i.value for i in p.identifiers] == ["+15550100", "new@example.com"]
    # An address trait goes only after merges and consents (KEPT_TRAITS; review rbigrow3).
    assert dict(p.traits) == {"email": "new@example.com"}


def test_a_profile_within_the_bound_is_left_alone() -> None:
    within = profile({"email": "a@example.com"}, 10)
    before = within.SerializeToString()
    assert not trim_profile(within, BOUND, "traits", **PROFILE_TRIM_FIELDS)
    assert within.SerializeToString() == before


def test_a_warning_is_logged_once_per_key_per_period() -> None:
    once = LogOnce(3600.0, size=2)
    assert once("p1") and not once("p1") and once("p2")
    assert once("p3")  # p1 forgotten: at most size keys remembered
    assert once("p1")
    always = LogOnce(0.0)
    assert always("p1") and always("p1")
