from __future__ import annotations

import pytest
from gev_timers import Clock, MockClock, MonotonicClock


class TestMockClock:
    def test_starts_at_zero_by_default(self) -> None:
        assert MockClock().now() == 0.0

    def test_custom_start(self) -> None:
        assert MockClock(12.5).now() == 12.5

    def test_negative_start_rejected(self) -> None:
        with pytest.raises(ValueError):
            MockClock(-1.0)

    def test_advance_and_jump_move_forward(self) -> None:
        clock = MockClock()
        assert clock.advance(1.5) == 1.5
        assert clock.jump(2.0) == 3.5
        assert clock.now() == 3.5

    @pytest.mark.parametrize("bad", [-0.001, float("nan")])
    def test_advance_never_goes_backwards(self, bad: float) -> None:
        clock = MockClock(5.0)
        with pytest.raises(ValueError):
            clock.advance(bad)
        assert clock.now() == 5.0

    def test_set_is_exact(self) -> None:
        clock = MockClock(0.1)
        target = 0.30000000000000004 * 3
        assert clock.set(target) == target
        assert clock.now() == target

    def test_set_backwards_rejected(self) -> None:
        clock = MockClock(2.0)
        with pytest.raises(ValueError):
            clock.set(1.0)

    def test_is_a_clock(self) -> None:
        assert isinstance(MockClock(), Clock)


class TestMonotonicClock:
    def test_never_decreases(self) -> None:
        clock = MonotonicClock()
        readings = [clock.now() for _ in range(1000)]
        assert readings == sorted(readings)

    def test_is_a_clock(self) -> None:
        assert isinstance(MonotonicClock(), Clock)
        assert repr(MonotonicClock()) == "MonotonicClock()"
