"""Work a connection hands off -- to a thread, or to a coroutine -- and its replies, in order.

Theory of operation. A handler must not block its loop; what blocks (psycopg, requests, a file)
goes to the server's :class:`~gev_core._threadpool.ThreadPool`, what awaits (asyncpg,
redis.asyncio, httpx) to its :class:`~gev_core._companion.AsyncioCompanion`. Each connection that
does so gets one :class:`ConnectionJobs`, created on first use (a connection that never offloads
costs nothing), which runs on the connection's loop thread and owns four things:

* **Order.** Every job that answers a request takes the next place in the connection's
  :class:`~gev_core._reorder.ReplyOrder`; so do replies the protocol produced inline while
  earlier ones are still owed (:meth:`ConnectionJobs.framed`, :meth:`ConnectionJobs.reply`).
  Whatever finishes first, replies leave in request order. A reply value is framed with the
  protocol's ``pack`` on the loop thread, at its turn -- never earlier, so a stateful ``pack``
  (a compression context) frames in wire order.
* **Bounds.** At most ``max_pending`` replies owed before the connection stops reading (the
  peer's further requests wait in the kernel: TCP pushes back), and at most ``max_pending`` of
  its jobs handed to the pool or the companion at once; the rest wait here, in order. When the
  pool's server-wide queue is full the job waits here too and reading stops until the pool has
  room: a full pool slows the clients that fill it, never the event loop, and loses nothing.
* **Hand-over and hand-back, batched.** Each loop has one :class:`LoopLink` shared by its
  connections: the coroutines started during a batch of events cross to the companion in one
  hand-over after the batch, and finished jobs (coroutines and pool jobs) are appended to the
  link, the first of them posting one ``call_soon_threadsafe`` to the loop for all that arrive
  before it drains them; the rest happens on the loop thread.
* **Failure and close.** A job that raises closes the connection -- at its turn, after the
  replies before it, with the traceback logged -- unless it was given an ``on_error(conn,
  exc)`` callback, whose return value is then the reply. When the connection goes away
  (:meth:`ConnectionJobs.cancel`), held jobs are dropped, queued ones never start, running
  coroutines are cancelled and whatever still finishes is ignored.

The connection is reached only through :class:`JobTarget` (what ``gev_core.Connection``
provides) and its loop through :class:`LoopLike`: this module is tested without sockets.

:class:`AsyncHandler` is what the core hands connections instead of an application handler
whose ``on_message`` is a coroutine function: a plain-function ``on_message`` that submits the
coroutine and returns ``None``, so every protocol -- built-in or third-party -- dispatches to
it as it dispatches to any handler, and the reply arrives later through the order above.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import os
import threading
import time
from collections import deque
from collections.abc import Callable, Coroutine
from typing import Any, Final
from typing import Protocol as _TypingProtocol

from ._companion import EAGER, AsyncioCompanion, Task
from ._errors import ConnectionClosed
from ._reorder import ReplyOrder
from ._threadpool import RoomWaiter, ThreadPool

__all__ = [
    "COROUTINE_CALLBACKS",
    "AsyncHandler",
    "ConnectionJobs",
    "Job",
    "JobOwner",
    "JobTarget",
    "LoopLike",
    "OffloadService",
    "close_callback",
    "connect_callback",
    "coroutine_callbacks",
    "default_max_threads",
    "owned_args",
]

logger = logging.getLogger("gev")

# What a job runs on. The constants are Final: compiled code inlines them instead of reading
# the module's dict, several times per request.
THREAD: Final = 1
COROUTINE: Final = 2

# What a job is for.
_ANSWER: Final = 0  # a reply: it has a place in the reply order
_CONNECT: Final = 1  # an async on_connect: the connection's other jobs wait for it
_CLOSE: Final = 2  # an async on_close: runs after the connection's coroutines ended

# Entries of the reply order: (kind, value).
_REPLY: Final = 0  # a value for the protocol's pack (None: nothing to send)
_FRAMED: Final = 1  # bytes the protocol already framed
_FAILED: Final = 2  # the failed Job: the connection closes here

ErrorCallback = Callable[[Any, BaseException], Any]

#: The handler callbacks that may be coroutine functions.
COROUTINE_CALLBACKS = ("on_message", "on_connect", "on_close")


def owned_args(args: tuple[Any, ...]) -> tuple[Any, ...]:
    """``args`` with views and bytearrays copied to ``bytes``: the work runs after the protocol
    has moved on, and a view into its input buffer would see later bytes (or none)."""
    for arg in args:
        if isinstance(arg, (memoryview, bytearray)):
            return tuple(bytes(a) if isinstance(a, (memoryview, bytearray)) else a for a in args)
    return args


def default_max_threads() -> int:
    """``min(32, CPUs + 4)``, as :class:`concurrent.futures.ThreadPoolExecutor` chooses."""
    return min(32, (os.cpu_count() or 1) + 4)


class LoopLike(_TypingProtocol):
    """What a job needs from the connection's loop (``gev_core.EventLoop`` has it)."""

    def call_soon_threadsafe(self, fn: Callable[..., Any], *args: Any) -> None: ...


class Packer(_TypingProtocol):
    def pack(self, conn: Any, data: Any) -> bytes | bytearray | memoryview: ...


