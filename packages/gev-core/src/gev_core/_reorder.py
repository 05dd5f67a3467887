"""Replies in request order: sequence numbers, a reorder buffer and a bound, sans-IO.

A connection whose replies are produced later -- by a thread of the offload pool, or by a
coroutine on the asyncio companion -- still owes them to its peer in the order the requests
came: a pipelining client (Redis, a game client, anything request/reply) matches replies to
requests by position. Each request that will be answered later takes the next sequence number
with :meth:`ReplyOrder.reserve`; whoever answers calls :meth:`ReplyOrder.complete` with that
number, in any order; :meth:`ReplyOrder.pop_ready` hands back what may leave now, in order.

The same object bounds what a connection may owe. Once ``limit`` replies are outstanding,
:attr:`ReplyOrder.full` is true and the connection should stop reading (the peer's further
requests wait in the kernel, and TCP pushes back); it may read again once the count is back to
``resume_at`` or below (:attr:`ReplyOrder.drained`). Two marks rather than one keep a busy
pipeline from toggling the poller on every reply.

No threads, no I/O, no clock: the caller (``gev_core._jobs``) runs it on the connection's loop
thread and decides what "send" and "stop reading" mean. Entries are opaque to this module.
"""

from __future__ import annotations

from typing import Any

__all__ = ["ReplyOrder"]


class ReplyOrder:
    """The replies one connection owes, in the order they are owed.

    :param limit: replies outstanding (reserved, not yet popped) at which :attr:`full` turns
        true; at least 1.
    :param resume_at: count at or below which :attr:`drained` is true again; default
        ``limit // 2``. Must be below ``limit``.
    """

    __slots__ = ("_head", "_limit", "_next", "_ready", "_resume_at", "_waiting", "closed")

    def __init__(self, limit: int, resume_at: int = -1) -> None:
        if limit < 1:
            raise ValueError(f"limit must be >= 1, not {limit}")
        if resume_at < 0:
            resume_at = limit // 2
        if resume_at >= limit:
            raise ValueError(f"resume_at ({resume_at}) must be below limit ({limit})")
        self._limit = limit
        self._resume_at = resume_at
        #: Next sequence number to hand out.
        self._next = 0
        #: Lowest sequence number not yet popped.
        self._head = 0
        #: Completed entries that wait for an earlier one: seq -> entry.
        self._waiting: dict[int, Any] = {}
        #: Completed entries from the head on, in order, not yet popped.
        self._ready: list[Any] = []
        #: True after :meth:`close`: nothing is owed any more, completions are ignored.
        self.closed = False

    @property
    def outstanding(self) -> int:
        """Replies reserved and not yet popped (completed or not)."""
        return self._next - self._head

    @property
    def limit(self) -> int:
        return self._limit

    @property
    def full(self) -> bool:
        """True while ``limit`` or more replies are outstanding: stop reading."""
        return self._next - self._head >= self._limit

    @property
    def drained(self) -> bool:
        """True while at most ``resume_at`` replies are outstanding: reading may resume."""
        return self._next - self._head <= self._resume_at

    @property
    def idle(self) -> bool:
        """True when nothing is owed."""
        return self._next == self._head

    @property
    def has_ready(self) -> bool:
        """True when :meth:`pop_ready` would return something."""
        return bool(self._ready)

    def reserve(self) -> int:
        """Take the next place in line; returns its sequence number.

        Reserving past ``limit`` is allowed (what one read delivered is still accepted); the
        caller stops reading once :attr:`full` says so.

        :raises RuntimeError: after :meth:`close`.
        """
        if self.closed:
            raise RuntimeError("reserve() on a closed ReplyOrder")
        seq = self._next
        self._next = seq + 1
        return seq

    def complete(self, seq: int, entry: Any) -> bool:
        """Record the entry for ``seq``; returns True if it made something ready.

        Completions after :meth:`close` are dropped (False).

        :raises ValueError: ``seq`` was never reserved, or is already complete.
        """
        if self.closed:
            return False
        head = self._head + len(self._ready)
        if seq < head or seq >= self._next or seq in self._waiting:
            raise ValueError(f"sequence number {seq} is not outstanding")
        if seq != head:
            self._waiting[seq] = entry
            return False
        ready = self._ready
        ready.append(entry)
        waiting = self._waiting
        if waiting:
            seq += 1
            while seq in waiting:
                ready.append(waiting.pop(seq))
                seq += 1
        return True

    def pop_ready(self) -> list[Any]:
        """Every completed entry from the head on, in sequence order; they are no longer owed."""
        ready = self._ready
        if not ready:
            return ready
        self._ready = []
        self._head += len(ready)
        return ready

    def close(self) -> list[Any]:
        """Forget everything owed (the connection is gone); returns the entries dropped.

        Entries that completed but were never popped are returned so the caller can release
        what they hold; reservations not yet completed simply lapse.
        """
        dropped = self._ready + list(self._waiting.values())
        self.closed = True
        self._ready = []
        self._waiting = {}
        self._head = self._next
        return dropped

    def __repr__(self) -> str:
        return (
            f"<ReplyOrder outstanding={self.outstanding} ready={len(self._ready)}"
            f" waiting={len(self._waiting)} limit={self._limit}"
            f"{' closed' if self.closed else ''}>"
        )
