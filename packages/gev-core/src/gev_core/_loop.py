"""The event loop: one poller, the connections it owns, and the thread that runs them.

Theory of operation. ``_run`` is the whole reactor: poll, then for each ready fd hand the event
to its connection -- ``Connection._on_read`` for a plain READ event, which reads the way the
connection's read strategy says (see ``_connection.py``: bytes to a protocol's ``receive``; the
ring-buffer path; the stages before the protocol), ``Connection._on_event`` for anything else --
or, for the loop's own fds (the listener, the waker), to ``_on_internal``. The two common
strategies are written out in the loop's body instead of called: ``READ_MESSAGES``, the default
protocol's one read, one ``on_message``, one write (all a plain echo does; with
``READ_MESSAGES_OWN``, the same for a connection with a handler of its own; ``READ_RELAY``, the
same read written to the connection joined by ``Connection.relay``), and ``READ_FRAMES``, one
read handed to a framed protocol's ``receive`` (protobuf, WebSocket); the calls would be a
measurable share of their cost (``bench/RESULTS.md``, "one read path"). They are the same
steps as ``Connection._read_messages`` / ``_read_relay`` / ``_read_frames``, which serve the
events the loop hands over. Every read hands on at most ``READ_BUFFER_SIZE`` bytes, read in one
``read(2)`` (two when a small first one fills up: ``READ_SMALL_SIZE`` in ``_connection.py``).

While a batch of events is being dispatched, sends, writes and closes asked for on the loop thread
are deferred to the end of the batch (``_deferred``) -- but for a write to a connection other than
the one being handled (``_handling``) while nothing is deferred, which goes out at once (see
``Connection.write``); those from other threads arrive through
``call_soon_threadsafe`` with at most one wake-up per batch. A protocol that stopped early to let
the others run (``Connection.continue_later``) is put on ``_ready`` and handed its unconsumed input
again by a task after the next poll (a pending task keeps that poll from blocking).

Timers: a plugin may install one *deadline source* per loop (``next_deadline()`` /
``run_due(now)``, gev-timers' wheel) that drives the poll timeout, so an idle loop with nothing
scheduled blocks and never ticks. :meth:`EventLoop.call_later` is the loop's own small heap of
cancellable timers, for housekeeping (accept back-off, stop deadline, lingering closes) and for
plugins that need a few timers per connection without depending on gev-timers (handshake and
close timeouts): a cancelled timer lets go of its callback at once, and the heap is compacted
when cancelled entries outnumber live ones.

Counters: ``stats`` (a :class:`~gev_core._stats.LoopStats`) is written by this loop's thread where
things happen anyway, and read by metrics plugins from any thread.
"""

from __future__ import annotations

import errno
import heapq
import itertools
import logging
import os
import socket
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any
from typing import Protocol as _TypingProtocol

from ._base import Weakrefable
from ._connection import (
    CLOSED,
    OPEN,
    READ_BUFFER_SIZE,
    READ_FRAMES,
    READ_MESSAGES,
    READ_MESSAGES_OWN,
    READ_RELAY,
    READ_SMALL_SIZE,
    Connection,
    _note_counting,
    _read,
    _reply_list,
    _take_replies,
    _write,
)
from ._handler import WritingHooks, writing_hooks
from ._poll import READ, Waker, make_poller
from ._stats import R_BUDGET, R_STOP, LoopStats

if TYPE_CHECKING:
    import ssl as _ssl

    from mypy_extensions import i32, u8

    from ._connect import ConnectAttempt, ConnectCallback
    from ._protocol import Protocol
    from ._server import Server

logger = logging.getLogger("gev")

__all__ = ["READ_BUFFER_SIZE", "EventLoop", "TimerHandle"]

_ACCEPT_BATCH = 128
#: Client hosts whose address string accepted connections share (``EventLoop._accept``).
_HOSTS_MAX = 1024
_INF = float("inf")
_RESOURCE_ERRNOS = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})
_TRANSIENT_ACCEPT_ERRNOS = frozenset(
    {errno.ECONNABORTED, errno.EPROTO, errno.EPERM, errno.EINTR, errno.EAGAIN}
)


class DeadlineSource(_TypingProtocol):
    """What a timer plugin gives a loop (see ``EventLoop.set_deadline_source``)."""

    def next_deadline(self) -> float | None: ...
    def run_due(self, now: float) -> None: ...


def _noop(*args: Any) -> None:
    return None


