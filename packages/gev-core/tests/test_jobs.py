"""A connection's offloaded work, without sockets: threads and coroutines answering out of
order, replies in request order, bounds and backpressure, failures, cancellation and close.

The connection is a fake with the small interface the machinery needs (``JobTarget``); its
loop is either a manual one (the test decides when posted callbacks run, on its own thread)
or a real gev ``EventLoop`` running in its thread.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import queue
import random
import threading
import time
import weakref

import pytest
from gev_core import ConnectionClosed, LineProtocol
from gev_core._jobs import AsyncHandler, OffloadService, coroutine_callbacks
from gev_core.testing import serve

DEADLINE = 30.0


def wait_for(cond, timeout=DEADLINE, what="condition"):
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.002)


class ManualLoop:
    """A LoopLike whose posted callbacks run when the test says so, on the test's thread."""

    def __init__(self):
        self.posted: queue.SimpleQueue = queue.SimpleQueue()

    def call_soon_threadsafe(self, fn, *args):
        self.posted.put((fn, args))

    def run_once(self, timeout=DEADLINE):
        fn, args = self.posted.get(timeout=timeout)
        fn(*args)

    def run_until(self, cond, timeout=DEADLINE, what="condition"):
        deadline = time.monotonic() + timeout
        while not cond():
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"timed out waiting for {what}")
            try:
                self.run_once(min(left, 0.05))
            except queue.Empty:
                pass

    def run_pending(self):
        while True:
            try:
                fn, args = self.posted.get_nowait()
            except queue.Empty:
                return
            fn(*args)

    @property
    def idle(self):
        return self.posted.empty()


class FakeConn:
    """What ConnectionJobs needs from a connection (JobTarget), recording what it is told."""

    def __init__(self, service, loop, protocol=None):
        self.protocol = protocol or LineProtocol()
        self.written = bytearray()
        self.closed = None
        self.busy = False
        self.hold = False
        self.states = []
        self.threads = set()
        self._jobs = service.jobs_for(self, loop)

    def _seen(self):
        self.threads.add(threading.current_thread())

    def _write(self, data):
        self._seen()
        assert self.closed is None, "write after close"
        self.written += data

    def _close(self, _=None):
        self._seen()
        self.closed = self.closed or "close"
        self._jobs.cancel()

    def _abort(self, exc=None):
        self._seen()
        self.closed = self.closed or "abort"
        self._jobs.cancel()

    def _jobs_write(self, data):
        self._write(data)

    def _jobs_close(self):
        self._close()

    def _jobs_fail(self):
        self._abort()

    def _jobs_state(self, busy, hold):
        self._seen()
        self.busy, self.hold = busy, hold
        self.states.append((busy, hold))

    def _offload_jobs(self):
        return self._jobs

    @property
    def jobs(self):
        return self._jobs

    def lines(self):
        return bytes(self.written).split(b"\n")[:-1]

    def __repr__(self):
        return "<FakeConn>"


@pytest.fixture(params=["asyncio", "uvloop"])
def loop_kind(request):
    if request.param == "uvloop":
        pytest.importorskip("uvloop")
    return request.param


@pytest.fixture
def service(request):
    made = []

    def make(**kwargs):
        kwargs.setdefault("max_threads", 4)
        kwargs.setdefault("asyncio_loop", "asyncio")
        s = OffloadService(**kwargs)
        made.append(s)
        return s

    yield make
    for s in made:
        s.shutdown(5)
    gc.collect()  # a coroutine never awaited warns here (and fails the test)


def gated(value, gate):
    """A blocking function that answers ``value`` once ``gate`` is set."""

    def fn():
        assert gate.wait(DEADLINE)
        return value

    return fn


# ---------------------------------------------------------------------- order


def test_thread_replies_leave_in_request_order_when_later_ones_finish_first(service):
    loop = ManualLoop()
    conn = FakeConn(service(), loop)
    gates = [threading.Event() for _ in range(3)]
    for i, gate in enumerate(gates):
        conn.jobs.offload(gated(f"r{i}", gate))
    assert conn.busy and conn.jobs.outstanding == 3
    gates[2].set()
    loop.run_once()  # r2's completion arrives first
    gates[1].set()
    loop.run_once()
    assert conn.written == b""  # r0 is still owed: nothing may leave
    gates[0].set()
    loop.run_once()
    assert conn.lines() == [b"r0", b"r1", b"r2"]
    # Nothing owed; the connection stays told busy until an inline reply (see below).
    assert not conn.jobs.busy and conn.jobs.outstanding == 0
    assert conn.threads == {threading.current_thread()}


