"""The revision cache alone (identity's kept segments and orchestration's kept triggers use
it): a value is read again when its revision moved or it is older than the bound, the least
recently used go first, and writer threads can share it."""

from __future__ import annotations

import sys
import threading
from collections.abc import Collection, Iterator

import pytest

from cjo_platform.revision_cache import MAX_AGE_SECONDS, RevisionCache


class Source:
    """The database's side: what is stored now, and which keys each read asked for."""

    def __init__(self) -> None:
        self.stored: dict[str, str] = {}
        self.reads: list[list[str]] = []

    def read(self, keys: Collection[str]) -> dict[str, str]:
        self.reads.append(sorted(keys))
        return {key: self.stored.get(key, "") for key in keys}


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


def test_a_value_is_read_again_only_when_its_revision_moved(clock: Clock) -> None:
    source, cache = Source(), RevisionCache[str, str](monotonic=clock)
    source.stored.update(a="a1", b="b1")
    assert cache.get({"a": 1, "b": 7}, source.read) == {"a": "a1", "b": "b1"}
    source.stored.update(a="a2", b="b2")
    assert cache.get({"a": 1, "b": 7}, source.read) == {"a": "a1", "b": "b1"}  # kept
    assert cache.get({"a": 2, "b": 7}, source.read) == {"a": "a2", "b": "b1"}
    # One read for all the keys a call misses, and none for those it finds.
    assert source.reads == [["a", "b"], ["a"]]


def test_a_value_is_used_for_the_bound_at_most_whatever_its_revision(clock: Clock) -> None:
    """A change that did not move the revision (a restore, a fix in SQL, a replica on a release
    from before the revision) is seen once the value is ``max_age`` old: counted from before
    its read, not after."""
    source, cache = Source(), RevisionCache[str, str](monotonic=clock)
    source.stored["a"] = "a1"
    cache.get({"a": 1}, source.read)
    source.stored["a"] = "a2"  # behind the revision's back
    clock.now += MAX_AGE_SECONDS - 0.001
    assert cache.get({"a": 1}, source.read) == {"a": "a1"}
    clock.now += 0.001
    assert cache.get({"a": 1}, source.read) == {"a": "a2"}
    assert len(source.reads) == 2
    assert MAX_AGE_SECONDS == 5.0


def test_the_least_recently_used_go_first(clock: Clock) -> None:
    source, cache = Source(), RevisionCache[str, str](capacity=2, monotonic=clock)
    cache.get({"w1": 0}, source.read)
    cache.get({"w2": 0}, source.read)
    cache.get({"w1": 0}, source.read)  # used: w2 is now the least recently used
    cache.get({"w3": 0}, source.read)  # one too many: w2 goes
    assert cache.keys() == ["w1", "w3"]
    cache.get({"w2": 0}, source.read)
    assert cache.keys() == ["w3", "w2"]
    assert source.reads == [["w1"], ["w2"], ["w3"], ["w2"]]


@pytest.fixture
def switching_often() -> Iterator[None]:
    """Threads switch every microsecond: a look-up meets evictions mid-way if it can."""
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        yield
    finally:
        sys.setswitchinterval(interval)


def test_writer_threads_share_one_cache(clock: Clock, switching_often: None) -> None:
    cache = RevisionCache[int, tuple[int, int]](capacity=4, monotonic=clock)
    errors: list[BaseException] = []
    wrong: list[tuple[int, int, tuple[int, int]]] = []
    start = threading.Barrier(8)

    def writer(seed: int) -> None:
        start.wait()
        try:
            for n in range(10000):
                # Mostly found (a look-up), often missed (a keep and an eviction).
                key, revision = (seed * 7 + n) % 6, n // 2000
                found = cache.get({key: revision, (key + 1) % 6: revision},
                                  lambda keys, r=revision: {k: (k, r) for k in keys})
                wrong.extend((key, revision, value) for k, value in found.items()
                             if value != (k, revision))
        except BaseException as exc:  # reported below, whatever it is
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(seed,)) for seed in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == [] and wrong == []
    assert len(cache.keys()) <= 4