# TimerHandle states.
_PENDING, _RAN, _CANCELLED = 0, 1, 2
#: Compact the timer heap once this many cancelled entries are in it (and they are the majority).
_COMPACT_MIN = 256


class TimerHandle:
    """A callback scheduled with :meth:`EventLoop.call_later`; :meth:`cancel` stops it.

    A handle keeps its callback and arguments only while it is pending: once it has run or
    been cancelled it holds nothing, so a cancelled timer never keeps a connection alive.
    """

    __slots__ = ("_args", "_fn", "_loop", "_state", "when")

    def __init__(
        self, when: float, fn: Callable[..., Any], args: tuple[Any, ...], loop: EventLoop
    ) -> None:
        #: When it is (or was) due, a ``time.monotonic()`` reading.
        self.when = when
        self._fn: Callable[..., Any] | None = fn
        self._args = args
        self._loop = loop
        self._state = _PENDING

    def cancel(self) -> bool:
        """Stop the timer. True if this call kept it from running. Safe from any thread."""
        if self._state != _PENDING:
            return False
        self._state = _CANCELLED
        self._fn = None
        self._args = ()
        self._loop._timer_cancelled()
        return True

    @property
    def cancelled(self) -> bool:
        """True once :meth:`cancel` stopped it."""
        return self._state == _CANCELLED

    @property
    def pending(self) -> bool:
        """True while the callback is still going to run."""
        return self._state == _PENDING

    def _take(self) -> tuple[Callable[..., Any], tuple[Any, ...]] | None:
        # On the loop thread, when due: the callback to run, once, or None if cancelled.
        fn = self._fn
        if self._state != _PENDING or fn is None:
            return None
        args = self._args
        self._state = _RAN
        self._fn = None
        self._args = ()
        return fn, args

    def __repr__(self) -> str:
        state = ("pending", "ran", "cancelled")[self._state]
        return f"<TimerHandle {state} when={self.when:.3f} fn={self._fn!r}>"