class JobTarget(_TypingProtocol):
    """What :class:`ConnectionJobs` needs from its connection; all on the loop thread.

    ``gev_core.Connection`` provides it.
    """

    @property
    def protocol(self) -> Packer: ...

    def _jobs_write(self, data: Any) -> None:
        """Send framed replies now or buffer them; a no-op once the connection is closed."""

    def _jobs_close(self) -> None:
        """Close after flushing what was written (all replies are out)."""

    def _jobs_fail(self) -> None:
        """A job failed (already logged): close, after what was written; must lead to
        :meth:`ConnectionJobs.cancel`."""

    def _jobs_state(self, busy: bool, hold: bool) -> None:
        """``busy``: replies may be owed, so inline replies must go through
        :meth:`ConnectionJobs.framed` / :meth:`ConnectionJobs.reply` (it stays true after the
        last reply owed left, until an inline reply finds nothing owed: one change per
        stretch of offloaded work, not two per request). ``hold``: stop reading (False: read
        again). Called only when one of them changes."""


class Job:
    """One piece of offloaded work and, once done, its outcome.

    Created and settled on the connection's loop thread; run on a pool thread (``run``) or on
    the companion (``coroutine``/``started``/``finished``).
    """

    __slots__ = (
        "args",
        "cancelled",
        "coro",
        "fn",
        "kind",
        "ok",
        "on_error",
        "owner",
        "role",
        "seq",
        "task",
        "value",
    )

    def __init__(self, owner: ConnectionJobs, role: int, seq: int) -> None:
        #: None once the connection went away while this job ran (no cycle job <-> owner).
        self.owner: ConnectionJobs | None = owner
        self.role = role
        #: Place in the reply order (-1: no reply).
        self.seq = seq
        self.kind = THREAD
        self.fn: Callable[..., Any] | None = None
        self.args: tuple[Any, ...] = ()
        self.coro: Coroutine[Any, Any, Any] | None = None
        self.on_error: ErrorCallback | None = None
        #: Set on the loop thread when the connection goes away; read by the runners.
        self.cancelled = False
        self.task: asyncio.Task[Any] | None = None
        self.ok = False
        self.value: Any = None

    # ------------------------------------------------------------------ pool thread

    def run(self) -> None:
        if self.cancelled:
            return
        fn = self.fn
        assert fn is not None
        try:
            value = fn(*self.args)
        except BaseException as exc:
            self._done(False, exc)
            return
        if inspect.iscoroutine(value):
            value.close()
            self._done(
                False,
                TypeError(
                    f"the offloaded function {fn!r} returned a coroutine: offload the"
                    " coroutine function itself, it then runs on the asyncio companion"
                ),
            )
            return
        self._done(True, value)

    # ------------------------------------------------------------------ companion thread

    def coroutine(self) -> Coroutine[Any, Any, Any] | None:
        coro = self.coro
        self.coro = None
        if coro is not None and self.cancelled:
            coro.close()
            return None
        return coro

    def started(self, task: asyncio.Task[Any]) -> None:
        self.task = task

    def finished(self, task: asyncio.Task[Any]) -> None:
        if task.cancelled():
            self._done(False, asyncio.CancelledError())
            return
        exc = task.exception()
        if exc is not None:
            self._done(False, exc)
            return
        # Answered: _done and ConnectionJobs._post written out (the common case, per request).
        self.ok = True
        self.value = task.result()
        owner = self.owner
        if owner is None or self.role == _CLOSE:
            return
        with owner._lock:
            if owner._cancelled:
                return
            link = owner._link
            link.results.append(self)
            if link.armed:
                return
            link.armed = True
            link.wakeups += 1
            owner._loop.call_soon_threadsafe(link.deliver)

    # ------------------------------------------------------------------ any thread

    def discard(self) -> None:
        """Never to run: release the coroutine (no "never awaited" warning)."""
        self.cancelled = True
        coro = self.coro
        if coro is not None:
            self.coro = None
            coro.close()

    def _done(self, ok: bool, value: Any) -> None:
        self.ok = ok
        self.value = value
        owner = self.owner
        if owner is None:
            return  # the connection went away
        if self.role == _CLOSE:
            # The connection is gone, possibly its loop too: report here, on this thread.
            if not ok and not isinstance(value, asyncio.CancelledError):
                logger.error("on_close failed for %r", owner.target, exc_info=value)
            return
        owner._post(self)

    def describe(self) -> str:
        if self.role == _CONNECT:
            return "on_connect"
        if self.fn is not None:
            return f"offloaded {getattr(self.fn, '__qualname__', self.fn)!r}"
        return "coroutine"

    def __repr__(self) -> str:
        return f"<Job {self.describe()} seq={self.seq}{' cancelled' if self.cancelled else ''}>"


#: Places in the companion's ``max_tasks`` a link takes at once while a batch of events is
#: dispatched (one lock for many requests, from the batch's second job on); those not used
#: go back after the batch.
CREDIT: Final = 64


