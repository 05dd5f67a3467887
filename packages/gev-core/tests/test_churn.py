"""Connection churn: a closed connection is freed by reference counting alone, at once.

Run with the cycle collector disabled: anything a closed connection leaves in a reference cycle
(or in a timer that was not cancelled) stays alive, and is counted.
"""

from __future__ import annotations

import gc
import socket
import threading
import time
from typing import Any

import pytest
from gev_core import Connection, Handler, LineProtocol, get_plugin_manager, hookimpl
from gev_core.testing import connect, recv_exactly, serve


class Counter(Handler):
    def __init__(self) -> None:
        self.closed = 0
        self.lock = threading.Lock()

    def on_message(self, conn: Connection, ctx: Any, data: Any) -> Any:
        return data

    def on_close(self, conn: Connection) -> None:
        with self.lock:
            self.closed += 1


class Hash(LineProtocol):
    name = "hash"


class Selector:
    @hookimpl
    def gev_register_protocols(self) -> list[Any]:
        return [Hash]

    @hookimpl
    def gev_select_protocol(self, connection: Any, data: bytes, candidates: list[str]) -> Any:
        return "hash" if data.startswith(b"#") else None


def live_connections() -> int:
    return sum(1 for o in gc.get_objects() if type(o) is Connection)


def wait_for(cond: Any, timeout: float = 20.0) -> bool:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def churn(server: Any, handler: Counter, cycles: int, exchange: Any) -> None:
    gc.collect()
    gc.disable()
    try:
        before = live_connections()
        for i in range(cycles):
            sock = connect(server)
            exchange(sock, i)
            if i % 3 == 2:  # an abortive close (RST) now and then
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00" * 2)
            sock.close()
        assert wait_for(lambda: handler.closed == cycles)
        # Slack of two: the loop's locals refer to the connection it served last until its next
        # event (and the test's own `sock` loop variable is a client socket, not counted).
        assert wait_for(lambda: live_connections() <= before + 2, timeout=5), (
            f"{live_connections() - before} of {cycles} closed connections are still alive"
        )
    finally:
        gc.enable()


def test_plain_echo_churn_frees_every_connection() -> None:
    handler = Counter()

    def exchange(sock: socket.socket, i: int) -> None:
        if i % 2:
            sock.sendall(b"hi")
            assert recv_exactly(sock, 2) == b"hi"

    with serve(handler) as server:
        churn(server, handler, 300, exchange)


@pytest.mark.parametrize("first", [b"#x\n", b"plain\n", b"", b"#"])
def test_first_bytes_selection_churn_frees_every_connection(first: bytes) -> None:
    handler = Counter()
    pm = get_plugin_manager(autoload=False)
    pm.register(Selector(), name="selector")

    def exchange(sock: socket.socket, i: int) -> None:
        if first.endswith(b"\n"):
            sock.sendall(first)
            assert recv_exactly(sock, len(first)) == first
        elif first:
            sock.sendall(first)

    with serve(handler, protocol=["hash", "line"], plugins=pm) as server:
        churn(server, handler, 150, exchange)


def test_connections_the_server_closes_first_are_freed_once_the_peer_has_closed() -> None:
    # The server closes first: FIN, then it lingers until the peer's FIN (or RST). The linger
    # timer is a minute, far longer than the wait below: a timer left pending after the
    # close keeps its connection alive, and is counted.
    class Bye(Counter):
        def on_message(self, conn: Connection, ctx: Any, data: Any) -> Any:
            conn.close()
            return data

    handler = Bye()

    def exchange(sock: socket.socket, i: int) -> None:
        sock.sendall(b"bye")
        sock.settimeout(20)
        got = b""
        while chunk := sock.recv(100):
            got += chunk
        assert got == b"bye"  # the reply, then the server's FIN

    with serve(handler, linger_timeout=60) as server:
        churn(server, handler, 150, exchange)
