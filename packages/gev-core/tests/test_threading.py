"""The threading contract of a protocol: every method runs on the connection's loop thread.

``Connection.send`` may be called from any thread; the object is queued to the loop, where the
protocol's ``pack`` frames it. A protocol may therefore keep per-connection state (sequence
numbers, a compressor) without locks, and frames leave in the order they were packed.
"""

from __future__ import annotations

import itertools
import logging
import threading
from typing import Any

from gev_core import Connection, Handler, Protocol
from gev_core.testing import connect, serve


class Sequenced(Protocol):
    """Lines in; replies numbered by ``pack``: per-connection state, like a compressor's."""

    name = "sequenced"

    def __init__(self) -> None:
        self.pack_threads: set[int] = set()
        self.loop_threads: set[int] = set()

    def connection_made(self, conn: Connection) -> None:
        conn.state = itertools.count()
        self.loop_threads.add(threading.get_ident())

    def receive(self, conn: Connection, data: Any, out: list[Any]) -> int:
        raw = bytes(data)
        pos = 0
        while (end := raw.find(b"\n", pos)) >= 0:
            reply = conn.handler.on_message(conn, None, raw[pos:end])
            pos = end + 1
            if reply is not None:
                out.append(self.pack(conn, reply))
        return pos

    def pack(self, conn: Connection, data: Any) -> bytes:
        self.pack_threads.add(threading.get_ident())
        return b"%d %s\n" % (next(conn.state), bytes(data))


class Recorder(Handler):
    def __init__(self) -> None:
        self.conns: list[Connection] = []
        self.ready = threading.Event()

    def on_connect(self, conn: Connection) -> None:
        self.conns.append(conn)
        self.ready.set()

    def on_message(self, conn: Connection, ctx: Any, data: Any) -> Any:
        return b"reply " + data


def _lines(sock: Any, count: int) -> list[bytes]:
    buf = b""
    sock.settimeout(30)
    while buf.count(b"\n") < count:
        chunk = sock.recv(65536)
        assert chunk, f"closed after {len(buf.splitlines())} lines"
        buf += chunk
    return buf.split(b"\n")[:count]


def test_pack_runs_on_the_loop_thread_and_frames_leave_in_packing_order() -> None:
    protocol = Sequenced()
    handler = Recorder()
    pushes = replies = 400
    with serve(handler, protocol=protocol) as server, connect(server) as sock:
        assert handler.ready.wait(10)
        conn = handler.conns[0]

        def push() -> None:
            for i in range(pushes):
                conn.send(b"push %d" % i)

        pusher = threading.Thread(target=push)
        pusher.start()
        for i in range(replies):
            sock.sendall(b"%d\n" % i)
        lines = _lines(sock, pushes + replies)
        pusher.join(10)
    numbers = [int(line.split(b" ", 1)[0]) for line in lines]
    assert numbers == list(range(pushes + replies)), "frames left out of packing order"
    bodies = [line.split(b" ", 1)[1] for line in lines]
    assert [b for b in bodies if b.startswith(b"push")] == [b"push %d" % i for i in range(pushes)]
    assert protocol.pack_threads == protocol.loop_threads, "pack ran off the loop thread"


def test_send_inside_on_message_is_packed_after_the_returned_reply() -> None:
    class SendsToo(Recorder):
        def on_message(self, conn: Connection, ctx: Any, data: Any) -> Any:
            conn.send(b"sent " + data)
            return b"reply " + data

    protocol = Sequenced()
    with serve(SendsToo(), protocol=protocol) as server, connect(server) as sock:
        sock.sendall(b"a\nb\n")
        assert _lines(sock, 4) == [b"0 reply a", b"1 reply b", b"2 sent a", b"3 sent b"]


def test_a_mutable_buffer_given_to_send_from_a_thread_is_copied() -> None:
    handler = Recorder()
    with serve(handler) as server, connect(server) as sock:
        assert handler.ready.wait(10)
        buf = bytearray(b"original")
        done = threading.Event()

        def push() -> None:
            handler.conns[0].send(buf)
            buf[:] = b"changed!"
            done.set()

        threading.Thread(target=push).start()
        assert done.wait(10)
        sock.settimeout(10)
        assert sock.recv(100) == b"original"


def test_a_queued_send_that_pack_refuses_closes_that_connection_with_a_traceback(
    caplog: Any,
) -> None:
    class Picky(Sequenced):
        def pack(self, conn: Connection, data: Any) -> bytes:
            if not isinstance(data, bytes):
                raise TypeError(f"cannot frame {type(data).__name__}")
            return super().pack(conn, data)

    caplog.set_level(logging.ERROR, logger="gev")
    handler = Recorder()
    with serve(handler, protocol=Picky()) as server, connect(server) as sock:
        assert handler.ready.wait(10)
        threading.Thread(target=handler.conns[0].send, args=(12345,)).start()
        sock.settimeout(10)
        assert sock.recv(100) == b""
    failures = [
        r for r in caplog.records if r.exc_info and "cannot frame int" in str(r.exc_info[1])
    ]
    assert failures, [r.getMessage() for r in caplog.records]
