"""Group commit (cjo_platform.group_commit): concurrent submissions of one key share one call of
the batch function, each gets exactly its own results or its own error, keys never mix, and a
key's groups run one after another in arrival order; the window is paid only by a busy key."""

from __future__ import annotations

import asyncio

import pytest

from cjo_platform.group_commit import MIN_CALLERS_TO_WAIT_FOR, GroupCommit
from support import eventually


class Refused(ValueError):
    """An item's own fault."""


class Down(RuntimeError):
    """Nobody's fault (the database is down)."""


class Batches:
    """The batch function: records each call; ``bad`` items make a call fail with Refused."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, list[str]]] = []
        self.down = False
        self.gate: asyncio.Event | None = None  # while set to an unset event, calls wait

    async def __call__(self, key: str, items: list[str]) -> list[str]:
        self.calls.append((key, list(items)))
        if self.gate is not None:
            await self.gate.wait()
        if self.down:
            raise Down("connection refused")
        if any(item.startswith("bad") for item in items):
            raise Refused("cannot store " + ",".join(i for i in items if i.startswith("bad")))
        return [f"{key}:{item}" for item in items]


def groups(batches: Batches, window: float = 0.05, max_items: int = 100
           ) -> GroupCommit[str, str, str]:
    return GroupCommit(batches, window=window, max_items=max_items,
                       split=lambda error: isinstance(error, Refused))


async def test_concurrent_submissions_share_one_call_and_each_gets_its_own_results() -> None:
    batches = Batches()
    commit = groups(batches)
    answers = await asyncio.gather(*(commit.submit("acme", [f"a{i}", f"b{i}"])
                                     for i in range(10)))
    assert answers == [[f"acme:a{i}", f"acme:b{i}"] for i in range(10)]
    # One call, the submissions' items in arrival order, each one's own together.
    assert batches.calls == [("acme", [x for i in range(10) for x in (f"a{i}", f"b{i}")])]


async def test_keys_never_share_a_call() -> None:
    batches = Batches()
    commit = groups(batches)
    answers = await asyncio.gather(*(commit.submit(key, [f"{key}{i}"])
                                     for i in range(4) for key in ("acme", "globex")))
    assert answers == [[f"{key}:{key}{i}"] for i in range(4) for key in ("acme", "globex")]
    assert sorted(batches.calls) == [("acme", ["acme0", "acme1", "acme2", "acme3"]),
                                     ("globex", ["globex0", "globex1", "globex2", "globex3"])]


async def test_an_items_fault_reaches_only_the_submission_it_belongs_to() -> None:
    batches = Batches()
    commit = groups(batches)
    answers = await asyncio.gather(commit.submit("acme", ["a"]),
                                   commit.submit("acme", ["b", "bad1"]),
                                   commit.submit("acme", ["c"]), return_exceptions=True)
    assert answers[0] == ["acme:a"] and answers[2] == ["acme:c"]
    assert isinstance(answers[1], Refused) and str(answers[1]) == "cannot store bad1"
    # The group failed once, then each submission ran on its own, in arrival order.
    assert batches.calls == [("acme", ["a", "b", "bad1", "c"]), ("acme", ["a"]),
                             ("acme", ["b", "bad1"]), ("acme", ["c"])]


async def test_a_failure_that_is_nobodys_fault_fails_every_submission_of_the_group() -> None:
    batches = Batches()
    batches.down = True
    commit = groups(batches)
    answers = await asyncio.gather(*(commit.submit("acme", [str(i)]) for i in range(3)),
                                   return_exceptions=True)
    assert all(isinstance(a, Down) for a in answers)
    assert len(batches.calls) == 1  # not retried submission by submission


async def test_a_keys_groups_run_one_after_another_and_the_next_collects_meanwhile() -> None:
    batches = Batches()
    batches.gate = asyncio.Event()
    commit = groups(batches, window=0.001)
    first = asyncio.ensure_future(commit.submit("acme", ["1"]))
    await eventually(lambda: len(batches.calls) == 1)
    later = [asyncio.ensure_future(commit.submit("acme", [str(i)])) for i in range(2, 7)]
    # Its window passed: the next group is ready, and still waits for the first.
    lane = commit._lanes["acme"]
    await eventually(lambda: lane.groups and lane.groups[0].ready.is_set())
    assert len(batches.calls) == 1 and len(lane.groups[0].items) == 5
    batches.gate.set()
    assert await first == ["acme:1"]
    assert [await f for f in later] == [[f"acme:{i}"] for i in range(2, 7)]
    assert batches.calls == [("acme", ["1"]), ("acme", ["2", "3", "4", "5", "6"])]


async def test_a_submission_to_an_idle_key_goes_at_once_whatever_the_window() -> None:
    batches = Batches()
    commit = groups(batches, window=3600)
    assert await asyncio.wait_for(commit.submit("acme", ["1"]), timeout=10) == ["acme:1"]
    # Submissions of the same pass of the loop go with it.
    assert await asyncio.wait_for(asyncio.gather(
        *(commit.submit("globex", [str(i)]) for i in range(3))), timeout=10) == [
        ["globex:0"], ["globex:1"], ["globex:2"]]
    assert batches.calls == [("acme", ["1"]), ("globex", ["0", "1", "2"])]


async def test_a_key_whose_group_just_ended_is_busy_for_a_window() -> None:
    batches = Batches()
    commit = groups(batches, window=3600)
    assert await asyncio.wait_for(commit.submit("acme", ["1"]), timeout=10) == ["acme:1"]
    # A caller coming back at once (within the window) waits for others to come back too.
    second = asyncio.ensure_future(commit.submit("acme", ["2"]))
    await eventually(lambda: "acme" in commit._lanes and commit._lanes["acme"].groups)
    [group] = commit._lanes["acme"].groups
    assert not group.ready.is_set() and len(batches.calls) == 1
    # Once the window has passed since the last group ended, the key is idle again.
    group.ready.set()
    assert await second == ["acme:2"]
    commit._ended["acme"] -= 3600
    assert await asyncio.wait_for(commit.submit("acme", ["3"]), timeout=10) == ["acme:3"]


async def test_a_full_group_starts_without_waiting_for_the_window() -> None:
    batches = Batches()
    commit = groups(batches, window=3600, max_items=4)
    answers = await asyncio.wait_for(asyncio.gather(
        *(commit.submit("acme", [str(i), f"{i}b"]) for i in range(2))), timeout=10)
    assert answers == [["acme:0", "acme:0b"], ["acme:1", "acme:1b"]]


async def test_a_submission_that_fills_a_group_alone_or_no_window_goes_straight_through(
        ) -> None:
    batches = Batches()
    big = groups(batches, window=3600, max_items=3)
    assert await asyncio.wait_for(big.submit("acme", ["1", "2", "3"]), timeout=10) == [
        "acme:1", "acme:2", "acme:3"]
    off = groups(batches, window=0)
    answers = await asyncio.gather(off.submit("acme", ["4"]), off.submit("acme", ["5"]))
    assert answers == [["acme:4"], ["acme:5"]]
    assert batches.calls[1:] == [("acme", ["4"]), ("acme", ["5"])]


async def test_an_overflowing_submission_starts_the_next_group() -> None:
    batches = Batches()
    commit = groups(batches, max_items=3)
    answers = await asyncio.gather(commit.submit("acme", ["1", "2"]),
                                   commit.submit("acme", ["3", "4"]))
    assert answers == [["acme:1", "acme:2"], ["acme:3", "acme:4"]]
    assert batches.calls == [("acme", ["1", "2"]), ("acme", ["3", "4"])]


async def test_a_caller_that_gives_up_does_not_stop_the_others() -> None:
    batches = Batches()
    batches.gate = asyncio.Event()
    commit = groups(batches, window=0.001)
    impatient = asyncio.ensure_future(commit.submit("acme", ["1"]))
    patient = asyncio.ensure_future(commit.submit("acme", ["2"]))
    await eventually(lambda: len(batches.calls) == 1)
    impatient.cancel()
    batches.gate.set()
    assert await patient == ["acme:2"]
    with pytest.raises(asyncio.CancelledError):
        await impatient
    # The lane is gone once idle: a later submission starts a new one.
    assert await commit.submit("acme", ["3"]) == ["acme:3"]



async def test_a_busy_keys_next_group_waits_a_window_after_the_group_before_it_ended() -> None:
    """Its own window (from its first submission) passed while the group before it ran: it
    still waits a window from that group's end, collecting the calls that come back."""
    batches = Batches()
    batches.gate = asyncio.Event()
    commit = groups(batches, window=3600)
    first = asyncio.ensure_future(commit.submit("acme", ["1"]))
    await eventually(lambda: len(batches.calls) == 1)
    second = asyncio.ensure_future(commit.submit("acme", ["2"]))
    lane = commit._lanes["acme"]
    await eventually(lambda: len(lane.groups) == 1 and len(lane.groups[0].items) == 1)
    lane.groups[0].ready.set()  # as if its own window had passed while the first one ran
    batches.gate.set()
    assert await first == ["acme:1"]
    # The first ended: the next one waits a window from now, and takes what comes meanwhile.
    await eventually(lambda: not lane.groups[0].ready.is_set())
    third = asyncio.ensure_future(commit.submit("acme", ["3"]))
    await eventually(lambda: len(lane.groups[0].items) == 2)
    assert len(batches.calls) == 1 and not second.done()
    lane.groups[0].ready.set()  # that window passed
    assert await asyncio.wait_for(asyncio.gather(second, third), timeout=10) == [
        ["acme:2"], ["acme:3"]]
    assert batches.calls == [("acme", ["1"]), ("acme", ["2", "3"])]


