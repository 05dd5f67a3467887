"""gev-websocket under faults, over real sockets: threads, churn, floods, stops, refusals.

Each test here reproduces a defect found by trying the server as an adversarial client would
(threads sending on compressed connections, connection churn, deflate floods, SIGTERM, hostile
handshakes) and checks the behaviour that replaced it.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import socket
import threading
import time
import tracemalloc
import zlib
from collections.abc import Callable
from typing import Any

import gev_websocket
import pytest
from gev_core import Connection
from gev_core.testing import connect, serve
from gev_websocket import (
    MessageType,
    Upgrader,
    WebSocketHandler,
    WebSocketProtocol,
    WebSocketSession,
)
from gev_websocket import testing as wst

websockets_client = pytest.importorskip("websockets.asyncio.client")
from websockets.exceptions import ConnectionClosed as WsClosed  # noqa: E402


def wait_for(cond: Callable[[], bool], timeout: float = 20.0) -> bool:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def url(srv: Any) -> str:
    return f"ws://127.0.0.1:{srv.port}/"


class Registry(WebSocketHandler):
    """Echoes, and keeps the open connections (by peer) for a test to push to."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.open: dict[str, Connection] = {}
        self.closed = 0

    def on_open(self, conn: Connection) -> None:
        with self.lock:
            self.open[conn.peer_addr] = conn

    def on_message(self, conn: Connection, data: str | bytes) -> tuple[Any, Any] | None:
        return (MessageType.TEXT if isinstance(data, str) else MessageType.BINARY), data

    def on_close(self, conn: Connection) -> None:
        with self.lock:
            self.open.pop(conn.peer_addr, None)
            self.closed += 1


# -- 1. Connection.send from another thread on compressed connections ---------------------


def _text(tag: str, i: int) -> str:
    # Compressible, and different each time: with context takeover a frame compressed out of
    # order does not inflate to the text that was sent (or does not inflate at all).
    return f"{tag} {i:05d} " + f"{tag}-{i % 7}-payload " * (10 + i % 13)


def test_conn_send_from_a_thread_while_the_loop_replies_with_permessage_deflate() -> None:
    conns, rounds = 16, 150
    handler = Registry()
    with serve(handler, protocol=WebSocketProtocol()) as srv:

        async def client(index: int, started: asyncio.Event) -> tuple[list[str], list[str]]:
            echoes: list[str] = []
            pushes: list[str] = []
            async with websockets_client.connect(url(srv), open_timeout=20) as ws:
                assert ws.protocol.extensions, "the client negotiates permessage-deflate"
                await started.wait()

                async def reader() -> None:
                    while len(echoes) < rounds or len(pushes) < rounds:
                        message = await asyncio.wait_for(ws.recv(), 60)
                        assert isinstance(message, str)
                        (echoes if message.startswith("echo") else pushes).append(message)

                read = asyncio.ensure_future(reader())
                for i in range(rounds):
                    await ws.send(_text("echo", i))
                    if i % 8 == 0:
                        await asyncio.sleep(0)
                await read
            return echoes, pushes

        async def main() -> list[tuple[list[str], list[str]]]:
            started = asyncio.Event()
            tasks = [asyncio.ensure_future(client(i, started)) for i in range(conns)]
            await asyncio.to_thread(wait_for, lambda: len(handler.open) == conns)
            targets = list(handler.open.values())

            def push() -> None:
                for i in range(rounds):
                    for conn in targets:
                        conn.send(_text("push", i))

            pusher = threading.Thread(target=push)
            started.set()
            pusher.start()
            results = await asyncio.gather(*tasks)
            await asyncio.to_thread(pusher.join, 30)
            return results

        results = asyncio.run(main())
    for echoes, pushes in results:
        assert echoes == [_text("echo", i) for i in range(rounds)]
        assert pushes == [_text("push", i) for i in range(rounds)]


# -- 2. churn: a closed connection is garbage at once --------------------------------------