class EventLoop(Weakrefable):
    """One reactor thread. Created and owned by a :class:`~gev_core.Server`."""

    __slots__ = (
        "__weakref__",
        "_accept_backoff",
        "_assigned_count",
        "_attempts",
        "_buffered",
        "_cancelled_timers",
        "_closed_count",
        "_connecting",
        "_connection_lost_hooks",
        "_connection_made_hooks",
        "_conns",
        "_deadline_source",
        "_deferred",
        "_dispatching",
        "_handler",
        "_handling",
        "_holders",
        "_hosts",
        "_listen_fd",
        "_listener",
        "_lock",
        "_next_deadline",
        "_on_close",
        "_on_connect",
        "_on_message",
        "_out",
        "_poller",
        "_ready",
        "_running",
        "_shedding",
        "_stopping",
        "_tasks",
        "_thread_id",
        "_timed",
        "_timer_seq",
        "_timers",
        "_wake_armed",
        "_waker",
        "_writing_hooks",
        "high_water",
        "index",
        "linger_timeout",
        "low_water",
        "max_buffered",
        "max_read_buffer",
        "max_write_buffer",
        "now",
        "server",
        "stats",
    )

    def __init__(self, server: Server, index: int, poller: str | None = None) -> None:
        self.index = index
        self.server = server
        self._poller = make_poller(poller)
        self._waker = Waker()
        self._poller.register(self._waker.fd, READ)
        self._conns: dict[int, Connection] = {}
        #: The list a protocol's ``receive`` appends its replies to; emptied after each use,
        #: replaced after several replies (``_connection._take_replies``).
        self._out: list[Any] = _reply_list()
        self._deferred: list[tuple[Callable[[Any], Any], Any]] = []
        #: Connections whose protocol stopped early (``continue_later``): resumed next iteration.
        self._ready: list[Connection] = []
        self._tasks: deque[tuple[Callable[..., Any], tuple[Any, ...]]] = deque()
        # Reentrant: loop 0 runs on the main thread, where a signal handler (Server.stop) may
        # interrupt it inside this lock and call call_soon_threadsafe: a plain Lock deadlocks.
        self._lock = threading.RLock()
        self._wake_armed = True
        self._dispatching = False
        #: While dispatching: the fd of the connection being handled, whose own writes wait for
        #: its reply (``Connection.write``). Stale between events, which only defers more.
        self._handling = -1
        self._running = False
        self._stopping = False
        self._thread_id: int | None = None
        self._listener: socket.socket | None = None
        self._listen_fd = -1
        self._accept_backoff = 0.0
        #: One str per client host for the addresses of accepted connections (``_accept``).
        self._hosts: dict[Any, Any] = {}
        self._timers: list[tuple[float, int, TimerHandle]] = []
        self._timer_seq = itertools.count()
        self._cancelled_timers = 0
        self._deadline_source: DeadlineSource | None = None
        self._next_deadline = _INF
        #: Whether a timer heap entry or a deadline source exists: one check per poll iteration.
        self._timed = False
        #: Clock reading (``time.monotonic``) for the current batch; refreshed each poll while a
        #: deadline source is installed, so activity stamps cost one attribute store.
        self.now = time.monotonic()
        self._assigned_count = 0
        self._closed_count = 0
        # The application's handler, or its AsyncHandler stand-in (decided once by the Server).
        handler = server._dispatch_handler
        self._handler = handler
        self._on_message = handler.on_message
        self._on_connect = getattr(handler, "on_connect", _noop)
        self._on_close = getattr(handler, "on_close", _noop)
        #: The handler's pause_writing/resume_writing, resolved once (None: it has neither).
        self._writing_hooks: WritingHooks | None = writing_hooks(handler)
        #: Outbound connections being opened (``connect``), and the sockets of those whose
        #: TCP connect is in progress, by fd (their writable event completes it).
        self._attempts: set[ConnectAttempt] = set()
        self._connecting: dict[int, ConnectAttempt] = {}
        #: This loop's counters (see ``LoopStats``); bytes and messages only while counting.
        self.stats = LoopStats()
        self.stats.counting = server.count_traffic
        self.high_water = server.high_water
        self.low_water = server.low_water
        self.max_write_buffer = server.max_write_buffer
        self.max_read_buffer = server.max_read_buffer
        #: Seconds a closing connection waits for the peer's FIN once ours is sent.
        self.linger_timeout = server.linger_timeout
        #: This loop's share of the server's budget for buffered bytes (``Server.max_buffered``).
        self.max_buffered = max(1, server.max_buffered // server.num_loops)
        #: Bytes buffered by this loop's connections (their read and write buffers and what
        #: their protocols report holding), and the connections that hold any.
        self._buffered = 0
        self._holders: set[Connection] = set()
        self._shedding = False
        self._connection_made_hooks: Callable[[Connection], Any] | None = None
        self._connection_lost_hooks: Callable[[Connection], Any] | None = None

    # ------------------------------------------------------------------ public

    @property
    def connection_count(self) -> int:
        """Connections assigned to this loop and not yet closed (includes ones being set up)."""
        return self._assigned_count - self._closed_count

    @property
    def connections(self) -> list[Connection]:
        """A snapshot of this loop's open connections (take it on the loop thread)."""
        return list(self._conns.values())

    def in_loop_thread(self) -> bool:
        return self._thread_id == threading.get_ident()

    def call_soon_threadsafe(self, fn: Callable[..., Any], *args: Any) -> None:
        """Run ``fn(*args)`` on this loop's thread after the current batch. Safe from any thread."""
        with self._lock:
            self._tasks.append((fn, args))
            wake = self._wake_armed and self._thread_id != threading.get_ident()
            if wake:
                self._wake_armed = False
        if wake:
            self._waker.wake()

    def call_soon(self, fn: Callable[..., Any], *args: Any) -> None:
        """Run ``fn(*args)`` on this loop's thread soon; from the loop thread or any other."""
        self.call_soon_threadsafe(fn, *args)

    def connect(
        self,
        address: str | tuple[str, int],
        handler: Any = None,
        *,
        callback: ConnectCallback,
        protocol: Protocol | type[Protocol] | str | None = None,
        ssl: _ssl.SSLContext | bool | None = None,
        server_hostname: str | None = None,
        timeout: float | None = 30.0,
    ) -> ConnectAttempt:
        """Open an outbound connection owned by this loop; ``callback(conn, exc)`` says how it went.

        The loop-thread form of :meth:`Server.connect <gev_core.Server.connect>` (same
        arguments, same errors), for handlers that open connections (a proxy's upstream side):
        no future, ``callback`` runs on this loop's thread with exactly one of ``conn`` (ready:
        connected, TLS handshake done, the handler's ``on_connect`` called) and ``exc`` (a
        :class:`~gev_core.ConnectError` or :class:`~gev_core.TLSError`) not ``None``. Callable
        from any thread; the attempt starts on the loop thread, after the current batch.

        :returns: the attempt; :meth:`ConnectAttempt.cancel <gev_core.ConnectAttempt.cancel>`
            abandons it (the callback is then not called).
        :raises ValueError: a malformed address, or ``protocol`` not usable for one connection.
        :raises TypeError: ``handler`` has no ``on_message``.
        """
        from ._connect import ConnectAttempt

        attempt = ConnectAttempt(
            self,
            address,
            handler,
            callback=callback,
            protocol=protocol,
            ssl=ssl,
            server_hostname=server_hostname,
            timeout=timeout,
        )
        # Known to the loop from now on, not only once started: a loop closed before it ever
        # ran (a server stopped without start) must still fail the attempt and tell its caller.
        self._attempts.add(attempt)
        self.call_soon_threadsafe(attempt._start)
        return attempt

    def set_deadline_source(self, source: DeadlineSource | None) -> None:
        """Install the object that tells the loop when it must wake up next (timer plugins).

        ``source.next_deadline()`` returns an absolute ``time.monotonic()`` reading or ``None``;
        ``source.run_due(now)`` runs what is due, on the loop thread. Call it before ``start`` or
        on the loop thread; another thread that schedules something earlier must call ``wakeup``.
        """
        self._deadline_source = source
        self._timed = bool(self._timers) or source is not None

    def wakeup(self) -> None:
        """Make a blocked ``poll`` return now. Safe from any thread."""
        self._waker.wake()

    def call_later(self, delay: float, fn: Callable[..., Any], *args: Any) -> TimerHandle:
        """Run ``fn(*args)`` on this loop's thread in ``delay`` seconds; returns its handle.

        Safe from any thread. For a few timers per connection (protocol timeouts) without a
        timer plugin; gev-timers' wheel (``conn.run_after``) scales to many more. Cancel what
        is no longer needed: a pending timer keeps its arguments alive until it is due.

        :raises ValueError: ``delay`` is not a number of seconds.
        """
        if delay != delay or delay == _INF:
            raise ValueError(f"delay must be a finite number of seconds, not {delay!r}")
        if delay < 0.0:
            delay = 0.0
        handle = TimerHandle(time.monotonic() + delay, fn, args, self)
        thread = self._thread_id
        if thread is None or thread == threading.get_ident():
            self._push_timer(handle)
        else:
            self.call_soon_threadsafe(self._push_timer, handle)
        return handle

    def _push_timer(self, handle: TimerHandle) -> None:
        if handle.pending:
            heapq.heappush(self._timers, (handle.when, next(self._timer_seq), handle))
            self._timed = True

    def _timer_cancelled(self) -> None:
        # Cancelled entries stay in the heap until due; drop them all once they are the
        # majority (asyncio does the same), on the loop thread only.
        self._cancelled_timers += 1
        if (
            self._cancelled_timers > _COMPACT_MIN
            and 2 * self._cancelled_timers > len(self._timers)
            and self._thread_id == threading.get_ident()
        ):
            self._timers = [entry for entry in self._timers if entry[2].pending]
            heapq.heapify(self._timers)
            self._cancelled_timers = 0

    def _timeout(self) -> float:
        deadline: float | None = self._timers[0][0] if self._timers else None
        src = self._deadline_source
        if src is not None:
            d = src.next_deadline()
            if d is not None and (deadline is None or d < deadline):
                deadline = d
        self._next_deadline = _INF if deadline is None else deadline
        if self._tasks or self._deferred:
            return 0.0
        if deadline is None:
            return -1.0
        return max(0.0, deadline - time.monotonic())

    def _run_timers(self) -> None:
        now = self.now = time.monotonic()
        # Most iterations of a busy loop have nothing due: skip the calls. A timer scheduled
        # meanwhile from another thread woke the poller, and the next _timeout() sees it.
        if now < self._next_deadline:
            return
        timers = self._timers
        while timers and timers[0][0] <= now:
            entry = heapq.heappop(timers)[2]._take()
            if entry is None:
                self._cancelled_timers = max(0, self._cancelled_timers - 1)
                continue
            fn, args = entry
            try:
                fn(*args)
            except Exception:
                logger.exception("loop timer %r failed", fn)
            # A callback may have compacted the heap: a new list.
            timers = self._timers
        self._timed = bool(timers) or self._deadline_source is not None
        src = self._deadline_source
        if src is not None:
            try:
                src.run_due(now)
            except Exception:
                logger.exception("deadline source %r failed", src)

    # ------------------------------------------------------------------ the reactor

    def run(self) -> None:
        """Run until stopped. Blocks the calling thread, which becomes the loop thread."""
        self._thread_id = threading.get_ident()
        self._running = True
        try:
            self.server._loop_starting(self)
            self._run()
        finally:
            self._running = False
            self._close_all_now()

    def _run(self) -> None:
        # The fds stay the objects the poller made (Any): compiled, an int-typed fd would be
        # unboxed here and boxed again for each of conns.get, read and write.
        poll: Callable[[float], list[tuple[Any, int]]] = self._poller.poll
        conns = self._conns
        deferred = self._deferred
        tasks = self._tasks
        stats = self.stats
        # READ_MESSAGES and READ_FRAMES are written out here rather than called
        # (Connection._read_messages / _read_frames are the same steps); see the module.
        read = _read
        write = _write
        on_message = self._on_message
        READ_ = READ
        # Typed as the connection's fields (compiled: native compares, no conversion).
        MESSAGES: u8 = READ_MESSAGES
        OWN: u8 = READ_MESSAGES_OWN
        RELAY: u8 = READ_RELAY
        FRAMES: u8 = READ_FRAMES
        # The bound receive of the protocol read last: connections share their server's
        # protocol, and an identity check costs less than looking the method up per read.
        receiving: Any = None
        receive: Any = None
        SMALL: i32 = READ_SMALL_SIZE
        now = self.now
        monotonic_ns = time.monotonic_ns
        #: When this iteration's work began (``monotonic_ns``), read only while counting.
        woke = 0
        # Whether the last iteration counted: the protocols served learn that counting began.
        counted = False
        # The default protocol's traffic is summed in locals over the batch and stored once
        # after it: an attribute increment per message costs a measurable share of a
        # pure-Python echo. Paths that may close a connection at once count at once, so
        # that whoever sees it closed sees its bytes too (closes asked for by a handler
        # are deferred until after the batch, behind this store). Only added to while
        # counting, so zeroed after each store rather than per iteration.
        b_in = b_out = m_in = m_out = 0
        while self._running:
            timeout = self._timeout() if self._timed or tasks or deferred else -1.0
            try:
                events = poll(timeout)
            except InterruptedError:
                continue
            # Whether traffic (and the time spent outside poll) is counted in this iteration.
            counting = stats.counting
            if counting:
                woke = monotonic_ns()
                if not counted:
                    # Counting began (Server.count_traffic, any thread): every protocol
                    # these connections speak reports from now on (Protocol.counting); new
                    # connections and swapped protocols are told as they come.
                    for served in list(conns.values()):
                        _note_counting(served._protocol)
            counted = counting
            if self._timed:
                self._run_timers()
                now = self.now
            self._dispatching = True
            for fd, ev in events:
                conn = conns.get(fd)
                if conn is None:
                    self._on_internal(fd, ev)
                    continue
                self._handling = fd
                if ev != READ_:
                    conn._on_event(ev)
                    continue
                reader = conn._reader
                if reader == FRAMES:
                    # READ_FRAMES (protobuf, WebSocket): Connection._read_frames, written
                    # out for the same reason.
                    size = conn._read_size
                    try:
                        data = read(fd, size)
                    except (BlockingIOError, InterruptedError):
                        continue
                    except OSError as exc:
                        conn._io_failed(exc)
                        continue
                    if not data:
                        conn._on_eof()
                        continue
                    got = len(data)
                    if got == size or (size != SMALL and got <= SMALL):
                        data = conn._read_rest(data, size)
                        got = len(data)
                    conn.last_active = now
                    if counting:  # at once: receive may close the connection at once
                        stats.bytes_in += got
                    try:
                        protocol = conn._protocol
                        if protocol is not receiving:
                            receive = protocol.receive
                            receiving = protocol
                        # Typed: compared with got as native ints, not boxed and compared
                        # as objects (a non-int from a protocol is its error, caught below).
                        # Read per event: replaced after several replies or an error.
                        out = self._out
                        consumed: int = receive(conn, data, out)
                        if out:
                            if conn._owed:
                                # A handler offloaded in this read: the replies after it
                                # queue behind the one it owes (Connection._read_frames).
                                conn._queue_framed(_take_replies(self, out))
                            elif len(out) != 1:
                                conn._transmit_out(out)  # one writev, no join
                            elif conn._out is not None or conn._state != OPEN:
                                # No stage on this strategy (TLS connections read
                                # READ_STAGED): the protocol's bytes are the wire's, so
                                # past _send's TLS step.
                                conn._transmit(out.pop())
                            else:
                                # Connection._transmit written out for its common case:
                                # interpreted, the call was ~8 % of a framed echo. pop, not
                                # clear: the list keeps its one slot (_reply_list).
                                reply = out.pop()
                                try:
                                    n = write(fd, reply)
                                except (BlockingIOError, InterruptedError):
                                    n = 0
                                except OSError as exc:
                                    conn._io_failed(exc)
                                    continue
                                if counting:
                                    stats.bytes_out += n
                                if n != len(reply):
                                    conn._buffer(reply, n)
                    except Exception as exc:
                        conn._code_failed(exc, "protocol or handler")
                        continue
                    if consumed != got:
                        conn._keep(data, consumed)
                    elif conn._yielded:
                        conn._yielded = False
                    continue
                if reader != MESSAGES and reader != OWN and reader != RELAY:
                    conn._on_read()
                    continue
                # READ_MESSAGES (or READ_MESSAGES_OWN, the same with the connection's own
                # handler): one read, one on_message, its reply written at once (the strategy
                # guarantees nothing is buffered either way, and no TLS). READ_RELAY (a
                # connection joined by Connection.relay): the same read, written to the other
                # connection (Connection._read_relay).
                size = conn._read_size
                try:
                    data = read(fd, size)
                except (BlockingIOError, InterruptedError):
                    continue
                except OSError as exc:
                    conn._io_failed(exc)
                    continue
                if not data:
                    conn._on_eof()
                    continue
                got = len(data)
                if got == size or (size != SMALL and got <= SMALL):
                    data = conn._read_rest(data, size)
                    got = len(data)
                conn.last_active = now
                if reader == RELAY:
                    # A relayed connection has its side object (Connection.relay made it).
                    rare = conn._rare
                    assert rare is not None
                    peer = rare.relay
                    if peer is not None and peer._state == OPEN:
                        peer_rare = peer._rare
                        assert peer_rare is not None
                        if deferred or peer_rare.tls is not None:
                            peer.write(data)
                        else:
                            peer._transmit(data, True)
                    if counting:
                        b_in += got
                    continue
                try:
                    if reader == MESSAGES:
                        reply = on_message(conn, None, data)
                    else:
                        reply = conn.handler.on_message(conn, None, data)
                except Exception as exc:
                    # Paths that close the connection at once count at once: a reader that
                    # sees it closed sees its bytes too.
                    if counting:
                        stats.bytes_in += got
                    conn._code_failed(exc, "the handler")
                    continue
                if reply is None:
                    if counting:
                        b_in += got
                        m_in += 1
                    continue
                try:
                    n = write(fd, reply)
                except (BlockingIOError, InterruptedError):
                    n = 0
                except Exception as exc:
                    if counting:
                        stats.bytes_in += got
                        stats.messages_in += 1
                    if isinstance(exc, OSError):
                        conn._io_failed(exc)
                    else:  # a reply that is not bytes-like
                        conn._code_failed(exc, "the handler's reply")
                    continue
                if n != len(reply):
                    conn._buffer(reply, n)  # may close it at once (hard cap): count at once
                    if counting:
                        stats.bytes_in += got
                        stats.messages_in += 1
                        stats.messages_out += 1
                        stats.bytes_out += n
                    continue
                if counting:
                    b_in += got
                    m_in += 1
                    m_out += 1
                    b_out += n
            self._dispatching = False
            if counting:
                stats.bytes_in += b_in
                stats.bytes_out += b_out
                stats.messages_in += m_in
                stats.messages_out += m_out
                b_in = b_out = m_in = m_out = 0
            if deferred:
                self._run_deferred()
            if tasks:
                self._run_tasks()
            if counting:
                stats.busy_ns += monotonic_ns() - woke

    def _queue_ready(self, conn: Connection) -> None:
        # A connection whose protocol stopped early: resume it after the next poll, which the
        # queued task keeps from blocking. Nothing of this is on the per-message path.
        ready = self._ready
        if not ready:
            self.call_soon(self._run_ready)
        elif conn in ready:
            return
        ready.append(conn)

    def _run_ready(self) -> None:
        # The connections queued so far; one that yields again is queued for the next turn,
        # after the other connections' events. Dispatching, like an event batch: sends made
        # by handlers are deferred until after the replies they return.
        ready = self._ready
        batch = ready[:]
        ready.clear()
        self._dispatching = True
        try:
            for conn in batch:
                self._handling = conn._fd
                try:
                    conn._resume_input()
                except Exception as exc:
                    conn._code_failed(exc, "resuming its input")
        finally:
            self._dispatching = False
        if self._deferred:
            self._run_deferred()

    def _shed(self) -> None:
        """Over the buffer budget: close the connections holding the most until under it."""
        if self._shedding:
            return
        self._shedding = True
        try:
            budget = self.max_buffered
            for conn in sorted(self._holders, key=_held_bytes, reverse=True):
                if self._buffered <= budget:
                    break
                logger.warning(
                    "closing %r: %d bytes buffered on this loop exceed max_buffered %d;"
                    " this connection holds %d, the most",
                    conn,
                    self._buffered,
                    budget,
                    conn._accounted,
                )
                conn._abort(R_BUDGET)
        finally:
            self._shedding = False

    def _run_deferred(self) -> None:
        deferred = self._deferred
        # Ops may defer more ops (a close that triggers on_close that sends...): run them all.
        i = 0
        while i < len(deferred):
            fn, arg = deferred[i]
            i += 1
            try:
                fn(arg)
            except Exception:
                logger.exception("deferred operation %r failed", fn)
        deferred.clear()

    def _run_tasks(self) -> None:
        tasks = self._tasks
        # Only what is queued now: tasks queued by tasks wait for the next turn (no starvation).
        for _ in range(len(tasks)):
            fn, args = tasks.popleft()
            try:
                fn(*args)
            except Exception:
                logger.exception("task %r failed on loop %d", fn, self.index)

    def _on_internal(self, fd: int, ev: int) -> None:
        if fd == self._waker.fd:
            self._waker.drain()
            with self._lock:
                self._wake_armed = True
        elif fd == self._listen_fd:
            self._accept()
        else:
            attempt = self._connecting.get(fd)
            if attempt is not None:
                attempt._on_ready(ev)  # an outbound connect completed or failed
            # else: a stale event for an fd closed earlier in this batch.

    # ------------------------------------------------------------------ accept

    def _attach_listener(self, listener: socket.socket) -> None:
        self._listener = listener
        self._listen_fd = listener.fileno()
        self._poller.register(self._listen_fd, READ)

    def _detach_listener(self) -> None:
        # Stop accepting and let go of our descriptor of the listening socket at once: a
        # listener owned by this process alone refuses new clients from now on instead of
        # queueing them until exit, and one shared with other processes (inherited from a
        # supervisor) keeps its queue for them.
        listener = self._listener
        if listener is None:
            return
        if self._listen_fd >= 0:
            try:
                self._poller.unregister(self._listen_fd)
            except (KeyError, OSError, ValueError):  # unregistered by an accept back-off
                pass
            self._listen_fd = -1
        self._listener = None
        listener.close()

    def _accept(self) -> None:
        listener = self._listener
        if listener is None:
            return
        server = self.server
        for _ in range(_ACCEPT_BATCH):
            try:
                sock, addr = listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                if exc.errno in _RESOURCE_ERRNOS:
                    self._accept_exhausted(exc)
                    return
                if exc.errno in _TRANSIENT_ACCEPT_ERRNOS:
                    continue
                logger.error("accept() failed on %s: %s", server.address, exc)
                return
            self._accept_backoff = 0.0
            try:
                sock.setblocking(False)
                if server.tcp_nodelay and sock.family != socket.AF_UNIX:
                    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            except OSError:
                sock.close()
                continue
            fd = sock.detach()
            if type(addr) is tuple:
                # accept() makes a new str of the client's host every time, kept as long as the
                # connection: 64 bytes a connection where many come from the same host (a load
                # balancer, a proxy, a NAT). One str per host instead, from a bounded table.
                host = addr[0]
                hosts = self._hosts
                known = hosts.get(host)
                if known is None:
                    if len(hosts) >= _HOSTS_MAX:
                        hosts.clear()
                    hosts[host] = host
                elif len(addr) == 2:
                    addr = (known, addr[1])
                else:
                    addr = (known, *addr[1:])
            loop = server._pick_loop()
            loop._assigned_count += 1
            conn = Connection(fd, addr, loop, loop._handler, server._protocol)
            if loop is self:
                self._add(conn)
            else:
                loop.call_soon_threadsafe(loop._add, conn)

    def _accept_exhausted(self, exc: OSError) -> None:
        # Out of file descriptors (or kernel memory): stop listening for a while instead of
        # spinning on a listener that stays readable, then try again. Pending clients wait in the
        # kernel's backlog meanwhile.
        delay = self._accept_backoff = min(max(self._accept_backoff * 2, 0.01), 1.0)
        logger.warning(
            "accept() failed on %s: %s; pausing accepts for %.0f ms",
            self.server.address,
            exc,
            delay * 1000,
        )
        self._poller.unregister(self._listen_fd)
        self.call_later(delay, self._resume_accept)

    def _resume_accept(self) -> None:
        if self._listener is not None and not self._stopping and self._listen_fd >= 0:
            self._poller.register(self._listen_fd, READ)

    def _add(self, conn: Connection) -> None:
        stats = self.stats
        stats.accepted += 1
        if self._stopping:
            self._closed_count += 1
            stats.count_close(R_STOP)
            os.close(conn._fd)
            return
        fd = conn._fd
        # The key is the connection's own int object: ``fd`` is a machine integer here
        # (compiled), and a key made from it would be a second int per connection.
        self._conns[conn._fd_obj] = conn
        preamble = self.server._preamble
        if preamble is not None:
            conn._start_preamble(preamble)
        rare = conn._rare
        if conn._state == OPEN and (rare is None or rare.preamble is None):
            conn._after_preamble()
        if conn._state == CLOSED:
            return
        conn._refresh()
        conn._mask = mask = conn._interest()
        self._poller.register(fd, mask)

    def _connection_closed(self, conn: Connection) -> None:
        hook = self._connection_lost_hooks
        try:
            if hook is not None:
                hook(conn)
            if conn.handler is self._handler:
                self._on_close(conn)
            else:  # an outbound connection with a handler of its own
                getattr(conn.handler, "on_close", _noop)(conn)
        except Exception:
            logger.exception("on_close failed for %r", conn)
        if self._stopping and not self._conns:
            self._running = False

    def _connection_gone(self, conn: Connection) -> None:
        # A connection closed before the handler and the plugins heard of it (its preamble
        # failed or timed out): nobody to tell.
        if self._stopping and not self._conns:
            self._running = False

    # ------------------------------------------------------------------ stop

    def _begin_stop(self, deadline: float) -> None:
        self._stopping = True
        self._detach_listener()
        self._abandon_attempts()
        for conn in list(self._conns.values()):
            if conn._state == OPEN:
                # Why it closes, whatever the protocol's goodbye closes it with.
                conn._set_reason(R_STOP)
                if not conn._established:
                    conn._abort(R_STOP)  # still in its preamble: nobody to say goodbye to
                    continue
                # Each protocol says goodbye its own way (WebSocket: a 1001 close frame); the
                # default closes gracefully. Whatever is still open at the deadline is dropped.
                try:
                    conn._protocol.server_stopping(conn)
                except Exception:
                    logger.exception("%r failed to stop %r; closing it", conn._protocol, conn)
                    conn._close(R_STOP)
        if not self._conns:
            self._running = False
            return
        self.call_later(max(0.0, deadline - time.monotonic()), self._stop_now)

    def _begin_drain(self, deadline: float, stop_timeout: float) -> None:
        # Stop accepting; connections end by themselves until ``deadline``, then as in a stop.
        self._stopping = True
        self._detach_listener()
        if not self._conns:
            self._running = False
            return
        self.call_later(max(0.0, deadline - time.monotonic()), self._drain_expired, stop_timeout)

    def _drain_expired(self, stop_timeout: float) -> None:
        if self._conns:
            logger.info(
                "drain time is up: closing %d connection(s) of loop %d",
                len(self._conns),
                self.index,
            )
        self._begin_stop(time.monotonic() + stop_timeout)

    def _stop_now(self) -> None:
        late = 0
        for conn in list(self._conns.values()):
            if conn._out is not None:
                logger.warning("stop: dropping %d unsent bytes for %r", len(conn._out), conn)
            else:
                late += 1
            conn._abort(R_STOP)
        if late:
            logger.info("stop: %d connections had not finished closing in time; dropped", late)
        self._running = False

    def _abandon_attempts(self) -> None:
        # Stopping: outbound connections not yet ready fail with "stopping" (their sockets
        # closed, their callers told).
        for attempt in list(self._attempts):
            try:
                attempt._abandon()
            except Exception:
                logger.exception("failed to abandon %r", attempt)

    def _close_all_now(self) -> None:
        self._abandon_attempts()
        for conn in list(self._conns.values()):
            try:
                conn._abort(R_STOP)
            except Exception:
                logger.exception("failed to close %r", conn)
        self._poller.close()
        self._waker.close()


def _held_bytes(conn: Connection) -> int:
    return conn._accounted
