"""run_every: no drift, skipping missed periods, errors, cancellation."""

from __future__ import annotations

import logging
from collections.abc import Callable

import pytest
from gev_timers import LoopTimers, MockClock, Timer

TICK = 2.0**-10
LoopUntil = Callable[[LoopTimers, MockClock, float], int]


def test_first_run_after_one_interval(timers: LoopTimers, clock: MockClock) -> None:
    runs: list[float] = []
    t = timers.run_every(0.25, lambda: runs.append(clock.now()))
    assert t.deadline == 0.25
    assert t.interval == 0.25
    clock.set(0.2)
    timers.run_due(0.2)
    assert runs == []
    clock.set(0.25)
    timers.run_due(0.25)
    assert runs == [0.25]
    assert t.deadline == 0.5


def test_no_drift_over_many_periods(
    timers: LoopTimers, clock: MockClock, loop_until: LoopUntil
) -> None:
    # 0.1 is not representable in binary and is not a multiple of the tick:
    # adding it up would drift, and each run lands a fraction of a tick late.
    clock.set(3.7)
    start = clock.now()
    runs: list[float] = []
    timers.run_every(0.1, lambda: runs.append(clock.now()))
    loop_until(timers, clock, start + 1000.05)
    assert len(runs) == 10_000
    for n, ran_at in enumerate(runs, start=1):
        due = start + n * 0.1
        assert due <= ran_at < due + TICK
    # The schedule is the grid itself: run n is at start + n * interval.
    assert runs[-1] - start == pytest.approx(1000.0, abs=TICK)


def test_late_loop_skips_missed_periods(timers: LoopTimers, clock: MockClock) -> None:
    runs: list[float] = []
    t = timers.run_every(1.0, lambda: runs.append(clock.now()))
    clock.set(5.5)  # the loop was stuck: runs at 1..5 were all due
    timers.run_due(clock.now())
    assert runs == [5.5]  # one run, not five back to back
    assert t.deadline == 6.0  # back on the grid
    timers.run_due(5.9)
    assert runs == [5.5]
    clock.set(6.0)
    timers.run_due(6.0)
    assert runs == [5.5, 6.0]


def test_overrunning_callback_skips_overlapped_periods(
    timers: LoopTimers, clock: MockClock, loop_until: LoopUntil
) -> None:
    starts: list[float] = []

    def slow() -> None:
        starts.append(clock.now())
        if len(starts) == 2:
            clock.advance(3.5)  # this run takes 3.5 intervals

    timers.run_every(1.0, slow)
    loop_until(timers, clock, 10.0)
    # Run 2 started at 2.0 and ended at 5.5: the runs due at 3, 4 and 5 are
    # skipped, the grid resumes at 6.
    assert starts == [1.0, 2.0, 6.0, 7.0, 8.0, 9.0, 10.0]


def test_callback_ending_exactly_on_next_period_skips_it(
    timers: LoopTimers, clock: MockClock
) -> None:
    starts: list[float] = []

    def slow() -> None:
        starts.append(clock.now())
        clock.advance(1.0)

    t = timers.run_every(1.0, slow)
    clock.set(1.0)
    timers.run_due(1.0)
    assert t.deadline == 3.0  # the period at 2.0 started while it ran


def test_exception_is_logged_and_timer_keeps_going(
    timers: LoopTimers, clock: MockClock, caplog: pytest.LogCaptureFixture, loop_until: LoopUntil
) -> None:
    runs: list[int] = []

    def flaky() -> None:
        runs.append(1)
        if len(runs) % 2:
            raise RuntimeError(f"odd run {len(runs)}")

    t = timers.run_every(1.0, flaky)
    with caplog.at_level(logging.ERROR, logger="gev.timers"):
        loop_until(timers, clock, 4.0)
    assert len(runs) == 4
    assert t.pending
    errors = [r for r in caplog.records if r.name == "gev.timers"]
    assert len(errors) == 2
    assert all(r.exc_info is not None and r.exc_info[0] is RuntimeError for r in errors)
    assert "Traceback" in caplog.text and "odd run 3" in caplog.text


def test_cancel_from_inside_own_callback(
    timers: LoopTimers, clock: MockClock, loop_until: LoopUntil
) -> None:
    runs: list[bool] = []
    box: list[Timer] = []

    def tick() -> None:
        if len(runs) == 2:
            runs.append(box[0].cancel())
        else:
            runs.append(False)

    box.append(timers.run_every(1.0, tick))
    loop_until(timers, clock, 10.0)
    assert runs == [False, False, True]
    assert box[0].cancelled and not box[0].pending
    assert timers.next_deadline() is None


def test_cancel_from_another_callback_and_from_outside(
    timers: LoopTimers, clock: MockClock, loop_until: LoopUntil
) -> None:
    runs: list[str] = []
    p = timers.run_every(1.0, runs.append, "p")
    timers.run_at(2.5, lambda: runs.append(f"cancel={p.cancel()}"))
    loop_until(timers, clock, 6.0)
    assert runs == ["p", "p", "cancel=True"]
    assert p.cancel() is False


def test_interval_shorter_than_tick_runs_once_per_tick(
    timers: LoopTimers, clock: MockClock, loop_until: LoopUntil
) -> None:
    runs: list[float] = []
    timers.run_every(TICK / 4, lambda: runs.append(clock.now()))
    wakeups = loop_until(timers, clock, 100 * TICK)
    assert len(runs) == 100
    assert wakeups == 100


@pytest.mark.parametrize("bad", [0.0, -1.0, float("nan"), float("inf")])
def test_bad_interval(timers: LoopTimers, bad: float) -> None:
    with pytest.raises(ValueError):
        timers.run_every(bad, print)
