"""Callback guarantees: ordering, exactly-once close, reply-before-send, threads, failures."""

from __future__ import annotations

import logging
import socket
import struct
import threading
import time

import pytest
from gev_core import ConnectionClosed, Handler
from gev_core.testing import connect, recv_exactly, serve


def wait_for(predicate, timeout=5.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.005)
    return predicate()


class Recorder(Handler):
    def __init__(self):
        self.events = []
        self.lock = threading.Lock()
        self.threads = set()

    def _log(self, *event):
        with self.lock:
            self.events.append(event)
            self.threads.add(threading.get_ident())

    def on_connect(self, conn):
        self._log("connect", conn.peer_addr)

    def on_message(self, conn, ctx, data):
        self._log("message", conn.peer_addr, data)
        return data

    def on_close(self, conn):
        self._log("close", conn.peer_addr)


def test_connect_before_message_and_close_exactly_once():
    rec = Recorder()
    with serve(rec, num_loops=2) as server:
        for _ in range(20):
            with connect(server) as sock:
                sock.sendall(b"hi")
                assert recv_exactly(sock, 2) == b"hi"
        assert wait_for(lambda: sum(e[0] == "close" for e in rec.events) == 20)
    by_peer: dict[str, list[str]] = {}
    for kind, peer, *_ in rec.events:
        by_peer.setdefault(peer, []).append(kind)
    assert len(by_peer) == 20
    for kinds in by_peer.values():
        assert kinds[0] == "connect"
        assert kinds.count("close") == 1
        assert kinds[-1] == "close"


def test_reply_leaves_before_send_inside_on_message():
    class H(Handler):
        def on_message(self, conn, ctx, data):
            conn.send(b"[sent]")
            return b"[reply]"

    with serve(H()) as server, connect(server) as sock:
        sock.sendall(b"x")
        assert recv_exactly(sock, 13) == b"[reply][sent]"


class Relay(Handler):
    """The second connection's messages are written to the first (a proxy's hop, which goes out
    at once mid-batch); the first answers its own with a reply and a write. Both logged in the
    order they happen on the loop thread."""

    def __init__(self, forward):
        self.conns = []
        self.log = []
        self.lock = threading.Lock()
        self.forward = forward

    def on_connect(self, conn):
        self.conns.append(conn)

    def on_message(self, conn, ctx, data):
        sink = self.conns[0]
        with self.lock:
            self.log.append((conn is sink, data))
        if conn is sink:
            conn.write(b"{" + data + b"}")  # after the reply
            return b"(" + data + b")"
        self.forward(sink, data)
        return None

    def received(self, by_sink):
        with self.lock:
            return sum(len(d) for own, d in self.log if own == by_sink)


def test_writes_to_another_connection_keep_call_order_with_its_replies():
    # A write from one connection's on_message to another goes out at once mid-batch: it
    # must take its place by call order among that connection's replies (a reply leaves
    # before the writes made in the on_message that returned it).
    relay = Relay(lambda sink, data: sink.write(b"<" + data + b">"))
    with serve(relay) as server, connect(server) as sink:
        assert wait_for(lambda: len(relay.conns) == 1)
        with connect(server) as source:
            assert wait_for(lambda: len(relay.conns) == 2)
            sent = 0
            for i in range(400):
                a, b = b"a%04d" % i, b"b%04d" % i
                source.sendall(a)
                sink.sendall(b)
                sent += len(a)
            assert wait_for(lambda: relay.received(True) == sent and relay.received(False) == sent)
            with relay.lock:
                log = list(relay.log)
            expected = b"".join(
                b"(" + d + b"){" + d + b"}" if own else b"<" + d + b">" for own, d in log
            )
            assert recv_exactly(sink, len(expected)) == expected


def test_a_write_to_another_connection_stays_behind_what_waits_for_it():
    # A send mid-batch is deferred (pack runs at the end of the batch): a write to the same
    # connection made after it must not overtake it.
    def forward(sink, data):
        sink.send(b"[s" + data + b"]")
        sink.write(b"[w" + data + b"]")

    relay = Relay(forward)
    with serve(relay) as server, connect(server) as sink:
        assert wait_for(lambda: len(relay.conns) == 1)
        with connect(server) as source:
            assert wait_for(lambda: len(relay.conns) == 2)
            sent = 0
            for i in range(200):
                a = b"a%04d" % i
                source.sendall(a)
                sent += len(a)
            assert wait_for(lambda: relay.received(False) == sent)
            with relay.lock:
                log = list(relay.log)
            expected = b"".join(b"[s" + d + b"][w" + d + b"]" for _, d in log)
            assert recv_exactly(sink, len(expected)) == expected


