"""examples/proxy.py run as a user runs it, between real sockets and an echo upstream."""

from __future__ import annotations

import hashlib
import os
import select
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from gev_core.testing import echo_upstream

from conftest import free_port, wait_port

ROOT = Path(__file__).resolve().parents[1]

# How much the kernel buffers along the chain depends on its autotuning (a receive buffer may
# grow to net.ipv4.tcp_rmem's maximum, 32 MiB on some machines), so the backpressure tests do
# not send a fixed amount: they send until the chain stalls, which it only does if the proxy
# stops reading; without backpressure the proxy reads on, buffers past its hard cap
# (max_write_buffer) and drops the connection, and the test fails on the send or the read.
#: No stall within this much means nothing pushed back (kernel buffers are bounded by sysctls).
SEND_LIMIT = 512 * 1024 * 1024
STALL = 1.0


@pytest.fixture
def proxy() -> Iterator[object]:
    procs: list[subprocess.Popen[str]] = []

    def start(upstream: str) -> tuple[subprocess.Popen[str], int]:
        port = free_port()
        proc = subprocess.Popen(
            [
                sys.executable,
                str(ROOT / "examples" / "proxy.py"),
                *("--listen", f"127.0.0.1:{port}", "--upstream", upstream),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        procs.append(proc)
        wait_port(port, proc)
        return proc, port

    yield start
    for proc in procs:
        proc.terminate()
        try:
            proc.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()


def _rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def _send_all_in_thread(sock: socket.socket, payload: bytes) -> threading.Thread:
    t = threading.Thread(target=sock.sendall, args=(payload,), daemon=True)
    t.start()
    return t


class _Stream:
    """A long byte stream sent until the peer stops taking it; its digest checks what comes back."""

    def __init__(self) -> None:
        self.blocks = [os.urandom(1 << 20) for _ in range(3)]
        self.sent = 0
        self.digest = hashlib.sha256()

    def send_until_stalled(self, sock: socket.socket) -> None:
        """Send until nothing more is taken for :data:`STALL` seconds; fail if it never stalls."""
        sock.setblocking(False)
        view = memoryview(b"")
        i = 0
        try:
            while self.sent < SEND_LIMIT:
                if not view:
                    block = self.blocks[i % len(self.blocks)]
                    i += 1
                    view = memoryview(block)
                _, writable, _ = select.select([], [sock], [], STALL)
                if not writable:
                    return
                n = sock.send(view)
                self.digest.update(view[:n])
                self.sent += n
                view = view[n:]
            pytest.fail(f"sent {self.sent} bytes without a stall: nothing pushed back")
        finally:
            sock.setblocking(True)

    def read_back(self, sock: socket.socket) -> None:
        got = hashlib.sha256()
        left = self.sent
        while left:
            chunk = sock.recv(min(left, 1 << 20))
            assert chunk, f"the proxy closed with {left} bytes still to come"
            got.update(chunk)
            left -= len(chunk)
        assert got.hexdigest() == self.digest.hexdigest()


def _read_exactly(sock: socket.socket, n: int) -> bytes:
    got = bytearray()
    while len(got) < n:
        chunk = sock.recv(1 << 20)
        if not chunk:
            break
        got += chunk
    return bytes(got)


def test_bytes_pass_both_ways_intact(proxy):
    with echo_upstream() as upstream:
        _proc, port = proxy(f"127.0.0.1:{upstream.port}")
        payload = os.urandom(4 * 1024 * 1024)
        with socket.create_connection(("127.0.0.1", port), timeout=20) as s:
            sender = _send_all_in_thread(s, payload)
            assert _read_exactly(s, len(payload)) == payload
            sender.join(10)
        # Several clients at once, each with its own upstream connection.
        socks = [socket.create_connection(("127.0.0.1", port), timeout=10) for _ in range(5)]
        for i, s in enumerate(socks):
            s.sendall(b"client %d" % i)
        for i, s in enumerate(socks):
            assert _read_exactly(s, len(b"client %d" % i)) == b"client %d" % i
            s.close()
        assert upstream.connections >= 6  # (and the port probe of wait_port)


def test_a_client_that_does_not_read_stops_the_upstream(proxy):
    # The client sends far more than it reads: the echoes pile up towards it. Without
    # pause_writing -> upstream.pause_reading the proxy would buffer them past its hard cap
    # and drop the connection; with it, the whole chain stalls and nothing is lost.
    with echo_upstream() as upstream:
        proc, port = proxy(f"127.0.0.1:{upstream.port}")
        rss_before = _rss_kib(proc.pid)
        stream = _Stream()
        with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
            stream.send_until_stalled(s)
            stalled_at = upstream.received
            time.sleep(0.5)
            assert upstream.received - stalled_at < 1024 * 1024  # stalled, not crawling on
            grown = _rss_kib(proc.pid) - rss_before
            assert grown < 48 * 1024, f"the proxy grew by {grown} KiB"
            stream.read_back(s)  # nothing lost once it reads
    assert "max_write_buffer" not in _stop(proc)


def test_a_slow_upstream_stops_reading_the_client(proxy):
    with echo_upstream(read_paused=True) as upstream:
        proc, port = proxy(f"127.0.0.1:{upstream.port}")
        stream = _Stream()
        with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
            stream.send_until_stalled(s)
            upstream.resume()
            stream.read_back(s)
    assert "max_write_buffer" not in _stop(proc)


def test_a_close_on_either_side_closes_the_other(proxy):
    with echo_upstream() as upstream:
        _proc, port = proxy(f"127.0.0.1:{upstream.port}")
        s = socket.create_connection(("127.0.0.1", port), timeout=10)
        s.sendall(b"x")
        assert _read_exactly(s, 1) == b"x"
        s.close()
        _wait_for(lambda: upstream.open == 0, "the upstream connection to close")

        s = socket.create_connection(("127.0.0.1", port), timeout=10)
        s.sendall(b"last words")
        assert _read_exactly(s, 10) == b"last words"
        upstream.close()  # the upstream goes away: the client sees EOF
        assert s.recv(100) == b""
        s.close()


def test_an_unreachable_upstream_closes_the_client_with_a_logged_reason(proxy):
    dead = free_port()
    proc, port = proxy(f"127.0.0.1:{dead}")
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(b"anyone?")
        assert s.recv(100) == b""
    err = _stop(proc)
    assert f"upstream 127.0.0.1:{dead}" in err and "refused" in err, err


def _stop(proc: subprocess.Popen[str]) -> str:
    proc.terminate()
    _out, err = proc.communicate(timeout=10)
    return err


def _wait_for(cond, what: str, timeout: float = 10.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)