async def pause_between_two_groups(window: float, first_takes: float = 0.0,
                                   callers: int = 1) -> float:
    """Two groups of one key, the second opened while the first (of ``callers`` submissions)
    runs, and whose own window passes meanwhile; the first runs at least ``first_takes``
    seconds. Returns the time from the first group's end to the second's start."""
    batches = Batches()
    batches.gate = asyncio.Event()
    started: list[float] = []
    ended: list[float] = []
    loop = asyncio.get_running_loop()

    async def timed(key: str, items: list[str]) -> list[str]:
        started.append(loop.time())
        try:
            return await batches(key, items)
        finally:
            ended.append(loop.time())

    commit = GroupCommit(timed, window=window, max_items=100)
    first = [asyncio.ensure_future(commit.submit("acme", [f"1.{n}"])) for n in range(callers)]
    await eventually(lambda: len(batches.calls) == 1)
    assert len(batches.calls[0][1]) == callers  # one group
    second = asyncio.ensure_future(commit.submit("acme", ["2"]))
    lane = commit._lanes["acme"]
    await eventually(lambda: lane.groups and lane.groups[0].ready.is_set())
    await eventually(lambda: loop.time() - started[0] >= first_takes, interval=0.005)
    batches.gate.set()
    assert await asyncio.wait_for(asyncio.gather(*first, second), timeout=10) == [
        *([f"acme:1.{n}"] for n in range(callers)), ["acme:2"]]
    return started[1] - ended[0]