def test_a_failed_write_to_another_connection_closes_it_after_the_handler():
    # A write that goes out at once and fails (the peer reset) must not run that
    # connection's on_close inside the handler that wrote: it closes after the batch.
    class H(Handler):
        def __init__(self):
            self.conns = []
            self.inside = False
            self.nested = []
            self.closed = threading.Event()

        def on_connect(self, conn):
            self.conns.append(conn)

        def on_message(self, conn, ctx, data):
            sink = self.conns[0]
            if conn is not sink and sink.connected:
                self.inside = True
                try:
                    sink.write(data)
                finally:
                    self.inside = False
            return None

        def on_close(self, conn):
            if conn is self.conns[0]:
                self.nested.append(self.inside)
                self.closed.set()

    h = H()
    with serve(h) as server:
        sink = connect(server)
        assert wait_for(lambda: len(h.conns) == 1)
        with connect(server) as source:
            assert wait_for(lambda: len(h.conns) == 2)
            sink.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            source.sendall(b"x" * 100)
            sink.close()  # RST, with our bytes unread
            while not h.closed.is_set():
                source.sendall(b"y" * 100)
                time.sleep(0.001)
    assert h.nested == [False]


def test_send_from_other_threads_is_delivered_in_order_per_thread():
    conns = []
    ready = threading.Event()

    class H(Handler):
        def on_connect(self, conn):
            conns.append(conn)
            ready.set()

        def on_message(self, conn, ctx, data):
            return None

    with serve(H(), num_loops=2) as server, connect(server) as sock:
        assert ready.wait(5)
        conn = conns[0]

        def pump(tag):
            for i in range(500):
                conn.send(b"%c%04d;" % (tag, i))

        threads = [threading.Thread(target=pump, args=(t,)) for t in b"ABCD"]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        data = recv_exactly(sock, 4 * 500 * 6).decode()
    items = [x for x in data.split(";") if x]
    assert len(items) == 2000
    for tag in "ABCD":
        seq = [int(x[1:]) for x in items if x[0] == tag]
        assert seq == list(range(500))


def test_send_after_close_raises():
    conns = []

    class H(Handler):
        def on_connect(self, conn):
            conns.append(conn)

        def on_message(self, conn, ctx, data):
            return None

    with serve(H()) as server:
        with connect(server) as sock:
            assert wait_for(lambda: conns)
        sock.close()
        assert wait_for(lambda: not conns[0].connected)
        with pytest.raises(ConnectionClosed):
            conns[0].send(b"late")


def test_handler_exception_closes_only_that_connection(caplog):
    class H(Handler):
        def on_message(self, conn, ctx, data):
            if data.startswith(b"boom"):
                raise RuntimeError("handler bug")
            return data

    caplog.set_level(logging.ERROR, logger="gev")
    with serve(H()) as server, connect(server) as good, connect(server) as bad:
        good.sendall(b"ok1")
        assert recv_exactly(good, 3) == b"ok1"
        bad.sendall(b"boom")
        assert bad.recv(10) == b""  # closed by the server
        good.sendall(b"ok2")
        assert recv_exactly(good, 3) == b"ok2"
        with connect(server) as fresh:
            fresh.sendall(b"ok3")
            assert recv_exactly(fresh, 3) == b"ok3"
    failures = [r for r in caplog.records if "handler failed" in r.getMessage()]
    assert failures and failures[0].exc_info and "handler bug" in str(failures[0].exc_info[1])


def test_on_connect_exception_closes_connection(caplog):
    class H(Handler):
        def on_connect(self, conn):
            raise ValueError("nope")

        def on_message(self, conn, ctx, data):
            return data

    caplog.set_level(logging.ERROR, logger="gev")
    with serve(H()) as server, connect(server) as sock:
        assert sock.recv(10) == b""
    assert any("on_connect failed" in r.getMessage() for r in caplog.records)


def test_close_flushes_pending_output_and_abort_does_not_hang():
    big = b"z" * (3 * 1024 * 1024)

    class H(Handler):
        def on_message(self, conn, ctx, data):
            conn.send(big)
            conn.close()

    with serve(H()) as server, connect(server) as sock:
        sock.sendall(b"go")
        got = bytearray()
        while True:
            chunk = sock.recv(1 << 20)
            if not chunk:
                break
            got += chunk
        assert len(got) == len(big) and got == big


def test_shutdown_write_waits_for_pending_output_then_on_close():
    closed = threading.Event()
    payload = b"q" * (2 * 1024 * 1024)

    class H(Handler):
        def on_connect(self, conn):
            conn.send(payload)
            conn.shutdown_write()

        def on_message(self, conn, ctx, data):
            return None

        def on_close(self, conn):
            closed.set()

    with serve(H()) as server, connect(server) as sock:
        got = bytearray()
        while True:
            chunk = sock.recv(1 << 20)
            if not chunk:
                break
            got += chunk
        assert got == payload  # everything arrived before the FIN
        assert not closed.is_set()  # the server still waits for our side
        sock.close()
        assert closed.wait(5)


def test_context_and_key_value_store():
    seen = {}

    class H(Handler):
        def on_connect(self, conn):
            conn.context = {"n": 0}
            conn.set("user", "alice")

        def on_message(self, conn, ctx, data):
            conn.context["n"] += 1
            seen["user"] = conn.get("user")
            conn.delete("user")
            seen["after"] = conn.get("user", "gone")
            return b"%d" % conn.context["n"]

    with serve(H()) as server, connect(server) as sock:
        sock.sendall(b"a")
        assert recv_exactly(sock, 1) == b"1"
    assert seen == {"user": "alice", "after": "gone"}
