"""Helpers shared by this package's tests (put on sys.path by conftest.py)."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable
from typing import Any

from gev_core import Connection, Handler
from gev_core.testing import connect
from gev_pubsub import PubSub

DEADLINE = 30.0
NL = b"\n"


def wait_for(cond: Callable[[], Any], timeout: float = DEADLINE, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)


class LineReader:
    """A blocking client that collects lines."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buf = b""

    def lines(self, n: int, timeout: float = DEADLINE) -> list[bytes]:
        deadline = time.monotonic() + timeout
        while self.buf.count(b"\n") < n:
            self.sock.settimeout(max(0.01, deadline - time.monotonic()))
            try:
                chunk = self.sock.recv(1 << 20)
            except TimeoutError:
                raise AssertionError(f"got {self.buf.count(NL)} of {n} lines") from None
            if not chunk:
                raise AssertionError(f"closed after {self.buf.count(NL)} of {n} lines")
            self.buf += chunk
        *lines, self.buf = self.buf.split(b"\n", n)
        return lines

    def nothing_more(self, wait: float = 0.2) -> bool:
        self.sock.settimeout(wait)
        try:
            chunk = self.sock.recv(65536)
        except TimeoutError:
            return not self.buf
        self.buf += chunk
        return False


class Subscribing(Handler):
    """Subscribes every connection to the topics its first line names (``sub a b``); other
    lines are published as ``topic payload``."""

    def __init__(self, hub: PubSub) -> None:
        self.hub = hub
        self.conns: list[Connection] = []

    def on_message(self, conn: Connection, ctx: Any, data: bytes) -> Any:
        word, _, rest = data.partition(b" ")
        if word == b"sub":
            for topic in rest.split():
                self.hub.subscribe(conn, topic.decode())
            self.conns.append(conn)
            return b"ok"
        if word == b"pub":
            topic, _, payload = rest.partition(b" ")
            self.hub.publish(topic.decode(), payload)
        return None


def subscriber(server: Any, *topics: str, rcvbuf: int = 0) -> LineReader:
    if rcvbuf:
        # Before connecting, so the advertised window stays small: a reader that lets the
        # server's output pile up in user space quickly.
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        sock.connect(server.address)
    else:
        sock = connect(server)
    reader = LineReader(sock)
    reader.sock.sendall(b"sub " + " ".join(topics).encode() + b"\n")
    assert reader.lines(1) == [b"ok"]
    return reader
