"""write_shared: one frame per shared packer, written to many connections of a loop."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest
from gev_core import Connection, Handler, LineProtocol, Protocol, write_shared
from gev_core.testing import connect, recv_exactly, serve


class Collect(Handler):
    def __init__(self) -> None:
        self.conns: list[Connection] = []

    def on_connect(self, conn: Connection) -> None:
        self.conns.append(conn)

    def on_message(self, conn: Connection, ctx: Any, data: Any) -> None:
        return None


class PerConnection(LineProtocol):
    def shared_packer(self, conn: Connection) -> None:
        return None


def on_loop(conn: Connection, fn: Any) -> Any:
    done = threading.Event()
    box: list[Any] = []

    def task() -> None:
        try:
            box.append(fn())
        except BaseException as exc:
            box.append(exc)
        done.set()

    conn.loop.call_soon_threadsafe(task)
    assert done.wait(30)
    return box[0]


def test_writes_one_frame_per_packer_and_reports_the_rest() -> None:
    handler = Collect()
    protocol = LineProtocol()
    with serve(handler, protocol=protocol) as server:
        socks = [connect(server) for _ in range(4)]
        deadline = time.monotonic() + 30
        while len(handler.conns) < 4:
            assert time.monotonic() < deadline
            time.sleep(0.01)
        conns = handler.conns
        conns[3].protocol = PerConnection()  # shares nothing
        calls: list[Any] = []

        def frame(packer: Any) -> bytes:
            calls.append(packer)
            return packer("hello")  # type: ignore[no-any-return]

        written, slow, unshared = on_loop(conns[0], lambda: write_shared(conns, frame, 1 << 20))
        assert (written, slow, unshared) == (3, [], [conns[3]])
        assert calls == [protocol.shared_packer(conns[0])]
        for sock in socks[:3]:
            assert recv_exactly(sock, 6) == b"hello\n"
        # A limit below nothing at all: everybody with pending output would be slow; with
        # none pending, a limit of 0 still writes.
        written, slow, _ = on_loop(conns[0], lambda: write_shared(conns[:3], frame, 0))
        assert written == 3 and slow == []
        for sock in socks:
            sock.close()


def test_refuses_the_wrong_thread() -> None:
    handler = Collect()
    with serve(handler, protocol=LineProtocol()) as server:
        sock = connect(server)
        deadline = time.monotonic() + 30
        while not handler.conns:
            assert time.monotonic() < deadline
            time.sleep(0.01)
        with pytest.raises(RuntimeError):
            write_shared(handler.conns, lambda p: b"x", 0)
        sock.close()


def test_protocol_default_shares_nothing() -> None:
    class Bare(Protocol):
        pass

    assert Bare().shared_packer(None) is None  # type: ignore[arg-type]