class LoopLink:
    """One gev loop's channel to its runners: batched hand-over and hand-back.

    Every connection of a loop that offloads shares its loop's link (:meth:`OffloadService.
    link_for`). Both crossings between the gev loop and the other threads are batched here:

    * **Out** (coroutines, loop thread): while the loop dispatches a batch of events, the
      coroutines its handlers start are collected in :attr:`starts` and handed to the
      companion in one ``call_soon_threadsafe`` of its asyncio loop after the batch
      (:meth:`_flush`, on the gev loop's deferred list). Each takes its place in the
      companion's ``max_tasks`` when it is submitted, so the bound and the backpressure are
      decided per request; the places come from :attr:`credit`, taken ``CREDIT`` at a time
      under the companion's lock and given back unused after the batch. Off a batch (a job
      released from a connection's queue by a task) a job is handed over at once.
    * **Back** (results, any thread): a finished job is appended to :attr:`results`, and only
      the first since the loop last drained them posts :meth:`deliver` to the gev loop; the
      rest ride along. A burst of N requests costs about two wake-ups, not 2N. Coroutines
      that finish in one turn of the companion's loop are appended together, under one lock
      (:meth:`_hand_back`), not one lock each.

    :attr:`lock` is also the lock of every :class:`ConnectionJobs` of the loop: a connection's
    ``cancel`` and the hand-back exclude each other, so nothing is posted for a connection
    once its ``cancel`` returned.

    ``handovers`` and ``wakeups`` count the two kinds of crossing (tests and benchmarks).
    """

    __slots__ = (
        "_gev",
        "_service",
        "armed",
        "companion",
        "credit",
        "deferred",
        "deliver",
        "done",
        "finished_cb",
        "flush_entry",
        "hand_back_cb",
        "handing_back",
        "handovers",
        "lock",
        "loop",
        "results",
        "start_cb",
        "starts",
        "wakeups",
    )

    def __init__(self, loop: LoopLike, service: OffloadService) -> None:
        self.loop = loop
        self._service = service
        #: The gev loop's deferred operations (run after each batch), or None for another
        #: kind of loop (tests): its jobs are then handed over one at a time.
        deferred: list[tuple[Callable[[Any], Any], Any]] | None = getattr(loop, "_deferred", None)
        self.deferred = deferred
        self._gev: Any = loop if deferred is not None else None
        self.companion: AsyncioCompanion | None = None
        #: Guards :attr:`results`/:attr:`armed` against the runner threads and the
        #: connections' ``_cancelled`` (shared with each :class:`ConnectionJobs`).
        self.lock = threading.Lock()
        #: Coroutine jobs of the current batch, not yet handed over (loop thread).
        self.starts: list[Job] = []
        #: Places in ``max_tasks`` taken for this batch and not used yet (loop thread).
        self.credit = 0
        #: Finished jobs not yet settled on the loop thread (appended from any thread).
        self.results: deque[Job] = deque()
        #: True from the post of :meth:`deliver` until it runs: later results ride along.
        self.armed = False
        #: Coroutine jobs finished in this turn of the companion's loop, not yet handed back,
        #: and whether the hand-back is scheduled (companion thread).
        self.done: list[Job] = []
        self.handing_back = False
        self.handovers = 0
        self.wakeups = 0
        self.deliver = self._deliver
        self.flush_entry: tuple[Callable[[Any], Any], Any] = (self._flush, None)
        self.start_cb = self._start_batch
        self.finished_cb = self._finished
        self.hand_back_cb = self._hand_back

    def submit(self, job: Job, waiter: RoomWaiter) -> bool:
        """Hand a coroutine job to the companion (now, or after the batch); False if
        ``max_tasks`` run already (``waiter`` is told when there is room). Loop thread.

        :raises RuntimeError: the companion is stopped.
        :raises ImportError: uvloop asked for and missing.
        """
        companion = self.companion
        if companion is None:  # once stopped, reserve() raises as service.companion() would
            companion = self.companion = self._service.companion()
        gev = self._gev
        if gev is not None and gev._dispatching:
            credit = self.credit
            if credit == 0:
                # The batch's first job takes one place (a batch of one then costs one lock,
                # nothing to give back); a second one takes CREDIT, unused ones given back
                # after the batch.
                credit = companion.reserve_many(CREDIT if self.starts else 1, waiter)
                if credit == 0:
                    return False
            self.credit = credit - 1
            starts = self.starts
            if not starts:
                deferred = self.deferred
                assert deferred is not None
                deferred.append(self.flush_entry)
            starts.append(job)
            return True
        if not companion.reserve(waiter):
            return False
        self.handovers += 1
        self._start_now(companion, [job])
        return True

    def _flush(self, _: Any = None) -> None:
        # After the batch (the gev loop's deferred operations): one hand-over for its starts,
        # and the places taken for it and not used go back.
        credit = self.credit
        starts = self.starts
        companion = self.companion
        if credit:
            self.credit = 0
            assert companion is not None
            companion.give_back(credit)
        if not starts:
            return
        self.starts = []
        assert companion is not None
        self.handovers += 1
        try:
            self._start_now(companion, starts)
        except RuntimeError as exc:  # stopped since (a stop that timed out): fail them
            for job in starts:
                job.discard()
                job.ok = False
                job.value = exc
                owner = job.owner
                if owner is not None:
                    owner._settle(job)

    def _start_now(self, companion: AsyncioCompanion, jobs: list[Job]) -> None:
        # Each job has its place taken. RuntimeError: the companion's loop is closed.
        loop = companion.loop
        companion.batches += 1
        loop.call_soon_threadsafe(self.start_cb, jobs)

    # ------------------------------------------------------------------ companion thread

    def _start_batch(self, jobs: list[Job]) -> None:
        # One hand-over, many coroutines, each a task with one done callback (_finished). A
        # job cancelled before it starts just gives its place back, its coroutine closed unrun.
        companion = self.companion
        assert companion is not None
        loop = companion.loop
        tasks = companion._tasks
        finished = self.finished_cb
        for job in jobs:
            coro = job.coro
            job.coro = None
            if coro is None or job.cancelled:
                if coro is not None:
                    coro.close()
                companion.release_later()
                continue
            if EAGER:
                task = Task(coro, loop=loop, eager_start=True)
                job.task = task
                if task.done():  # finished without suspending
                    companion.release_later()
                    self._finish(job, task)
                    continue
            else:
                task = loop.create_task(coro)
                job.task = task
            tasks[task] = job
            task.add_done_callback(finished)

    def _finished(self, task: asyncio.Task[Any]) -> None:
        companion = self.companion
        assert companion is not None
        job = companion._tasks.pop(task, None)
        companion.release_later()
        if isinstance(job, Job):
            self._finish(job, task)

    def _finish(self, job: Job, task: asyncio.Task[Any]) -> None:
        # The outcome (one call: result() raises what the task raised, or CancelledError), and
        # the job queued for this turn's hand-back.
        try:
            value = task.result()
        except BaseException as exc:
            job.ok = False
            job.value = exc
        else:
            job.ok = True
            job.value = value
        self.done.append(job)
        if not self.handing_back:
            self.handing_back = True
            companion = self.companion
            assert companion is not None
            companion.loop.call_soon(self.hand_back_cb)

    def _hand_back(self) -> None:
        # Once per turn of the companion's loop: this turn's finished jobs to the gev loop,
        # under one lock, with at most one wake-up.
        self.handing_back = False
        done = self.done
        if not done:
            return
        self.done = []
        results = self.results
        with self.lock:
            for job in done:
                owner = job.owner
                if owner is None or owner._cancelled:
                    continue
                results.append(job)
            if self.armed or not results:
                return
            self.armed = True
            self.wakeups += 1
            self.loop.call_soon_threadsafe(self.deliver)

    # ------------------------------------------------------------------ loop thread

    def _deliver(self) -> None:
        # Loop thread: settle every result posted so far (and those posted meanwhile).
        self.armed = False
        results = self.results
        while results:
            job = results.popleft()
            owner = job.owner
            if owner is None:
                continue
            try:
                owner._settle(job)
            except Exception:
                logger.exception("settling %r failed", job)

    def __repr__(self) -> str:
        return (
            f"<LoopLink handovers={self.handovers} wakeups={self.wakeups}"
            f" starts={len(self.starts)} results={len(self.results)}>"
        )