def test_coroutine_replies_leave_in_request_order(service, loop_kind):
    loop = ManualLoop()
    svc = service(asyncio_loop=loop_kind)
    conn = FakeConn(svc, loop)
    events = [asyncio.Event() for _ in range(4)]

    async def answer(i):
        await events[i].wait()
        return f"c{i}"

    for i in range(4):
        conn.jobs.run_coroutine(answer(i))
    companion = svc.started_companion
    for i in (3, 1, 2):
        companion.loop.call_soon_threadsafe(events[i].set)
        loop.run_once()
        assert conn.written == b""
    companion.loop.call_soon_threadsafe(events[0].set)
    loop.run_until(lambda: len(conn.lines()) == 4, what="4 replies")
    assert conn.lines() == [b"c0", b"c1", b"c2", b"c3"]


def test_inline_replies_queue_behind_owed_ones(service):
    loop = ManualLoop()
    conn = FakeConn(service(), loop)
    conn.jobs.framed(b"first\n")  # nothing owed: out at once
    assert conn.lines() == [b"first"]
    gate = threading.Event()
    conn.jobs.offload(gated("slow", gate))
    conn.jobs.framed(b"framed-inline\n")  # a stateless protocol's packed reply
    conn.jobs.reply("packed-at-its-turn")  # a stateful protocol's raw reply
    assert conn.lines() == [b"first"]
    gate.set()
    loop.run_once()
    assert conn.lines() == [b"first", b"slow", b"framed-inline", b"packed-at-its-turn"]


def test_the_connection_is_told_busy_once_per_stretch_of_offloaded_work(service):
    # A connection answered only later (async def on_message) is not switched twice per
    # request: told busy at the first job, it stays so after the last reply left, until an
    # inline reply finds nothing owed and goes straight out.
    loop = ManualLoop()
    conn = FakeConn(service(), loop)
    for i in range(3):
        conn.jobs.offload(lambda i=i: f"r{i}")
        loop.run_until(lambda i=i: len(conn.lines()) == i + 1, what=f"reply {i}")
    assert conn.states == [(True, False)]
    assert conn.busy and not conn.jobs.busy
    conn.jobs.framed(b"inline\n")
    assert conn.lines() == [b"r0", b"r1", b"r2", b"inline"]
    assert conn.states == [(True, False), (False, False)]
    conn.jobs.offload(lambda: "r3")
    loop.run_until(lambda: len(conn.lines()) == 5, what="reply 3")
    assert conn.states == [(True, False), (False, False), (True, False)]


def test_a_none_result_sends_nothing_and_frees_its_place(service):
    loop = ManualLoop()
    conn = FakeConn(service(), loop)
    conn.jobs.offload(lambda: None)
    conn.jobs.offload(lambda: "after")
    loop.run_until(lambda: conn.jobs.outstanding == 0, what="both settled")
    assert conn.lines() == [b"after"]


def test_replies_ready_together_are_written_with_one_write(service):
    loop = ManualLoop()
    conn = FakeConn(service(), loop)
    writes = []
    conn._write = lambda data: writes.append(bytes(data))
    gate = threading.Event()
    conn.jobs.offload(gated("a", gate))
    for word in ("b", "c", "d"):
        conn.jobs.offload(lambda w=word: w)
    loop.run_until(lambda: len(conn.jobs._order._waiting) == 3, what="b, c, d done")
    gate.set()
    loop.run_once()
    assert writes == [b"a\nb\nc\nd\n"]


def test_a_reply_is_framed_on_the_loop_thread_at_its_turn(service):
    loop = ManualLoop()
    framed_on = []

    class Recording(LineProtocol):
        def pack(self, conn, data):
            framed_on.append((threading.current_thread(), data))
            return super().pack(conn, data)

    conn = FakeConn(service(), loop, Recording())
    gate = threading.Event()
    conn.jobs.offload(gated("one", gate))
    conn.jobs.offload(lambda: "two")
    loop.run_once()  # "two" is done, but must not be framed before "one"
    assert framed_on == []
    gate.set()
    loop.run_once()
    assert framed_on == [(threading.current_thread(), "one"), (threading.current_thread(), "two")]


