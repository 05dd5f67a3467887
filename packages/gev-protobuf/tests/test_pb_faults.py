"""gev-protobuf under churn and memory pressure, over real sockets."""

from __future__ import annotations

import gc
import logging
import socket
import threading
import time
from types import ModuleType
from typing import Any

import pytest
from gev_core import Connection, Handler
from gev_core.testing import connect, recv_exactly, serve
from gev_protobuf import FrameDecoder, ProtobufProtocol, pack_message

KIB = 1024


class Echo(Handler):
    def __init__(self) -> None:
        self.closed: list[str] = []
        self.lock = threading.Lock()

    def on_message(self, conn: Connection, ctx: Any, data: Any) -> Any:
        return ctx, data

    def on_close(self, conn: Connection) -> None:
        with self.lock:
            self.closed.append(conn.peer_addr)


def wait_for(cond: Any, timeout: float = 20.0) -> bool:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def peer_of(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"{host}:{port}"


def parked(server: Any, handler: Echo, sock: socket.socket, size: int) -> Any:
    """A condition: the server holds ``size`` bytes of ``sock``'s input, or closed it."""
    peer = peer_of(sock)

    def check() -> bool:
        return (
            any(
                c.peer_addr == peer and c.read_buffer_length == size
                for c in server.loops[0].connections
            )
            or peer in handler.closed
        )

    return check


def read_frame(sock: socket.socket) -> tuple[str, bytes]:
    decoder = FrameDecoder()
    sock.settimeout(20)
    while (frame := decoder.next_frame()) is None:
        chunk = sock.recv(1 << 20)
        assert chunk, "closed"
        decoder.feed(chunk)
    return frame


def test_churn_with_partial_frames_frees_every_connection(echo_pb2: ModuleType) -> None:
    handler = Echo()
    frame = pack_message("gevtest.Msg1", echo_pb2.Msg1(id=7).SerializeToString())
    cycles = 200
    with serve(handler, protocol=ProtobufProtocol()) as server:
        gc.collect()
        gc.disable()
        try:
            before = sum(1 for o in gc.get_objects() if type(o) is Connection)
            for i in range(cycles):
                with connect(server) as sock:
                    if i % 2:
                        sock.sendall(frame)
                        assert read_frame(sock) == ("gevtest.Msg1", frame[18:])
                    sock.sendall(frame[: i % len(frame)])  # a partial frame left behind
            assert wait_for(lambda: len(handler.closed) == cycles)
            assert wait_for(
                lambda: sum(1 for o in gc.get_objects() if type(o) is Connection) <= before + 2,
                timeout=5,
            )
        finally:
            gc.enable()


def test_parked_partial_frames_count_against_the_server_budget(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="gev")
    handler = Echo()
    body = b"b" * (1024 * KIB)
    frame = pack_message("big", body)
    sizes = [800 * KIB, 700 * KIB, 500 * KIB, 300 * KIB]
    with serve(handler, protocol=ProtobufProtocol(), max_buffered=1400 * KIB) as server:
        socks = [connect(server) for _ in sizes]
        # One after the other, each parks the start of an unfinished 1 MiB frame: the 700 KiB
        # one pushes the total over the budget and the 800 KiB one goes; the 300 KiB one does
        # it again and the 700 KiB one goes. The other two can then finish their frames.
        for sock, size in zip(socks, sizes, strict=True):
            sock.sendall(frame[:size])
            assert wait_for(parked(server, handler, sock, size))
        peers = {peer_of(s) for s in socks[:2]}
        assert wait_for(lambda: set(handler.closed) == peers), handler.closed
        for sock, size in zip(socks[2:], sizes[2:], strict=True):
            sock.sendall(frame[size:])
            assert read_frame(sock) == ("big", body)
        for sock in socks:
            sock.close()
    shed = [r.getMessage() for r in caplog.records if "max_buffered" in r.getMessage()]
    assert len(shed) == 2 and all(any(p in line for line in shed) for p in peers), shed


def test_a_client_that_does_not_read_its_pushes_is_shed(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="gev")
    payload = b"r" * (256 * KIB)

    class Pusher(Echo):
        def on_message(self, conn: Connection, ctx: Any, data: Any) -> Any:
            if ctx == "flood":
                for _ in range(48):  # 12 MiB: more than the kernel's socket buffers take
                    conn.send(("blob", payload))
                return None
            return ctx, data

    handler = Pusher()
    with (
        serve(
            handler,
            protocol=ProtobufProtocol(),
            max_buffered=1024 * KIB,
            max_write_buffer=32 << 20,
        ) as server,
        connect(server) as slow,
        connect(server) as fine,
    ):
        slow_peer = peer_of(slow)
        slow.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        slow.sendall(pack_message("flood", b""))
        assert wait_for(lambda: slow_peer in handler.closed)
        frame = pack_message("blob", payload)
        fine.sendall(frame)
        assert recv_exactly(fine, len(frame)) == frame
    assert any(
        "max_buffered" in r.getMessage() and slow_peer in r.getMessage() for r in caplog.records
    )