def _peer(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"{host}:{port}"


def _live(kind: type) -> int:
    # type(), not isinstance(): the latter dereferences weak proxies, and a dead one raises.
    return sum(1 for o in gc.get_objects() if issubclass(type(o), kind))


def _read_until(sock: socket.socket, marker: bytes) -> bytes:
    data = b""
    while marker not in data:
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    return data


def _drain_to_eof(sock: socket.socket) -> None:
    sock.settimeout(20)
    try:
        while sock.recv(65536):
            pass
    except ConnectionResetError:
        pass


class CloseOnRequest(Registry):
    def on_message(self, conn: Connection, data: str | bytes) -> tuple[Any, Any] | None:
        if data == "close me":
            gev_websocket.close(conn, 1000)
            return None
        return super().on_message(conn, data)


def test_churn_leaves_no_connection_or_session_behind_without_the_cycle_collector(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Captured log records would keep the connections they name (the 1002 warnings) alive.
    caplog.set_level(logging.ERROR, logger="gev")
    cycles = 150
    handler = CloseOnRequest()
    deflate = "permessage-deflate; client_max_window_bits"
    # Every timeout (handshake, close, linger: the protocol's and the core's) is a minute, far
    # longer than the test waits for the objects to go: a timer left pending on any of the
    # paths below keeps its connection alive, and is counted.
    protocol = WebSocketProtocol(
        Upgrader(handshake_timeout=60), close_timeout=60, linger_timeout=60
    )
    with serve(handler, protocol=protocol, linger_timeout=60) as srv:
        gc.collect()
        gc.disable()
        try:
            before = (_live(Connection), _live(WebSocketSession))
            for i in range(cycles):
                with connect(srv) as sock:
                    how = i % 6
                    if how == 4:  # half a handshake, then gone
                        sock.sendall(wst.request_bytes()[:40])
                        continue
                    if how == 5:  # a refused handshake (400)
                        sock.sendall(wst.request_bytes(key=b"short"))
                        assert _read_until(sock, b"\r\n\r\n").startswith(b"HTTP/1.1 400")
                        _drain_to_eof(sock)
                        continue
                    sock.sendall(wst.request_bytes(extensions=deflate if i % 2 else None))
                    assert _read_until(sock, b"\r\n\r\n").startswith(b"HTTP/1.1 101")
                    if how == 0:  # a clean close started by the client
                        sock.sendall(wst.frame(wst.CLOSE, wst.close_payload(1000)))
                        _drain_to_eof(sock)
                    elif how == 1:  # a close started by the server
                        sock.sendall(wst.frame(wst.TEXT, b"close me"))
                        assert b"\x88" in _read_until(sock, b"\x88")  # its close frame
                        sock.sendall(wst.frame(wst.CLOSE, wst.close_payload(1000)))
                        _drain_to_eof(sock)
                    elif how == 2:  # a protocol error (unmasked frame)
                        sock.sendall(wst.frame(wst.TEXT, b"x", mask=None))
                        _drain_to_eof(sock)
                    # how == 3: the client just goes away
            assert wait_for(lambda: handler.closed == cycles)
            # Freed by reference counting alone, as soon as closed.
            # Slack of one: the loop's locals refer to the connection it served last.
            assert wait_for(
                lambda: (
                    _live(Connection) <= before[0] + 1 and _live(WebSocketSession) <= before[1] + 1
                ),
                timeout=5,
            ), (
                f"{_live(Connection) - before[0]} Connection and"
                f" {_live(WebSocketSession) - before[1]} WebSocketSession objects survived"
                f" {cycles} closed connections"
            )
        finally:
            gc.enable()


# -- 3. a deflate flood does not starve the other connections ------------------------------


class ServerFrames:
    """Parses the server's (unmasked) frames from a raw socket."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buf = b""

    def next(self) -> tuple[int, bytes]:
        while True:
            if len(self.buf) >= 2:
                n = self.buf[1] & 0x7F
                head = 2
                if n == 126:
                    head, n = 4, int.from_bytes(self.buf[2:4], "big")
                elif n == 127:
                    head, n = 10, int.from_bytes(self.buf[2:10], "big")
                if len(self.buf) >= head + n:
                    opcode = self.buf[0] & 0x0F
                    payload = self.buf[head : head + n]
                    self.buf = self.buf[head + n :]
                    return opcode, payload
            chunk = self.sock.recv(1 << 20)
            if not chunk:
                raise EOFError("the server closed the connection")
            self.buf += chunk


def _open_raw(srv: Any, extensions: str | None = None) -> tuple[socket.socket, bytes]:
    sock = connect(srv, timeout=60)
    sock.sendall(wst.request_bytes(extensions=extensions))
    head = _read_until(sock, b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 101"), head
    return sock, head


def test_a_deflate_flood_does_not_starve_a_normal_client() -> None:
    flood_messages = 120
    inflated = bytes(1_000_000)  # ~1 KiB compressed: three orders of magnitude of amplification
    with serve(Registry(), protocol=WebSocketProtocol()) as srv:
        normal, _ = _open_raw(srv)
        flooder, head = _open_raw(srv, "permessage-deflate")
        assert b"permessage-deflate" in head.lower()
        compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
        flood = b"".join(
            wst.frame(wst.BINARY, wst.deflate_message(compressor, inflated), rsv=4)
            for _ in range(flood_messages)
        )
        assert len(flood) < 200_000
        replies = 0
        flood_done = threading.Event()

        def drain_flood() -> None:
            nonlocal replies
            frames = ServerFrames(flooder)
            while replies < flood_messages:
                opcode, _ = frames.next()
                assert opcode == wst.BINARY
                replies += 1
            flood_done.set()

        reader = threading.Thread(target=drain_flood, daemon=True)
        reader.start()
        frames = ServerFrames(normal)
        trips = 0
        # One round trip first, so that the normal client is known to be served.
        normal.sendall(wst.frame(wst.TEXT, b"ping"))
        assert frames.next() == (wst.TEXT, b"ping")
        flooder.sendall(flood)
        while not flood_done.is_set():
            normal.sendall(wst.frame(wst.TEXT, b"ping"))
            assert frames.next() == (wst.TEXT, b"ping")
            trips += 1
        reader.join(60)
        assert replies == flood_messages
        # The server took turns: a round trip of the normal client between every few flood
        # messages, not one per socket read's worth (~64 of them).
        assert trips >= flood_messages // 6, f"{trips} round trips during the flood"
        normal.close()
        flooder.close()


def test_a_deflate_bomb_is_refused_without_being_inflated_past_the_message_limit() -> None:
    # 64 MiB of zeros in about 64 KiB. Inflation must stop at max_message_size: the server's
    # peak allocation (tracemalloc sees zlib's output buffers) stays far below the bomb.
    bomb = wst.deflate_message(zlib.compressobj(9, zlib.DEFLATED, -15), bytes(64 << 20))
    assert len(bomb) < 100_000
    handler = Registry()
    with serve(handler, protocol=WebSocketProtocol(max_message_size=1 << 20)) as srv:
        sock, head = _open_raw(srv, "permessage-deflate")
        assert b"permessage-deflate" in head.lower()
        frame = wst.frame(wst.BINARY, bomb, rsv=4)
        tracemalloc.start()
        try:
            sock.sendall(frame)
            opcode, payload = ServerFrames(sock).next()
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert (opcode, int.from_bytes(payload[:2], "big")) == (wst.CLOSE, 1009)
        sock.close()
        assert wait_for(lambda: handler.closed == 1)
    assert peak < 16 << 20, f"{peak >> 20} MiB allocated for one bomb"


# -- 4. a stopping server says goodbye -----------------------------------------------------


async def _hold_until_closed(uri: str, opened: list[int]) -> Any:
    """Connect, then wait for the server to close; return the ``ConnectionClosed`` seen."""
    async with websockets_client.connect(uri, open_timeout=20, close_timeout=20) as ws:
        opened.append(1)
        try:
            await asyncio.wait_for(ws.recv(), 60)
        except WsClosed as exc:
            return exc
    return None


def test_server_stop_sends_1001_to_every_websocket_client_and_calls_on_close() -> None:
    clients = 40
    handler = Registry()
    server_cm = serve(handler, protocol=WebSocketProtocol())
    srv = server_cm.__enter__()
    stopped = False
    try:

        async def main() -> list[Any]:
            opened: list[int] = []
            tasks = [
                asyncio.ensure_future(_hold_until_closed(url(srv), opened)) for _ in range(clients)
            ]
            await asyncio.to_thread(
                wait_for, lambda: len(opened) == clients and len(handler.open) == clients
            )
            await asyncio.to_thread(srv.stop, 20)
            return await asyncio.gather(*tasks)

        results = asyncio.run(main())
        stopped = True
    finally:
        server_cm.__exit__(None, None, None)
    assert stopped
    codes = [None if exc is None or exc.rcvd is None else exc.rcvd.code for exc in results]
    assert codes == [1001] * clients, codes
    # Each one closed cleanly: our close frame came back and the TCP connection ended with FIN.
    assert all(exc.sent is not None and exc.sent.code == 1001 for exc in results)
    assert handler.closed == clients


class CloseThenDrop(Registry):
    def on_message(self, conn: Connection, data: str | bytes) -> tuple[Any, Any] | None:
        gev_websocket.close(conn, 1000, "done")
        conn.close()
        return None


def test_close_frame_then_conn_close_in_a_handler_keeps_the_close_frame() -> None:
    with serve(CloseThenDrop(), protocol=WebSocketProtocol()) as srv:

        async def main() -> Any:
            async with websockets_client.connect(url(srv), open_timeout=20) as ws:
                await ws.send("bye")
                try:
                    await asyncio.wait_for(ws.recv(), 20)
                except WsClosed as exc:
                    return exc
            return None

        for _ in range(5):
            exc = asyncio.run(main())
            assert exc is not None and exc.rcvd is not None, exc
            assert (exc.rcvd.code, exc.rcvd.reason) == (1000, "done")


# -- 5. one WARNING line with the peer and the reason for every refusal ------------------


REFUSALS = [
    # (name, bytes sent after connecting, expected response start, words of the logged reason)
    ("head too big", b"GET / HTTP/1.1\r\nX: " + b"a" * 20000, b"HTTP/1.1 431 Request H", "431"),
    ("not HTTP", b"\x16\x03\x01\x02\x00", b"HTTP/1.1 400 Bad Request", "400"),
    ("no upgrade", wst.request_bytes(upgrade="h2c"), b"HTTP/1.1 400 Bad Request", "400"),
    ("bad key", wst.request_bytes(key=b"short"), b"HTTP/1.1 400 Bad Request", "400"),
    ("old version", wst.request_bytes(version="8"), b"HTTP/1.1 426 Upgrade Required", "426"),
    ("reserved bit", wst.request_bytes() + wst.frame(wst.TEXT, b"x", rsv=1), b"", "1002"),
    ("unmasked", wst.request_bytes() + wst.frame(wst.TEXT, b"x", mask=None), b"", "1002"),
    ("invalid UTF-8", wst.request_bytes() + wst.frame(wst.TEXT, b"ok \xff\xfe"), b"", "1007"),
    ("too big", wst.request_bytes() + wst.frame(wst.BINARY, b"x" * 70000), b"", "1009"),
    (
        # 16 MiB of zeros in ~16 KiB: inflation stops at the message limit.
        "deflate bomb",
        wst.request_bytes(extensions="permessage-deflate")
        + wst.frame(
            wst.BINARY,
            wst.deflate_message(zlib.compressobj(9, zlib.DEFLATED, -15), bytes(16 << 20)),
            rsv=4,
        ),
        b"",
        "1009",
    ),
]


@pytest.mark.parametrize(
    ("sent", "response", "code"), [r[1:] for r in REFUSALS], ids=[r[0] for r in REFUSALS]
)
def test_refusals_log_one_warning_with_the_peer_and_the_reason(
    sent: bytes, response: bytes, code: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="gev")
    handler = Registry()
    with serve(handler, protocol=WebSocketProtocol(max_message_size=65536)) as srv:
        with connect(srv) as sock:
            peer = _peer(sock)
            sock.sendall(sent)
            sock.settimeout(20)
            received = b""
            try:
                while chunk := sock.recv(65536):
                    received += chunk
            except ConnectionResetError:
                pass
        assert wait_for(lambda: handler.closed == 1)
    assert received.startswith(response), received[:80]
    if not response:
        # The close frame's reason is ours, never Python's exception text.
        close = received[received.index(b"\x88") :]
        assert int.from_bytes(close[2:4], "big") == int(code)
        assert b"codec" not in close and b"position" not in close
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1, [r.getMessage() for r in caplog.records]
    line = warnings[0].getMessage()
    assert peer in line and code in line, line
    assert "\n" not in line and warnings[0].exc_info is None
    assert "codec" not in line


def _held(srv: Any, handler: Registry, peer: str, size: int) -> Callable[[], bool]:
    """A condition: the server accounts at least ``size`` bytes to ``peer``, or closed it."""

    def check() -> bool:
        held = any(c.peer_addr == peer and c.buffered >= size for c in srv.loops[0].connections)
        return held or peer not in handler.open

    return check


def test_partial_messages_count_against_the_server_budget(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="gev")
    handler = Registry()
    kib = 1024
    sizes = [800 * kib, 700 * kib, 500 * kib, 300 * kib]
    protocol = WebSocketProtocol(max_message_size=4096 * kib)
    with serve(handler, protocol=protocol, max_buffered=1400 * kib) as srv:
        socks = [_open_raw(srv)[0] for _ in sizes]
        assert wait_for(lambda: len(handler.open) == len(sizes))
        # One after the other, unfinished messages in 50 KiB fragments: the session holds
        # them, not the connection's read buffer. The 700 KiB one pushes the total over the
        # budget and the 800 KiB one goes; the 300 KiB one does it again and the 700 KiB one
        # goes. The other two can then finish their messages.
        chunk = b"m" * (50 * kib)
        for sock, size in zip(socks, sizes, strict=True):
            frames = [wst.frame(wst.BINARY, chunk, fin=False)]
            frames += [wst.frame(wst.CONT, chunk, fin=False)] * (size // len(chunk) - 1)
            sock.sendall(b"".join(frames))
            assert wait_for(_held(srv, handler, _peer(sock), size))
        peers = {_peer(s) for s in socks[:2]}
        assert wait_for(lambda: handler.closed == 2)
        assert not peers & set(handler.open)
        for sock, size in zip(socks[2:], sizes[2:], strict=True):
            sock.sendall(wst.frame(wst.CONT, b"end"))
            opcode, payload = ServerFrames(sock).next()
            assert opcode == wst.BINARY and len(payload) == size + 3
        for sock in socks:
            sock.close()
    shed = [r.getMessage() for r in caplog.records if "max_buffered" in r.getMessage()]
    assert len(shed) == 2 and all(any(p in line for line in shed) for p in peers), shed


class _Lines(logging.Filter):
    """Keeps the text of the records below ERROR and drops the records themselves.

    A captured record would keep the connection it names alive (its ``%r`` argument), which
    a test counting live connections cannot have; errors still go through to ``caplog``.
    """

    def __init__(self) -> None:
        super().__init__()
        self.lines: list[str] = []

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno >= logging.ERROR:
            return True
        self.lines.append(record.getMessage())
        return False


@pytest.mark.parametrize("work_per_turn", [64 * 1024, 64 << 20], ids=["turns", "one-turn"])
def test_a_connection_shed_while_it_reads_is_freed_at_once(
    work_per_turn: int, caplog: pytest.LogCaptureFixture
) -> None:
    # A connection over the budget is shed wherever its bytes are counted: when the core keeps
    # input for the next turn ("turns": work_per_turn stops the session often), or when the
    # session reports the fragments it holds, from inside its own receive ("one-turn": never
    # stops early). Shed inside receive, the session must not start its closing handshake
    # afterwards: a timer started then keeps the closed connection alive until it is due. All
    # timeouts are a minute here, much longer than the test waits for the objects to go.
    caplog.set_level(logging.WARNING, logger="gev")
    lines = _Lines()
    loggers = [logging.getLogger("gev"), logging.getLogger("gev.websocket")]
    for logger in loggers:
        logger.addFilter(lines)
    handler = Registry()
    kib = 1024
    protocol = WebSocketProtocol(
        Upgrader(handshake_timeout=60),
        max_message_size=4096 * kib,
        linger_timeout=60,
        close_timeout=60,
        work_per_turn=work_per_turn,
    )
    chunk = b"m" * (64 * kib)
    frames = [wst.frame(wst.BINARY, chunk, fin=False)]
    frames += [wst.frame(wst.CONT, chunk, fin=False)] * 15
    message = b"".join(frames)  # 1 MiB of an unfinished message: twice the budget
    shed = 3
    try:
        with serve(handler, protocol=protocol, max_buffered=512 * kib, linger_timeout=60) as srv:
            gc.collect()
            gc.disable()
            try:
                before = (_live(Connection), _live(WebSocketSession))
                for _ in range(shed):
                    sock, _ = _open_raw(srv)
                    with sock:
                        try:
                            sock.sendall(message)
                        except (BrokenPipeError, ConnectionResetError):
                            pass  # shed before it took everything
                        _drain_to_eof(sock)
                assert wait_for(lambda: handler.closed == shed)
                assert wait_for(
                    lambda: (
                        _live(Connection) <= before[0] + 1
                        and _live(WebSocketSession) <= before[1] + 1
                    ),
                    timeout=5,
                ), (
                    f"{_live(Connection) - before[0]} Connection and"
                    f" {_live(WebSocketSession) - before[1]} WebSocketSession objects survived"
                    f" {shed} shed connections"
                )
            finally:
                gc.enable()
    finally:
        for logger in loggers:
            logger.removeFilter(lines)
    assert len([line for line in lines.lines if "max_buffered" in line]) == shed, lines.lines
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