# ---------------------------------------------------------------------- runners


def test_plain_functions_run_on_pool_threads_and_coroutines_on_the_companion(service, loop_kind):
    loop = ManualLoop()
    svc = service(asyncio_loop=loop_kind)
    conn = FakeConn(svc, loop)

    async def where_async():
        return threading.current_thread().name

    conn.jobs.offload(lambda: threading.current_thread().name)
    conn.jobs.offload(where_async)  # a coroutine function
    conn.jobs.offload(where_async())  # a coroutine object
    loop.run_until(lambda: len(conn.lines()) == 3, what="3 replies")
    pool_thread, *companion = conn.lines()
    assert pool_thread.startswith(b"gev-offload-")
    assert companion == [b"gev-asyncio", b"gev-asyncio"]


def test_offload_checks_its_arguments(service):
    conn = FakeConn(service(), ManualLoop())

    async def co():
        return 1

    with pytest.raises(TypeError, match="no arguments"):
        conn.jobs.offload(co(), (1,))
    with pytest.raises(TypeError, match="callable"):
        conn.jobs.offload(42)
    assert conn.jobs.outstanding == 0


def test_an_offloaded_function_returning_a_coroutine_fails_clearly(service, caplog):
    loop = ManualLoop()
    conn = FakeConn(service(), loop)

    async def co():
        return 1

    conn.jobs.offload(lambda: co())  # a lambda hides the coroutine function
    loop.run_until(lambda: conn.closed is not None, what="the close")
    assert conn.closed == "abort"
    assert "returned a coroutine" in caplog.text


def test_the_server_runners_start_on_first_use_and_stop(service):
    svc = service(max_threads=2)
    assert svc.started_pool is None and svc.started_companion is None
    loop = ManualLoop()
    conn = FakeConn(svc, loop)
    conn.jobs.offload(lambda: "x")
    loop.run_until(lambda: conn.lines() == [b"x"])
    assert svc.started_pool is not None and svc.started_companion is None
    svc.shutdown(5)
    assert not [
        t for t in threading.enumerate() if t.name.startswith(("gev-offload", "gev-asyncio"))
    ]
    svc.shutdown(5)  # idempotent


def test_work_offered_after_shutdown_fails_its_connection(service, caplog):
    svc = service()
    svc.shutdown(5)
    conn = FakeConn(svc, ManualLoop())
    conn.jobs.offload(lambda: "x")
    assert conn.closed == "abort"
    assert "shut down" in caplog.text


@pytest.mark.parametrize(
    "kwargs",
    [
        {"max_threads": 0},
        {"max_queue": 0},
        {"max_pending": 0},
        {"max_tasks": 0},
        {"asyncio_loop": "trio"},
    ],
)
def test_service_limits_are_checked(kwargs):
    with pytest.raises(ValueError):
        OffloadService(**kwargs)


# ---------------------------------------------------------------------- failures


def test_on_error_turns_a_failure_into_a_reply(service):
    loop = ManualLoop()
    conn = FakeConn(service(), loop)

    def fails():
        raise LookupError("no such key")

    seen = []

    def on_error(c, exc):
        seen.append((c, type(exc), threading.current_thread()))
        return f"ERR {exc}"

    conn.jobs.offload(fails, (), on_error)
    conn.jobs.offload(lambda: "next")
    loop.run_until(lambda: len(conn.lines()) == 2, what="2 replies")
    assert conn.lines() == [b"ERR no such key", b"next"]
    assert seen == [(conn, LookupError, threading.current_thread())]
    assert conn.closed is None


