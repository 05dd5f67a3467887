"""LoopTimers as a deadline source: one-shot timers, cancellation, ordering."""

from __future__ import annotations

import logging
from collections.abc import Callable

import pytest
from gev_timers import LoopTimers, MockClock, Timer

TICK = 2.0**-10
LoopUntil = Callable[[LoopTimers, MockClock, float], int]


class TestDeadlineSource:
    def test_idle_source_has_no_deadline(self, timers: LoopTimers) -> None:
        assert timers.next_deadline() is None
        timers.run_due(100.0)  # nothing to do, nothing breaks
        assert timers.next_deadline() is None

    def test_next_deadline_is_the_tick_boundary(self, timers: LoopTimers, clock: MockClock) -> None:
        timers.run_after(0.0101, print)
        # 0.0101 s is between ticks 10 and 11 (of 1/1024 s): due at tick 11.
        assert timers.next_deadline() == 11 * TICK

    def test_exact_boundary_is_not_rounded_up(self, timers: LoopTimers) -> None:
        timers.run_after(0.5, print)  # 0.5 s == 512 ticks exactly
        assert timers.next_deadline() == 0.5

    def test_fires_at_deadline_boundary_never_early(
        self, timers: LoopTimers, clock: MockClock
    ) -> None:
        fired: list[float] = []
        timers.run_after(0.0101, lambda: fired.append(clock.now()))
        deadline = timers.next_deadline()
        assert deadline is not None
        clock.set(deadline - TICK / 2)
        timers.run_due(clock.now())
        assert fired == []
        clock.set(deadline)
        timers.run_due(clock.now())
        assert fired == [deadline]
        assert deadline >= 0.0101
        assert timers.next_deadline() is None

    def test_run_due_with_late_now_runs_everything_due(self, timers: LoopTimers) -> None:
        fired: list[str] = []
        for name, delay in [("c", 3.0), ("a", 1.0), ("b", 2.0), ("later", 10.0)]:
            timers.run_after(delay, fired.append, name)
        timers.run_due(5.0)
        assert fired == ["a", "b", "c"]
        assert timers.next_deadline() is not None

    def test_callback_gets_its_args(self, timers: LoopTimers) -> None:
        got: list[tuple[int, str]] = []
        timers.run_after(0.1, lambda a, b: got.append((a, b)), 1, "x")
        timers.run_due(1.0)
        assert got == [(1, "x")]

    def test_run_at_absolute_time(self, timers: LoopTimers, clock: MockClock) -> None:
        fired: list[str] = []
        t = timers.run_at(2.5, fired.append, "x")
        assert t.deadline == 2.5
        timers.run_due(2.4)
        assert fired == []
        timers.run_due(2.5)
        assert fired == ["x"]

    def test_far_timer_cascades_down_and_fires_on_time(
        self, timers: LoopTimers, clock: MockClock, loop_until: LoopUntil
    ) -> None:
        fired: list[float] = []
        timers.run_after(5000.3, lambda: fired.append(clock.now()))
        wakeups = loop_until(timers, clock, 6000.0)
        assert len(fired) == 1
        assert 5000.3 <= fired[0] < 5000.3 + TICK
        # One wake-up per level it cascades through, plus the firing.
        assert wakeups <= 4

    @pytest.mark.parametrize("delay", [float("nan"), float("inf")])
    def test_non_finite_delay_rejected(self, timers: LoopTimers, delay: float) -> None:
        with pytest.raises((ValueError, OverflowError)):
            timers.run_after(delay, print)
        assert len(timers) == 0

    def test_negative_clock_rejected(self) -> None:
        class Negative:
            def now(self) -> float:
                return -1.0

        with pytest.raises(ValueError):
            LoopTimers(Negative())

    def test_len_counts_pending(self, timers: LoopTimers) -> None:
        a = timers.run_after(1.0, print)
        timers.run_after(100.0, print)
        timers.run_every(5.0, print)
        assert len(timers) == 3
        a.cancel()
        assert len(timers) == 2

    def test_tick_and_clock_properties(self, timers: LoopTimers, clock: MockClock) -> None:
        assert timers.tick == TICK
        assert timers.clock is clock
        assert LoopTimers(clock, tick=0.01, slots=64).tick == 2.0**-7


