"""The core examples, run as a user would run them, talked to over real sockets."""

from __future__ import annotations

import os
import socket
import time


def test_echo_example(run_example):
    _proc, port = run_example("echo.py", "--loops", "2")
    payload = os.urandom(100_000)
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(payload)
        got = bytearray()
        while len(got) < len(payload):
            got += s.recv(65536)
    assert got == payload


def _admitted_client(port: int, timeout: float = 20.0) -> socket.socket:
    # The readiness probe was a client too: until the server has seen it close, a new client
    # may be refused. Retry until one is admitted and served.
    deadline = time.monotonic() + timeout
    while True:
        sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        sock.sendall(b"hi")
        if sock.recv(2) == b"hi":
            return sock
        sock.close()
        if time.monotonic() > deadline:
            raise AssertionError("the server never admitted a client")
        time.sleep(0.1)


def test_max_connections_refuses_the_extra_client(run_example):
    _proc, port = run_example("max_connections.py", "--max", "1")
    first = _admitted_client(port)
    second = socket.create_connection(("127.0.0.1", port), timeout=5)
    assert second.recv(10) == b""  # refused: EOF straight away
    first.sendall(b"still")
    assert first.recv(5) == b"still"
    first.close()
    # The refused client never closes its end, yet the server lets go of it: once the first
    # client leaves, a new one is admitted again.
    _admitted_client(port).close()
    second.close()
