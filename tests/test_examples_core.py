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


def test_max_connections_refuses_the_extra_client(run_example):
    _proc, port = run_example("max_connections.py", "--max", "1")
    time.sleep(0.3)  # let the server see the readiness probe's connection close
    first = socket.create_connection(("127.0.0.1", port), timeout=5)
    first.sendall(b"hi")
    assert first.recv(2) == b"hi"
    second = socket.create_connection(("127.0.0.1", port), timeout=5)
    assert second.recv(10) == b""  # shutdown_write: EOF straight away
    second.close()
    first.sendall(b"still")
    assert first.recv(5) == b"still"
    first.close()
    # Once the first leaves, a new client is admitted again.
    time.sleep(0.3)
    third = socket.create_connection(("127.0.0.1", port), timeout=5)
    third.sendall(b"ok")
    assert third.recv(2) == b"ok"
    third.close()
