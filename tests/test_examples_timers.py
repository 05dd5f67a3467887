"""The gev-timers examples, run as programs (the plugin is found through its entry point)."""

from __future__ import annotations

import importlib.metadata
import os
import socket
import time

import pytest


@pytest.fixture(autouse=True)
def _needs_installed_plugin():
    try:
        importlib.metadata.distribution("gev-timers")
    except importlib.metadata.PackageNotFoundError:
        if os.environ.get("CI"):
            raise
        pytest.skip("the examples find gev-timers through its installed entry point")


def test_idle_connection_example_reaps_silent_clients(run_example):
    _proc, port = run_example("idle_connection.py", "--idle-time", "0.5")
    with (
        socket.create_connection(("127.0.0.1", port), timeout=5) as chatty,
        socket.create_connection(("127.0.0.1", port), timeout=5) as silent,
    ):
        t0 = time.monotonic()
        for _ in range(8):
            chatty.sendall(b"hi")
            assert chatty.recv(2) == b"hi"
            time.sleep(0.15)
        assert silent.recv(1) == b""  # reaped meanwhile
        assert time.monotonic() - t0 > 0.4
        chatty.sendall(b"ok")
        assert chatty.recv(2) == b"ok"


def test_push_example_sends_hello_every_interval(run_example):
    _proc, port = run_example("push.py", "--interval", "0.1")
    with (
        socket.create_connection(("127.0.0.1", port), timeout=5) as a,
        socket.create_connection(("127.0.0.1", port), timeout=5) as b,
    ):
        time.sleep(0.75)
        for sock in (a, b):
            sock.settimeout(2)
            got = b""
            while got.count(b"\n") < 4:
                got += sock.recv(1000)
            assert set(got.split(b"\n")[:-1]) == {b"hello"}
        a.sendall(b"echo")
        data = b""
        while b"echo" not in data:
            data += a.recv(1000)
