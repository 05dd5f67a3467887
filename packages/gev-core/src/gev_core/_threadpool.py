"""A bounded pool of threads for handler work that blocks: one per server, started lazily.

Two bounds, both hard. At most ``max_threads`` threads, spawned only when a job finds none
idle (a server that never offloads has none). At most ``max_queue`` jobs waiting for a
thread, server-wide: :meth:`ThreadPool.submit` never blocks and never grows the queue past
it. A job that finds the queue full is refused, and its submitter may ask to be told when
there is room (:class:`RoomWaiter`): waiters are woken one per job taken off the queue, in
the order they asked. What the submitter does meanwhile is its business -- a gev connection
keeps its refused jobs itself and stops reading (``gev_core._jobs``), so a full pool pushes
back on the clients that fill it instead of stalling the event loop (blocking) or losing
requests (rejecting).

Jobs are opaque: anything with ``run()``. A job hands its own result back to whoever waits
for it; the pool only runs it and logs what escapes ``run`` (which should be nothing).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from typing import Protocol as _TypingProtocol

__all__ = ["PoolJob", "RoomWaiter", "ThreadPool"]

logger = logging.getLogger("gev")


class PoolJob(_TypingProtocol):
    """Work for a pool thread."""

    def run(self) -> None:
        """Do the work and hand the outcome over; called once, on a pool thread."""


class RoomWaiter(_TypingProtocol):
    """A submitter refused because the queue was full, waiting for room."""

    def room_available(self) -> None:
        """Called on a pool thread when a queued job was taken: only hand this over (post it
        to your own thread); submitting from here may find the room taken again."""


class ThreadPool:
    """Threads that run :class:`PoolJob` objects, with a bounded queue.

    :param max_threads: most threads ever running; at least 1.
    :param max_queue: most jobs waiting for a thread (server-wide); at least 1.
    :param name: thread name prefix.
    """

    __slots__ = (
        "_closed",
        "_cond",
        "_idle",
        "_max_queue",
        "_max_threads",
        "_name",
        "_queue",
        "_threads",
        "_waiters",
    )

    def __init__(self, max_threads: int, max_queue: int, name: str = "gev-offload") -> None:
        if max_threads < 1:
            raise ValueError(f"max_threads must be >= 1, not {max_threads}")
        if max_queue < 1:
            raise ValueError(f"max_queue must be >= 1, not {max_queue}")
        self._max_threads = max_threads
        self._max_queue = max_queue
        self._name = name
        self._cond = threading.Condition(threading.Lock())
        self._queue: deque[PoolJob] = deque()
        self._waiters: deque[RoomWaiter] = deque()
        self._threads: list[threading.Thread] = []
        #: Threads waiting for a job and not yet promised one by a notify.
        self._idle = 0
        self._closed = False

    # ------------------------------------------------------------------ any thread

    @property
    def max_threads(self) -> int:
        return self._max_threads

    @property
    def max_queue(self) -> int:
        return self._max_queue

    @property
    def threads(self) -> int:
        """Threads started so far (they live until :meth:`shutdown`)."""
        return len(self._threads)

    @property
    def queued(self) -> int:
        """Jobs waiting for a thread."""
        return len(self._queue)

    @property
    def waiters(self) -> int:
        """Submitters waiting for room."""
        return len(self._waiters)

    @property
    def closed(self) -> bool:
        return self._closed

    def submit(self, job: PoolJob, waiter: RoomWaiter | None = None) -> bool:
        """Queue ``job``; False if the queue is full (nothing queued).

        When refused, ``waiter`` (if given) is told once when a queued job is taken, unless
        it is already waiting. Never blocks beyond a short lock.

        :raises RuntimeError: after :meth:`shutdown`.
        """
        cond = self._cond
        with cond:
            if self._closed:
                raise RuntimeError("the offload thread pool is shut down")
            queue = self._queue
            if len(queue) >= self._max_queue:
                if waiter is not None and waiter not in self._waiters:
                    self._waiters.append(waiter)
                return False
            queue.append(job)
            if self._idle:
                self._idle -= 1
                cond.notify()
            elif len(self._threads) < self._max_threads:
                self._spawn()
        return True

    def forget(self, waiter: RoomWaiter) -> None:
        """Stop waiting for room (the submitter went away)."""
        with self._cond:
            try:
                self._waiters.remove(waiter)
            except ValueError:
                pass

    def pass_room(self) -> None:
        """A woken waiter could not use the room: wake the next one instead."""
        with self._cond:
            waiter = self._next_waiter()
        if waiter is not None:
            self._wake(waiter)

    def shutdown(self, timeout: float) -> tuple[int, int]:
        """Stop: drop the queued jobs, let running ones finish for up to ``timeout`` seconds.

        Returns ``(dropped, still_running)``. Threads still running a job afterwards are
        daemon threads: they do not keep the process alive, and whatever their job hands
        over later is its owner's business (gev's connections are closed by then and ignore
        it). Idempotent.
        """
        deadline = time.monotonic() + max(0.0, timeout)
        with self._cond:
            self._closed = True
            dropped = len(self._queue)
            self._queue.clear()
            self._waiters.clear()
            self._idle = 0
            self._cond.notify_all()
            threads = list(self._threads)
        for t in threads:
            if t is threading.current_thread():
                continue
            t.join(max(0.0, deadline - time.monotonic()))
        busy = sum(1 for t in threads if t.is_alive() and t is not threading.current_thread())
        return dropped, busy

    # ------------------------------------------------------------------ internals

    def _spawn(self) -> None:
        # Under the lock. The new thread takes a job from the queue like any other.
        t = threading.Thread(
            target=self._work, name=f"{self._name}-{len(self._threads)}", daemon=True
        )
        self._threads.append(t)
        t.start()

    def _next_waiter(self) -> RoomWaiter | None:
        # Under the lock.
        waiters = self._waiters
        return waiters.popleft() if waiters else None

    def _wake(self, waiter: RoomWaiter) -> None:
        try:
            waiter.room_available()
        except Exception:
            logger.exception("offload pool: waking %r failed", waiter)

    def _work(self) -> None:
        cond = self._cond
        queue = self._queue
        while True:
            with cond:
                while not queue:
                    if self._closed:
                        return
                    self._idle += 1
                    cond.wait()
                job = queue.popleft()
                waiter = self._next_waiter()
            if waiter is not None:
                self._wake(waiter)
            try:
                job.run()
            except BaseException:
                # Jobs catch their own errors; this is a bug in one, not the application.
                logger.exception("offload pool: job %r escaped its error handling", job)

    def __repr__(self) -> str:
        return (
            f"<ThreadPool threads={len(self._threads)}/{self._max_threads}"
            f" queued={len(self._queue)}/{self._max_queue} waiters={len(self._waiters)}"
            f"{' closed' if self._closed else ''}>"
        )
