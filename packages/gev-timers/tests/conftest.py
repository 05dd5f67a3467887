"""Shared fixtures: a MockClock and LoopTimers bound to the test thread."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from gev_timers import LoopTimers, MockClock


@pytest.fixture
def clock() -> MockClock:
    return MockClock()


@pytest.fixture
def timers(clock: MockClock) -> LoopTimers:
    t = LoopTimers(clock)
    t.next_deadline()  # the test thread is the loop thread from here on
    return t


LoopUntil = Callable[[LoopTimers, MockClock, float], int]


def run_loop_until(timers: LoopTimers, clock: MockClock, until: float) -> int:
    """Drive *timers* the way an event loop would, up to time *until*.

    Sleeps (moves the clock) to each deadline and runs what is due; returns
    the number of wake-ups it took.
    """
    wakeups = 0
    while True:
        deadline = timers.next_deadline()
        if deadline is None or deadline > until:
            break
        if deadline > clock.now():
            clock.set(deadline)
        timers.run_due(clock.now())
        wakeups += 1
    if until > clock.now():
        clock.set(until)
    timers.run_due(clock.now())
    return wakeups


@pytest.fixture
def loop_until() -> LoopUntil:
    """The :func:`run_loop_until` helper (test modules cannot import conftest)."""
    return run_loop_until
