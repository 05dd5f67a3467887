"""conn.offload() and async def handlers through a real server, over real sockets.

Completion order is decided by the tests (events the jobs wait on), never by timing; every wait
has a generous deadline, and nothing asserts on elapsed time.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import struct
import threading
import time

import pytest
from gev_core import (
    ConnectionClosed,
    Handler,
    LengthFieldProtocol,
    LineProtocol,
    Server,
)
from gev_core.testing import connect, recv_exactly, serve

DEADLINE = 30.0
NL = b"\n"


def wait_for(cond, what="condition", timeout=DEADLINE):
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.005)


def read_lines(sock, n, timeout=DEADLINE):
    buf = b""
    deadline = time.monotonic() + timeout
    while buf.count(b"\n") < n:
        sock.settimeout(max(0.01, deadline - time.monotonic()))
        chunk = sock.recv(65536)
        if not chunk:
            raise AssertionError(f"closed after {buf.count(NL)} of {n} lines: {buf!r}")
        buf += chunk
    return buf.split(b"\n")[:n]


def offload_threads():
    return {t for t in threading.enumerate() if t.name.startswith(("gev-offload", "gev-asyncio"))}


class Gates:
    """Events the jobs wait on, opened by the test; what started, in order (thread-safe)."""

    def __init__(self):
        self._lock = threading.Lock()
        self._events: dict[bytes, threading.Event] = {}
        self._waiters: dict[bytes, list] = {}
        self.started: list[bytes] = []

    def event(self, name):
        with self._lock:
            return self._events.setdefault(name, threading.Event())

    def open(self, *names):
        """Open the gates in this order (each job finishing before the next gate opens is not
        promised: the order is the order the jobs are released in)."""
        for name in names:
            event = self.event(name)
            with self._lock:
                event.set()
                waiters = self._waiters.pop(name, [])
            for loop, aevent in waiters:
                loop.call_soon_threadsafe(aevent.set)

    def work(self, data):
        """A blocking job: wait for the gate named like the request, answer its name."""
        with self._lock:
            self.started.append(data)
        if not self.event(data).wait(DEADLINE):
            raise TimeoutError(data)
        return data.upper()

    async def awork(self, data):
        event = self.event(data)
        aevent = asyncio.Event()
        with self._lock:
            self.started.append(data)
            if not event.is_set():
                self._waiters.setdefault(data, []).append((asyncio.get_running_loop(), aevent))
            else:
                aevent.set()
        await aevent.wait()
        return data.upper()

    def wait_started(self, n):
        wait_for(lambda: len(self.started) >= n, f"{n} jobs started ({self.started})")


class Offloading(Handler):
    def __init__(self, gates):
        self.gates = gates

    def on_message(self, conn, ctx, data):
        if data.startswith(b"inline"):
            return b"now " + data
        conn.offload(self.gates.work, bytes(data))
        return None


class Awaiting:
    def __init__(self, gates):
        self.gates = gates

    async def on_message(self, conn, ctx, data):
        if data.startswith(b"inline"):
            return b"now " + data
        return await self.gates.awork(bytes(data))


HANDLERS = {"thread": Offloading, "async": Awaiting}


@pytest.fixture(params=sorted(HANDLERS))
def work(request):
    return request.param


# ---------------------------------------------------------------------- order


def test_pipelined_replies_leave_in_request_order_whatever_finishes_first(work):
    gates = Gates()
    names = [b"a", b"b", b"c", b"d"]
    with serve(HANDLERS[work](gates), protocol=LineProtocol()) as server:
        sock = connect(server)
        sock.sendall(b"a\nb\ninline1\nc\ninline2\nd\n")  # one write: one read, in general
        gates.wait_started(4)
        gates.open(*reversed(names))  # the last request finishes first
        got = read_lines(sock, 6)
        assert got == [b"A", b"B", b"now inline1", b"C", b"now inline2", b"D"]
        # Later requests on a connection whose replies are all out: answered inline again.
        sock.sendall(b"inline3\n")
        assert read_lines(sock, 1) == [b"now inline3"]
        sock.close()


def test_an_inline_reply_after_an_offloaded_one_in_the_same_read_waits(work):
    gates = Gates()
    with serve(HANDLERS[work](gates), protocol=LineProtocol()) as server:
        sock = connect(server)
        sock.sendall(b"a\ninline\n")  # the read ends with an inline reply while one is owed
        gates.wait_started(1)
        time.sleep(0.05)  # not a timing assertion: gives a wrong order a chance to show
        gates.open(b"a")
        assert read_lines(sock, 2) == [b"A", b"now inline"]
        sock.close()


def test_each_request_in_its_own_write_and_out_of_order_completion(work):
    gates = Gates()
    with serve(HANDLERS[work](gates), protocol=LineProtocol()) as server:
        sock = connect(server)
        for i, name in enumerate([b"x", b"y", b"z"]):
            sock.sendall(name + b"\n")
            gates.wait_started(i + 1)
        sock.sendall(b"inline\n")
        gates.open(b"z", b"y")
        time.sleep(0.05)  # not a timing assertion: gives wrong ordering a chance to show
        gates.open(b"x")
        assert read_lines(sock, 4) == [b"X", b"Y", b"Z", b"now inline"]
        sock.close()


def test_length_field_framing_of_replies_produced_later(work):
    gates = Gates()
    with serve(HANDLERS[work](gates), protocol=LengthFieldProtocol()) as server:
        sock = connect(server)
        sock.sendall(b"".join(struct.pack(">I", len(m)) + m for m in [b"p", b"q", b"inline"]))
        gates.wait_started(2)
        gates.open(b"q", b"p")
        replies = []
        for _ in range(3):
            (n,) = struct.unpack(">I", recv_exactly(sock, 4))
            replies.append(recv_exactly(sock, n))
        assert replies == [b"P", b"Q", b"now inline"]
        sock.close()


def test_default_protocol_offload(work):
    gates = Gates()
    gates.open(b"hello")
    with serve(HANDLERS[work](gates)) as server:
        sock = connect(server)
        sock.sendall(b"hello")
        assert recv_exactly(sock, 5) == b"HELLO"
        sock.sendall(b"inline")
        assert recv_exactly(sock, 10) == b"now inline"
        sock.close()


# ---------------------------------------------------------------------- failures


def test_a_raising_job_closes_its_connection_after_the_replies_before_it(work, caplog):
    class Failing(Handler):
        def on_message(self, conn, ctx, data):
            if data == b"ok":
                return b"fine"
            conn.offload(self.boom, bytes(data))

        def boom(self, data):
            raise ValueError(f"no such thing: {data!r}")

    class AsyncFailing:
        async def on_message(self, conn, ctx, data):
            if data == b"ok":
                return b"fine"
            raise ValueError(f"no such thing: {bytes(data)!r}")

    handler = Failing() if work == "thread" else AsyncFailing()
    with (
        caplog.at_level(logging.ERROR, logger="gev"),
        serve(handler, protocol=LineProtocol()) as server,
    ):
        other = connect(server)
        sock = connect(server)
        sock.sendall(b"ok\nbad\nok\n")
        assert read_lines(sock, 1) == [b"fine"]
        sock.settimeout(DEADLINE)
        assert sock.recv(100) == b""  # closed, the reply after the failure never sent
        wait_for(lambda: "no such thing" in caplog.text, "the traceback in the log")
        assert "Traceback" in caplog.text and "ValueError" in caplog.text
        # The server and its other connections are unharmed.
        other.sendall(b"ok\n")
        assert read_lines(other, 1) == [b"fine"]
        sock.close()
        other.close()
        wait_for(lambda: sum(loop.stats.handler_errors for loop in server.loops) == 1)


def test_on_error_chooses_the_reply_instead():
    def lookup(key):
        return {b"apple": b"1.20"}[key]

    def not_found(conn, exc):
        assert isinstance(exc, KeyError)
        return b"ERR " + exc.args[0]

    class Prices(Handler):
        def on_message(self, conn, ctx, data):
            conn.offload(lookup, bytes(data), on_error=not_found)

    with serve(Prices(), protocol=LineProtocol()) as server:
        sock = connect(server)
        sock.sendall(b"apple\nplum\napple\n")
        assert read_lines(sock, 3) == [b"1.20", b"ERR plum", b"1.20"]
        sock.close()


def test_offload_misuse_is_refused_clearly():
    errors = []

    class Misuse(Handler):
        def on_message(self, conn, ctx, data):
            try:
                conn.offload(42)
            except TypeError as exc:
                errors.append(exc)
            box.append(conn)
            return b"ok"

    box = []
    with serve(Misuse()) as server:
        sock = connect(server)
        sock.sendall(b"x")
        assert recv_exactly(sock, 2) == b"ok"
        assert errors and "callable" in str(errors[0])
        with pytest.raises(RuntimeError, match="loop thread"):
            box[0].offload(len, b"")  # from the test's thread
        sock.close()
        wait_for(lambda: box[0].closing)
        with pytest.raises(ConnectionClosed):
            box[0].offload(len, b"")


def test_an_async_handler_on_another_callback_is_refused_at_construction():
    class Bad:
        def on_message(self, conn, ctx, data):
            return data

        async def on_pong(self, conn, payload):
            pass

    with pytest.raises(TypeError, match="on_pong"):
        Server(Bad(), address=("127.0.0.1", 0))


# ---------------------------------------------------------------------- cancellation


def test_client_disconnect_cancels_its_coroutines_and_drops_its_replies(caplog):
    cancelled = threading.Event()
    started = threading.Event()

    class Slow:
        async def on_message(self, conn, ctx, data):
            started.set()
            try:
                await asyncio.sleep(DEADLINE * 2)
            except asyncio.CancelledError:
                cancelled.set()
                raise
            return b"never"

    with serve(Slow(), protocol=LineProtocol()) as server:
        sock = connect(server)
        sock.sendall(b"slow\n")
        assert started.wait(DEADLINE)
        sock.close()
        assert cancelled.wait(DEADLINE)
        wait_for(lambda: server.connection_count == 0)
    assert "Traceback" not in caplog.text  # a cancellation is no failure


def test_close_writes_the_replies_owed_first(work):
    gates = Gates()

    class CloseAfter(HANDLERS[work]):
        pass

    handler = CloseAfter(gates)
    with serve(handler, protocol=LineProtocol()) as server:
        sock = connect(server)
        sock.sendall(b"m\nn\n")
        gates.wait_started(2)
        conns = [c for loop in server.loops for c in loop.connections]
        conns[0].close()  # from another thread: queued to the loop
        time.sleep(0.05)
        gates.open(b"n", b"m")
        assert read_lines(sock, 2) == [b"M", b"N"]
        sock.settimeout(DEADLINE)
        assert sock.recv(10) == b""
        sock.close()


# ---------------------------------------------------------------------- bounds


def _fill_until_blocked(sock, line, limit=64 * 1024 * 1024):
    """Send ``line`` repeatedly without blocking until the kernel refuses more; returns the
    bytes sent. Fails if ``limit`` bytes went through: nobody stopped reading."""
    sock.setblocking(False)
    sent = 0
    payload = line * 16
    try:
        while sent < limit:
            try:
                sent += sock.send(payload)
            except BlockingIOError:
                # The buffers may still be draining into a server that reads: wait, retry.
                _, writable, _ = __import__("select").select([], [sock], [], 0.5)
                if not writable:
                    return sent
        raise AssertionError(f"{sent} bytes accepted: the server never stopped reading")
    finally:
        sock.setblocking(True)
        sock.settimeout(DEADLINE)


@pytest.mark.parametrize("work_kind", ["thread", "async"])
def test_the_outstanding_job_limit_stops_reading_and_loses_nothing(work_kind):
    gates = Gates()
    line = b"j" * 65535 + b"\n"  # a long request: the kernel buffers fill with few of them
    gates.open(line[:-1])

    with serve(
        HANDLERS[work_kind](gates),
        protocol=LineProtocol(max_line_length=1 << 20),
        max_pending=2,
    ) as server:
        sock = connect(server)
        sock.sendall(b"g1\ng2\n")
        gates.wait_started(2)  # two replies owed: the limit
        sent = _fill_until_blocked(sock, line)
        assert gates.started == [b"g1", b"g2"]  # reading stopped: nothing else parsed
        whole, partial = divmod(sent, len(line))
        gates.open(b"g2", b"g1")
        if partial:
            # The rest of the last line, while this thread reads the replies (the server's
            # output would otherwise back up and stop its reading again).
            rest = threading.Thread(target=sock.sendall, args=(line[partial:],))
            rest.start()
            whole += 1
        got = b""
        want = 6 + whole * (len(line))
        while len(got) < want:
            chunk = sock.recv(1 << 20)
            assert chunk, f"closed after {len(got)} of {want} bytes"
            got += chunk
        lines = got.split(b"\n")
        assert lines[:2] == [b"G1", b"G2"]
        assert lines[2:-1] == [line[:-1].upper()] * whole
        assert server.connection_count == 1
        if partial:
            rest.join(DEADLINE)
        sock.close()


def test_a_full_pool_queue_holds_the_job_and_loses_nothing():
    gates = Gates()
    with serve(
        Offloading(gates), protocol=LineProtocol(), offload_threads=1, offload_queue=1
    ) as server:
        socks = [connect(server) for _ in range(4)]
        for i, sock in enumerate(socks):
            sock.sendall(b"r%d\n" % i)
        gates.wait_started(1)  # one runs, one is queued, the others wait for room
        time.sleep(0.05)
        assert gates.started == [b"r0"]
        gates.open(b"r0", b"r1", b"r2", b"r3")
        for i, sock in enumerate(socks):
            assert read_lines(sock, 1) == [b"R%d" % i]
            sock.close()
        assert sorted(gates.started) == [b"r0", b"r1", b"r2", b"r3"]


# ---------------------------------------------------------------------- lifecycle


def test_async_on_connect_runs_first_and_on_close_after(work):
    events = []
    closed = threading.Event()

    class Session:
        async def on_connect(self, conn):
            await asyncio.sleep(0.02)
            conn.context = {"greeting": b"hi "}
            events.append("connect")

        def on_message(self, conn, ctx, data):
            events.append("message")
            return conn.context["greeting"] + data

        async def on_close(self, conn):
            await asyncio.sleep(0)
            events.append("close")
            closed.set()

    with serve(Session(), protocol=LineProtocol()) as server:
        sock = connect(server)
        sock.sendall(b"ann\n")  # arrives before on_connect is done: waits for it
        assert read_lines(sock, 1) == [b"hi ann"]
        sock.close()
        assert closed.wait(DEADLINE)
    assert events == ["connect", "message", "close"]


def test_the_server_stops_cleanly_pool_and_companion_included(work):
    before = offload_threads()
    gates = Gates()
    gates.open(b"a")
    with serve(HANDLERS[work](gates), protocol=LineProtocol()) as server:
        sock = connect(server)
        sock.sendall(b"a\nstuck\n")  # 'stuck' is never released: stop cancels or leaves it
        assert read_lines(sock, 1) == [b"A"]
        gates.wait_started(2)
        assert offload_threads() - before
        # Stopped by serve() with a 5 s budget: the blocked job is left behind (a daemon
        # thread, with a warning); release it so that the thread ends.
        threading.Timer(1.0, gates.open, (b"stuck",)).start()
    wait_for(lambda: not offload_threads() - before, "the offload threads to end")
    sock.close()


def test_a_plain_handler_starts_no_offload_machinery():
    class Echo(Handler):
        def on_message(self, conn, ctx, data):
            return data

    with serve(Echo()) as server:
        assert server._dispatch_handler.__class__ is Echo
        sock = connect(server)
        sock.sendall(b"x")
        assert recv_exactly(sock, 1) == b"x"
        assert server._offload.started_pool is None
        assert server._offload.started_companion is None
        sock.close()


def test_server_options_are_validated():
    for kwargs in (
        {"offload_threads": 0},
        {"offload_queue": 0},
        {"max_pending": 0},
        {"max_tasks": 0},
        {"asyncio_loop": "trio"},
    ):
        with pytest.raises(ValueError):
            Server(Handler(), address=("127.0.0.1", 0), **kwargs)


def test_one_raw_socket_client_reads_while_many_jobs_finish(work):
    """Many pipelined requests, completions in a scrambled order, replies in request order."""
    gates = Gates()
    names = [b"k%03d" % i for i in range(100)]
    with serve(HANDLERS[work](gates), protocol=LineProtocol(), max_pending=128) as server:
        sock = connect(server)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.sendall(b"".join(n + b"\n" for n in names))
        # All of them (async), or as many as the pool has threads, are under way.
        gates.wait_started(len(names) if work == "async" else 2)
        scrambled = names[1::2] + names[::2][::-1]
        gates.open(*scrambled)
        assert read_lines(sock, len(names)) == [n.upper() for n in names]
        sock.close()