_NOT_WAITING: Final = 0

# What _submit did with a job.
_REFUSED: Final = 0  # no room: it stays held, and we wait for room
_ACCEPTED: Final = 1  # the runner has it
_SETTLED: Final = 2  # the runner cannot run it at all: failed on the spot


class ConnectionJobs:
    """The offloaded work of one connection (see the module docstring).

    Every method runs on the connection's loop thread, except :meth:`room_available` and
    ``_post`` (runner threads).
    """

    __slots__ = (
        "_barrier",
        "_busy",
        "_cancelled",
        "_closing",
        "_dying",
        "_held",
        "_hold",
        "_limit",
        "_link",
        "_lock",
        "_loop",
        "_order",
        "_running",
        "_service",
        "_waiting",
        "target",
    )

    def __init__(
        self,
        target: JobTarget,
        loop: LoopLike,
        service: OffloadService,
        link: LoopLink | None = None,
    ) -> None:
        self.target = target
        self._loop = loop
        self._service = service
        #: The loop's channel to the runners (shared by the loop's connections).
        self._link = link if link is not None else service.link_for(loop)
        self._limit = service.max_pending
        self._order = ReplyOrder(service.max_pending)
        #: Jobs not yet handed to a runner: over the per-connection limit, refused by a full
        #: runner, or behind an async on_connect. In order.
        self._held: deque[Job] = deque()
        #: Jobs handed to a runner and not settled.
        self._running: set[Job] = set()
        self._barrier: Job | None = None
        #: Coroutine jobs that were running when the connection went away.
        self._dying: list[Job] = []
        #: Guards ``_cancelled`` against posts from runner threads: once :meth:`cancel`
        #: returns, nothing more is posted to the loop (which may close its waker next). The
        #: link's lock, shared by the loop's connections: the companion hands back a turn's
        #: results under one lock, whichever connections they are for.
        self._lock = self._link.lock
        self._cancelled = False
        self._closing = False
        #: THREAD or COROUTINE while waiting for room in that runner, else 0.
        self._waiting = _NOT_WAITING
        self._busy = False
        self._hold = False

    # ------------------------------------------------------------------ state

    @property
    def outstanding(self) -> int:
        """Replies owed (answered or not) and not yet written."""
        return self._order.outstanding

    @property
    def busy(self) -> bool:
        """Replies are owed: an inline reply must queue behind them."""
        return not self._order.idle

    @property
    def holding(self) -> bool:
        """Reading from the connection is held (too much owed, or the runner is full)."""
        return self._hold

    @property
    def cancelled(self) -> bool:
        return self._cancelled

    @property
    def held_jobs(self) -> int:
        return len(self._held)

    @property
    def running_jobs(self) -> int:
        return len(self._running)

    # ------------------------------------------------------------------ submitting

    def offload(
        self, fn: Any, args: tuple[Any, ...] = (), on_error: ErrorCallback | None = None
    ) -> None:
        """Answer the current request with ``fn(*args)``, run elsewhere.

        A plain function runs on a pool thread; a coroutine function (or a coroutine object,
        without ``args``) on the asyncio companion.

        :raises ConnectionClosed: the connection is closing.
        :raises TypeError: a coroutine object with arguments.
        """
        if self._cancelled or self._closing:
            raise ConnectionClosed(f"{self.target!r} is closing")
        args = owned_args(args)
        if inspect.iscoroutine(fn):
            if args:
                fn.close()
                raise TypeError("offload(coroutine) takes no arguments")
            self._answer(COROUTINE, None, (), fn, on_error)
        elif inspect.iscoroutinefunction(fn):
            self._answer(COROUTINE, None, (), fn(*args), on_error)
        elif callable(fn):
            self._answer(THREAD, fn, args, None, on_error)
        else:
            raise TypeError(f"offload() needs a callable or a coroutine, not {fn!r}")

    def run_coroutine(
        self, coro: Coroutine[Any, Any, Any], on_error: ErrorCallback | None = None
    ) -> None:
        """Answer the current request with what ``coro`` returns (an ``async def on_message``).

        Dropped (the coroutine closed unrun) once the connection is closing.
        """
        if self._cancelled or self._closing:
            coro.close()
            return
        # _answer for a coroutine, written out (the async on_message path, per request).
        order = self._order
        seq = order._next
        order._next = seq + 1
        job = Job(self, _ANSWER, seq)
        job.kind = COROUTINE
        job.coro = coro
        job.on_error = on_error
        if (
            self._held
            or self._waiting
            or self._barrier is not None
            or len(self._running) >= self._limit
        ):
            self._held.append(job)
        else:
            try:
                accepted = self._link.submit(job, self)  # _submit, written out
            except Exception as exc:
                self._submit_failed(job, exc)
            else:
                if accepted:
                    self._running.add(job)
                else:
                    self._waiting = COROUTINE
                    self._held.append(job)
        if not self._busy or self._waiting or seq + 1 - order._head >= self._limit:
            self._update()

    def run_connect(self, coro: Coroutine[Any, Any, Any]) -> None:
        """Run an ``async def on_connect``; this connection's other jobs wait until it ends.

        If it raises, the connection closes with the traceback logged.
        """
        if self._cancelled:
            coro.close()
            return
        job = Job(self, _CONNECT, -1)
        job.kind = COROUTINE
        job.coro = coro
        self._barrier = job
        result = self._submit(job)
        if result == _ACCEPTED:
            self._running.add(job)
        elif result == _REFUSED:
            # The companion is full: the barrier itself waits first in line.
            self._held.appendleft(job)
        self._update()

    def run_close(self, coro: Coroutine[Any, Any, Any]) -> None:
        """Run an ``async def on_close`` once the connection's coroutines have ended.

        Cancels what still runs first (idempotent). Not bounded by ``max_tasks``; a failure
        is logged. Needs the companion running (a closing server stops it last).
        """
        self.cancel()
        job = Job(self, _CLOSE, -1)
        job.kind = COROUTINE
        job.coro = coro
        try:
            self._service.companion().run_after(self._dying, job)
        except RuntimeError:
            job.discard()
            logger.warning("on_close of %r not run: the asyncio companion is stopped", self.target)
        self._dying = []

    def framed(self, data: bytes | bytearray | memoryview) -> None:
        """Bytes the protocol framed inline: sent now if nothing is owed, else after what is."""
        if self._cancelled or not data:
            return
        order = self._order
        if order.idle:
            target = self.target
            target._jobs_write(data)
            if self._busy and not self._cancelled:
                # Nothing owed, and the connection answers inline again: back to its fast
                # path (_update keeps it told busy until now).
                self._busy = False
                target._jobs_state(False, self._hold)
            return
        # Held: it must not change (or point into a buffer that will) meanwhile.
        order.complete(order.reserve(), (_FRAMED, data if type(data) is bytes else bytes(data)))
        self._update()

    def reply(self, value: Any) -> None:
        """A reply to frame with ``pack`` at its turn (a protocol whose ``pack`` keeps state
        calls this while :attr:`busy` instead of framing the reply itself)."""
        if self._cancelled or value is None:
            return
        order = self._order
        order.complete(order.reserve(), (_REPLY, value))
        self._flush()
        self._update()

    def close_after_replies(self) -> None:
        """Stop reading and taking work; close once every reply owed is written."""
        if self._cancelled:
            return
        self._closing = True
        if self._order.idle:
            self._close_target()
            return
        self._update()

    def cancel(self) -> None:
        """The connection went away: drop what is owed, stop what runs. Idempotent."""
        with self._lock:
            if self._cancelled:
                return
            self._cancelled = True
        self._order.close()
        for job in self._held:
            job.discard()
        self._held.clear()
        dying = self._dying
        for job in self._running:
            job.cancelled = True
            job.owner = None  # what it hands back goes nowhere; and no cycle through it
            if job.kind == COROUTINE:
                dying.append(job)
        self._running.clear()
        self._barrier = None
        waiting = self._waiting
        if waiting:
            # Kept: a wake-up already on its way is passed on to the same runner.
            self._service.forget(self, waiting)
        if dying:
            try:
                self._service.companion().cancel(dying)
            except RuntimeError:  # stopped: they were cancelled with it
                pass

    # ------------------------------------------------------------------ runner threads

    def _post(self, job: Job) -> None:
        # Through the loop's link: only the first result since the loop last drained them
        # wakes it. Under our lock: once cancel() returns, nothing more is posted for us.
        with self._lock:
            if self._cancelled:
                return
            link = self._link
            link.results.append(job)
            if link.armed:
                return
            link.armed = True
            link.wakeups += 1
            self._loop.call_soon_threadsafe(link.deliver)

    def room_available(self) -> None:
        """The runner we wait on has room (called on its thread)."""
        with self._lock:
            if not self._cancelled:
                self._loop.call_soon_threadsafe(self._room)
                return
        self._service.pass_room(self._waiting or THREAD)

    # ------------------------------------------------------------------ loop thread

    def _answer(
        self,
        kind: int,
        fn: Callable[..., Any] | None,
        args: tuple[Any, ...],
        coro: Coroutine[Any, Any, Any] | None,
        on_error: ErrorCallback | None,
    ) -> None:
        job = Job(self, _ANSWER, self._order.reserve())
        job.kind = kind
        job.fn = fn
        job.args = args
        job.coro = coro
        job.on_error = on_error
        if (
            self._held
            or self._waiting
            or self._barrier is not None
            or len(self._running) >= self._limit
        ):
            self._held.append(job)
        else:
            result = self._submit(job)
            if result == _ACCEPTED:
                self._running.add(job)
            elif result == _REFUSED:
                self._held.append(job)
        self._update()

    def _submit(self, job: Job) -> int:
        """Hand ``job`` to its runner: ``_ACCEPTED``; ``_REFUSED`` for lack of room (we now
        wait for room); ``_SETTLED`` if the runner cannot run it at all (the job failed on
        the spot: a stopped server, uvloop asked for and missing)."""
        service = self._service
        try:
            if job.kind == THREAD:
                accepted = service.pool().submit(job, self)
            elif job.role == _ANSWER:
                accepted = self._link.submit(job, self)
            else:
                accepted = service.companion().submit(job, self)
        except Exception as exc:
            self._submit_failed(job, exc)
            return _SETTLED
        if accepted:
            return _ACCEPTED
        self._waiting = job.kind
        return _REFUSED

    def _submit_failed(self, job: Job, exc: Exception) -> None:
        job.discard()
        job.ok = False
        job.value = exc
        self._settle_now(job)

    def _settle_now(self, job: Job) -> None:
        # A job that failed before it ran (the runner is shut down or cannot start).
        if job.role == _CONNECT:
            self._connect_failed(job)
            return
        self._complete(job)
        self._flush()

    def _connect_failed(self, job: Job) -> None:
        self._barrier = None
        logger.error("closing %r: on_connect failed", self.target, exc_info=job.value)
        self._fail()

    def _settle(self, job: Job) -> None:
        if self._cancelled:
            return
        self._running.discard(job)
        if job.role == _CONNECT:
            if not job.ok:
                self._connect_failed(job)
                return
            self._barrier = None
            self._pump()
            self._update()
            return
        order = self._order
        if job.ok and job.seq == order._head and not order._ready and not order._waiting:
            # The reply next in line and nothing behind it ready: sent now (complete,
            # pop_ready and _flush for one entry, written out: the common case, per request).
            order._head += 1
            value = job.value
            if value is not None:
                target = self.target
                try:
                    data = target.protocol.pack(target, value)
                except Exception:
                    logger.exception("closing %r: a reply produced later cannot be framed", target)
                    self._fail()
                    return
                if data:
                    target._jobs_write(data)
            if self._held:
                self._pump()
            if self._closing and order._next == order._head:
                self._close_target()
                return
            self._update()
            return
        if job.ok:
            order.complete(job.seq, (_REPLY, job.value))
        else:
            self._complete(job)
        if self._held:
            self._pump()
        self._flush()
        self._update()

    def _room(self) -> None:
        if self._cancelled:
            self._service.pass_room(self._waiting or THREAD)
            return
        kind = self._waiting
        self._waiting = _NOT_WAITING
        before = len(self._held)
        self._pump()
        if kind and len(self._held) == before and not self._waiting:
            # Nothing of ours could use the room (our own limit, or nothing left to run):
            # the next waiter may.
            self._service.pass_room(kind)
        self._flush()
        self._update()

    def _pump(self) -> None:
        held = self._held
        running = self._running
        limit = self._limit
        while held and not self._waiting and len(running) < limit:
            job = held[0]
            if job.role != _CONNECT and self._barrier is not None:
                break
            result = self._submit(job)
            if result == _REFUSED:
                break
            held.popleft()
            if result == _ACCEPTED:
                running.add(job)
            if self._cancelled:
                return

    def _complete(self, job: Job) -> None:
        entry: tuple[int, Any]
        if job.ok:
            entry = (_REPLY, job.value)
        else:
            on_error = job.on_error
            if on_error is not None and not isinstance(job.value, asyncio.CancelledError):
                try:
                    entry = (_REPLY, on_error(self.target, job.value))
                except Exception as exc:
                    job.value = exc
                    entry = (_FAILED, job)
            else:
                entry = (_FAILED, job)
        self._order.complete(job.seq, entry)

    def _flush(self) -> None:
        order = self._order
        entries = order._ready
        if not entries:
            return
        entries = order.pop_ready()
        target = self.target
        pack = target.protocol.pack
        chunks: list[Any] = []
        for kind, value in entries:
            if kind == _REPLY:
                if value is None:
                    continue
                try:
                    data = pack(target, value)
                except Exception:
                    self._write(chunks)
                    logger.exception("closing %r: a reply produced later cannot be framed", target)
                    self._fail()
                    return
                if data:
                    chunks.append(data)
            elif kind == _FRAMED:
                chunks.append(value)
            else:
                self._write(chunks)
                logger.error(
                    "closing %r: %s failed", target, value.describe(), exc_info=value.value
                )
                self._fail()
                return
        self._write(chunks)
        if self._closing and self._order.idle:
            self._close_target()

    def _write(self, chunks: list[Any]) -> None:
        if chunks:
            self.target._jobs_write(chunks[0] if len(chunks) == 1 else b"".join(chunks))

    def _fail(self) -> None:
        self.target._jobs_fail()
        self.cancel()  # the target's abort normally did it already

    def _close_target(self) -> None:
        self._update()
        self.target._jobs_close()

    def _update(self) -> None:
        if self._cancelled:
            return
        order = self._order
        # ReplyOrder's idle / drained / full, read off its counters (per request: no calls).
        outstanding = order._next - order._head
        # Sticky: once told busy, the connection stays so when the last reply owed leaves,
        # until an inline reply finds nothing owed (framed). A connection answered only later
        # (async def on_message) is then told once, not twice per request; an inline reply
        # while told busy costs a call to framed, which writes it at once when nothing is owed.
        busy = outstanding != 0 or self._busy
        if self._closing or self._barrier is not None:
            # Closing, or an async on_connect still runs: messages wait for it in the kernel.
            hold = True
        elif self._hold:
            hold = outstanding > order._resume_at or bool(self._waiting)
        else:
            hold = outstanding >= order._limit or bool(self._waiting)
        if busy != self._busy or hold != self._hold:
            self._busy = busy
            self._hold = hold
            self.target._jobs_state(busy, hold)

    def __repr__(self) -> str:
        return (
            f"<ConnectionJobs of {self.target!r} owed={self._order.outstanding}"
            f" running={len(self._running)} held={len(self._held)}"
            f"{' holding' if self._hold else ''}{' closing' if self._closing else ''}"
            f"{' cancelled' if self._cancelled else ''}>"
        )


