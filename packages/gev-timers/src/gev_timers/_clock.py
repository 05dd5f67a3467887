"""Clocks for :class:`~gev_timers.LoopTimers`.

A clock is anything with a ``now() -> float`` method returning seconds from a
monotonic origin. The timers never sleep: the event loop asks them for the next
deadline and sleeps in its poller, so a test can drive everything with
:class:`MockClock` and never wait for real time to pass (the idea is trio's
``MockClock``, minus the ``rate`` and ``autojump`` machinery, which only matter
when a real scheduler sleeps on the clock).
"""

from __future__ import annotations

import time
from typing import Protocol, runtime_checkable

__all__ = ["Clock", "MockClock", "MonotonicClock"]


@runtime_checkable
class Clock(Protocol):
    """The interface :class:`~gev_timers.LoopTimers` needs from a clock."""

    def now(self) -> float:
        """Return the current time in seconds. Must never go backwards."""
        ...


class MonotonicClock:
    """The real clock: :func:`time.monotonic`.

    ``now`` is the C function itself rather than a method wrapping it, because
    every ``run_after`` reads the clock and a Python-level frame would double
    the cost of that read.
    """

    __slots__ = ()

    now = staticmethod(time.monotonic)

    def __repr__(self) -> str:
        return "MonotonicClock()"


class MockClock:
    """A clock that only moves when told to.

    >>> clock = MockClock()
    >>> clock.now()
    0.0
    >>> clock.advance(1.5)
    1.5

    :param start: the initial reading; must not be negative (see
        :class:`~gev_timers.LoopTimers`).
    """

    __slots__ = ("_now",)

    def __init__(self, start: float = 0.0) -> None:
        if not start >= 0.0:
            raise ValueError(f"MockClock start must be >= 0, got {start!r}")
        self._now = float(start)

    def now(self) -> float:
        """Return the current mock time."""
        return self._now

    def advance(self, seconds: float) -> float:
        """Move the clock forward by *seconds* and return the new reading.

        :raises ValueError: if *seconds* is negative; a monotonic clock never
            goes backwards and the timers rely on that.
        """
        if not seconds >= 0.0:  # also rejects NaN
            raise ValueError(f"cannot advance a monotonic clock by {seconds!r}")
        self._now += seconds
        return self._now

    def jump(self, seconds: float) -> float:
        """Same as :meth:`advance`; the name trio's ``MockClock`` uses."""
        return self.advance(seconds)

    def set(self, when: float) -> float:
        """Move the clock forward to the absolute reading *when*.

        :raises ValueError: if *when* is earlier than the current reading.
        """
        if not when >= self._now:
            raise ValueError(f"cannot move a monotonic clock back to {when!r}")
        # Assign rather than add the difference: tests set the clock to an
        # exact deadline, and now + (when - now) is not always == when.
        self._now = float(when)
        return self._now

    def __repr__(self) -> str:
        return f"MockClock(start={self._now!r})"
