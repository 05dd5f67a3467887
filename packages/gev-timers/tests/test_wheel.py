"""The bare TimingWheel: placement, cascading, skipping, bounds."""

from __future__ import annotations

import math
import time
from typing import Any

import pytest
from gev_timers import DEFAULT_SLOTS, DEFAULT_TICK, TimingWheel
from gev_timers._wheel import move


class E:
    __slots__ = ("_bucket", "_when", "name")

    def __init__(self, when: float, name: str = "") -> None:
        self._when = when
        self._bucket: dict[Any, None] | bool | None = None
        self.name = name

    def __repr__(self) -> str:
        return f"E({self._when}, {self.name!r})"


def names(buckets: list[dict[E, None]]) -> list[str]:
    return [e.name for b in buckets for e in b]


class TestConfiguration:
    def test_defaults(self) -> None:
        wheel: TimingWheel[E] = TimingWheel()
        assert wheel.tick == DEFAULT_TICK == 2.0**-10
        assert wheel.slots == DEFAULT_SLOTS == 1024
        # Level 0 spans exactly one second.
        assert wheel.tick * wheel.slots == 1.0

    @pytest.mark.parametrize(
        ("asked", "got"),
        [(0.001, 2.0**-10), (1.0, 1.0), (0.75, 0.5), (3.0, 2.0), (2.0**-20, 2.0**-20)],
    )
    def test_tick_rounds_down_to_power_of_two(self, asked: float, got: float) -> None:
        assert TimingWheel(tick=asked).tick == got

    @pytest.mark.parametrize("bad", [0.0, -1.0, math.nan, math.inf])
    def test_bad_tick(self, bad: float) -> None:
        with pytest.raises(ValueError):
            TimingWheel(tick=bad)

    @pytest.mark.parametrize(("asked", "got"), [(2, 2), (3, 4), (1000, 1024), (1024, 1024)])
    def test_slots_round_up_to_power_of_two(self, asked: int, got: int) -> None:
        assert TimingWheel(slots=asked).slots == got

    def test_bad_slots(self) -> None:
        with pytest.raises(ValueError):
            TimingWheel(slots=1)

    def test_negative_start_rejected(self) -> None:
        with pytest.raises(ValueError):
            TimingWheel(start=-1.0)

    def test_start_sets_current_tick(self) -> None:
        assert TimingWheel(tick=1.0, start=7.5).current_tick == 7