class OffloadService:
    """A server's offload machinery: one thread pool and one asyncio companion, each created
    on first use, and the limits every connection's :class:`ConnectionJobs` applies.

    :param max_threads: pool threads (default :func:`default_max_threads`).
    :param max_queue: jobs waiting for a pool thread, server-wide.
    :param max_pending: replies one connection may owe before its reading stops; also how
        many of its jobs run at once.
    :param asyncio_loop: the companion's loop: ``"auto"`` (uvloop when importable),
        ``"uvloop"`` or ``"asyncio"``.
    :param max_tasks: coroutines running at once on the companion, server-wide.
    """

    def __init__(
        self,
        *,
        max_threads: int | None = None,
        max_queue: int = 1024,
        max_pending: int = 32,
        asyncio_loop: str = "auto",
        max_tasks: int = 10_000,
    ) -> None:
        threads = default_max_threads() if max_threads is None else max_threads
        if threads < 1:
            raise ValueError(f"max_threads must be >= 1, not {threads}")
        if max_queue < 1:
            raise ValueError(f"max_queue must be >= 1, not {max_queue}")
        if max_pending < 1:
            raise ValueError(f"max_pending must be >= 1, not {max_pending}")
        if max_tasks < 1:
            raise ValueError(f"max_tasks must be >= 1, not {max_tasks}")
        if asyncio_loop not in ("auto", "asyncio", "uvloop"):
            raise ValueError(
                f"asyncio_loop must be 'auto', 'asyncio' or 'uvloop', not {asyncio_loop!r}"
            )
        self.max_threads = threads
        self.max_queue = max_queue
        self.max_pending = max_pending
        self.max_tasks = max_tasks
        self.asyncio_loop = asyncio_loop
        self._lock = threading.Lock()
        self._pool: ThreadPool | None = None
        self._companion: AsyncioCompanion | None = None
        self._closed = False
        #: Each loop's :class:`LoopLink` (by the loop's identity; created on first use).
        self._links: dict[int, tuple[LoopLike, LoopLink]] = {}

    @property
    def started_pool(self) -> ThreadPool | None:
        """The pool if it was ever needed."""
        return self._pool

    @property
    def started_companion(self) -> AsyncioCompanion | None:
        """The companion if it was ever needed."""
        return self._companion

    def pool(self) -> ThreadPool:
        """The thread pool (created now if needed; its threads start with the first jobs).

        :raises RuntimeError: after :meth:`shutdown`.
        """
        pool = self._pool
        if pool is not None:
            return pool
        with self._lock:
            if self._closed:
                raise RuntimeError("the server's offload pool is shut down")
            if self._pool is None:
                self._pool = ThreadPool(self.max_threads, self.max_queue)
            return self._pool

    def companion(self) -> AsyncioCompanion:
        """The asyncio companion, started now if needed (from any thread).

        :raises RuntimeError: after :meth:`shutdown`.
        :raises ImportError: ``asyncio_loop="uvloop"`` without uvloop.
        """
        companion = self._companion
        if companion is not None and companion.running:
            return companion
        with self._lock:
            if self._closed:
                raise RuntimeError("the server's asyncio companion is stopped")
            if self._companion is None:
                self._companion = AsyncioCompanion(self.asyncio_loop, self.max_tasks)
            companion = self._companion
            companion.start()
            return companion

    def jobs_for(self, target: JobTarget, loop: LoopLike) -> ConnectionJobs:
        """A new :class:`ConnectionJobs` for a connection (its loop thread keeps it)."""
        return ConnectionJobs(target, loop, self, self.link_for(loop))

    def link_for(self, loop: LoopLike) -> LoopLink:
        """``loop``'s :class:`LoopLink`, created on first use (from the loop's thread)."""
        entry = self._links.get(id(loop))
        if entry is not None and entry[0] is loop:
            return entry[1]
        with self._lock:
            entry = self._links.get(id(loop))
            if entry is None or entry[0] is not loop:
                entry = self._links[id(loop)] = (loop, LoopLink(loop, self))
            return entry[1]

    def forget(self, waiter: RoomWaiter, kind: int) -> None:
        runner: ThreadPool | AsyncioCompanion | None = (
            self._pool if kind == THREAD else self._companion
        )
        if runner is not None:
            runner.forget(waiter)

    def pass_room(self, kind: int) -> None:
        runner: ThreadPool | AsyncioCompanion | None = (
            self._pool if kind == THREAD else self._companion
        )
        if runner is not None:
            runner.pass_room()

    def shutdown(self, timeout: float = 5.0) -> None:
        """Stop both runners within about ``timeout`` seconds (after the loops stopped).

        Coroutines still running get until the deadline, then are cancelled; queued pool
        jobs are dropped; pool threads still busy are left behind as daemon threads, with a
        warning. Idempotent.
        """
        with self._lock:
            if self._closed:
                return
            self._closed = True
            companion, pool = self._companion, self._pool
        deadline = time.monotonic() + max(0.0, timeout)
        if companion is not None:
            companion.stop(timeout)
        if pool is not None:
            dropped, busy = pool.shutdown(max(0.0, deadline - time.monotonic()))
            if dropped:
                logger.info("stop: dropped %d offloaded job(s) that had not started", dropped)
            if busy:
                logger.warning(
                    "stop: %d offloaded job(s) still running after %.1f s; their threads are"
                    " left behind",
                    busy,
                    timeout,
                )


