"""The asyncio companion: one thread running an asyncio event loop (uvloop when importable)
beside a server's gev loops, for handlers written as coroutines.

Python's database and HTTP clients for asyncio (asyncpg, redis.asyncio, httpx) need a running
asyncio loop; gev's loops are not asyncio loops. So a server whose handler has ``async def``
callbacks gets one companion thread with an asyncio loop, and the coroutines run there: the gev
loop creates each coroutine object (which runs nothing), takes places for a batch of them
with :meth:`reserve_many` (or one with :meth:`reserve`) and hands the batch over itself: its
link (``gev_core._jobs.LoopLink``) posts one callback to this loop that starts them as tasks
and, once per turn of this loop, hands the finished ones back to the gev loop.
:meth:`submit` starts one job on its own (``on_connect`` and the like).

Hand-over costs two locks and one ``call_soon_threadsafe`` per batch. The number of
coroutines running at once is bounded server-wide (``max_tasks``); a submitter refused for that
waits for room exactly as with the thread pool (:class:`~gev_core._threadpool.RoomWaiter`).
Places of batch-started tasks are given back once per turn of the asyncio loop, under one
lock (:meth:`release_later`).

Stopping (:meth:`AsyncioCompanion.stop`) is bounded: coroutines still running get until the
deadline to finish (``on_close`` coroutines of the connections a stopping server closed, say),
are then cancelled, get a short grace to unwind, and the thread is joined. A coroutine that
blocks the asyncio loop itself (``time.sleep`` inside ``async def``) cannot be interrupted: the
thread is then left behind as a daemon thread, with a warning.
"""

from __future__ import annotations

import asyncio
import importlib
import logging
import sys
import threading
import time
from collections import deque
from collections.abc import Coroutine, Sequence
from typing import Any, Final
from typing import Protocol as _TypingProtocol

from ._threadpool import RoomWaiter

__all__ = ["CANCEL_GRACE", "AsyncioCompanion", "CoroutineJob", "new_event_loop"]

logger = logging.getLogger("gev")

#: Seconds cancelled coroutines get to unwind (their ``finally`` blocks, ``async with``
#: exits) before what waits for them goes on without them.
CANCEL_GRACE = 2.0

_LOOPS = ("auto", "asyncio", "uvloop")

#: Python 3.12+: batch-started tasks start eagerly -- the coroutine runs at once, up to its
#: first real suspension, inside the Task constructor; one that never suspends is done before
#: it was ever scheduled. Earlier versions schedule its first step (``loop.create_task``).
#: Final: compiled code reads it as a constant, not from the module's dict, per request.
EAGER: Final = sys.version_info >= (3, 12)
Task: Final[Any] = asyncio.Task


class CoroutineJob(_TypingProtocol):
    """A coroutine to run on the companion, and what to do with its outcome."""

    #: The task running it, set by :meth:`started` (companion thread only).
    task: asyncio.Task[Any] | None

    def coroutine(self) -> Coroutine[Any, Any, Any] | None:
        """The coroutine to run, taken once; None if the job was cancelled before it started
        (the job closes its coroutine itself then)."""

    def started(self, task: asyncio.Task[Any]) -> None:
        """The coroutine runs as ``task`` (companion thread)."""

    def finished(self, task: asyncio.Task[Any]) -> None:
        """``task`` is done -- returned, raised or was cancelled (companion thread)."""


def new_event_loop(kind: str = "auto") -> tuple[asyncio.AbstractEventLoop, bool]:
    """A new event loop: ``"uvloop"``, ``"asyncio"``, or ``"auto"`` (uvloop when importable).

    Returns the loop and whether it is uvloop's.

    :raises ValueError: an unknown ``kind``.
    :raises ImportError: ``"uvloop"`` without uvloop installed.
    """
    if kind not in _LOOPS:
        raise ValueError(f"asyncio loop must be one of {', '.join(_LOOPS)}, not {kind!r}")
    if kind != "asyncio":
        try:
            # Optional, and untyped here: imported by name so no build needs it.
            uvloop = importlib.import_module("uvloop")
        except ImportError:
            if kind == "uvloop":
                raise ImportError(
                    "asyncio_loop='uvloop' needs uvloop: pip install uvloop"
                ) from None
        else:
            loop: asyncio.AbstractEventLoop = uvloop.new_event_loop()
            return loop, True
    return asyncio.new_event_loop(), False