def test_a_failure_closes_after_the_replies_before_it(service, caplog):
    loop = ManualLoop()
    conn = FakeConn(service(), loop)
    gate = threading.Event()

    def fails():
        raise RuntimeError("database down")

    conn.jobs.offload(gated("before", gate))
    conn.jobs.offload(fails)
    conn.jobs.offload(lambda: "after")
    loop.run_until(lambda: conn.jobs._order._waiting.keys() >= {1, 2} or conn.closed)
    assert conn.closed is None  # not before the reply it owes first
    with caplog.at_level(logging.ERROR, logger="gev"):
        gate.set()
        loop.run_until(lambda: conn.closed is not None, what="the close")
    assert conn.lines() == [b"before"]
    assert conn.closed == "abort"
    [record] = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert "failed" in record.getMessage() and "fails" in record.getMessage()
    assert record.exc_info and record.exc_info[0] is RuntimeError


def test_an_on_error_callback_that_raises_closes_the_connection(service, caplog):
    loop = ManualLoop()
    conn = FakeConn(service(), loop)

    def fails():
        raise KeyError("k")

    def bad_callback(c, exc):
        raise ValueError("callback bug")

    conn.jobs.offload(fails, (), bad_callback)
    loop.run_until(lambda: conn.closed is not None)
    assert conn.closed == "abort"
    assert "callback bug" in caplog.text


def test_a_reply_that_cannot_be_framed_closes_the_connection(service, caplog):
    loop = ManualLoop()
    conn = FakeConn(service(), loop)
    conn.jobs.offload(lambda: "fine")
    conn.jobs.offload(lambda: object())  # LineProtocol.pack cannot frame it
    loop.run_until(lambda: conn.closed is not None)
    assert conn.lines() == [b"fine"]
    assert conn.closed == "abort"
    assert "cannot be framed" in caplog.text


def test_a_failing_coroutine_closes_the_connection_with_its_traceback(service, caplog):
    loop = ManualLoop()
    conn = FakeConn(service(), loop)

    async def fails():
        await asyncio.sleep(0)
        raise ZeroDivisionError("async failure")

    conn.jobs.run_coroutine(fails())
    with caplog.at_level(logging.ERROR, logger="gev"):
        loop.run_until(lambda: conn.closed is not None)
    assert conn.closed == "abort"
    assert any(r.exc_info and r.exc_info[0] is ZeroDivisionError for r in caplog.records)


# ---------------------------------------------------------------------- bounds


def test_reading_holds_at_max_pending_and_resumes_when_drained(service):
    loop = ManualLoop()
    conn = FakeConn(service(max_pending=4, max_threads=8), loop)
    gates = [threading.Event() for _ in range(6)]
    for i, gate in enumerate(gates[:3]):
        conn.jobs.offload(gated(str(i), gate))
    assert not conn.hold
    conn.jobs.offload(gated("3", gates[3]))
    assert conn.hold  # 4 owed: stop reading
    # What one read already delivered is still taken, but waits here, not in the pool.
    conn.jobs.offload(gated("4", gates[4]))
    conn.jobs.offload(gated("5", gates[5]))
    assert conn.jobs.running_jobs == 4 and conn.jobs.held_jobs == 2
    for i in range(3):
        gates[i].set()
        loop.run_once()
    # 3 written, 3 owed (> resume at 2): still holding; the held two now run.
    assert conn.lines() == [b"0", b"1", b"2"] and conn.hold
    assert conn.jobs.held_jobs == 0
    gates[3].set()
    loop.run_once()
    assert not conn.hold  # 2 owed
    for gate in gates[4:]:
        gate.set()
    loop.run_until(lambda: len(conn.lines()) == 6)
    assert conn.lines() == [str(i).encode() for i in range(6)]
    assert conn.states[-1] == (True, False)  # reading again; told busy until an inline reply


def test_a_full_pool_holds_the_submitter_and_wakes_it_when_there_is_room(service):
    svc = service(max_threads=1, max_queue=1, max_pending=8)
    loop_a, loop_b = ManualLoop(), ManualLoop()
    a = FakeConn(svc, loop_a)
    b = FakeConn(svc, loop_b)
    gate = threading.Event()
    a.jobs.offload(gated("a", gate))  # runs on the one thread
    wait_for(lambda: svc.started_pool.queued == 0, what="a running")
    b.jobs.offload(lambda: "b1")  # queued
    b.jobs.offload(lambda: "b2")  # refused: the queue is full
    assert b.jobs.held_jobs == 1
    assert b.hold and not b.written  # b stops reading; nothing is lost
    assert svc.started_pool.waiters == 1
    gate.set()
    loop_a.run_once()
    assert a.lines() == [b"a"]
    loop_b.run_until(lambda: len(b.lines()) == 2, what="b's replies")
    assert b.lines() == [b"b1", b"b2"]
    assert not b.hold


