"""Timer handles and the per-loop deadline source.

The event loop drives a :class:`LoopTimers` through two calls::

    while running:
        deadline = timers.next_deadline()        # None: nothing scheduled
        timeout = None if deadline is None else max(0.0, deadline - clock.now())
        events = poller.poll(timeout)            # wakeup() interrupts this
        now = clock.now()
        ...handle events...
        timers.run_due(now)

Threading rules
---------------
The first thread that calls :meth:`LoopTimers.next_deadline` or
:meth:`LoopTimers.run_due` becomes the loop thread. On that thread, scheduling
is lock-free: a thread-id compare, then a dict store into the wheel. Any other
thread (and any thread before the loop has started) files timers into a
locked inbox instead; the loop drains it at the start of ``next_deadline`` and
``run_due``. If such a timer is due before the tick the loop last said it would
sleep until, the scheduling thread calls ``wakeup()`` so the poller returns
and picks the new deadline up.

``Timer.cancel()`` is safe from any thread and takes no lock: an entry is
removed by deleting it from the dict that holds it, and whichever side (the
cancel, or the loop firing or moving the timer) deletes it first wins. The
loser gets ``KeyError``. So ``cancel()`` returns True exactly when it kept the
callback from running.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from math import ceil, floor, isfinite
from operator import attrgetter
from threading import get_ident
from typing import Any

from ._clock import Clock, MonotonicClock
from ._wheel import DEFAULT_SLOTS, DEFAULT_TICK, TimingWheel, move

__all__ = ["LoopTimers", "Timer"]

logger = logging.getLogger("gev.timers")

_by_deadline = attrgetter("_when")
_INF = float("inf")


def _nothing() -> None:
    pass


class Timer:
    """Handle for a scheduled callback, returned by :class:`LoopTimers`.

    Do not instantiate it yourself. A timer is *pending* until it runs (a
    one-shot timer) or is cancelled.
    """

    # No __init__: LoopTimers fills the slots itself. Calling a Python
    # __init__ through type.__call__ would cost more than the rest of
    # Timer() and the slot stores together.
    __slots__ = ("_args", "_bucket", "_fn", "_hash", "_when")

    _when: float
    _fn: Callable[..., object]
    _args: tuple[object, ...]
    #: The dict holding the timer while pending; None once run, False once
    #: cancelled.
    _bucket: dict[Any, None] | bool | None
    #: The bucket's size when the timer was first filed (see __hash__).
    _hash: int

    def __hash__(self) -> int:
        # Buckets are dicts keyed by timers. The default hash, the object's
        # address, puts consecutive timers of a bucket in random slots of its
        # index table: with many pending timers every insert and delete is a
        # cache miss, plus probing where slots collide. The bucket's size at
        # filing time numbers a bucket's timers 0, 1, 2...: consecutive
        # slots, no collisions while they are pending together, and cancels
        # that walk the table in order. Equality stays identity, so equal
        # hashes cost a probe, never a wrong match, and the value never changes
        # while the timer is in a dict.
        return self._hash

    def cancel(self) -> bool:
        """Stop the timer.

        Returns True if this call prevented a run: a pending one-shot timer,
        or a periodic timer (even from inside its own callback). Returns False
        if it already ran, is running right now on another thread, or was
        already cancelled. Safe to call from any thread.
        """
        bucket = self._bucket
        try:
            del bucket[self]  # type: ignore[union-attr]
        except (KeyError, TypeError):
            return self._cancel_contended(bucket)
        self._bucket = False
        return True

    def _cancel_contended(self, seen: object) -> bool:
        # Either the timer is no longer pending, or the loop moved it to
        # another bucket between our read of _bucket and our delete. In the
        # second case _bucket now names the new bucket; follow it.
        while True:
            bucket = self._bucket
            if bucket is seen or not isinstance(bucket, dict) or not bucket:
                return False
            try:
                del bucket[self]
            except KeyError:
                seen = bucket
                continue
            self._bucket = False
            return True

    @property
    def cancelled(self) -> bool:
        """True if :meth:`cancel` stopped this timer."""
        return self._bucket is False

    @property
    def pending(self) -> bool:
        """True while the callback is still going to run (again)."""
        return bool(self._bucket)

    @property
    def deadline(self) -> float:
        """The time the callback is (or was last) due, in clock seconds.

        The callback runs at the first tick boundary at or after this time.
        """
        return self._when

    @property
    def interval(self) -> float | None:
        """The period of a :meth:`LoopTimers.run_every` timer, else None."""
        return None

    def __repr__(self) -> str:
        state = "cancelled" if self._bucket is False else "pending" if self._bucket else "done"
        return f"<{type(self).__name__} {state} deadline={self._when!r} fn={self._fn!r}>"


class _PeriodicTimer(Timer):
    __slots__ = ("_count", "_interval", "_origin")

    #: Run n is due at _origin + n * _interval: computed from the origin
    #: each time, so float error does not accumulate over many periods.
    _origin: float
    _interval: float
    _count: int

    @property
    def interval(self) -> float | None:
        return self._interval


class LoopTimers:
    """The timers of one event loop: a deadline source over a timing wheel.

    :param clock: where time comes from (default :class:`MonotonicClock`).
        Readings must be >= 0 and never go backwards.
    :param wakeup: thread-safe callable that interrupts the loop's poller;
        called when another thread schedules something earlier than the loop
        is sleeping for.
    :param tick: timer resolution in seconds, rounded down to a power of two
        (default 2**-10 s, about 1 ms).
    :param slots: slots per wheel level, rounded up to a power of two.
    """

    __slots__ = (
        "_armed",
        "_base0",
        "_base1",
        "_bits",
        "_clock",
        "_cur",
        "_end0",
        "_end1",
        "_firing",
        "_inbox",
        "_l0",
        "_l1",
        "_lock",
        "_now",
        "_rate",
        "_running",
        "_tid",
        "_wakeup",
        "_wheel",
    )

    def __init__(
        self,
        clock: Clock | None = None,
        wakeup: Callable[[], object] | None = None,
        *,
        tick: float = DEFAULT_TICK,
        slots: int = DEFAULT_SLOTS,
    ) -> None:
        if clock is None:
            clock = MonotonicClock()
        start = clock.now()
        if not start >= 0.0:
            raise ValueError(f"clock readings must be >= 0, got {start!r}")
        wheel: TimingWheel[Timer] = TimingWheel(tick, slots, start)
        self._wheel = wheel
        self._clock = clock
        self._now = clock.now
        self._wakeup = _nothing if wakeup is None else wakeup
        self._tid: int | None = None
        self._lock = threading.Lock()
        self._inbox: dict[Timer, None] = {}
        #: The tick the loop said it sleeps until (inf: no deadline).
        self._armed: float = _INF
        #: Periodic timers whose callback is running: a cancel() from the
        #: callback deletes the timer from here, which stops the re-arm.
        self._running: dict[Timer, None] = {}
        self._firing = False
        self._rate = wheel._rate
        self._bits = wheel._bits
        levels = wheel._wheels
        assert levels[0] is not None and levels[1] is not None
        self._l0 = levels[0]
        self._l1 = levels[1]
        self._follow()

    def _follow(self) -> None:
        # Precompute, per value of the wheel's current tick, the bounds and
        # slot offsets the run_after/run_at fast path files level-0/1 timers
        # with. That path then needs only int compares and subtractions, which
        # CPython 3.11+ specializes, instead of xor and mask (generic number
        # dispatch and an int allocation each); about 7-10% of a schedule +
        # cancel. Call it whenever wheel._cur may have moved.
        wheel = self._wheel
        cur = wheel._cur
        bits = wheel._bits
        #: Every tick in (_cur, _end0] goes to _l0[k - _base0]; every tick in
        #: (_end0, _end1] to _l1[(k >> bits) - _base1]: the slots that
        #: TimingWheel.bucket_for picks from the digits of k ^ cur.
        self._cur = cur
        self._base0 = base0 = (cur >> bits) << bits
        self._end0 = base0 + wheel._mask
        self._base1 = base1 = (cur >> (2 * bits)) << bits
        self._end1 = ((base1 + wheel._size) << bits) - 1

    # ------------------------------------------------------------------
    # Properties
    # ------------------------------------------------------------------
    @property
    def clock(self) -> Clock:
        """The clock deadlines are measured on."""
        return self._clock

    @property
    def tick(self) -> float:
        """Timer resolution in seconds (a power of two)."""
        return self._wheel.tick

    def __len__(self) -> int:
        """Number of pending timers. O(buckets): for tests and statistics."""
        return len(self._wheel) + len(self._inbox) + len(self._running)

    # ------------------------------------------------------------------
    # Scheduling
    # ------------------------------------------------------------------
    def run_after(self, delay: float, fn: Callable[..., object], *args: object) -> Timer:
        """Run ``fn(*args)`` on the loop thread once, *delay* seconds from now.

        A delay <= 0 runs it in the next :meth:`run_due`. Callable from any
        thread.

        :raises ValueError: if *delay* is NaN.
        :raises OverflowError: if *delay* is infinite.
        """
        # This is the hot path: everything is inlined, including the wheel's
        # level-0/1 slot lookup (TimingWheel.bucket_for is the general case).
        t = Timer()
        t._fn = fn
        t._args = args
        t._when = when = self._now() + delay
        k = ceil(when * self._rate)
        if get_ident() != self._tid:
            t._hash = id(t) >> 4
            self._post(t, k)
            return t
        if k > self._end0:
            # Level 1 first: timeouts of a second or more are the common case.
            b = self._l1[(k >> self._bits) - self._base1] if k <= self._end1 else None
        elif k > self._cur:
            b = self._l0[k - self._base0]
        else:
            b = self._wheel._ready
        if b is None:
            b = self._wheel.bucket_for(k)
        t._hash = len(b)
        b[t] = None
        t._bucket = b
        return t

    def run_at(self, when: float, fn: Callable[..., object], *args: object) -> Timer:
        """Run ``fn(*args)`` on the loop thread once, at clock time *when*.

        Callable from any thread.

        :raises ValueError: if *when* is NaN.
        :raises OverflowError: if *when* is infinite.
        """
        # Same fast path as run_after; duplicated to save a call layer.
        t = Timer()
        t._fn = fn
        t._args = args
        t._when = when
        k = ceil(when * self._rate)
        if get_ident() != self._tid:
            t._hash = id(t) >> 4
            self._post(t, k)
            return t
        if k > self._end0:
            # Level 1 first: timeouts of a second or more are the common case.
            b = self._l1[(k >> self._bits) - self._base1] if k <= self._end1 else None
        elif k > self._cur:
            b = self._l0[k - self._base0]
        else:
            b = self._wheel._ready
        if b is None:
            b = self._wheel.bucket_for(k)
        t._hash = len(b)
        b[t] = None
        t._bucket = b
        return t

    def run_every(self, interval: float, fn: Callable[..., object], *args: object) -> Timer:
        """Run ``fn(*args)`` every *interval* seconds on the loop thread.

        The first run is due *interval* from now, run n at ``start + n *
        interval``: times come from the schedule, not from when the previous
        run happened, so the timer does not drift. If a run finishes (or the
        loop gets to it) after later runs were already due, those are skipped
        and the next run is the first one still in the future: a slow callback
        or a stalled loop never causes a burst of back-to-back catch-up runs.

        An exception from *fn* is logged (logger ``gev.timers``) and the timer
        keeps going. ``cancel()`` stops it, including from inside *fn*.
        Callable from any thread.

        :raises ValueError: if *interval* is not a positive finite number.
        """
        if not (interval > 0.0 and isfinite(interval)):
            raise ValueError(f"interval must be a positive number of seconds, got {interval!r}")
        t = _PeriodicTimer()
        t._fn = fn
        t._args = args
        t._origin = origin = self._now()
        t._interval = interval
        t._count = 1
        t._when = when = origin + interval
        # Not a bulk fast path: the default hash's spread is the safe choice.
        t._hash = id(t) >> 4
        k = ceil(when * self._rate)
        if get_ident() != self._tid:
            self._post(t, k)
        else:
            self._wheel.insert(t)
        return t

    def _post(self, t: Timer, k: int) -> None:
        # Not the loop thread: file into the inbox, and wake the loop if it
        # sleeps past this timer's tick. _armed is updated so that a burst of
        # timers wakes the loop once, not once per timer.
        with self._lock:
            inbox = self._inbox
            inbox[t] = None
            t._bucket = inbox
            wake = k < self._armed
            if wake:
                self._armed = float(k)
        if wake:
            self._wakeup()

    # ------------------------------------------------------------------
    # Deadline source interface
    # ------------------------------------------------------------------
    def _bind(self) -> None:
        tid = get_ident()
        with self._lock:
            if self._tid is None:
                self._tid = tid
            elif self._tid != tid:
                raise RuntimeError(
                    "LoopTimers is driven by another thread; schedule from any thread, "
                    "but call next_deadline()/run_due() only from the loop thread"
                )

    def _drain(self) -> None:
        with self._lock:
            inbox = self._inbox
            self._inbox = {}
        bucket_for = self._wheel.bucket_for
        rate = self._rate
        for t in inbox.copy():  # copy(): other threads may cancel meanwhile
            move(t, inbox, bucket_for(ceil(t._when * rate)))

    def next_deadline(self) -> float | None:
        """Time of the earliest tick with work to do, or None if there is none.

        The value is a tick boundary in clock seconds; it may already have
        passed (then poll without blocking). It can be the start of a coarse
        bucket that only needs cascading, so a ``run_due`` at that time may
        run nothing; the following ``next_deadline`` is then later. Call it on
        the loop thread right before blocking: it tells cross-thread
        schedulers what the loop is waiting for.
        """
        if get_ident() != self._tid:
            self._bind()
        wheel = self._wheel
        while True:
            if self._inbox:
                self._drain()
            k = wheel.next_expiry()
            with self._lock:
                raced = bool(self._inbox)  # another thread posted meanwhile: go again
                if not raced:
                    self._armed = _INF if k is None else float(k)
            if not raced:
                return None if k is None else wheel.time_of(k)

    def run_due(self, now: float) -> None:
        """Run every callback whose tick boundary is at or before *now*.

        Callbacks run on the calling (loop) thread in deadline order; equal
        deadlines run in the order they were scheduled. Timers scheduled by a
        callback for *now* or earlier run in the next ``run_due``, not in this
        one. Exceptions from callbacks are logged to ``gev.timers``; a
        ``BaseException`` (KeyboardInterrupt, SystemExit) propagates after the
        callbacks not yet run are put back to run next time.

        :raises RuntimeError: if called from inside a timer callback.
        """
        if get_ident() != self._tid:
            self._bind()
        if self._firing:
            raise RuntimeError("run_due() called from inside a timer callback")
        if self._inbox:
            self._drain()
        buckets = self._wheel.expire(floor(now * self._rate))
        if self._wheel._cur != self._cur:
            self._follow()
        if buckets:
            self._firing = True
            try:
                self._fire(buckets, now)
            finally:
                self._firing = False

    def _fire(self, buckets: list[dict[Timer, None]], now: float) -> None:
        for i, bucket in enumerate(buckets):
            entries = list(bucket.copy())
            if len(entries) > 1:
                # A tick holds deadlines up to one tick apart; sort() is
                # stable, so equal deadlines keep scheduling order.
                entries.sort(key=_by_deadline)
            for j, t in enumerate(entries):
                try:
                    if t.__class__ is Timer:
                        try:
                            del bucket[t]  # claim it; KeyError: cancelled meanwhile
                        except KeyError:
                            continue
                        t._bucket = None
                        try:
                            t._fn(*t._args)
                        except Exception:
                            logger.exception("Exception in timer callback %r", t._fn)
                    else:
                        self._fire_periodic(t, bucket, now)  # type: ignore[arg-type]
                except BaseException:
                    self._requeue(entries[j + 1 :], bucket, buckets[i + 1 :])
                    raise

    def _fire_periodic(self, t: _PeriodicTimer, bucket: dict[Timer, None], now: float) -> None:
        running = self._running
        # Claim by moving rather than deleting: a cancel() racing in from
        # another thread must find the timer somewhere, or it would report
        # False while the timer keeps re-arming.
        if not move(t, bucket, running):
            return
        try:
            t._fn(*t._args)
        except Exception:
            logger.exception("Exception in periodic timer callback %r", t._fn)
        finally:
            if t in running:  # else cancel() was called during the callback
                self._rearm(t, now)

    def _rearm(self, t: _PeriodicTimer, now: float) -> None:
        # Measure "now" after the callback, so an overrunning callback skips
        # the periods it overlapped instead of queuing them back to back.
        after = self._now()
        if now > after:
            after = now
        origin = t._origin
        interval = t._interval
        n = t._count + 1
        when = origin + n * interval
        if when <= after:
            n = floor((after - origin) / interval) + 1
            when = origin + n * interval
            while when <= after:  # float rounding in the division
                n += 1
                when = origin + n * interval
        t._count = n
        t._when = when
        move(t, self._running, self._wheel.bucket_for(ceil(when * self._rate)))

    def _requeue(
        self,
        rest: list[Timer],
        bucket: dict[Timer, None],
        later: list[dict[Timer, None]],
    ) -> None:
        # A BaseException is unwinding out of run_due: keep the callbacks that
        # did not get to run, in order, ahead of anything scheduled meanwhile.
        wheel = self._wheel
        scheduled_meanwhile = wheel._ready
        ready: dict[Timer, None] = {}
        for t in rest:
            if t in bucket:
                move(t, bucket, ready)
        for b in later:
            entries = list(b.copy())
            entries.sort(key=_by_deadline)
            for t in entries:
                move(t, b, ready)
        for t in scheduled_meanwhile.copy():
            move(t, scheduled_meanwhile, ready)
        wheel._ready = ready