# ---------------------------------------------------------------------- async handlers


class JobOwner(_TypingProtocol):
    """A connection that can give its :class:`ConnectionJobs` (created on first use)."""

    def _offload_jobs(self) -> ConnectionJobs: ...


def coroutine_callbacks(handler: Any) -> frozenset[str]:
    """Which of ``on_message``, ``on_connect``, ``on_close`` are coroutine functions.

    Decided once, when a server is built: a handler with none keeps the inline path.

    :raises TypeError: another ``on_*`` callback is a coroutine function (gev calls it and
        uses its result at once, so it cannot be awaited).
    """
    found = frozenset(
        name
        for name in COROUTINE_CALLBACKS
        if inspect.iscoroutinefunction(getattr(handler, name, None))
    )
    for name in dir(type(handler)):
        if (
            name.startswith("on_")
            and name not in COROUTINE_CALLBACKS
            and inspect.iscoroutinefunction(getattr(handler, name, None))
        ):
            raise TypeError(
                f"{type(handler).__name__}.{name} is a coroutine function; only"
                f" {', '.join(COROUTINE_CALLBACKS)} may be"
            )
    return found


def connect_callback(on_connect: Callable[[Any], Any]) -> Callable[[Any], None]:
    """The loop's ``on_connect`` for a handler whose ``on_connect`` is a coroutine function:
    the coroutine runs first among the connection's jobs (see
    :meth:`ConnectionJobs.run_connect`)."""

    def run(conn: Any) -> None:
        result = on_connect(conn)
        if inspect.iscoroutine(result):
            conn._offload_jobs().run_connect(result)

    return run


