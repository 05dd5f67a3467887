"""Hierarchical timing wheel (sans-IO: no clock, no threads, no sleeping).

Theory of operation
===================

Why a wheel
-----------
A server's timers are mostly timeouts, and most timeouts never fire: a request
timeout is cancelled when the response goes out; an idle timer is re-armed
before it expires. A binary heap (asyncio, trio) pays O(log n) to push and
either O(log n) to remove or, with lazy deletion, keeps every cancelled entry
alive until it reaches the top. A timing wheel hashes a timer straight into
the bucket of its expiry tick: schedule and cancel are a dict store and a dict
delete, and only timers that actually expire are ever looked at again.

Time is quantised into ticks. A timer with deadline ``d`` belongs to tick
``k = ceil(d / tick)`` and fires at the first tick boundary ``k * tick >= d``,
never before its deadline. ``tick`` is a power of two of a second (default
2**-10 s, about 1 ms), so ``d / tick`` and ``k * tick`` are exact in binary
floating point: no rounding case can fire a timer early, and a deadline that
is already a boundary maps to that boundary, not the next one.

Levels and cascading
--------------------
Tick numbers are read as digits in base ``S`` (``slots``, a power of two).
Level 0 has ``S`` slots, one per tick of the current level-0 block (``S``
ticks, 1 s by default); level ``l`` has ``S`` slots of ``S**l`` ticks each and
covers the current level-(l+1) block. A timer is filed at the level of the most
significant digit in which its tick differs from the current tick ``cur``
(``(k ^ cur).bit_length()``), in the slot given by that digit of ``k`` -- the
hands of a clock: level 0 is the second hand, level 1 the minute hand. This is
the "each level's tick is the lower level's span" rule; overflow levels are
allocated the first time a timer needs them.

When ``cur`` reaches the first tick of a level-``l`` bucket, the bucket is
emptied and every timer in it is filed again; it now lands on a lower level
(its digits down to ``l`` equal ``cur``'s), and eventually in the level-0 slot
of its own tick, which fires when ``cur`` reaches it. A timer is moved at most
once per level, so the work is O(levels) per timer that survives to expiry.

Because placement uses digit alignment rather than distance, a block's
higher-level bucket cascades at the block's first tick, before any timer can
be filed directly into that block's lower-level slots. So every bucket lists
its timers in scheduling order, which gives "equal deadlines fire in
scheduling order" without storing a sequence number per timer.

Skipping empty time
-------------------
The wheel never steps tick by tick. Every bucket that gets its first timer
pushes its start tick onto a small heap (like the DelayQueue of Go's
RussellLuo/timingwheel, which gev uses). ``expire(target)`` pops only buckets
that exist, so a jump of ten years costs the same as a jump of one tick, and
``next_expiry()`` is the heap's top. The heap holds at most one entry per
bucket, and there are at most ``S`` buckets per level, so it stays small
(log2 of a few thousand). A bucket emptied by cancels stays in its slot until
its tick passes or it reaches the top of the heap; the bound on buckets is
what keeps that lazy clean-up bounded in memory. The cost: the loop may wake
once at the start of a higher-level bucket to cascade it, at most once per
occupied bucket.

Buckets and cancellation
------------------------
A bucket is a ``dict`` mapping entry -> None: O(1) insert, O(1) delete,
insertion ordered. Each entry points at the dict holding it (``_bucket``), so
cancelling is ``del entry._bucket[entry]``. Entries whose tick has already
passed go to the ``ready`` bucket and are handed out by the next ``expire``,
so a callback that schedules "now" cannot make the loop recurse forever.

Moving an entry between buckets (cascade, inbox drain, re-arm) inserts it into
the destination, repoints it, and only then deletes it from the source. A
``cancel()`` from another thread deletes the entry from whichever bucket it
reads; whoever deletes from the bucket that the other side expects wins, and
the loser sees ``KeyError``. See :func:`move` and ``Timer.cancel``.

Complexity (n = pending timers, L = levels in use, S = slots)
--------------------------------------------------------------
* insert: O(1) dict store; a new bucket adds an O(log(L*S)) heap push.
* cancel: O(1) dict delete.
* expire: O(popped buckets * log(L*S) + cascaded timers + expired timers),
  independent of how much time passed.
* memory: O(n + L*S).
"""

