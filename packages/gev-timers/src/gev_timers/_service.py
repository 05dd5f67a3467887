"""The timer service gev-timers gives a gev server: one timing wheel per event loop.

This is the only module that knows about gev-core's objects; everything it drives (wheel, timers,
reaper) is sans-IO. Each loop gets its own :class:`LoopTimers`, installed as the loop's deadline
source on the loop's thread, so timer callbacks run on the loop that owns the connections they
touch and the poll timeout comes from the wheel (an idle loop with no timers never wakes).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from ._clock import Clock
from ._reaper import IdleReaper
from ._timers import LoopTimers, Timer
from ._wheel import DEFAULT_SLOTS, DEFAULT_TICK

logger = logging.getLogger("gev.timers")

__all__ = ["TimerService"]


def _reaper_for(timers: LoopTimers, idle_time: float) -> Callable[[Any], None]:
    def reap(conn: Any) -> None:
        # One line per reap: a peer that went silent is worth knowing about, and at most one
        # line per connection is no flood.
        idle = max(idle_time, timers.clock.now() - conn.last_active)
        logger.info(
            "closing idle connection %s: no reads or writes for %.1f s", conn.peer_addr, idle
        )
        # Output that has not moved for the whole idle time will not move: don't wait for it.
        if conn.write_buffer_length:
            conn.abort(reason="idle")
        else:
            conn.close(reason="idle")

    return reap


def _if_open(conn: Any, fn: Callable[..., object], args: tuple[Any, ...]) -> None:
    if conn.connected:
        fn(*args)


class TimerService:
    """``run_after`` / ``run_every`` / per-connection timers and idle reaping for one server.

    :param server: the :class:`gev_core.Server`; its loops must exist.
    :param idle_time: seconds without reads or writes after which a connection is closed
        (``None``: no reaping).
    :param clock: time source (tests pass a :class:`MockClock`); must agree with the loop's
        ``time.monotonic()`` readings in production, so leave it ``None`` there.
    """

    def __init__(
        self,
        server: Any,
        *,
        idle_time: float | None = None,
        clock: Clock | None = None,
        tick: float = DEFAULT_TICK,
        slots: int = DEFAULT_SLOTS,
    ) -> None:
        self.idle_time = idle_time
        self._per_loop: dict[Any, LoopTimers] = {
            loop: LoopTimers(clock=clock, wakeup=loop.wakeup, tick=tick, slots=slots)
            for loop in server.loops
        }
        self._main = self._per_loop[server.loops[0]]
        self._reapers: dict[Any, IdleReaper[Any]] = {}
        if idle_time is not None:
            self._reapers = {
                loop: IdleReaper(timers, idle_time, _reaper_for(timers, idle_time))
                for loop, timers in self._per_loop.items()
            }

    def install(self, loop: Any) -> None:
        """Make the loop's poll timeout follow its wheel (called on the loop's thread)."""
        loop.set_deadline_source(self._per_loop[loop])

    def timers(self, loop: Any) -> LoopTimers:
        """The :class:`LoopTimers` of one loop."""
        return self._per_loop[loop]

    def run_after(self, delay: float, fn: Callable[..., object], *args: object) -> Timer:
        """Run ``fn(*args)`` once, after ``delay`` seconds, on loop 0. Safe from any thread."""
        return self._main.run_after(delay, fn, *args)

    def run_every(self, interval: float, fn: Callable[..., object], *args: object) -> Timer:
        """Run ``fn(*args)`` every ``interval`` seconds on loop 0, without drift."""
        return self._main.run_every(interval, fn, *args)

    def conn_run_after(
        self, conn: Any, delay: float, fn: Callable[..., object], *args: object
    ) -> Timer:
        """Run ``fn(*args)`` on ``conn``'s loop after ``delay`` s, skipped if it has closed."""
        return self._per_loop[conn.loop].run_after(delay, _if_open, conn, fn, args)

    def track(self, conn: Any) -> None:
        reaper = self._reapers.get(conn.loop)
        if reaper is not None:
            reaper.track(conn)

    def untrack(self, conn: Any) -> None:
        reaper = self._reapers.get(conn.loop)
        if reaper is not None:
            reaper.untrack(conn)
