"""Helpers for testing gev servers and protocol plugins; also an opt-in pytest plugin.

Enable the fixtures in a ``conftest.py`` with ``pytest_plugins = ["gev_core.testing"]``. It is
not auto-loaded (no ``pytest11`` entry point), so it never touches unrelated test runs.

* :func:`serve` runs a real :class:`~gev_core.Server` on an ephemeral loopback port in a
  background thread, for tests that talk to it over real sockets.
* :class:`FakeConnection` and :func:`feed` drive a :class:`~gev_core.Protocol` without sockets:
  bytes in, messages and reply bytes out.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Iterator
from typing import Any

from ._bind import parse_address
from ._protocol import Protocol
from ._server import Server

__all__ = [
    "FakeConnection",
    "connect",
    "feed",
    "recv_exactly",
    "serve",
]


@contextlib.contextmanager
def serve(handler: Any, **kwargs: Any) -> Iterator[Server]:
    """Run ``Server(handler, **kwargs)`` in a thread (port 0 on 127.0.0.1 unless told otherwise).

    The server is stopped (gracefully, 5 s) when the block exits; an exception that escaped the
    server thread is re-raised there.
    """
    kwargs.setdefault("address", ("127.0.0.1", 0))
    server = Server(handler, **kwargs)
    errors: list[BaseException] = []

    def run() -> None:
        try:
            server.start()
        except BaseException as exc:  # re-raised in the test's thread
            errors.append(exc)

    thread = threading.Thread(target=run, name="gev-test-server", daemon=True)
    thread.start()
    server.wait_started(5)
    try:
        yield server
    finally:
        server.stop(timeout=5)
        thread.join(10)
        if thread.is_alive():
            raise RuntimeError("gev test server did not stop within 10 s")
        if errors:
            raise errors[0]


def connect(server: Server | tuple[str, int] | str, timeout: float = 10.0) -> socket.socket:
    """A blocking client socket connected to ``server`` (with a timeout).

    ``server`` is a :class:`~gev_core.Server` or an address: ``(host, port)`` (TCP_NODELAY is
    set), ``"unix:/path"`` or ``"unix:@name"``.
    """
    addr = server.address if isinstance(server, Server) else server
    if isinstance(addr, str):
        family, sockaddr = parse_address(addr)
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.settimeout(timeout)
        try:
            sock.connect(sockaddr)
        except BaseException:
            sock.close()
            raise
        return sock
    sock = socket.create_connection(addr[:2], timeout=timeout)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def recv_exactly(sock: socket.socket, n: int) -> bytes:
    """Read exactly ``n`` bytes; raise ``EOFError`` if the peer closes first."""
    buf = bytearray()
    while len(buf) < n:
        chunk = sock.recv(min(n - len(buf), 1 << 20))
        if not chunk:
            raise EOFError(f"peer closed after {len(buf)} of {n} bytes")
        buf += chunk
    return bytes(buf)


class _RecordingHandler:
    def __init__(self, reply: Any) -> None:
        self.messages: list[tuple[Any, Any]] = []
        self._reply = reply

    def on_message(self, conn: Any, ctx: Any, data: Any) -> Any:
        self.messages.append((ctx, data))
        return self._reply(conn, ctx, data) if self._reply is not None else None


class FakeConnection:
    """Just enough of a :class:`~gev_core.Connection` for a protocol's ``receive``/``unpack``.

    ``written`` collects raw writes, ``closed`` tells whether ``close``/``abort`` was called
    (and ``close_reason`` with which reason); ``messages_in``/``messages_out`` add up what the
    protocol reported with ``count_messages``.
    """

    def __init__(self, handler: Any = None, protocol: Protocol | None = None) -> None:
        self.handler = handler if handler is not None else _RecordingHandler(None)
        self.protocol = protocol
        self.state: Any = None
        self.context: Any = None
        self.written = bytearray()
        self.closed = False
        self.close_reason: str | None = None
        self.messages_in = 0
        self.messages_out = 0
        self._kv: dict[str, Any] = {}

    @property
    def closing(self) -> bool:
        return self.closed

    connected = property(lambda self: not self.closed)

    def write(self, data: Any) -> None:
        self.written += data

    def send(self, data: Any) -> None:
        assert self.protocol is not None
        self.written += self.protocol.pack(self, data)  # type: ignore[arg-type]

    def close(self, *, reason: str = "local") -> None:
        if not self.closed:
            self.closed = True
            self.close_reason = reason

    abort = close

    def shutdown_write(self) -> None:
        self.close()

    def count_messages(self, received: int, sent: int = 0) -> None:
        self.messages_in += received
        self.messages_out += sent

    def set(self, key: str, value: Any) -> None:
        self._kv[key] = value

    def get(self, key: str, default: Any = None) -> Any:
        return self._kv.get(key, default)

    def delete(self, key: str) -> None:
        self._kv.pop(key, None)


def feed(
    protocol: Protocol, chunks: list[bytes], reply: Any = None
) -> tuple[list[tuple[Any, Any]], bytes]:
    """Push ``chunks`` through ``protocol`` the way the reactor would; no sockets.

    Unconsumed bytes are carried over to the next chunk exactly as the reactor's ring buffer does,
    and ``receive`` gets what the reactor would give it: ``bytes`` when nothing is carried over
    and the protocol sets ``accepts_bytes``, a ``memoryview`` otherwise.
    ``reply(conn, ctx, data)`` plays the handler's ``on_message``. Returns the messages the handler
    saw and every byte the protocol produced (replies and raw writes).
    """
    handler = _RecordingHandler(reply)
    conn = FakeConnection(handler, protocol)
    protocol.connection_made(conn)  # type: ignore[arg-type]
    pending = b""
    out: list[Any] = []
    takes_bytes = getattr(protocol, "accepts_bytes", False) is True
    for chunk in chunks:
        fresh = not pending
        pending += chunk
        data: bytes | memoryview = pending if takes_bytes and fresh else memoryview(pending)
        consumed = protocol.receive(conn, data, out)  # type: ignore[arg-type]
        pending = pending[consumed:]
        for item in out:
            conn.written += item
        out.clear()
    return handler.messages, bytes(conn.written)


# ---------------------------------------------------------------------------- pytest plugin

try:
    import pytest
except ImportError:  # pragma: no cover - the helpers above work without pytest
    pytest = None  # type: ignore[assignment]

if pytest is not None:

    @pytest.fixture
    def gev_serve() -> Any:
        """``with gev_serve(handler, **server_kwargs) as server:`` -- see :func:`serve`."""
        return serve

    @pytest.fixture
    def gev_connect() -> Iterator[Any]:
        """``gev_connect(server)`` -> a connected blocking socket, closed after the test."""
        socks: list[socket.socket] = []

        def _connect(server: Any, timeout: float = 10.0) -> socket.socket:
            sock = connect(server, timeout)
            socks.append(sock)
            return sock

        yield _connect
        for sock in socks:
            sock.close()