def test_a_waiter_that_went_away_passes_the_room_on(service):
    svc = service(max_threads=1, max_queue=1, max_pending=8)
    loops = [ManualLoop() for _ in range(3)]
    a, b, c = (FakeConn(svc, lp) for lp in loops)
    gate = threading.Event()
    a.jobs.offload(gated("a", gate))
    wait_for(lambda: svc.started_pool.queued == 0)
    b.jobs.offload(gated("b-queued", gate))
    b.jobs.offload(lambda: "b-held")
    c.jobs.offload(lambda: "c-held")
    assert svc.started_pool.waiters == 2
    b._abort()  # b goes away while waiting
    gate.set()
    loops[0].run_until(lambda: a.lines() == [b"a"])
    loops[2].run_until(lambda: c.lines() == [b"c-held"], what="c served after b left")


def test_the_companion_bound_holds_the_submitter_too(service):
    svc = service(max_tasks=1)
    loop = ManualLoop()
    conn = FakeConn(svc, loop)
    release = asyncio.Event()

    async def first():
        await release.wait()
        return "1"

    async def second():
        return "2"

    conn.jobs.run_coroutine(first())
    conn.jobs.run_coroutine(second())
    assert conn.jobs.held_jobs == 1 and conn.hold
    svc.started_companion.loop.call_soon_threadsafe(release.set)
    loop.run_until(lambda: len(conn.lines()) == 2)
    assert conn.lines() == [b"1", b"2"] and not conn.hold


# ---------------------------------------------------------------------- going away


def test_results_of_a_closed_connection_are_dropped(service):
    loop = ManualLoop()
    conn = FakeConn(service(), loop)
    gate = threading.Event()
    started = threading.Event()
    ran = threading.Event()

    def job():
        started.set()
        gate.wait(DEADLINE)
        ran.set()
        return "late"

    conn.jobs.offload(job)
    assert started.wait(DEADLINE)
    conn._abort()
    gate.set()
    assert ran.wait(DEADLINE)
    time.sleep(0.05)
    assert loop.idle  # nothing was even posted to the loop
    assert conn.written == b""


def test_queued_and_held_jobs_never_start_once_the_connection_is_gone(service):
    svc = service(max_threads=1, max_queue=4, max_pending=2)
    loop = ManualLoop()
    conn = FakeConn(svc, loop)
    gate = threading.Event()
    started = []
    conn.jobs.offload(gated("running", gate))
    conn.jobs.offload(lambda: started.append("queued"))
    conn.jobs.offload(lambda: started.append("held"))
    assert conn.jobs.held_jobs == 1
    conn._abort()
    gate.set()
    wait_for(lambda: svc.started_pool.queued == 0)
    time.sleep(0.05)
    assert started == []


def test_a_disconnect_cancels_the_connections_coroutines(service, loop_kind):
    loop = ManualLoop()
    svc = service(asyncio_loop=loop_kind)
    conn = FakeConn(svc, loop)
    inside = threading.Event()
    seen = []

    async def long_request():
        inside.set()
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            seen.append("cancelled")
            raise

    async def never_started():
        seen.append("started")

    conn.jobs.run_coroutine(long_request())
    svc.max_pending = 1
    assert inside.wait(DEADLINE)
    conn._abort()  # the client disconnected mid-request
    conn.jobs.run_coroutine(never_started())  # dropped: closed, never awaited
    wait_for(lambda: seen == ["cancelled"], what="the cancellation")
    assert loop.idle and conn.written == b""


