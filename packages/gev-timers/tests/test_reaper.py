"""IdleReaper with fake connections and a MockClock."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from gev_timers import IdleReaper, LoopTimers, MockClock

TICK = 2.0**-10
LoopUntil = Callable[[LoopTimers, MockClock, float], int]


class FakeConn:
    """What the core's connection looks like to the reaper: one attribute."""

    def __init__(self, name: str, last_active: float) -> None:
        self.name = name
        self.last_active = last_active

    def __repr__(self) -> str:
        return f"FakeConn({self.name})"


class Closed(list[tuple[str, float]]):
    def __init__(self, clock: MockClock) -> None:
        super().__init__()
        self.clock = clock

    def __call__(self, conn: FakeConn) -> None:
        self.append((conn.name, self.clock.now()))


@pytest.fixture
def closed(clock: MockClock) -> Closed:
    return Closed(clock)


@pytest.fixture
def reaper(timers: LoopTimers, closed: Closed) -> IdleReaper[FakeConn]:
    return IdleReaper(timers, 10.0, closed)


def test_idle_connection_is_closed_at_its_deadline_tick(
    reaper: IdleReaper[FakeConn],
    closed: Closed,
    clock: MockClock,
    loop_until: LoopUntil,
    timers: LoopTimers,
) -> None:
    clock.set(1.3)
    conn = FakeConn("a", clock.now())
    reaper.track(conn)
    loop_until(timers, clock, 11.2)
    assert closed == []
    loop_until(timers, clock, 12.0)
    [(name, when)] = closed
    assert name == "a"
    assert 11.3 <= when < 11.3 + TICK  # to the tick, not to the second
    assert conn not in reaper and len(reaper) == 0


def test_activity_postpones_reaping(
    reaper: IdleReaper[FakeConn],
    closed: Closed,
    clock: MockClock,
    loop_until: LoopUntil,
    timers: LoopTimers,
) -> None:
    conn = FakeConn("a", 0.0)
    reaper.track(conn)
    for t in (4.0, 9.0, 15.5):  # what the loop does on each read or write
        loop_until(timers, clock, t)
        conn.last_active = clock.now()
    loop_until(timers, clock, 25.0)
    assert closed == []
    loop_until(timers, clock, 30.0)
    assert closed == [("a", 25.5)]


def test_busy_connection_costs_one_timer_run_per_idle_period(
    reaper: IdleReaper[FakeConn],
    closed: Closed,
    clock: MockClock,
    loop_until: LoopUntil,
    timers: LoopTimers,
) -> None:
    conn = FakeConn("busy", 0.0)
    reaper.track(conn)
    runs = 0
    original = reaper._expired

    def counting(c: FakeConn) -> None:
        nonlocal runs
        runs += 1
        original(c)

    reaper._check = counting  # type: ignore[method-assign]
    reaper.untrack(conn)
    reaper.track(conn)
    # 1000 I/O events over 100 s: each is just an attribute store.
    for i in range(1, 1001):
        clock.set(i / 10)
        timers.run_due(clock.now())
        conn.last_active = clock.now()
    assert closed == []
    assert runs <= 10
    loop_until(timers, clock, 111.0)
    assert closed == [("busy", 110.0)]


def test_untrack_cancels(
    reaper: IdleReaper[FakeConn],
    closed: Closed,
    clock: MockClock,
    loop_until: LoopUntil,
    timers: LoopTimers,
) -> None:
    conn = FakeConn("a", 0.0)
    reaper.track(conn)
    reaper.untrack(conn)
    reaper.untrack(conn)  # no-op
    loop_until(timers, clock, 100.0)
    assert closed == []
    assert timers.next_deadline() is None


def test_track_twice_is_a_noop(reaper: IdleReaper[FakeConn], timers: LoopTimers) -> None:
    conn = FakeConn("a", 0.0)
    reaper.track(conn)
    reaper.track(conn)
    assert len(reaper) == 1 and len(timers) == 1


def test_track_without_last_active_counts_as_active_now(
    timers: LoopTimers, clock: MockClock, loop_until: LoopUntil
) -> None:
    class Bare:
        last_active: float

    closed: list[Bare] = []
    reaper: IdleReaper[Bare] = IdleReaper(timers, 1.0, closed.append)
    clock.set(5.0)
    conn = Bare()
    reaper.track(conn)
    assert conn.last_active == 5.0
    loop_until(timers, clock, 7.0)
    assert closed == [conn]


def test_close_may_untrack_and_errors_are_contained(
    timers: LoopTimers, clock: MockClock, loop_until: LoopUntil, caplog: pytest.LogCaptureFixture
) -> None:
    conns = [FakeConn(str(i), 0.0) for i in range(3)]
    closed: list[str] = []

    def close(conn: FakeConn) -> None:
        reaper.untrack(conn)  # what a connection-lost notification would do
        closed.append(conn.name)
        if conn.name == "1":
            raise OSError("close failed")

    reaper: IdleReaper[FakeConn] = IdleReaper(timers, 2.0, close)
    for c in conns:
        reaper.track(c)
    loop_until(timers, clock, 3.0)
    assert closed == ["0", "1", "2"]
    assert "close failed" in caplog.text
    assert len(reaper) == 0


def test_many_connections_expire_in_batches(
    timers: LoopTimers, clock: MockClock, loop_until: LoopUntil
) -> None:
    closed: list[FakeConn] = []
    reaper: IdleReaper[FakeConn] = IdleReaper(timers, 60.0, closed.append)
    conns = [FakeConn(str(i), (i % 100) / 10) for i in range(10_000)]
    for c in conns:
        reaper.track(c)
    # Half the connections see traffic at t=30.
    clock.set(30.0)
    timers.run_due(30.0)
    for c in conns[::2]:
        c.last_active = 30.0
    wakeups = loop_until(timers, clock, 75.0)
    assert len(closed) == 5_000
    assert all(int(c.name) % 2 for c in closed)
    # 100 distinct deadlines, plus a few cascades: not one wake-up per conn.
    assert wakeups < 150
    loop_until(timers, clock, 95.0)
    assert len(closed) == 10_000 and len(reaper) == 0


def test_stop_untracks_everything(
    reaper: IdleReaper[FakeConn], timers: LoopTimers, closed: Closed
) -> None:
    for i in range(5):
        reaper.track(FakeConn(str(i), 0.0))
    reaper.stop()
    assert len(reaper) == 0 and len(timers) == 0
    timers.run_due(100.0)
    assert closed == []


@pytest.mark.parametrize("bad", [0.0, -1.0, float("nan"), float("inf")])
def test_bad_idle_time(timers: LoopTimers, bad: float) -> None:
    with pytest.raises(ValueError):
        IdleReaper(timers, bad, print)


def test_idle_time_property(reaper: IdleReaper[FakeConn]) -> None:
    assert reaper.idle_time == 10.0
