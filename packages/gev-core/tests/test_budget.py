"""The server-wide budget for buffered bytes: the largest holders are shed, with a reason."""

from __future__ import annotations

import logging
import socket
import struct
import threading
import time
from typing import Any

import pytest
from gev_core import Connection, Handler, LengthFieldProtocol, Server
from gev_core.testing import connect, recv_exactly, serve

KIB = 1024


class Echo(Handler):
    def __init__(self) -> None:
        self.closed: list[str] = []
        self.lock = threading.Lock()

    def on_message(self, conn: Connection, ctx: Any, data: Any) -> Any:
        return data

    def on_close(self, conn: Connection) -> None:
        with self.lock:
            self.closed.append(conn.peer_addr)


def _wait(cond: Any, timeout: float = 20.0) -> bool:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def _peer(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"{host}:{port}"


def _server_side(server: Any, sock: socket.socket) -> Connection | None:
    peer = _peer(sock)
    return next((c for c in server.loops[0].connections if c.peer_addr == peer), None)


def _parked(server: Any, handler: Echo, sock: socket.socket, size: int) -> Any:
    """A condition: the server holds ``size`` bytes of ``sock``'s input, or closed it."""

    def check() -> bool:
        conn = _server_side(server, sock)
        return (conn is not None and conn.read_buffer_length == size) or (
            _peer(sock) in handler.closed
        )

    return check


def test_partial_frames_over_the_budget_shed_the_largest_holders(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="gev")
    handler = Echo()
    frame = 1024 * KIB
    sizes = [900 * KIB, 750 * KIB, 600 * KIB, 450 * KIB, 300 * KIB, 150 * KIB]
    with serve(
        handler,
        protocol=LengthFieldProtocol(max_frame_size=2 * frame),
        max_buffered=2000 * KIB,
    ) as server:
        socks = [connect(server) for _ in sizes]
        # One after the other, each parks the start of an unfinished 1 MiB frame. The 600 KiB
        # one pushes the total over 2000 KiB: the 900 KiB one, the largest, goes; the 300 KiB
        # one does it again: the 750 KiB one goes.
        for sock, size in zip(socks, sizes, strict=True):
            sock.sendall(struct.pack(">I", frame) + b"p" * size)
            assert _wait(_parked(server, handler, sock, 4 + size))
        shed = {_peer(s) for s in socks[:2]}
        assert _wait(lambda: set(handler.closed) == shed), handler.closed
        for sock in socks[:2]:
            sock.settimeout(10)
            try:
                assert sock.recv(10) == b""
            except ConnectionResetError:
                pass
        # The others are still served: they finish their frames and get them back.
        for sock, size in zip(socks[2:], sizes[2:], strict=True):
            sock.sendall(b"p" * (frame - size))
            assert recv_exactly(sock, 4 + frame) == struct.pack(">I", frame) + b"p" * frame
        for sock in socks:
            sock.close()
    lines = [r.getMessage() for r in caplog.records if "max_buffered" in r.getMessage()]
    assert len(lines) == 2, lines
    for sock_peer in shed:
        assert any(sock_peer in line for line in lines)
    assert all(r.exc_info is None for r in caplog.records)


def test_output_counts_against_the_budget_too(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="gev")
    blob = b"z" * (600 * KIB)

    class Pusher(Echo):
        def on_message(self, conn: Connection, ctx: Any, data: Any) -> Any:
            for _ in range(int(data)):
                conn.send(blob)
            return None

    handler = Pusher()
    with serve(handler, max_buffered=2000 * KIB, max_write_buffer=32 << 20) as server:
        reader, hog = connect(server), connect(server)
        hog_peer = _peer(hog)
        hog.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        # 12 MB for a client that never reads: more than the kernel's socket buffers take.
        hog.sendall(b"20")
        assert _wait(lambda: hog_peer in handler.closed)
        reader.sendall(b"1")
        assert recv_exactly(reader, len(blob)) == blob
        reader.close()
        hog.close()
    assert any(
        "max_buffered" in r.getMessage() and hog_peer in r.getMessage() for r in caplog.records
    )


def test_the_default_budget_follows_the_per_connection_limits() -> None:
    server = Server(
        Echo(), address=("127.0.0.1", 0), max_read_buffer=1 << 20, max_write_buffer=2 << 20
    )
    try:
        assert server.max_buffered == 16 * (3 << 20)
    finally:
        server.stop()
    with pytest.raises(ValueError):
        Server(Echo(), address=("127.0.0.1", 0), max_buffered=0)
