"""The watchdog that interrupts renders past their time limit: its exception never escapes a
guarded call, so the pool threads and the event loop that run renders go on working."""

from __future__ import annotations

import asyncio
import dis
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from cjo_content.domain import watchdog as watchdog_module
from cjo_content.domain.watchdog import DeadlinePassed, Watchdog, _Call, _Overdue


def test_the_watchdog_never_leaks_its_exception_into_the_calling_thread() -> None:
    """Calls ending right around their deadline, on a pool thread and on an event loop's:
    some are interrupted, some finish, and the threads go on working afterwards."""
    watchdog = Watchdog(interval=0.002)

    def spin(seconds: float) -> int:
        end = time.monotonic() + seconds
        n = 0
        while time.monotonic() < end:
            n += 1
        return n

    def near_deadline_calls() -> int:
        interrupted = 0
        for i in range(150):
            try:
                watchdog.call(lambda i=i: spin(0.004 + (i % 7) * 0.003), 0.005)
            except DeadlinePassed:
                interrupted += 1
        return interrupted

    def after() -> str:
        spin(0.2)  # room for a stray exception to be delivered
        return threading.current_thread().name

    with ThreadPoolExecutor(1, thread_name_prefix="render") as pool:
        interrupted = pool.submit(near_deadline_calls).result()
        assert 0 < interrupted < 150
        assert pool.submit(after).result().startswith("render")

    async def on_the_loop() -> tuple[int, str]:
        count = near_deadline_calls()
        await asyncio.sleep(0)
        return count, await asyncio.to_thread(after)

    interrupted, name = asyncio.run(on_the_loop())
    assert 0 < interrupted < 150 and name
    assert spin(0.2) > 0  # the main thread too


class _Finalized:
    def __del__(self) -> None:
        sum(range(200))  # a finalizer doing a little Python work (say, logging)


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_an_interrupt_swallowed_in_a_finalizer_is_raised_again() -> None:
    """An interrupt delivered inside ``__del__`` is printed and lost there; the watchdog fires
    again while the call stays registered, so the call still ends near its limit."""
    watchdog = Watchdog(interval=0.01)

    def work() -> str:
        end = time.monotonic() + 2.0
        while time.monotonic() < end:
            _Finalized()  # dropped at once: __del__ runs on this thread
        return "ran to the end"

    for _ in range(3):
        started = time.monotonic()
        with pytest.raises(DeadlinePassed):
            watchdog.call(work, 0.1)
        assert time.monotonic() - started < 1.0


def test_a_short_deadline_holds_while_a_long_one_is_waited_for() -> None:
    """The watchdog sleeps to the nearest deadline: a short call registered while it waits
    for a long one wakes it (the event loop's inline renders use 30 ms)."""
    watchdog = Watchdog()

    def spin(seconds: float) -> None:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            pass

    with ThreadPoolExecutor(1) as pool:
        long_call = pool.submit(watchdog.call, spin, 1.0, 0.8)
        time.sleep(0.05)  # the watchdog now sleeps to the long call's deadline
        started = time.monotonic()
        with pytest.raises(DeadlinePassed):
            watchdog.call(spin, 0.03, 1.0)
        assert time.monotonic() - started < 0.2
        long_call.result()


def test_an_interrupt_while_unregistering_never_escapes() -> None:
    """Review rendercap2 M1: a backward jump (the ``continue`` of a retry loop) is an interrupt
    check point, and one in call()'s handler, outside every try, let a late fire escape with
    the call still registered: call() has none. Two fires delivered as it unregisters (at the
    first statement of _remove, before its lock: still registered; no more come once
    ``removing`` is set) still end in DeadlinePassed, unregistered."""
    jumps = [i.offset for i in dis.get_instructions(Watchdog.call)
             if "JUMP_BACKWARD" in i.opname]
    assert jumps == []
    watchdog = Watchdog()
    remove = watchdog._remove
    removes: list[bool] = []

    def interrupted_remove(guarded: _Call) -> None:
        removes.append(guarded.removing)
        if len(removes) <= 2:
            raise _Overdue
        remove(guarded)

    watchdog._remove = interrupted_remove  # type: ignore[method-assign]
    with pytest.raises(DeadlinePassed):
        watchdog.call(lambda: "rendered", 10.0)
    assert removes == [True, True, True]
    assert threading.get_ident() not in watchdog._calls


def test_an_overdue_call_is_fired_at_once_per_interval_and_not_while_unregistering(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Review rendercap2 M1: every wake-up (a nearer deadline registering, another deadline)
    fired at every overdue call again, 37 times a second; and a call unregistering is left
    alone, so no interrupt can reach it past its finally."""
    fired: list[int] = []
    monkeypatch.setattr(watchdog_module, "_raise_in",
                        lambda thread, exc: exc is not None and fired.append(thread))
    watchdog = Watchdog(interval=0.1)
    overdue, leaving = _Call(1, 10.0), _Call(2, 10.0)
    leaving.removing = True
    watchdog._calls = {1: overdue, 2: leaving, 3: _Call(3, 12.0)}
    assert watchdog._fire(10.0) == pytest.approx(10.1)
    assert watchdog._fire(10.03) == pytest.approx(10.1)  # woken early: not fired again
    assert watchdog._fire(10.099) == pytest.approx(10.1)
    assert fired == [1]
    watchdog._fire(10.1)
    assert fired == [1, 1]
