from __future__ import annotations

import socket
import threading
import time

from gev_core import Handler, Server
from gev_core.testing import connect, recv_exactly


def test_stop_flushes_pending_output_and_closes_every_connection():
    payload = b"d" * (12 * 1024 * 1024)
    closed = []
    lock = threading.Lock()

    class H(Handler):
        def on_message(self, conn, ctx, data):
            conn.send(payload)

        def on_close(self, conn):
            with lock:
                closed.append(conn)

    server = Server(H(), address=("127.0.0.1", 0), num_loops=2, max_write_buffer=64 << 20)
    t = threading.Thread(target=server.start)
    t.start()
    server.wait_started(5)
    socks = [connect(server) for _ in range(6)]
    for s in socks:
        s.sendall(b"go")
    time.sleep(0.3)  # output is now backlogged in the server

    results = {}

    def drain(i, s):
        results[i] = len(s.recv(1 << 20)) + sum(iter(lambda: len(s.recv(1 << 20)), 0))

    readers = [threading.Thread(target=drain, args=(i, s)) for i, s in enumerate(socks)]
    stopper = threading.Thread(target=server.stop, kwargs={"timeout": 10})
    stopper.start()
    for r in readers:
        r.start()
    stopper.join(20)
    t.join(20)
    for r in readers:
        r.join(20)
    assert not t.is_alive()
    assert results == {i: len(payload) for i in range(6)}
    assert len(closed) == 6
    with socket.socket() as probe:
        assert probe.connect_ex(server.address) != 0  # no longer accepting


def test_stop_timeout_drops_output_of_peers_that_never_read():
    closed = threading.Event()

    class H(Handler):
        def on_message(self, conn, ctx, data):
            conn.send(b"e" * (4 * 1024 * 1024))

        def on_close(self, conn):
            closed.set()

    server = Server(H(), address=("127.0.0.1", 0))
    t = threading.Thread(target=server.start)
    t.start()
    server.wait_started(5)
    s = connect(server)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    s.sendall(b"go")
    time.sleep(0.2)
    started = time.monotonic()
    server.stop(timeout=0.5)
    assert time.monotonic() - started < 5
    t.join(5)
    assert not t.is_alive() and closed.is_set()
    s.close()


def test_stop_before_start_and_from_a_handler():
    server = Server(Handler(), address=("127.0.0.1", 0))
    server.stop()

    class Quitter(Handler):
        def on_message(self, conn, ctx, data):
            self.server.stop(wait=False)
            return b"bye"

    q = Quitter()
    server = q.server = Server(q, address=("127.0.0.1", 0))
    t = threading.Thread(target=server.start)
    t.start()
    server.wait_started(5)
    with connect(server) as s:
        s.sendall(b"quit")
        assert recv_exactly(s, 3) == b"bye"
    t.join(10)
    assert not t.is_alive()
