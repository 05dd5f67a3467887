"""A client that sends without reading must cost bounded memory and no CPU spin."""

from __future__ import annotations

import logging
import resource
import socket
import threading
import time

import pytest
from gev_core import Handler, LineProtocol
from gev_core._loop import READ_BUFFER_SIZE
from gev_core.testing import connect, recv_exactly, serve


class Echo(Handler):
    def on_message(self, conn, ctx, data):
        return data


def _thread_cpu_seconds(tid: int) -> float:
    with open(f"/proc/self/task/{tid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    ticks = int(fields[11]) + int(fields[12])  # utime + stime
    import os

    return ticks / os.sysconf("SC_CLK_TCK")


# The default protocol's inline path, and a protocol that accepts bytes (the loop's direct
# path): both must stop reading once output backs up.
@pytest.mark.parametrize("protocol", [None, "line"])
def test_non_reading_client_is_bounded_and_does_not_spin(protocol):
    kwargs = {} if protocol is None else {"protocol": LineProtocol(max_line_length=1 << 20)}
    with serve(Echo(), **kwargs) as server:
        greedy = connect(server)
        greedy.setblocking(False)
        chunk = b"x" * 65535 + b"\n"
        sent = complete = 0
        deadline = time.monotonic() + 10
        stalled_since = None
        # Send until the kernel refuses more for a while: the server must have stopped reading.
        while time.monotonic() < deadline:
            try:
                n = greedy.send(chunk)
                sent += n
                if n == len(chunk):
                    complete = sent  # ends with a newline: the line protocol echoes up to here
                stalled_since = None
            except BlockingIOError:
                if stalled_since is None:
                    stalled_since = time.monotonic()
                elif time.monotonic() - stalled_since > 0.5:
                    break
                time.sleep(0.01)
        assert stalled_since is not None, "the server kept reading from a client that never reads"
        conn = next(iter(server.loops[0]._conns.values()))
        loop = server.loops[0]
        # Output is bounded by the high-water mark plus at most one read's worth of replies. For
        # the line protocol one read can also complete a line begun by earlier reads, so its
        # replies may add the longest pending partial line (less than one chunk) to that.
        carried = 0 if protocol is None else len(chunk)
        assert conn.write_buffer_length <= loop.high_water + READ_BUFFER_SIZE + carried
        assert conn._paused
        # No spin: while stalled, the loop thread burns (almost) no CPU.
        tid = _loop_native_id(server)
        before = _thread_cpu_seconds(tid)
        time.sleep(1.0)
        burned = _thread_cpu_seconds(tid) - before
        assert burned < 0.2, f"loop used {burned:.2f}s of CPU in 1s while a client was stalled"
        # Other clients are still served meanwhile.
        with connect(server) as other:
            other.sendall(b"still here\n")
            assert recv_exactly(other, 11) == b"still here\n"
        # When the greedy client reads again, everything it sent comes back, byte-exact.
        greedy.setblocking(True)
        greedy.settimeout(10)
        expected = sent if protocol is None else complete
        got = 0
        while got < expected:
            data = greedy.recv(1 << 20)
            assert data, "server closed the connection"
            assert not data.replace(b"\n", b"").strip(b"x")
            got += len(data)
        assert got == expected
        greedy.close()


def _loop_native_id(server) -> int:
    # Loop 0 runs in the thread that called start(): find it by name.
    for t in threading.enumerate():
        if t.name == "gev-test-server":
            return t.native_id
    raise AssertionError("server thread not found")


def test_hard_cap_closes_a_connection_that_never_drains(caplog):
    caplog.set_level(logging.WARNING, logger="gev")
    blob = b"p" * (256 * 1024)
    closed = threading.Event()

    class Pusher(Handler):
        def on_message(self, conn, ctx, data):
            for _ in range(64):  # 16 MiB at once: more than the kernel and max_write_buffer take
                conn.send(blob)

        def on_close(self, conn):
            closed.set()

    with serve(Pusher(), high_water=64 * 1024, max_write_buffer=1024 * 1024) as server:
        sock = connect(server)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.sendall(b"go")
        assert closed.wait(5)
        sock.close()
    assert any("max_write_buffer" in r.getMessage() for r in caplog.records)


def test_rss_stays_bounded_under_a_flood(tmp_path):
    # The same scenario measured from outside: the process RSS grows by far less than was sent.
    with serve(Echo()) as server:
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        greedy = connect(server)
        greedy.setblocking(False)
        sent = 0
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline and sent < 256 * 1024 * 1024:
            try:
                sent += greedy.send(b"y" * 65536)
            except BlockingIOError:
                time.sleep(0.01)
        after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        greedy.close()
    assert (after - before) * 1024 < 32 * 1024 * 1024