from __future__ import annotations

from heapq import heappop, heappush
from math import ceil, floor, frexp, isfinite
from typing import Any, Generic, Protocol, TypeVar

__all__ = ["DEFAULT_SLOTS", "DEFAULT_TICK", "TimingWheel", "move"]

#: 2**-10 s (0.9765625 ms): gev's 1 ms resolution, but exact in binary.
DEFAULT_TICK = 2.0**-10
#: 1024 slots, so level 0 spans exactly 1 s, level 1 1024 s, level 2 ~12 days.
DEFAULT_SLOTS = 1024


class Entry(Protocol):
    """What the wheel needs from the objects it stores (``Timer``)."""

    _when: float
    #: The dict holding the entry; ``None``/``False`` once it left the wheel.
    _bucket: dict[Any, None] | bool | None


E = TypeVar("E", bound=Entry)


def move(entry: Entry, src: dict[Any, None], dst: dict[Any, None]) -> bool:
    """Move *entry* from bucket *src* to bucket *dst*; False if it was cancelled.

    The order (insert, repoint, delete) is what makes a concurrent
    ``Timer.cancel()`` safe: at every instant the entry is in the bucket its
    ``_bucket`` names, or the cancel's delete fails and it retries on the new
    pointer. If the cancel won the race on *src*, undo the insert.
    """
    dst[entry] = None
    entry._bucket = dst
    try:
        del src[entry]
    except KeyError:
        dst.pop(entry, None)
        entry._bucket = False
        return False
    return True


def _normalize_tick(tick: float) -> float:
    if not (tick > 0.0 and isfinite(tick)):
        raise ValueError(f"tick must be a positive number of seconds, got {tick!r}")
    # Largest power of two <= tick: never coarser than asked, and exact.
    _, exponent = frexp(tick)
    return 2.0 ** (exponent - 1)


def _normalize_slots(slots: int) -> int:
    if slots < 2:
        raise ValueError(f"slots must be >= 2, got {slots!r}")
    # Smallest power of two >= slots, so digits are shifts and masks.
    return 1 << (slots - 1).bit_length()


