"""Idle-connection reaping (sans-IO).

Contract with the event loop
----------------------------
A tracked connection has a ``last_active`` attribute: the clock reading of the
last read or write on it. The loop stores it once per I/O event
(``conn.last_active = now``, with ``now`` the reading it took for that poll
iteration) and never touches the reaper or any timer on the I/O path. Reads
and writes both count, so a server that only pushes data to a silent client
does not reap it (gev counts poller events only, so a write that completes
immediately is not activity there).

Design: one lazily re-armed timer per connection
------------------------------------------------
Each tracked connection has one timer, due at ``last_active + idle_time``.
Activity does not touch the timer. When it fires, the reaper reads
``last_active`` again: unchanged means the connection really was idle for
``idle_time`` and it is closed; otherwise the timer is re-armed for the new
``last_active + idle_time`` (gev's "idle_time - elapsed"). A connection that
stays busy therefore costs one timer run per ``idle_time``, not one timer
operation per I/O event.

Why not a periodic sweep over all connections? A sweep every ``g`` seconds
costs O(connections) per sweep whether or not anything is close to expiry,
and reaps up to ``g`` late; making it precise makes it expensive. With 10,000
connections and a 60 s idle time, per-connection timers cost about 170 timer
runs per second in the worst case (every connection busy), each O(1), reap
within one tick of the deadline, and cost nothing for connections that are
nowhere near expiry. Timers due in the same tick share a wheel bucket, so
connections that went quiet together expire in one batch.

All methods must be called on the loop thread.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Generic, Protocol, TypeVar

from ._timers import LoopTimers, Timer

__all__ = ["IdleConnection", "IdleReaper"]


class IdleConnection(Protocol):
    """What the reaper needs from a connection."""

    #: Clock reading of the last read or write, set by the event loop.
    last_active: float


C = TypeVar("C", bound=IdleConnection)


class IdleReaper(Generic[C]):
    """Close connections with no reads or writes for *idle_time* seconds.

    :param timers: the loop's timers; the reaper's timers run on its thread.
    :param idle_time: seconds without activity before a connection is closed.
    :param close: called with the connection when it has been idle too long.
        The connection is untracked before the call, so ``close`` may call
        :meth:`untrack` (e.g. from a connection-lost notification) freely.
    """

    __slots__ = ("_armed", "_check", "_close", "_idle", "_timers")

    def __init__(self, timers: LoopTimers, idle_time: float, close: Callable[[C], object]) -> None:
        if not (idle_time > 0.0 and idle_time != float("inf")):
            raise ValueError(f"idle_time must be a positive number of seconds, got {idle_time!r}")
        self._timers = timers
        self._idle = float(idle_time)
        self._close = close
        self._armed: dict[C, Timer] = {}
        # Bound once: every re-arm passes it to run_at.
        self._check = self._expired

    @property
    def idle_time(self) -> float:
        """Seconds of inactivity after which a connection is closed."""
        return self._idle

    def __len__(self) -> int:
        """Number of tracked connections."""
        return len(self._armed)

    def __contains__(self, conn: object) -> bool:
        return conn in self._armed

    def track(self, conn: C) -> None:
        """Start watching *conn* (no-op if already tracked).

        If *conn* has no ``last_active`` yet, it is set to the current clock
        reading, i.e. the connection counts as active now.
        """
        if conn in self._armed:
            return
        try:
            last = conn.last_active
        except AttributeError:
            last = conn.last_active = self._timers.clock.now()
        self._armed[conn] = self._timers.run_at(last + self._idle, self._check, conn)

    def untrack(self, conn: C) -> None:
        """Stop watching *conn* (no-op if not tracked). Call on connection lost."""
        timer = self._armed.pop(conn, None)
        if timer is not None:
            timer.cancel()

    def stop(self) -> None:
        """Untrack every connection without closing any."""
        armed = self._armed
        self._armed = {}
        for timer in armed.values():
            timer.cancel()

    def _expired(self, conn: C) -> None:
        timer = self._armed.get(conn)
        if timer is None:  # untracked while this run was being dispatched
            return
        deadline = conn.last_active + self._idle
        # The timer fired at or after timer.deadline. If last_active has not
        # moved since it was armed, the connection has been idle the whole
        # time: no clock read needed.
        if deadline <= timer.deadline:
            del self._armed[conn]
            self._close(conn)
        else:
            self._armed[conn] = self._timers.run_at(deadline, self._check, conn)
