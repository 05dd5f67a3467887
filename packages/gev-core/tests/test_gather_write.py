"""What one ``receive`` puts in ``out`` leaves as one gather write (writev) when it is several
pieces; whatever the kernel does not take must still reach the peer whole and in order: a slow
reader, small writes between and after, a close while output is buffered."""

from __future__ import annotations

import socket
import threading
import time
from typing import Any

import pytest
from gev_core import Connection, Handler, Protocol
from gev_core.testing import serve

# Patterned, so that a piece sent twice, lost or out of order shows in the comparison.
BIG_A = bytes(range(256)) * 4096  # 1 MiB
BIG_B = bytes(range(255, -1, -1)) * 2048  # 512 KiB

# What each command byte the client sends makes receive put in out. Sizes are chosen so that a
# reader that does not read leaves the kernel taking part of a piece: the first (more after it),
# a middle one, the last; and pieces that are not bytes (a view, a bytearray).
COMMANDS: dict[int, list[Any]] = {
    ord("g"): [b"<", BIG_A, b">"],
    ord("h"): [b"#", BIG_B],
    ord("i"): [BIG_B, BIG_A],
    ord("j"): [BIG_A * 6, b"tail"],  # more than the kernel takes at once, even when idle
    ord("m"): [memoryview(BIG_A)[3:300_003], bytearray(b"ba"), memoryview(b"mv")],
    ord("s"): [b"s1", b"s2"],
    ord("1"): [b"one piece"],
}


class Pieces(Protocol):
    def __init__(self, accepts_bytes: bool) -> None:
        self.accepts_bytes = accepts_bytes  # True: the loop's inline READ_FRAMES path
        self.handled = 0
        self.conn: Connection | None = None

    def receive(self, conn: Connection, data: Any, out: list[Any]) -> int:
        self.conn = conn
        for command in bytes(data):
            if command == ord("c"):
                out.extend(COMMANDS[ord("g")])
                conn.close()  # with the output still to flush
            else:
                out.extend(COMMANDS[command])
            self.handled += 1
        return len(data)


class Quiet(Handler):
    def on_message(self, conn: Connection, ctx: Any, data: Any) -> None:
        return None


def slow_reader(server: Any) -> socket.socket:
    # A small receive buffer before connecting, so that the window stays small.
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.settimeout(10)
    sock.connect(server.address[:2])
    return sock


def wait_for(predicate: Any) -> None:
    deadline = time.monotonic() + 10
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.005)


def on_loop(conn: Connection, fn: Any) -> Any:
    done = threading.Event()
    box: list[Any] = []

    def task() -> None:
        box.append(fn())
        done.set()

    conn.loop.call_soon_threadsafe(task)
    assert done.wait(10)
    return box[0]


def read_all(sock: socket.socket, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        chunk = sock.recv(1 << 20)
        assert chunk, f"closed after {len(buf)} of {n} bytes"
        buf += chunk
    return bytes(buf)


def expected(commands: bytes) -> bytes:
    return b"".join(bytes(piece) for c in commands for piece in COMMANDS[c])


# Which piece the kernel stops in depends on how much it takes: the first of two (j), the
# middle of three (g), the last of two (h after g, usually).
SEQUENCES = {
    "j-first": [b"j", b"g", b"s", b"W1", b"h", b"1", b"i", b"W2", b"m", b"s", b"W3"],
    "g-first": [b"g", b"s", b"W1", b"h", b"1", b"i", b"W2", b"m", b"s", b"W3"],
}


@pytest.mark.parametrize("sequence", list(SEQUENCES))
@pytest.mark.parametrize("accepts_bytes", [True, False], ids=["frames", "buffered"])
def test_gather_writes_to_a_slow_reader_arrive_whole_and_in_order(
    accepts_bytes: bool, sequence: str
) -> None:
    protocol = Pieces(accepts_bytes)
    with serve(Quiet(), protocol=protocol, high_water=64 << 20, max_write_buffer=64 << 20) as srv:
        sock = slow_reader(srv)
        stream = b""
        buffered_seen = False
        # One command at a time, each once the previous one is handled, with small writes
        # (conn.write, from this thread) between them: what the peer reads is their order.
        for step in SEQUENCES[sequence]:
            if step.startswith(b"W"):
                conn = protocol.conn
                assert conn is not None
                on_loop(conn, lambda conn=conn, step=step: conn.write(step))
                stream += step
            else:
                before = protocol.handled
                sock.sendall(step)
                wait_for(lambda before=before: protocol.handled > before)
                stream += expected(step)
            conn = protocol.conn
            assert conn is not None
            buffered_seen |= on_loop(conn, lambda conn=conn: conn.write_buffer_length) > 0
        assert buffered_seen, "the reader never fell behind: nothing was tested"
        assert read_all(sock, len(stream)) == stream
        # Once drained, the connection writes directly again (and the stream continues).
        sock.sendall(b"s")
        assert read_all(sock, 4) == b"s1s2"
        sock.close()


def test_many_pieces_in_one_read_are_joined_and_arrive_in_order() -> None:
    # Commands coalesced in one read: more pieces than one writev takes (GATHER_MAX).
    protocol = Pieces(True)
    with serve(Quiet(), protocol=protocol) as srv:
        sock = slow_reader(srv)
        commands = b"s1s1s1s1s1s1"
        sock.sendall(commands)
        assert read_all(sock, len(expected(commands))) == expected(commands)
        commands = b"hs" * 5
        sock.sendall(commands)
        assert read_all(sock, len(expected(commands))) == expected(commands)
        sock.close()


def test_close_while_a_gather_write_is_buffered_flushes_it_first() -> None:
    protocol = Pieces(True)
    with serve(Quiet(), protocol=protocol, high_water=64 << 20, max_write_buffer=64 << 20) as srv:
        sock = slow_reader(srv)
        stream = b""
        # Until the kernel's buffers are full and the connection holds output of its own.
        for handled in range(1, 21):
            sock.sendall(b"g")
            wait_for(lambda handled=handled: protocol.handled == handled)
            stream += expected(b"g")
            conn = protocol.conn
            assert conn is not None
            if on_loop(conn, lambda conn=conn: conn.write_buffer_length):
                break
        sock.sendall(b"c")
        wait_for(lambda: protocol.handled == handled + 1)
        stream += expected(b"g")
        time.sleep(0.05)  # the deferred close has run: closing, with output still buffered
        assert on_loop(conn, lambda: conn.write_buffer_length) > 0
        assert conn.closing
        assert read_all(sock, len(stream)) == stream
        assert sock.recv(1) == b""  # then the FIN
        sock.close()
