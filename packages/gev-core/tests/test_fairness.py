"""Bounded work per loop iteration: a protocol may stop early and be called again.

A protocol whose ``receive`` stops before the end of its input and calls
``conn.continue_later()`` gets the unconsumed bytes back in the loop's next iteration, without
the socket having to become readable again, while the other connections take their turn.
"""

from __future__ import annotations

import socket
import threading
import time
from typing import Any

import pytest
from gev_core import Connection, Handler, Protocol
from gev_core.testing import connect, serve


class Turns(Protocol):
    """Lines, at most ``per_turn`` of them per call of ``receive``."""

    name = "turns"

    def __init__(self, per_turn: int, accepts_bytes: bool) -> None:
        self.per_turn = per_turn
        self.accepts_bytes = accepts_bytes  # type: ignore[misc]
        self.calls = 0
        self.order: list[str] = []

    def receive(self, conn: Connection, data: Any, out: list[Any]) -> int:
        self.calls += 1
        raw = bytes(data)
        pos = 0
        for _ in range(self.per_turn):
            end = raw.find(b"\n", pos)
            if end < 0:
                return pos
            line = raw[pos:end]
            self.order.append(line.decode())
            reply = conn.handler.on_message(conn, None, line)
            pos = end + 1
            if reply is not None:
                out.append(reply + b"\n")
        if pos < len(raw):
            conn.continue_later()
        return pos


class Echo(Handler):
    def on_message(self, conn: Connection, ctx: Any, data: Any) -> Any:
        return data


def _read_lines(sock: socket.socket, count: int) -> list[bytes]:
    buf = b""
    sock.settimeout(30)
    while buf.count(b"\n") < count:
        chunk = sock.recv(1 << 20)
        assert chunk, "closed early"
        buf += chunk
    return buf.split(b"\n")[:count]


@pytest.mark.parametrize("accepts_bytes", [True, False], ids=["direct", "general"])
def test_input_left_by_a_yielding_protocol_is_processed_without_new_socket_data(
    accepts_bytes: bool,
) -> None:
    protocol = Turns(per_turn=10, accepts_bytes=accepts_bytes)
    lines = [b"line %d" % i for i in range(1000)]
    with serve(Echo(), protocol=protocol) as server, connect(server) as sock:
        sock.sendall(b"\n".join(lines) + b"\n")  # then nothing more: no readiness to wait for
        assert _read_lines(sock, len(lines)) == lines
    assert protocol.calls >= 100


class SlowBusy(Echo):
    # Half a millisecond per busy line: the backlog outlasts the time the other connection's
    # first line takes to arrive, however fast the loop (without it, a fast loop could finish
    # all 3,000 lines first and the order below would prove nothing either way).
    def on_message(self, conn: Connection, ctx: Any, data: Any) -> Any:
        if bytes(data).startswith(b"busy"):
            time.sleep(0.0005)
        return super().on_message(conn, ctx, data)


def test_connections_take_turns_while_one_has_a_backlog() -> None:
    protocol = Turns(per_turn=5, accepts_bytes=True)
    with (
        serve(SlowBusy(), protocol=protocol) as server,
        connect(server) as busy,
        connect(server) as other,
    ):
        other.sendall(b"hello\n")
        assert _read_lines(other, 1) == [b"hello"]
        busy.sendall(b"".join(b"busy %d\n" % i for i in range(3000)))
        done = threading.Event()

        def drain() -> None:
            _read_lines(busy, 3000)
            done.set()

        reader = threading.Thread(target=drain)
        reader.start()
        trips = 0
        while not done.is_set() and trips < 50:
            other.sendall(b"other %d\n" % trips)
            assert _read_lines(other, 1) == [b"other %d" % trips]
            trips += 1
        reader.join(30)
    # The other connection's lines were served between the busy one's turns, not after them.
    first_other = protocol.order.index("other 0")
    last_busy = protocol.order.index("busy 2999")
    assert first_other < last_busy


def test_a_yielding_connection_still_closes_and_honours_backpressure() -> None:
    class Big(Handler):
        def on_message(self, conn: Connection, ctx: Any, data: Any) -> Any:
            return b"y" * 10000

    protocol = Turns(per_turn=3, accepts_bytes=True)
    with (
        serve(Big(), protocol=protocol, high_water=64 * 1024, low_water=16 * 1024) as server,
        connect(server) as sock,
    ):
        sock.sendall(b"x\n" * 2000)
        got = 0
        sock.settimeout(30)
        while got < 2000 * 10001:
            chunk = sock.recv(1 << 20)
            assert chunk
            got += len(chunk)
        assert got == 2000 * 10001
    assert protocol.calls >= 2000 // 3
