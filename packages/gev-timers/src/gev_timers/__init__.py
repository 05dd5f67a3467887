"""gev-timers: timing-wheel timers and idle-connection reaping for gev.

Sans-IO: nothing here sleeps, opens sockets or starts threads. An event loop
owns one :class:`LoopTimers` and drives it with ``next_deadline()`` and
``run_due(now)``; :class:`IdleReaper` closes connections that went quiet.
"""

from .__about__ import __version__
from ._clock import Clock, MockClock, MonotonicClock
from ._reaper import IdleConnection, IdleReaper
from ._timers import LoopTimers, Timer
from ._wheel import DEFAULT_SLOTS, DEFAULT_TICK, TimingWheel

__all__ = [
    "DEFAULT_SLOTS",
    "DEFAULT_TICK",
    "Clock",
    "IdleConnection",
    "IdleReaper",
    "LoopTimers",
    "MockClock",
    "MonotonicClock",
    "Timer",
    "TimingWheel",
    "__version__",
]
