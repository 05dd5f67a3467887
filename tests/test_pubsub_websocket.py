"""gev-pubsub with real WebSocket clients (permessage-deflate negotiated or not), gev-protobuf
subscribers, and publishing from a gev-timers timer."""

from __future__ import annotations

import base64
import contextlib
import os
import socket
import struct
import threading
import time
import zlib
from collections.abc import Iterator
from typing import Any

import pytest
from gev_core import Connection, Handler
from gev_core.testing import connect, serve

sync = pytest.importorskip("websockets.sync.client")
gev_websocket = pytest.importorskip("gev_websocket")
from gev_pubsub import PubSub  # noqa: E402
from gev_websocket import Deflate, Upgrader, WebSocketHandler, WebSocketProtocol  # noqa: E402


def wait_for(cond: Any, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


class Room(WebSocketHandler):
    """Subscribes on open; a message "own N" is answered to its sender alone (compressed with
    the connection's own context when deflate is on)."""

    def __init__(self, hub: PubSub, topic: str = "room") -> None:
        self.hub = hub
        self.topic = topic
        self.opened: list[Connection] = []

    def on_open(self, conn: Connection) -> None:
        self.hub.subscribe(conn, self.topic)
        self.opened.append(conn)

    def on_message(self, conn: Connection, data: str | bytes) -> Any:
        return gev_websocket.MessageType.TEXT, f"re: {data}"


@pytest.fixture
def hub() -> Iterator[PubSub]:
    h = PubSub()
    yield h
    h.close()


@pytest.mark.parametrize("compression", [False, True], ids=["plain", "deflate-takeover"])
def test_websocket_subscribers_get_text_and_binary_in_order(hub: PubSub, compression: bool) -> None:
    room = Room(hub)
    protocol = WebSocketProtocol(Upgrader(compression=compression))
    with serve(room, protocol=protocol, num_loops=2) as server, contextlib.ExitStack() as stack:
        clients = [
            stack.enter_context(
                sync.connect(
                    f"ws://127.0.0.1:{server.port}/",
                    compression="deflate" if compression else None,
                    open_timeout=10,
                )
            )
            for _ in range(8)
        ]
        wait_for(lambda: len(room.opened) == 8)
        assert all(c.protocol.extensions for c in clients) is compression
        text = "repetitive text compresses well " * 20
        expected: list[str | bytes] = []
        for i in range(60):
            message: str | bytes = f"{i} {text}" if i % 2 else bytes([i]) * 200
            hub.publish("room", message)
            expected.append(message)
        for c in clients:
            assert [c.recv(timeout=20) for _ in expected] == expected
        # The connection's own compressed replies interleave with the shared frames.
        for i in range(5):
            for c in clients:
                c.send(f"{i} {text}")
            hub.publish("room", f"after {i}")
            for c in clients:
                got = {c.recv(timeout=20), c.recv(timeout=20)}
                assert got == {f"re: {i} {text}", f"after {i}"}


def raw_deflate_client(port: int) -> socket.socket:
    """A client that negotiates permessage-deflate with server_no_context_takeover and reads
    frames itself, to look at RSV1 on the wire."""
    sock = connect(("127.0.0.1", port))
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall(
        (
            "GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
            "Sec-WebSocket-Extensions: permessage-deflate; server_no_context_takeover\r\n\r\n"
        ).encode()
    )
    head = b""
    while b"\r\n\r\n" not in head:
        head += sock.recv(1)
    assert b" 101 " in head and b"server_no_context_takeover" in head, head
    return sock


def read_frame(sock: socket.socket) -> tuple[int, bytes]:
    def exactly(n: int) -> bytes:
        buf = b""
        while len(buf) < n:
            chunk = sock.recv(n - len(buf))
            assert chunk, "closed"
            buf += chunk
        return buf

    b0, b1 = exactly(2)
    n = b1 & 0x7F
    if n == 126:
        (n,) = struct.unpack(">H", exactly(2))
    elif n == 127:
        (n,) = struct.unpack(">Q", exactly(8))
    return b0, exactly(n)


def test_no_context_takeover_subscribers_share_one_compressed_frame(hub: PubSub) -> None:
    room = Room(hub)
    protocol = WebSocketProtocol(Upgrader(compression=Deflate(server_no_context_takeover=True)))
    with serve(room, protocol=protocol) as server, contextlib.ExitStack() as stack:
        raws = [stack.enter_context(raw_deflate_client(server.port)) for _ in range(3)]
        real = stack.enter_context(
            sync.connect(f"ws://127.0.0.1:{server.port}/", compression="deflate", open_timeout=10)
        )
        wait_for(lambda: len(room.opened) == 4)
        big = "the same words, again and again " * 50
        for i in range(10):
            hub.publish("room", f"{i} {big}")
        for sock in raws:
            for i in range(10):
                b0, payload = read_frame(sock)
                assert b0 == 0xC1  # FIN, RSV1 (compressed), text
                assert len(payload) < len(big) // 4
                text = zlib.decompressobj(-15).decompress(payload + b"\x00\x00\xff\xff")
                assert text.decode() == f"{i} {big}"
        assert [real.recv(timeout=20) for _ in range(10)] == [f"{i} {big}" for i in range(10)]
        # Counted on the loop once its writes are done, which the clients may see first.
        wait_for(lambda: hub.stats()["deliveries"] == 40)


def test_subscribed_before_the_handshake_gets_only_frames_after_it(hub: PubSub) -> None:
    class Early(WebSocketHandler):
        def on_connect(self, conn: Connection) -> None:
            hub.subscribe(conn, "ticks")  # before the upgrade: nothing may be written yet

    stop = threading.Event()

    def ticker() -> None:
        i = 0
        while not stop.is_set():
            hub.publish("ticks", f"tick {i}")
            i += 1
            time.sleep(0.001)

    with serve(Early(), protocol=WebSocketProtocol()) as server:
        thread = threading.Thread(target=ticker)
        thread.start()
        try:
            for _ in range(5):
                with sync.connect(f"ws://127.0.0.1:{server.port}/", open_timeout=10) as ws:
                    first = int(ws.recv(timeout=10).split()[1])
                    assert [ws.recv(timeout=10) for _ in range(20)] == [
                        f"tick {first + k}" for k in range(1, 21)
                    ]
        finally:
            stop.set()
            thread.join()


def test_protobuf_subscribers_get_frames_packed_once(hub: PubSub) -> None:
    gev_protobuf = pytest.importorskip("gev_protobuf")

    class Sub(Handler):
        def on_connect(self, conn: Connection) -> None:
            hub.subscribe(conn, "quotes")

        def on_message(self, conn: Connection, ctx: Any, data: Any) -> None:
            return None

    with serve(Sub(), protocol=gev_protobuf.ProtobufProtocol()) as server:
        socks = [connect(server) for _ in range(4)]
        wait_for(lambda: hub.subscriber_count("quotes") == 4)
        for i in range(30):
            hub.publish("quotes", ("market.Quote", struct.pack(">I", i)))
        for sock in socks:
            decoder = gev_protobuf.FrameDecoder()
            frames: list[tuple[str, bytes]] = []
            while len(frames) < 30:
                decoder.feed(sock.recv(65536))
                frames += list(decoder)
            assert frames == [("market.Quote", struct.pack(">I", i)) for i in range(30)]
            sock.close()


def test_publish_from_a_timer(hub: PubSub) -> None:
    pytest.importorskip("gev_timers")
    room = Room(hub)
    count = [0]

    def tick() -> None:
        count[0] += 1
        hub.publish("room", f"tick {count[0]}")

    with serve(room, protocol=WebSocketProtocol()) as server:
        with sync.connect(f"ws://127.0.0.1:{server.port}/", open_timeout=10) as ws:
            wait_for(lambda: room.opened)
            timer = server.run_every(0.01, tick)
            try:
                ticks = [int(ws.recv(timeout=10).split()[1]) for _ in range(10)]
            finally:
                timer.cancel()
        assert ticks == list(range(ticks[0], ticks[0] + 10))


def raw_plain_client(port: int) -> socket.socket:
    sock = connect(("127.0.0.1", port))
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall(
        (
            "GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
        ).encode()
    )
    head = b""
    while b"\r\n\r\n" not in head:
        head += sock.recv(1)
    assert b" 101 " in head, head
    return sock


def client_frame(opcode: int, payload: bytes) -> bytes:
    # Masked, as a client must; with a zero key the payload goes as it is.
    return bytes((0x80 | opcode, 0x80 | len(payload))) + b"\0\0\0\0" + payload


@pytest.mark.parametrize("closer", ["server", "client"])
def test_no_data_frame_follows_a_close_frame(hub: PubSub, closer: str) -> None:
    """Publishing goes on while a subscriber closes: its close frame is the last frame it gets
    (the protocol pins its shared packer at the handshake and must unpin it before that)."""

    class Closing(WebSocketHandler):
        def on_open(self, conn: Connection) -> None:
            hub.subscribe(conn, "ticks")

        def on_message(self, conn: Connection, data: str | bytes) -> None:
            gev_websocket.close(conn, 1000, "bye")

    stop = threading.Event()

    def ticker() -> None:
        i = 0
        while not stop.is_set():
            hub.publish("ticks", f"tick {i}")
            i += 1
            time.sleep(0.0005)

    protocol = WebSocketProtocol(Upgrader(compression=False))
    with serve(Closing(), protocol=protocol) as server:
        thread = threading.Thread(target=ticker)
        thread.start()
        try:
            for _ in range(3):
                sock = raw_plain_client(server.port)
                for _ in range(5):
                    assert read_frame(sock)[0] == 0x81  # ticks
                if closer == "server":
                    sock.sendall(client_frame(0x1, b"bye"))
                else:
                    sock.sendall(client_frame(0x8, struct.pack(">H", 1000)))
                while True:
                    b0, payload = read_frame(sock)
                    if b0 == 0x88:
                        break
                    assert b0 == 0x81  # ticks published before the close
                if closer == "server":
                    sock.sendall(client_frame(0x8, payload[:2]))
                sock.settimeout(10)
                rest = b""
                while chunk := sock.recv(65536):
                    rest += chunk
                assert rest == b"", rest[:40]  # nothing between the close frame and our EOF
                sock.close()
        finally:
            stop.set()
            thread.join()