async def test_the_pause_after_a_group_ends_on_its_own() -> None:
    """The next group's timer, set when it opened, is moved to a window after the group
    before it ended: it starts then, not before, and not later than needed."""
    window = 0.05
    assert await pause_between_two_groups(window) >= window * 0.99


@pytest.mark.parametrize(("took", "pause", "below"), [(0.12, 0.12, None), (0.6, 0.2, 0.4)])
async def test_the_pause_after_a_slow_group_is_as_long_as_it_took_within_ten_windows(
        took: float, pause: float, below: float | None) -> None:
    """Under load a group takes long because the process is busy: the next one waits as long
    again (the calls it answered come back and join), but never more than ten windows."""
    gap = await pause_between_two_groups(0.02, first_takes=took,
                                         callers=MIN_CALLERS_TO_WAIT_FOR)
    assert gap >= pause * 0.99
    if below is not None:  # ten windows, not the whole time the first group took
        assert gap < below


async def test_a_slow_group_of_few_callers_pauses_the_window_only() -> None:
    """Calls at a moderate rate on a loaded machine: the group took long, but nobody it
    answered comes back at once; waiting as long again only delays the next calls (review
    rgroup)."""
    gap = await pause_between_two_groups(0.02, first_takes=0.6,
                                         callers=MIN_CALLERS_TO_WAIT_FOR - 1)
    assert 0.02 * 0.99 <= gap < 0.15


async def test_a_full_group_does_not_wait_after_the_group_before_it() -> None:
    batches = Batches()
    batches.gate = asyncio.Event()
    commit = groups(batches, window=3600, max_items=2)
    first = asyncio.ensure_future(commit.submit("acme", ["1"]))
    await eventually(lambda: len(batches.calls) == 1)
    # These fill the next group: it goes as soon as the first has ended, without a window.
    more = [asyncio.ensure_future(commit.submit("acme", [str(i)])) for i in (2, 3)]
    batches.gate.set()
    assert await asyncio.wait_for(asyncio.gather(first, *more), timeout=10) == [
        ["acme:1"], ["acme:2"], ["acme:3"]]
    assert batches.calls == [("acme", ["1"]), ("acme", ["2", "3"])]