def close_callback(on_close: Callable[[Any], Any]) -> Callable[[Any], None]:
    """The loop's ``on_close`` for a handler whose ``on_close`` is a coroutine function: the
    coroutine runs once the connection's coroutines have ended (see
    :meth:`ConnectionJobs.run_close`)."""

    def run(conn: Any) -> None:
        result = on_close(conn)
        if inspect.iscoroutine(result):
            conn._offload_jobs().run_close(result)

    return run


class AsyncHandler:
    """Stands in for an application handler with ``async def`` callbacks.

    The server builds one when one of ``on_message``, ``on_connect``, ``on_close`` is a
    coroutine function (decided once, at construction) and hands it to its loops instead of the
    application's handler. An async ``on_message`` becomes a plain function that creates the
    coroutine (which runs nothing yet), submits it as the answer to the request and returns
    ``None``, so a protocol sends nothing inline -- whichever protocol it is, and with whatever
    arguments it calls ``on_message``. ``on_connect`` and ``on_close`` run as coroutines if they
    are coroutine functions, inline otherwise. Every other attribute is the wrapped handler's.

    :param handler: the application's handler (kept as ``__wrapped__``).
    :raises TypeError: none of its callbacks is a coroutine function, or another ``on_*``
        callback is.
    """

    __slots__ = ("__wrapped__", "_on_message", "on_close", "on_connect", "on_message")

    def __init__(self, handler: Any) -> None:
        found = coroutine_callbacks(handler)
        if not found:
            raise TypeError(f"{handler!r} has no async def on_message, on_connect or on_close")
        self.__wrapped__ = handler
        self._on_message: Callable[..., Any] = handler.on_message
        #: What the protocols call for each message.
        self.on_message: Callable[..., Any] = (
            self._submit if "on_message" in found else handler.on_message
        )
        connect = getattr(handler, "on_connect", None)
        close = getattr(handler, "on_close", None)
        #: What the loop calls when a connection opens / closes.
        self.on_connect: Callable[[Any], Any] = (
            _nothing
            if connect is None
            else connect_callback(connect)
            if "on_connect" in found
            else connect
        )
        self.on_close: Callable[[Any], Any] = (
            _nothing if close is None else close_callback(close) if "on_close" in found else close
        )

    def _submit(self, conn: Any, *args: Any) -> None:
        for arg in args:  # owned_args, written out: per request (None and bytes, the usual
            if arg is None or type(arg) is bytes:  # ones, without an isinstance of a tuple)
                continue
            if isinstance(arg, (memoryview, bytearray)):
                args = owned_args(args)
                break
        # The protocols' usual (conn, ctx, data) called directly, not re-packed as *args.
        coro = (
            self._on_message(conn, args[0], args[1])
            if len(args) == 2
            else self._on_message(conn, *args)
        )
        # conn._offload_jobs(), unless that has something to do (a first job, inline replies
        # of the same read to queue first) or conn is not a gev Connection.
        jobs = getattr(conn, "_jobs", None)
        loop = getattr(conn, "_loop", None)
        if isinstance(jobs, ConnectionJobs) and loop is not None and not loop._out:
            jobs.run_coroutine(coro)  # a native call: jobs' type is known here
            return
        conn._offload_jobs().run_coroutine(coro)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.__wrapped__, name)

    def __repr__(self) -> str:
        return f"<AsyncHandler of {self.__wrapped__!r}>"


def _nothing(conn: Any) -> None:
    return None
