"""gev-timers: timing-wheel timers and idle-connection reaping for gev.

Sans-IO: nothing here sleeps, opens sockets or starts threads. An event loop
owns one :class:`LoopTimers` and drives it with ``next_deadline()`` and
``run_due(now)``; :class:`IdleReaper` closes connections that went quiet.
"""

# First: with GEV_PURE_PYTHON=1 the modules below are then loaded from their .py source.
from . import _compiled
from .__about__ import __version__
from ._clock import Clock, MockClock, MonotonicClock
from ._reaper import IdleConnection, IdleReaper
from ._timers import LoopTimers, Timer
from ._wheel import DEFAULT_SLOTS, DEFAULT_TICK, TimingWheel

COMPILED: bool = _compiled.package_is_compiled(__name__)
"""True when this package runs compiled code (a wheel built with a C compiler, and
``GEV_PURE_PYTHON`` not set); False for the pure-Python source. See the docs' "Compiled
code" page."""

__all__ = [
    "COMPILED",
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