class TestPlacementAndExpiry:
    def test_tick_of_is_ceiling_and_exact_on_boundaries(self) -> None:
        wheel: TimingWheel[E] = TimingWheel()
        assert wheel.tick_of(1.0) == 1024
        assert wheel.tick_of(1.0 + 2.0**-30) == 1025
        assert wheel.time_of(1025) == 1025 / 1024

    def test_empty_wheel_has_no_expiry(self) -> None:
        wheel: TimingWheel[E] = TimingWheel()
        assert wheel.next_expiry() is None
        assert wheel.expire(10**9) == []

    def test_fires_at_its_tick_not_before(self) -> None:
        wheel: TimingWheel[E] = TimingWheel(tick=1.0, slots=4)
        wheel.insert(E(17.0, "a"))
        assert names(wheel.expire(16)) == []
        assert names(wheel.expire(17)) == ["a"]
        assert len(wheel) == 0

    def test_fractional_deadline_fires_at_next_boundary(self) -> None:
        wheel: TimingWheel[E] = TimingWheel(tick=1.0, slots=4)
        wheel.insert(E(2.25, "a"))
        assert wheel.next_expiry() == 3
        assert names(wheel.expire(2)) == []
        assert names(wheel.expire(3)) == ["a"]

    def test_overflow_levels_are_created_lazily(self) -> None:
        wheel: TimingWheel[E] = TimingWheel(tick=1.0, slots=4)
        assert wheel.levels == 2
        wheel.insert(E(3.0))  # level 0
        wheel.insert(E(9.0))  # level 1 (9 ^ 0 has its top bit in digit 1)
        assert wheel.levels == 2
        wheel.insert(E(100.0))  # digit 3 -> level 3; level 2 is not allocated
        assert wheel.levels == 3
        wheel.insert(E(40.0))
        assert wheel.levels == 4

    def test_next_expiry_of_far_timer_is_its_bucket_start(self) -> None:
        wheel: TimingWheel[E] = TimingWheel(tick=1.0, slots=4)
        wheel.insert(E(27.0, "a"))  # level 2 bucket covering ticks 16..31
        assert wheel.next_expiry() == 16
        assert names(wheel.expire(16)) == []  # cascade only
        assert wheel.next_expiry() == 24  # level 1 bucket 24..27
        assert names(wheel.expire(24)) == []
        assert wheel.next_expiry() == 27
        assert names(wheel.expire(27)) == ["a"]

    def test_cascades_are_bounded_by_levels(self) -> None:
        wheel: TimingWheel[E] = TimingWheel(tick=1.0, slots=2)
        wheel.insert(E(2.0**40 - 1, "a"))
        steps = 0
        while (tick := wheel.next_expiry()) is not None:
            fired = names(wheel.expire(tick))
            steps += 1
            if fired:
                break
        assert fired == ["a"]
        assert steps <= 41

    def test_past_ticks_go_to_ready(self) -> None:
        wheel: TimingWheel[E] = TimingWheel(tick=1.0, slots=4, start=10.0)
        wheel.insert(E(3.0, "late"))
        wheel.insert(E(10.0, "now"))
        assert wheel.next_expiry() == 10
        assert names(wheel.expire(10)) == ["late", "now"]

    def test_buckets_come_out_in_tick_order(self) -> None:
        wheel: TimingWheel[E] = TimingWheel(tick=1.0, slots=4)
        for when in (50.0, 3.0, 17.0, 4.0, 1.0, 16.0, 64.0):
            wheel.insert(E(when, str(int(when))))
        assert names(wheel.expire(1000)) == ["1", "3", "4", "16", "17", "50", "64"]

    def test_same_tick_keeps_insertion_order_across_levels(self) -> None:
        # "a" is filed far away (level 2) and cascades; "b" is filed later,
        # directly into a lower level. "a" must still come first.
        wheel: TimingWheel[E] = TimingWheel(tick=1.0, slots=4)
        wheel.insert(E(21.0, "a"))
        assert names(wheel.expire(17)) == []
        wheel.insert(E(21.0, "b"))
        wheel.insert(E(21.0, "c"))
        assert names(wheel.expire(21)) == ["a", "b", "c"]

    def test_placement_is_by_digit_not_by_distance(self) -> None:
        # At cur=3, tick 6 is only 3 ticks away but in the next level-0 block:
        # it must join "a" in the level-1 bucket instead of starting a level-0
        # bucket that "a" would later cascade into behind it.
        wheel: TimingWheel[E] = TimingWheel(tick=1.0, slots=4)
        wheel.insert(E(6.0, "a"))
        assert names(wheel.expire(3)) == []
        wheel.insert(E(6.0, "b"))
        assert wheel.bucket_count() == 1
        assert names(wheel.expire(6)) == ["a", "b"]

    def test_huge_jump_does_not_walk_ticks(self) -> None:
        wheel: TimingWheel[E] = TimingWheel()  # 1024 ticks per second
        wheel.insert(E(3.0e8, "ten years"))
        started = time.perf_counter()
        fired = names(wheel.expire(wheel.tick_of(1.0e9)))  # 10**12 ticks later
        assert fired == ["ten years"]
        assert time.perf_counter() - started < 0.5


class TestRemovalAndBounds:
    def test_removed_entry_is_not_returned_and_shell_is_cleaned(self) -> None:
        wheel: TimingWheel[E] = TimingWheel(tick=1.0, slots=4)
        e = E(5.0)
        wheel.insert(e)
        bucket = e._bucket
        assert isinstance(bucket, dict)
        del bucket[e]
        assert wheel.bucket_count() == 1  # empty shell until it surfaces
        assert wheel.next_expiry() is None
        assert wheel.bucket_count() == 0
        assert wheel.expire(100) == []

    def test_bucket_count_is_bounded_by_levels_times_slots(self) -> None:
        wheel: TimingWheel[E] = TimingWheel(tick=1.0, slots=8)
        entries = [E(float(w)) for w in range(1, 200_000, 7)]
        for e in entries:
            wheel.insert(e)
        for e in entries:
            assert isinstance(e._bucket, dict)
            del e._bucket[e]
        assert len(wheel) == 0
        assert wheel.bucket_count() <= wheel.levels * wheel.slots

    def test_len_counts_entries(self) -> None:
        wheel: TimingWheel[E] = TimingWheel(tick=1.0, slots=4, start=5.0)
        for when in (1.0, 6.0, 30.0, 3000.0):
            wheel.insert(E(when))
        assert len(wheel) == 4


class TestMove:
    def test_move(self) -> None:
        e = E(1.0)
        src: dict[Any, None] = {e: None}
        dst: dict[Any, None] = {}
        e._bucket = src
        assert move(e, src, dst)
        assert e._bucket is dst and e in dst and e not in src

    def test_move_of_cancelled_entry_is_undone(self) -> None:
        e = E(1.0)
        src: dict[Any, None] = {}
        dst: dict[Any, None] = {}
        assert not move(e, src, dst)
        assert e._bucket is False and not dst