def test_a_connection_gone_mid_job_leaves_nothing_in_a_reference_cycle(service, loop_kind):
    """Once the connection drops its jobs object (after on_close), that object is freed by
    reference counting alone as soon as the jobs still running on other threads return."""
    svc = service(asyncio_loop=loop_kind)
    gate = threading.Event()
    started = threading.Event()
    release = asyncio.Event()

    def blocking():
        started.set()
        gate.wait(DEADLINE)
        return "late"

    async def waiting():
        await release.wait()
        return "late too"

    gc.collect()
    gc.disable()
    try:
        conn = FakeConn(svc, ManualLoop())
        conn.jobs.offload(blocking)
        conn.jobs.run_coroutine(waiting())
        assert started.wait(DEADLINE)
        # The jobs object refers to its connection: once it is freed, so is the connection.
        gone = weakref.ref(conn)
        conn._abort()  # the peer went away; on_close ran; the connection lets go
        conn._jobs = None
        del conn
        gate.set()
        svc.started_companion.loop.call_soon_threadsafe(release.set)
        wait_for(lambda: gone() is None, what="the jobs object freed without gc")
    finally:
        gc.enable()


def test_close_after_replies_waits_for_what_is_owed(service):
    loop = ManualLoop()
    conn = FakeConn(service(), loop)
    gate = threading.Event()
    conn.jobs.offload(gated("last words", gate))
    conn.jobs.close_after_replies()
    assert conn.closed is None and conn.hold
    with pytest.raises(ConnectionClosed):
        conn.jobs.offload(lambda: "too late")

    async def unwanted():
        return "no"

    conn.jobs.run_coroutine(unwanted())  # closed without running
    gate.set()
    loop.run_once()
    assert conn.lines() == [b"last words"]
    assert conn.closed == "close"


def test_close_after_replies_with_nothing_owed_closes_now(service):
    conn = FakeConn(service(), ManualLoop())
    conn.jobs.close_after_replies()
    assert conn.closed == "close"


# ---------------------------------------------------------------------- async callbacks


def test_async_on_connect_runs_before_the_messages(service, loop_kind):
    loop = ManualLoop()
    svc = service(asyncio_loop=loop_kind)
    conn = FakeConn(svc, loop)
    order = []
    connected = asyncio.Event()

    async def on_connect():
        await connected.wait()
        order.append("connect")

    async def message(i):
        order.append(f"message {i}")
        return i

    conn.jobs.run_connect(on_connect())
    conn.jobs.run_coroutine(message(1))
    conn.jobs.run_coroutine(message(2))
    assert conn.jobs.held_jobs == 2
    time.sleep(0.05)
    assert order == []
    svc.started_companion.loop.call_soon_threadsafe(connected.set)
    loop.run_until(lambda: len(conn.lines()) == 2)
    assert order == ["connect", "message 1", "message 2"]


def test_a_failing_async_on_connect_closes_before_any_message(service, caplog):
    loop = ManualLoop()
    conn = FakeConn(service(), loop)
    ran = []

    async def on_connect():
        raise PermissionError("not allowed")

    async def message():
        ran.append(1)

    conn.jobs.run_connect(on_connect())
    conn.jobs.run_coroutine(message())
    loop.run_until(lambda: conn.closed is not None)
    assert conn.closed == "abort" and ran == []
    assert "on_connect failed" in caplog.text


def test_async_on_close_runs_after_the_cancelled_coroutines_unwound(service, loop_kind):
    loop = ManualLoop()
    svc = service(asyncio_loop=loop_kind)
    conn = FakeConn(svc, loop)
    order = []
    inside = threading.Event()
    done = threading.Event()

    async def request():
        inside.set()
        try:
            await asyncio.sleep(3600)
        finally:
            await asyncio.sleep(0.02)
            order.append("request unwound")

    async def on_close():
        order.append("on_close")
        done.set()

    conn.jobs.run_coroutine(request())
    assert inside.wait(DEADLINE)
    conn._abort()
    conn.jobs.run_close(on_close())
    assert done.wait(DEADLINE)
    assert order == ["request unwound", "on_close"]


def test_a_failing_async_on_close_is_logged(service, caplog):
    conn = FakeConn(service(), ManualLoop())

    async def on_close():
        raise RuntimeError("cleanup failed")

    conn._abort()
    conn.jobs.run_close(on_close())
    wait_for(lambda: "on_close failed" in caplog.text, what="the log line")


# ---------------------------------------------------------------------- async handlers


class AsyncEcho:
    def __init__(self):
        self.connected = []
        self.closed = []

    async def on_message(self, conn, ctx, data):
        await asyncio.sleep(0)
        return data.upper()

    def on_connect(self, conn):
        self.connected.append(conn)

    async def on_close(self, conn):
        self.closed.append(conn)

    def custom(self):
        return "passed through"


