"""Scheduling and cancelling from other threads."""

from __future__ import annotations

import sys
import threading
import time

import pytest
from gev_timers import LoopTimers, MockClock, MonotonicClock, Timer


class Waker:
    """Stands in for the loop's poller wake-up (a socketpair write, in gev-core)."""

    def __init__(self) -> None:
        self.calls = 0
        self.event = threading.Event()

    def __call__(self) -> None:
        self.calls += 1
        self.event.set()


def in_thread(fn: object) -> None:
    assert callable(fn)
    th = threading.Thread(target=fn)
    th.start()
    th.join(5)
    assert not th.is_alive()


def test_earlier_timer_from_other_thread_wakes_loop() -> None:
    clock = MockClock()
    waker = Waker()
    timers = LoopTimers(clock, waker)
    timers.next_deadline()  # bind the loop thread
    timers.run_after(10.0, print)
    assert timers.next_deadline() == 10.0  # loop now "sleeps" until 10
    fired: list[str] = []
    handles: list[Timer] = []
    in_thread(lambda: handles.append(timers.run_after(2.0, fired.append, "x")))
    assert waker.calls == 1
    assert handles[0].pending
    assert timers.next_deadline() == 2.0
    clock.set(2.0)
    timers.run_due(2.0)
    assert fired == ["x"]


def test_later_timer_from_other_thread_does_not_wake() -> None:
    clock = MockClock()
    waker = Waker()
    timers = LoopTimers(clock, waker)
    timers.next_deadline()
    timers.run_after(1.0, print)
    assert timers.next_deadline() == 1.0
    in_thread(lambda: timers.run_after(5.0, print))
    in_thread(lambda: timers.run_every(5.0, print))
    assert waker.calls == 0
    assert len(timers) == 3


def test_burst_from_other_thread_wakes_once() -> None:
    clock = MockClock()
    waker = Waker()
    timers = LoopTimers(clock, waker)
    assert timers.next_deadline() is None

    def burst() -> None:
        for _ in range(100):
            timers.run_after(3.0, print)

    in_thread(burst)
    assert waker.calls == 1


def test_cancel_from_other_thread() -> None:
    clock = MockClock()
    timers = LoopTimers(clock)
    timers.next_deadline()
    fired: list[str] = []
    t = timers.run_after(1.0, fired.append, "x")
    results: list[bool] = []
    in_thread(lambda: results.append(t.cancel()))
    assert results == [True]
    timers.run_due(2.0)
    assert fired == []


def test_run_due_from_second_thread_is_refused() -> None:
    timers = LoopTimers(MockClock())
    timers.next_deadline()
    errors: list[BaseException] = []

    def other() -> None:
        try:
            timers.run_due(1.0)
        except RuntimeError as exc:
            errors.append(exc)

    in_thread(other)
    assert len(errors) == 1


def test_real_loop_with_cross_thread_schedules_and_cancels() -> None:
    """A minimal real loop (Event as poller) against threads hammering it."""
    waker = Waker()
    timers = LoopTimers(MonotonicClock(), waker)
    fired: list[int] = []
    cancelled: list[int] = []
    stop = threading.Event()
    clock = timers.clock

    def loop() -> None:
        while not stop.is_set():
            deadline = timers.next_deadline()
            timeout = 0.05 if deadline is None else max(0.0, deadline - clock.now())
            waker.event.wait(min(timeout, 0.05))
            waker.event.clear()
            timers.run_due(clock.now())

    loop_thread = threading.Thread(target=loop)
    loop_thread.start()

    def producer(base: int) -> None:
        for i in range(200):
            t = timers.run_after(0.001 * (i % 7), fired.append, base + i)
            if i % 3 == 0 and t.cancel():
                cancelled.append(base + i)

    producers = [threading.Thread(target=producer, args=(k * 1000,)) for k in range(4)]
    for p in producers:
        p.start()
    for p in producers:
        p.join(10)
    deadline = time.monotonic() + 5
    while len(fired) + len(cancelled) < 800 and time.monotonic() < deadline:
        time.sleep(0.01)
    stop.set()
    waker()
    loop_thread.join(5)
    assert not loop_thread.is_alive()
    assert sorted(fired + cancelled) == sorted(k * 1000 + i for k in range(4) for i in range(200))
    assert not set(fired) & set(cancelled)


def cancel_all(go: threading.Event, handles: list[Timer], results: dict[int, bool]) -> None:
    go.wait()
    # From the far end, so the canceller and the loop meet in the middle.
    for i in reversed(range(len(handles))):
        results[i] = handles[i].cancel()
        time.sleep(0)  # let the loop thread in


@pytest.mark.parametrize("periodic", [False, True])
def test_cancel_races_with_firing_never_both(periodic: bool) -> None:
    """cancel() returns True exactly when it stopped a (further) run."""
    old = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # switch threads as often as possible
    try:
        _race(periodic)
    finally:
        sys.setswitchinterval(old)


def _race(periodic: bool) -> None:
    for _ in range(10):
        clock = MockClock()
        timers = LoopTimers(clock)
        timers.next_deadline()
        runs: list[int] = []

        def callback(i: int, runs: list[int] = runs) -> None:
            runs.append(i)
            time.sleep(0)  # release the GIL mid-dispatch

        schedule = timers.run_every if periodic else timers.run_after
        handles = [schedule(1.0, callback, i) for i in range(300)]
        results: dict[int, bool] = {}
        go = threading.Event()
        canceller = threading.Thread(target=cancel_all, args=(go, handles, results))
        canceller.start()
        clock.set(1.0)
        go.set()
        timers.run_due(1.0)
        canceller.join(5)
        clock.set(2.0)
        timers.run_due(2.0)
        for i in range(300):
            ran = runs.count(i)
            if periodic:
                # Pending or running when cancelled: stopped, at most one run.
                assert results[i] is True
                assert ran <= 1
            else:
                assert ran == (0 if results[i] else 1)
