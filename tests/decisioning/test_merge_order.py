"""identity's merges reach decisioning keyed by their survivor (different bus partitions), so a
chain a -> b -> c may arrive b -> c first. Whatever the order, every merged id ends at the
person's last survivor: a reward of that survivor finds every decision of the person, the
person's decisions are listed under it, and erasing it erases them all."""

from __future__ import annotations

import itertools
from datetime import timedelta

from outcomes_support import START, merged, opened, running, sent, track
from test_erasure import erased

from cjo.decisioning.v1 import decisioning_service_pb2 as pb
from cjo_decisioning.adapters.tables import REWARDED, decisions, engagement_hours, profile_aliases
from support import Backend, as_service

HOUR = timedelta(hours=1)
CHAIN = [("a", "b"), ("b", "c"), ("c", "d")]


async def test_a_chain_of_merges_ends_at_the_last_survivor_in_any_order(
        backend: Backend) -> None:
    async with running(backend) as d:
        for n, order in enumerate(itertools.permutations(CHAIN)):
            ws = f"ws-{n}"
            await d.events(*(merged(m, s, START) for m, s in order), workspace=as_service(ws))
            rows = await d.rows(profile_aliases, profile_aliases.c.workspace_id == ws)
            assert sorted((r.profile_id, r.survivor_profile_id) for r in rows) == [
                ("a", "d"), ("b", "d"), ("c", "d")], order
            # One merge per call, too (each its own transaction).
            ws = f"ws-one-{n}"
            for m, s in order:
                await d.events(merged(m, s, START), workspace=as_service(ws))
            rows = await d.rows(profile_aliases, profile_aliases.c.workspace_id == ws)
            assert sorted((r.profile_id, r.survivor_profile_id) for r in rows) == [
                ("a", "d"), ("b", "d"), ("c", "d")], order


async def test_merges_out_of_order_keep_the_person_s_decisions(backend: Backend) -> None:
    async with running(backend) as d:
        await d.point("home", "signed_up")
        for profile in "abc":
            await d.decided(f"d-{profile}", "home", profile)
            await d.facts(sent(f"m-{profile}", f"d-{profile}", START + HOUR, profile),
                          opened(f"m-{profile}", START + HOUR, profile))
        # b -> c is forwarded first, then a -> b (and a merge back, c -> a, closing a cycle).
        await d.events(merged("b", "c", START + 2 * HOUR))
        await d.events(merged("a", "b", START + 2 * HOUR))
        await d.events(merged("c", "a", START + 2 * HOUR))
        aliases = await d.rows(profile_aliases)
        assert sorted((r.profile_id, r.survivor_profile_id) for r in aliases) == [
            ("a", "c"), ("b", "c")]
        # a's engagement went to c, not to b (merged away already).
        hours = await d.rows(engagement_hours, engagement_hours.c.profile_id != "")
        assert [(h.profile_id, h.engagements) for h in hours] == [("c", 3)]

        listed = await d.stub.ListDecisions(pb.ListDecisionsRequest(profile_id="c"),
                                            metadata=as_service("ws-a"))
        assert sorted(x.decision_id for x in listed.decisions) == ["d-a", "d-b", "d-c"]

        # c's conversion rewards the person's last exposure; a's decision is theirs too.
        await d.events(track("e1", "c", "signed_up", START + 3 * HOUR),
                       track("e2", "c", "signed_up", START + 3 * HOUR),
                       track("e3", "c", "signed_up", START + 3 * HOUR))
        assert {(await d.decision(f"d-{p}")).outcome for p in "abc"} == {REWARDED}

        await d.events(erased("c"))
        rows = await d.rows(decisions)
        assert sorted((r.decision_id, r.profile_id) for r in rows) == [
            ("d-a", ""), ("d-b", ""), ("d-c", "")]
        assert sorted((r.profile_id, r.survivor_profile_id)
                      for r in await d.rows(profile_aliases)) == [("a", ""), ("b", ""), ("c", "")]