def test_coroutine_callbacks_are_found_once():
    assert coroutine_callbacks(AsyncEcho()) == {"on_message", "on_close"}

    class Plain:
        def on_message(self, conn, ctx, data):
            return data

    assert coroutine_callbacks(Plain()) == frozenset()

    class AsyncOpen(AsyncEcho):
        async def on_open(self, conn):
            pass

    with pytest.raises(TypeError, match="on_open"):
        coroutine_callbacks(AsyncOpen())


def test_async_handler_submits_and_returns_nothing_inline(service):
    loop = ManualLoop()
    conn = FakeConn(service(), loop)
    app = AsyncEcho()
    handler = AsyncHandler(app)
    assert handler.__wrapped__ is app
    assert handler.custom() == "passed through"
    handler.on_connect(conn)
    assert app.connected == [conn]  # a plain on_connect runs inline
    assert handler.on_message(conn, None, b"abc") is None
    assert handler.on_message(conn, None, b"def") is None
    loop.run_until(lambda: len(conn.lines()) == 2)
    assert conn.lines() == [b"ABC", b"DEF"]
    conn._abort()
    handler.on_close(conn)
    wait_for(lambda: app.closed == [conn], what="the async on_close")


def test_async_handler_passes_whatever_arguments_the_protocol_gives(service):
    loop = ManualLoop()
    conn = FakeConn(service(), loop)

    class WebSocketStyle:
        async def on_message(self, conn, message):  # no ctx, as gev-websocket calls it
            return message * 2

    AsyncHandler(WebSocketStyle()).on_message(conn, "ab")
    loop.run_until(lambda: conn.lines() == [b"abab"])


def test_async_handler_needs_a_coroutine_callback():
    class Plain:
        def on_message(self, conn, ctx, data):
            return data

    with pytest.raises(TypeError):
        AsyncHandler(Plain())


def test_async_handler_keeps_a_plain_on_message_beside_an_async_on_connect():
    class Session:
        def on_message(self, conn, ctx, data):
            return data

        async def on_connect(self, conn):
            pass

    app = Session()
    handler = AsyncHandler(app)
    assert handler.on_message == app.on_message
    assert handler.on_message(None, None, b"x") == b"x"


# ---------------------------------------------------------------------- a real gev loop


class Nothing:
    def on_message(self, conn, ctx, data):
        return None


def test_on_a_real_event_loop_everything_happens_on_its_thread(service, loop_kind):
    """Many jobs of random duration, threads and coroutines mixed, submitted from a gev loop
    thread: every reply in order, every callback of the connection on the loop's thread."""
    svc = service(asyncio_loop=loop_kind, max_pending=8, max_threads=4, max_queue=4)
    rng = random.Random(1234)
    delays = [rng.choice([0, 0, 0.001, 0.003]) for _ in range(300)]
    with serve(Nothing()) as server:
        loop = server.loops[0]
        conn_box = []
        loop.call_soon_threadsafe(lambda: conn_box.append(FakeConn(svc, loop)))
        wait_for(lambda: conn_box)
        conn = conn_box[0]

        async def co(i, d):
            await asyncio.sleep(d)
            return str(i)

        def fn(i, d):
            time.sleep(d)
            return str(i)

        def submit(i):
            if conn.hold:  # the reactor would not read: come back later
                loop.call_soon_threadsafe(submit, i)
                return
            if i % 2:
                conn.jobs.offload(co, (i, delays[i]))
            else:
                conn.jobs.offload(fn, (i, delays[i]))
            if i + 1 < len(delays):
                loop.call_soon_threadsafe(submit, i + 1)

        loop.call_soon_threadsafe(submit, 0)
        wait_for(lambda: len(conn.lines()) == len(delays), what="every reply")
        assert conn.lines() == [str(i).encode() for i in range(len(delays))]
        assert conn.threads == {server_thread(server)}
        assert any(hold for _busy, hold in conn.states)  # the bound was reached


def server_thread(server):
    ident = server.loops[0]._thread_id
    return next(t for t in threading.enumerate() if t.ident == ident)