class TimingWheel(Generic[E]):
    """A hierarchical timing wheel of buckets (see the module docstring).

    The wheel knows nothing about clocks or callbacks: it files entries by
    their ``_when`` and hands back the buckets whose tick has come.

    :param tick: seconds per tick; rounded down to a power of two.
    :param slots: slots per level; rounded up to a power of two.
    :param start: the current time; ticks at or before it count as past.
    """

    __slots__ = (
        "_bits",
        "_cur",
        "_heap",
        "_mask",
        "_rate",
        "_ready",
        "_size",
        "_tick",
        "_wheels",
    )

    def __init__(
        self, tick: float = DEFAULT_TICK, slots: int = DEFAULT_SLOTS, start: float = 0.0
    ) -> None:
        tick = _normalize_tick(tick)
        size = _normalize_slots(slots)
        if not start >= 0.0:
            # Placement reads tick numbers as unsigned digits.
            raise ValueError(f"times must be >= 0, got start={start!r}")
        self._tick = tick
        self._rate = 1.0 / tick  # exact: tick is a power of two
        self._bits = size.bit_length() - 1
        self._size = size
        self._mask = size - 1
        #: Every tick <= _cur has been expired.
        self._cur: int = floor(start * self._rate)
        # Levels 0 and 1 exist up front so the schedule fast path can index
        # them without a length check; higher levels appear on demand.
        self._wheels: list[list[dict[E, None] | None] | None] = [[None] * size, [None] * size]
        #: (first tick of bucket, -level): higher levels first on equal ticks,
        #: so a cascade into a tick precedes that tick's own bucket.
        self._heap: list[tuple[int, int]] = []
        self._ready: dict[E, None] = {}

    # ------------------------------------------------------------------
    # Introspection
    # ------------------------------------------------------------------
    @property
    def tick(self) -> float:
        """Seconds per tick (a power of two)."""
        return self._tick

    @property
    def slots(self) -> int:
        """Slots per level (a power of two)."""
        return self._size

    @property
    def current_tick(self) -> int:
        """The last tick that has been expired."""
        return self._cur

    @property
    def levels(self) -> int:
        """Number of levels allocated so far (overflow levels are lazy)."""
        return sum(1 for w in self._wheels if w is not None)

    def tick_of(self, when: float) -> int:
        """The tick a deadline *when* fires at: ``ceil(when / tick)``."""
        return ceil(when * self._rate)

    def time_of(self, tick: int) -> float:
        """The time at which *tick* starts (exact)."""
        return tick * self._tick

    def __len__(self) -> int:
        """Number of entries in the wheel; O(buckets), meant for tests/stats."""
        n = len(self._ready)
        for wheel in self._wheels:
            if wheel is not None:
                n += sum(len(b) for b in wheel if b)
        return n

    def bucket_count(self) -> int:
        """Number of allocated buckets, empty ones included."""
        return sum(1 for w in self._wheels if w is not None for b in w if b is not None)

    # ------------------------------------------------------------------
    # Filing entries
    # ------------------------------------------------------------------
    def bucket_for(self, k: int) -> dict[E, None]:
        """Return the bucket that holds entries firing at tick *k*, creating it.

        Entries for ticks already expired go to the ready bucket.
        """
        cur = self._cur
        if k <= cur:
            return self._ready
        bits = self._bits
        level = ((k ^ cur).bit_length() - 1) // bits
        shift = level * bits
        wheels = self._wheels
        if level >= len(wheels):
            wheels.extend([None] * (level + 1 - len(wheels)))
        wheel = wheels[level]
        if wheel is None:
            wheel = wheels[level] = [None] * self._size
        index = (k >> shift) & self._mask
        bucket = wheel[index]
        if bucket is None:
            bucket = wheel[index] = {}
            heappush(self._heap, ((k >> shift) << shift, -level))
        return bucket

    def insert(self, entry: E) -> None:
        """File *entry* by its ``_when`` (which must be finite)."""
        bucket = self.bucket_for(ceil(entry._when * self._rate))
        bucket[entry] = None
        entry._bucket = bucket

    # ------------------------------------------------------------------
    # Expiry
    # ------------------------------------------------------------------
    def _slot(self, start: int, level: int) -> tuple[list[dict[E, None] | None], int]:
        wheel = self._wheels[level]
        assert wheel is not None  # a heap entry implies its level exists
        return wheel, (start >> (level * self._bits)) & self._mask

    def next_expiry(self) -> int | None:
        """The next tick at which :meth:`expire` has work, or None if empty.

        It is ``current_tick`` when the ready bucket is not empty (due now),
        and may be the start of a higher-level bucket that only needs to
        cascade. Empty buckets at the top are discarded on the way.
        """
        if self._ready:
            return self._cur
        heap = self._heap
        while heap:
            start, neg_level = heap[0]
            wheel, index = self._slot(start, -neg_level)
            if wheel[index]:
                return start
            heappop(heap)
            wheel[index] = None
        return None

    def expire(self, target: int) -> list[dict[E, None]]:
        """Advance to tick *target* and return the buckets that are due.

        Returned buckets are in tick order and still hold their entries; the
        caller removes each entry (``del bucket[entry]``) before running it,
        and skips it on ``KeyError`` (cancelled meanwhile). Entries whose tick
        is exactly the one being expired arrive through the ready bucket.
        """
        out: list[dict[E, None]] = []
        if self._ready:
            out.append(self._ready)
            self._ready = {}
        heap = self._heap
        rate = self._rate
        while heap and heap[0][0] <= target:
            start, neg_level = heappop(heap)
            wheel, index = self._slot(start, -neg_level)
            bucket = wheel[index]
            wheel[index] = None
            if not bucket:
                continue
            self._cur = start
            if neg_level == 0:
                out.append(bucket)
                continue
            # Cascade. copy(): another thread may cancel while we iterate.
            for entry in bucket.copy():
                move(entry, bucket, self.bucket_for(ceil(entry._when * rate)))
            if self._ready:  # entries whose tick is exactly `start`
                out.append(self._ready)
                self._ready = {}
        if target > self._cur:
            self._cur = target
        return out