class TestOrdering:
    def test_deadline_order(self, timers: LoopTimers) -> None:
        fired: list[int] = []
        for i, delay in enumerate([0.5, 0.1, 7.0, 0.3, 2000.0, 0.2]):
            timers.run_after(delay, fired.append, i)
        timers.run_due(3000.0)
        assert fired == [1, 5, 3, 0, 2, 4]

    def test_within_one_tick_by_deadline(self, timers: LoopTimers) -> None:
        fired: list[str] = []
        timers.run_after(0.0100, fired.append, "late-in-tick")
        timers.run_after(0.0098, fired.append, "early-in-tick")
        assert timers.next_deadline() == 11 * TICK
        timers.run_due(11 * TICK)
        assert fired == ["early-in-tick", "late-in-tick"]

    def test_equal_deadlines_in_scheduling_order(self, timers: LoopTimers) -> None:
        fired: list[int] = []
        for i in range(10):
            timers.run_at(1.0, fired.append, i)
        timers.run_due(1.0)
        assert fired == list(range(10))

    def test_equal_deadlines_scheduled_from_different_distances(
        self, timers: LoopTimers, clock: MockClock, loop_until: LoopUntil
    ) -> None:
        # The first is filed on a coarse level and cascades; the others are
        # filed later, closer in. Scheduling order must still win.
        fired: list[str] = []
        timers.run_at(2000.5, fired.append, "far")
        loop_until(timers, clock, 1500.0)
        timers.run_at(2000.5, fired.append, "mid")
        loop_until(timers, clock, 2000.2)
        timers.run_at(2000.5, fired.append, "near")
        loop_until(timers, clock, 2001.0)
        assert fired == ["far", "mid", "near"]


class TestCancel:
    def test_cancel_pending(self, timers: LoopTimers) -> None:
        fired: list[int] = []
        t = timers.run_after(1.0, fired.append, 1)
        assert t.pending and not t.cancelled
        assert t.cancel() is True
        assert t.cancelled and not t.pending
        assert t.cancel() is False  # second cancel prevents nothing
        timers.run_due(2.0)
        assert fired == []
        assert timers.next_deadline() is None  # the emptied bucket is gone

    def test_cancel_after_run(self, timers: LoopTimers) -> None:
        t = timers.run_after(1.0, print)
        timers.run_due(1.0)
        assert not t.pending
        assert t.cancel() is False
        assert not t.cancelled

    def test_cancel_far_timer(
        self, timers: LoopTimers, clock: MockClock, loop_until: LoopUntil
    ) -> None:
        fired: list[int] = []
        t = timers.run_after(10_000.0, fired.append, 1)
        loop_until(timers, clock, 5000.0)
        assert t.cancel() is True
        loop_until(timers, clock, 20_000.0)
        assert fired == []

    def test_cancel_later_timer_from_earlier_callback(self, timers: LoopTimers) -> None:
        fired: list[str] = []
        later = timers.run_at(1.0, fired.append, "later")  # same tick as below
        timers.run_at(0.9995, lambda: fired.append(str(later.cancel())))
        timers.run_due(1.0)
        assert fired == ["True"]

    def test_cancel_from_own_callback_is_false(self, timers: LoopTimers) -> None:
        results: list[bool] = []
        box: list[Timer] = []
        box.append(timers.run_after(1.0, lambda: results.append(box[0].cancel())))
        timers.run_due(1.0)
        assert results == [False]  # it is already running

    def test_timers_with_equal_hashes_in_one_bucket(
        self, timers: LoopTimers, clock: MockClock, loop_until: LoopUntil
    ) -> None:
        # A timer's hash is its bucket's size when filed, so after a cancel two
        # pending timers of one bucket share it: each cancel must still remove
        # its own timer, and the rest fire in scheduling order.
        fired: list[str] = []
        a = timers.run_at(5.25, fired.append, "a")
        b = timers.run_at(5.5, fired.append, "b")
        assert a.cancel() is True
        c = timers.run_at(5.75, fired.append, "c")
        d = timers.run_at(5.5, fired.append, "d")
        assert hash(b) == hash(c) and b != c
        assert b.cancel() is True
        assert b.cancel() is False
        loop_until(timers, clock, 10.0)
        assert fired == ["d", "c"]
        assert not c.pending and not d.pending and not c.cancelled

    def test_repr(self, timers: LoopTimers) -> None:
        t = timers.run_after(1.0, print)
        assert "pending" in repr(t)
        t.cancel()
        assert "cancelled" in repr(t)
        assert t.interval is None


