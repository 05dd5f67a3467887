"""The loop's message counters (``loop.stats``) over a real WebSocket echo."""

from __future__ import annotations

import time
from typing import Any

import pytest
from gev_core.testing import serve
from gev_websocket import MessageType, WebSocketHandler, WebSocketProtocol

sync = pytest.importorskip("websockets.sync.client")


class Echo(WebSocketHandler):
    def on_message(self, conn: Any, data: str | bytes) -> tuple[Any, Any] | None:
        if data == "silent":
            return None
        return (MessageType.TEXT if isinstance(data, str) else MessageType.BINARY), data


def _totals(srv: Any) -> tuple[int, int]:
    return sum(s.messages_in for s in srv.stats), sum(s.messages_out for s in srv.stats)


def _wait_for(srv: Any, expected: tuple[int, int]) -> None:
    deadline = time.monotonic() + 20
    while _totals(srv) != expected:
        if time.monotonic() > deadline:
            raise AssertionError(f"counted {_totals(srv)}, expected {expected}")
        time.sleep(0.01)


@pytest.mark.parametrize("compression", [None, "deflate"])
def test_messages_in_and_out_are_counted_on_both_read_paths(compression: str | None) -> None:
    # Small unfragmented frames take the session's fast path; fragmented and compressed ones
    # go through wsproto (the slow path). Both must count; control frames must not.
    with serve(Echo(), protocol=WebSocketProtocol(), count_traffic=True) as srv:
        url = f"ws://127.0.0.1:{srv.port}/"
        with sync.connect(url, compression=compression, open_timeout=10) as ws:
            for i in range(20):
                ws.send(f"text {i}")
                assert ws.recv(timeout=10) == f"text {i}"
            ws.send(b"\x01" * 300)  # a 16-bit length header
            assert ws.recv(timeout=10) == b"\x01" * 300
            ws.send(["frag", "mented"])
            assert ws.recv(timeout=10) == "fragmented"
            ws.send("silent")  # handed over, nothing sent back
            assert ws.ping(b"p").wait(10)  # a pong: not a message
            ws.send("last")
            assert ws.recv(timeout=10) == "last"
            _wait_for(srv, (24, 23))


def test_nothing_is_counted_unless_asked() -> None:
    with serve(Echo(), protocol=WebSocketProtocol()) as srv:
        with sync.connect(f"ws://127.0.0.1:{srv.port}/", open_timeout=10) as ws:
            ws.send("hello")
            assert ws.recv(timeout=10) == "hello"
        assert _totals(srv) == (0, 0)
        assert sum(s.accepted for s in srv.stats) == 1


def test_counted_from_when_counting_is_turned_on() -> None:
    # Protocol.counting, which the compiled reader keeps a copy of: turned on while a
    # session is open, its next messages count.
    protocol = WebSocketProtocol()
    with serve(Echo(), protocol=protocol) as srv:
        with sync.connect(f"ws://127.0.0.1:{srv.port}/", open_timeout=10) as ws:
            ws.send("hello")
            assert ws.recv(timeout=10) == "hello"
            assert protocol.counting is False
            srv.count_traffic = True
            ws.send("again")
            assert ws.recv(timeout=10) == "again"
            ws.send("silent")
            ws.send("last")
            assert ws.recv(timeout=10) == "last"
            _wait_for(srv, (3, 2))
        assert protocol.counting is True