class AsyncioCompanion:
    """A thread running an asyncio event loop for a server's coroutines.

    :param loop: ``"auto"`` (uvloop when importable), ``"uvloop"`` or ``"asyncio"``.
    :param max_tasks: most coroutines running at once, server-wide; at least 1.
    :param name: the thread's name.
    """

    def __init__(
        self, loop: str = "auto", max_tasks: int = 10_000, name: str = "gev-asyncio"
    ) -> None:
        if loop not in _LOOPS:
            raise ValueError(f"asyncio loop must be one of {', '.join(_LOOPS)}, not {loop!r}")
        if max_tasks < 1:
            raise ValueError(f"max_tasks must be >= 1, not {max_tasks}")
        self._kind = loop
        self._max_tasks = max_tasks
        self._name = name
        self._lock = threading.Lock()
        self._closed = False
        #: Coroutines accepted and not finished (the bound), under ``_lock``.
        self._count = 0
        self._waiters: deque[RoomWaiter] = deque()
        #: Every task of ours that runs, to cancel at stop (companion thread only), with its job
        #: when it was started in a link's batch (None otherwise). Also the strong
        #: references asyncio wants someone to hold.
        self._tasks: dict[asyncio.Task[Any], CoroutineJob | None] = {}
        #: Batch-started tasks finished and not yet released from the bound (companion thread).
        self._finished_count = 0
        self._release_scheduled = False
        #: Batches handed over by the links (loop threads; a counter for tests and
        #: benchmarks).
        self.batches = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._uvloop = False
        self._runner: threading.Thread | None = None
        self._ready = threading.Event()
        self._failure: BaseException | None = None

    # ------------------------------------------------------------------ any thread

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        """The companion's event loop (after :meth:`start`)."""
        loop = self._loop
        if loop is None:
            raise RuntimeError("the asyncio companion is not running")
        return loop

    @property
    def running(self) -> bool:
        return self._loop is not None and not self._closed

    @property
    def uses_uvloop(self) -> bool:
        return self._uvloop

    @property
    def max_tasks(self) -> int:
        return self._max_tasks

    @property
    def active(self) -> int:
        """Coroutines accepted and not yet finished."""
        return self._count

    def in_companion_thread(self) -> bool:
        t = self._runner
        return t is not None and t is threading.current_thread()

    def start(self, timeout: float = 30.0) -> None:
        """Start the thread and its loop; returns once the loop runs. Idempotent.

        :raises ImportError: uvloop was asked for and is missing.
        :raises RuntimeError: after :meth:`stop`, or the loop did not start in time.
        """
        with self._lock:
            if self._closed:
                raise RuntimeError("the asyncio companion is stopped")
            thread = self._runner
            starting = thread is None
            if thread is None:
                thread = self._runner = threading.Thread(
                    target=self._main, name=self._name, daemon=True
                )
        if starting:
            thread.start()
        if not self._ready.wait(timeout):
            raise RuntimeError(f"the asyncio companion did not start within {timeout} s")
        if self._failure is not None:
            raise self._failure

    def submit(self, job: CoroutineJob, waiter: RoomWaiter | None = None) -> bool:
        """Run ``job``'s coroutine on the companion; False if ``max_tasks`` run already.

        When refused, ``waiter`` (if given) is told once when a coroutine finishes. Any
        thread; the companion must be started.

        :raises RuntimeError: not started, or stopped.
        """
        # One job at a time, off the per-request path (connections hand theirs over in
        # batches through their link); the place is taken exactly as for a batch.
        if not self.reserve(waiter):
            return False
        self._post(self._start, job, True)
        return True

    def reserve(self, waiter: RoomWaiter | None = None) -> bool:
        """Take a place within ``max_tasks`` for a job a link will start; False
        if there is none (``waiter``, if given, is then told once when a coroutine finishes).

        :raises RuntimeError: not started, or stopped.
        """
        with self._lock:
            if self._closed or self._loop is None:
                raise RuntimeError("the asyncio companion is not running")
            if self._count >= self._max_tasks:
                if waiter is not None and waiter not in self._waiters:
                    self._waiters.append(waiter)
                return False
            self._count += 1
            return True

    def reserve_many(self, n: int, waiter: RoomWaiter | None = None) -> int:
        """Take up to ``n`` places within ``max_tasks`` at once, for a batch: how many were
        taken (0: none free, and ``waiter``, if given, is told once when a coroutine
        finishes). Places not used are given back with :meth:`give_back`.

        :raises RuntimeError: not started, or stopped.
        """
        with self._lock:
            if self._closed or self._loop is None:
                raise RuntimeError("the asyncio companion is not running")
            free = self._max_tasks - self._count
            if free <= 0:
                if waiter is not None and waiter not in self._waiters:
                    self._waiters.append(waiter)
                return 0
            if n > free:
                n = free
            self._count += n
            return n

    def give_back(self, n: int) -> None:
        """Return ``n`` places taken by :meth:`reserve_many` and not used; one waiter is
        woken per place, as when coroutines finish. Any thread."""
        if n <= 0:
            return
        with self._lock:
            self._count -= n
            waiters = self._waiters
            woken = [waiters.popleft() for _ in range(min(n, len(waiters)))]
        for waiter in woken:
            self._wake(waiter)

    def forget(self, waiter: RoomWaiter) -> None:
        """Stop waiting for room."""
        with self._lock:
            try:
                self._waiters.remove(waiter)
            except ValueError:
                pass

    def pass_room(self) -> None:
        """A woken waiter could not use the room: wake the next one instead."""
        with self._lock:
            waiter = self._waiters.popleft() if self._waiters else None
        if waiter is not None:
            self._wake(waiter)

    def cancel(self, jobs: Sequence[CoroutineJob]) -> None:
        """Cancel these jobs' coroutines (those that run; the others never start).

        Any thread. Jobs submitted earlier from the same thread are seen: hand-over and
        cancellation travel through one FIFO.
        """
        if jobs:
            self._post(self._cancel, list(jobs))

    def run_after(self, jobs: Sequence[CoroutineJob], job: CoroutineJob) -> None:
        """Run ``job`` once ``jobs`` (cancelled, usually) have finished, or after
        :data:`CANCEL_GRACE` seconds. Not counted against ``max_tasks``: it is the
        ``on_close`` of a connection whose coroutines just ended. Any thread."""
        self._post(self._run_after_soon, list(jobs), job)

    def stop(self, timeout: float = 5.0) -> int:
        """Let running coroutines finish for up to ``timeout`` s, cancel the rest, stop.

        Returns how many coroutines had to be cancelled. Call it from any thread but the
        companion's; idempotent.
        """
        with self._lock:
            if self._closed:
                return 0
            self._closed = True
            loop = self._loop
            thread = self._runner
            self._waiters.clear()
        if loop is None or thread is None:
            return 0
        result: list[int] = []
        deadline = time.monotonic() + max(0.0, timeout)
        try:
            loop.call_soon_threadsafe(self._begin_shutdown, deadline, result)
        except RuntimeError:  # the loop closed already (its thread failed)
            pass
        thread.join(max(0.0, deadline - time.monotonic()) + CANCEL_GRACE + 1.0)
        if thread.is_alive():
            logger.warning(
                "the asyncio companion did not stop within %.1f s: a coroutine blocks its"
                " loop (time.sleep or blocking I/O inside async def?); leaving it behind",
                timeout + CANCEL_GRACE + 1.0,
            )
        return result[0] if result else 0

    def __repr__(self) -> str:
        kind = "uvloop" if self._uvloop else "asyncio"
        state = "stopped" if self._closed else "running" if self._loop is not None else "new"
        return f"<AsyncioCompanion {kind} {state} active={self._count}/{self._max_tasks}>"

    # ------------------------------------------------------------------ companion thread

    def _main(self) -> None:
        try:
            loop, self._uvloop = new_event_loop(self._kind)
        except BaseException as exc:
            self._failure = exc
            self._ready.set()
            return
        asyncio.set_event_loop(loop)
        loop.set_exception_handler(_log_loop_error)
        self._loop = loop
        loop.call_soon(self._ready.set)
        try:
            loop.run_forever()
        finally:
            try:
                loop.run_until_complete(loop.shutdown_asyncgens())
                # asyncio.to_thread() and run_in_executor(None, ...) threads: bounded.
                loop.run_until_complete(
                    asyncio.wait_for(loop.shutdown_default_executor(), CANCEL_GRACE)
                )
            except BaseException:
                logger.warning("asyncio companion: shutting down its executor", exc_info=True)
            finally:
                asyncio.set_event_loop(None)
                loop.close()

    def _post(self, fn: Any, *args: Any) -> None:
        loop = self._loop
        if loop is None:
            raise RuntimeError("the asyncio companion is not running")
        try:
            loop.call_soon_threadsafe(fn, *args)
        except RuntimeError:
            # Closed after a stop that timed out: nothing of ours runs there any more.
            pass

    def release_later(self) -> None:
        """A batch-started task finished (or was dropped unstarted): its place is given back
        at the end of this turn of the loop, with the others' (companion thread)."""
        self._finished_count += 1
        if not self._release_scheduled:
            self._release_scheduled = True
            self.loop.call_soon(self._release_finished)

    def _release_finished(self) -> None:
        # The places of the batch-started tasks that finished in this turn of the loop, under
        # one lock; one waiter woken per place, as _release does.
        n = self._finished_count
        self._finished_count = 0
        self._release_scheduled = False
        with self._lock:
            self._count -= n
            waiters = self._waiters
            woken = [waiters.popleft() for _ in range(min(n, len(waiters)))]
        for waiter in woken:
            self._wake(waiter)

    def _start(self, job: CoroutineJob, counted: bool) -> None:
        try:
            coro = job.coroutine()
        except Exception:
            logger.exception("asyncio companion: job %r failed to start", job)
            coro = None
        if coro is None:
            if counted:
                self._release()
            return
        loop = self.loop
        task = loop.create_task(coro)
        self._tasks[task] = None
        task.add_done_callback(self._task_done if counted else self._uncounted_done)
        job.started(task)
        task.add_done_callback(job.finished)

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.pop(task, None)
        self._release()

    def _uncounted_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.pop(task, None)

    def _release(self) -> None:
        with self._lock:
            self._count -= 1
            waiter = self._waiters.popleft() if self._waiters else None
        if waiter is not None:
            self._wake(waiter)

    def _wake(self, waiter: RoomWaiter) -> None:
        try:
            waiter.room_available()
        except Exception:
            logger.exception("asyncio companion: waking %r failed", waiter)

    def _cancel(self, jobs: list[CoroutineJob]) -> None:
        for job in jobs:
            task = job.task
            if task is not None and not task.done():
                task.cancel()

    def _run_after_soon(self, jobs: list[CoroutineJob], job: CoroutineJob) -> None:
        pending: list[asyncio.Task[Any]] = []
        for j in jobs:
            t = j.task
            if t is not None and not t.done():
                pending.append(t)
        if not pending:
            self._start(job, False)
            return
        waiter = self.loop.create_task(self._run_after(pending, job))
        self._tasks[waiter] = None
        waiter.add_done_callback(self._uncounted_done)

    async def _run_after(self, pending: list[asyncio.Task[Any]], job: CoroutineJob) -> None:
        await asyncio.wait(pending, timeout=CANCEL_GRACE)
        self._start(job, False)

    def _begin_shutdown(self, deadline: float, result: list[int]) -> None:
        # What was submitted before stop() has started already: its _start calls were posted
        # to this loop before this one (call_soon_threadsafe keeps the order).
        task = self.loop.create_task(self._shutdown(deadline, result))
        self._tasks[task] = None

    async def _shutdown(self, deadline: float, result: list[int]) -> None:
        me = asyncio.current_task()
        try:
            while True:
                pending = [t for t in self._tasks if t is not me and not t.done()]
                left = deadline - time.monotonic()
                if not pending or left <= 0:
                    break
                await asyncio.wait(pending, timeout=left)
            pending = [t for t in self._tasks if t is not me and not t.done()]
            for t in pending:
                t.cancel()
            if pending:
                logger.warning(
                    "stop: cancelling %d coroutine(s) still running on the asyncio companion",
                    len(pending),
                )
                await asyncio.wait(pending, timeout=CANCEL_GRACE)
            result.append(len(pending))
        finally:
            self.loop.stop()


def _log_loop_error(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
    exc = context.get("exception")
    message = context.get("message", "asyncio companion error")
    if isinstance(exc, BaseException):
        logger.error("asyncio companion: %s", message, exc_info=exc)
    else:
        logger.error("asyncio companion: %s", message)