class TestReentrancy:
    def test_scheduling_now_from_callback_runs_next_time(self, timers: LoopTimers) -> None:
        runs: list[int] = []

        def again() -> None:
            runs.append(1)
            timers.run_after(0.0, again)  # would recurse forever if run now

        timers.run_after(0.0, again)
        timers.run_due(0.0)
        assert runs == [1]
        assert timers.next_deadline() == 0.0  # due: poll without blocking
        timers.run_due(0.0)
        assert runs == [1, 1]

    def test_scheduling_in_the_past_from_callback(self, timers: LoopTimers) -> None:
        fired: list[str] = []
        timers.run_after(1.0, lambda: timers.run_after(-5.0, fired.append, "past"))
        timers.run_due(1.0)
        assert fired == []
        timers.run_due(1.0)
        assert fired == ["past"]

    def test_run_due_from_callback_is_an_error(
        self, timers: LoopTimers, caplog: pytest.LogCaptureFixture
    ) -> None:
        timers.run_after(0.0, lambda: timers.run_due(0.0))
        with caplog.at_level(logging.ERROR, logger="gev.timers"):
            timers.run_due(0.0)
        assert "RuntimeError" in caplog.text


class TestErrors:
    def test_exception_is_logged_and_others_still_run(
        self, timers: LoopTimers, caplog: pytest.LogCaptureFixture
    ) -> None:
        fired: list[str] = []

        def boom() -> None:
            raise ZeroDivisionError("boom")

        timers.run_at(1.0, fired.append, "before")
        timers.run_at(1.0, boom)
        timers.run_at(1.0, fired.append, "after")
        with caplog.at_level(logging.ERROR, logger="gev.timers"):
            timers.run_due(1.0)
        assert fired == ["before", "after"]
        [record] = caplog.records
        assert record.name == "gev.timers"
        assert record.exc_info is not None and record.exc_info[0] is ZeroDivisionError
        assert "Traceback" in caplog.text

    def test_base_exception_propagates_and_keeps_the_rest(self, timers: LoopTimers) -> None:
        fired: list[str] = []

        def interrupt() -> None:
            raise KeyboardInterrupt

        timers.run_at(1.0, fired.append, "a")
        timers.run_at(1.0, interrupt)
        timers.run_at(1.0, fired.append, "b")
        timers.run_at(2.0, fired.append, "c")
        timers.run_at(9.0, fired.append, "d")
        with pytest.raises(KeyboardInterrupt):
            timers.run_due(5.0)
        assert fired == ["a"]
        timers.run_due(5.0)
        assert fired == ["a", "b", "c"]
        timers.run_due(9.0)
        assert fired == ["a", "b", "c", "d"]


class TestThreadBinding:
    def test_unbound_schedules_go_through_inbox(self, clock: MockClock) -> None:
        wakeups: list[int] = []
        timers = LoopTimers(clock, lambda: wakeups.append(1))
        fired: list[str] = []
        timers.run_after(1.0, fired.append, "x")
        assert wakeups == [1]  # nothing was armed yet
        assert len(timers) == 1
        assert timers.next_deadline() == 1.0  # binds and drains
        timers.run_due(1.0)
        assert fired == ["x"]

    def test_cancel_before_drain(self, clock: MockClock) -> None:
        timers = LoopTimers(clock)
        fired: list[str] = []
        t = timers.run_after(1.0, fired.append, "x")
        assert t.cancel() is True
        assert timers.next_deadline() is None
        timers.run_due(2.0)
        assert fired == []
