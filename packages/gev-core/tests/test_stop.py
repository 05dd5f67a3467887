from __future__ import annotations

import signal
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
        s.close()  # on the server's FIN, as a well-behaved client does: no linger to wait out

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


def _stream_until_eof(sock: socket.socket, results: list[str], started: threading.Event) -> None:
    """Keep sending until the server's FIN arrives; record how the connection ended."""
    sock.setblocking(False)
    started.set()
    deadline = time.monotonic() + 30
    try:
        while time.monotonic() < deadline:
            try:
                sock.send(b"x" * 512)
            except BlockingIOError:
                pass
            try:
                if sock.recv(65536) == b"":
                    results.append("fin")
                    return
            except BlockingIOError:
                pass
            time.sleep(0.001)
        results.append("timeout")
    except (ConnectionResetError, BrokenPipeError) as exc:
        results.append(type(exc).__name__)
    finally:
        sock.close()


def test_stop_ends_connections_with_fin_even_while_peers_are_still_sending():
    clients = 20
    closed = []

    class H(Handler):
        def on_message(self, conn, ctx, data):
            return None

        def on_close(self, conn):
            closed.append(conn)

    server = Server(H(), address=("127.0.0.1", 0))
    t = threading.Thread(target=server.start)
    t.start()
    server.wait_started(5)
    results: list[str] = []
    threads = []
    for _ in range(clients):
        started = threading.Event()
        s = connect(server)
        th = threading.Thread(target=_stream_until_eof, args=(s, results, started))
        th.start()
        started.wait(5)
        threads.append(th)
    time.sleep(0.2)
    server.stop(timeout=10)
    t.join(20)
    for th in threads:
        th.join(30)
    assert sorted(results) == ["fin"] * clients
    assert len(closed) == clients


def test_each_protocol_says_goodbye_when_the_server_stops():
    from gev_core import LineProtocol

    class Polite(LineProtocol):
        def server_stopping(self, conn):
            conn.send(b"goodbye")
            conn.close()

    closed = []

    class H(Handler):
        def on_message(self, conn, ctx, data):
            return data

        def on_close(self, conn):
            closed.append(conn)

    server = Server(H(), address=("127.0.0.1", 0), protocol=Polite())
    t = threading.Thread(target=server.start)
    t.start()
    server.wait_started(5)
    socks = [connect(server) for _ in range(5)]
    for s in socks:
        s.sendall(b"hi\n")
        assert recv_exactly(s, 3) == b"hi\n"
    stopper = threading.Thread(target=server.stop, kwargs={"timeout": 10})
    stopper.start()
    for s in socks:
        s.settimeout(10)
        got = b""
        while chunk := s.recv(100):
            got += chunk
        assert got == b"goodbye\n"
        s.close()
    stopper.join(20)
    t.join(20)
    assert not t.is_alive()
    assert len(closed) == 5


def test_a_signal_arriving_while_the_loop_holds_its_task_lock_still_stops() -> None:
    # Loop 0 runs on the main thread, where Python runs signal handlers between any two
    # bytecodes -- also inside the loop's own `with self._lock:` (call_soon from the loop
    # thread, the waker's drain). The handler's stop() queues through call_soon_threadsafe,
    # which takes that lock again: with a non-reentrant lock the process hung on SIGTERM.
    server = Server(Handler(), address="127.0.0.1:0")
    runner = threading.Thread(target=server.start, daemon=True)
    runner.start()
    assert server.wait_started(10)
    loop = server.loops[0]

    def interrupted() -> None:
        with loop._lock:
            server._on_signal(signal.SIGTERM)
            server._on_signal(signal.SIGTERM)  # a second signal inside the first's stop

    loop.call_soon_threadsafe(interrupted)
    # On failure the loop thread stays stuck (a daemon thread): nothing could stop it anyway.
    assert server._stopped.wait(10), "the loop deadlocked on its own lock"
    runner.join(10)
