"""Handlers that block or await, across packages and through ``gev serve``, over real sockets:
WebSocket (with permessage-deflate, whose compressor must advance in wire order), protobuf, a
third-party protocol plugin, a real ``redis-server`` through ``redis.asyncio``, and the
``async_lookup`` example.

Completion order is decided by the tests (events the jobs wait on), never by timing.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import textwrap
import threading
from pathlib import Path
from typing import Any

import pytest
from gev_core import LineProtocol
from gev_core.testing import connect, recv_exactly, serve

sys.path.insert(0, str(Path(__file__).resolve().parent))

from conftest import free_port, wait_port

DEADLINE = 30.0


class Gates:
    """Events jobs wait on, opened by the test (threads and coroutines alike)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._open: set[Any] = set()
        self._waiters: dict[Any, list[tuple[asyncio.AbstractEventLoop, asyncio.Event]]] = {}
        self._cond = threading.Condition(self._lock)
        self.started: list[Any] = []

    def open(self, *names: Any) -> None:
        for name in names:
            with self._cond:
                self._open.add(name)
                waiters = self._waiters.pop(name, [])
                self._cond.notify_all()
            for loop, event in waiters:
                loop.call_soon_threadsafe(event.set)

    def block(self, name: Any) -> None:
        with self._cond:
            self.started.append(name)
            self._cond.notify_all()
            if not self._cond.wait_for(lambda: name in self._open, DEADLINE):
                raise TimeoutError(name)

    async def wait(self, name: Any) -> None:
        event = asyncio.Event()
        with self._cond:
            self.started.append(name)
            self._cond.notify_all()
            if name in self._open:
                return
            self._waiters.setdefault(name, []).append((asyncio.get_running_loop(), event))
        await event.wait()

    def wait_started(self, n: int) -> None:
        with self._cond:
            assert self._cond.wait_for(lambda: len(self.started) >= n, DEADLINE), self.started


# ---------------------------------------------------------------------- WebSocket


def _ws_client(port: int) -> Any:
    client = pytest.importorskip("websockets.sync.client")
    return client.connect(f"ws://127.0.0.1:{port}/", open_timeout=10, close_timeout=5)


@pytest.mark.parametrize("work", ["async", "thread"])
@pytest.mark.parametrize("compression", [True, False], ids=["deflate", "plain"])
def test_websocket_replies_produced_later_in_order(work: str, compression: bool) -> None:
    """Slow messages answered later, fast ones inline, pipelined: replies in request order,
    and with permessage-deflate (context takeover) every reply decompresses, so the
    compressor advanced in wire order."""
    pytest.importorskip("gev_websocket")
    from gev_websocket import MessageType, Upgrader, WebSocketHandler, WebSocketProtocol

    gates = Gates()

    class AsyncEcho(WebSocketHandler):
        async def on_message(self, conn: Any, data: Any) -> Any:  # type: ignore[override]
            if data.startswith("slow"):
                await gates.wait(data)
            return MessageType.TEXT, f"re:{data}" * 20

    class Offloading(WebSocketHandler):
        def on_message(self, conn: Any, data: Any) -> Any:
            if data.startswith("slow"):
                conn.offload(self.later, data)
                return None
            return MessageType.TEXT, f"re:{data}" * 20

        def later(self, data: str) -> Any:
            gates.block(data)
            return MessageType.TEXT, f"re:{data}" * 20

    handler = AsyncEcho() if work == "async" else Offloading()
    protocol = WebSocketProtocol(Upgrader(compression=compression))
    with serve(handler, protocol=protocol) as server, _ws_client(server.port) as client:
        messages = ["slow1", "fast1", "slow2", "fast2", "fast3", "slow3", "fast4"]
        for message in messages:
            client.send(message)
        gates.wait_started(3)
        gates.open("slow3", "slow2", "slow1")
        got = [client.recv(timeout=DEADLINE) for _ in messages]
        assert got == [f"re:{m}" * 20 for m in messages]
        negotiated = client.protocol.extensions
        assert bool(negotiated) is compression


# ---------------------------------------------------------------------- protobuf


def test_protobuf_async_handler_replies_in_order() -> None:
    pytest.importorskip("gev_protobuf")
    from gev_protobuf import FrameDecoder, ProtobufProtocol, pack_message

    gates = Gates()

    class Lookup:
        async def on_message(self, conn: Any, type_name: str, payload: Any) -> Any:
            await gates.wait(bytes(payload))
            return type_name + ".reply", b"got " + bytes(payload)

    with serve(Lookup(), protocol=ProtobufProtocol()) as server:
        sock = connect(server)
        sock.sendall(b"".join(pack_message("lookup", p) for p in (b"1", b"2", b"3")))
        gates.wait_started(3)
        gates.open(b"3", b"1", b"2")
        decoder = FrameDecoder()
        frames = []
        while len(frames) < 3:
            frame = decoder.next_frame()
            if frame is None:
                chunk = sock.recv(65536)
                assert chunk
                decoder.feed(chunk)
            else:
                frames.append(frame)
        assert [(name, bytes(data)) for name, data in frames] == [
            ("lookup.reply", b"got 1"),
            ("lookup.reply", b"got 2"),
            ("lookup.reply", b"got 3"),
        ]
        sock.close()


# ---------------------------------------------------------------------- a third-party protocol


def test_a_third_party_protocol_plugin_frames_replies_produced_later() -> None:
    """The example plugin's netstrings (no ``receive`` of its own: the core's general path)."""
    gates = Gates()

    class Awaiting:
        async def on_message(self, conn: Any, ctx: Any, data: Any) -> bytes:
            await gates.wait(bytes(data))
            return bytes(data).upper()

    with serve(Awaiting(), protocol="netstring") as server:
        sock = connect(server)
        sock.sendall(b"3:abc,2:de,1:f,")
        gates.wait_started(3)
        gates.open(b"f", b"de", b"abc")
        assert recv_exactly(sock, len(b"3:ABC,2:DE,1:F,")) == b"3:ABC,2:DE,1:F,"
        sock.close()


# ---------------------------------------------------------------------- Redis, for real


def _read_lines(sock: socket.socket, n: int) -> list[bytes]:
    buf = b""
    sock.settimeout(DEADLINE)
    while buf.count(b"\n") < n:
        chunk = sock.recv(65536)
        assert chunk, f"closed after {buf!r}"
        buf += chunk
    return buf.split(b"\n")[:n]


@pytest.mark.parametrize("loop_kind", ["auto", "asyncio"])
def test_async_handler_awaiting_a_real_redis(gev_redis_server: Any, loop_kind: str) -> None:
    """The async_lookup example's handler on a real server, a real redis-server behind it:
    pipelined commands, replies in order, concurrent clients."""
    pytest.importorskip("redis.asyncio")
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "examples"))
    from async_lookup import Lookup

    with serve(
        Lookup(gev_redis_server.url), protocol=LineProtocol(), asyncio_loop=loop_kind
    ) as server:
        socks = [connect(server) for _ in range(8)]
        for i, sock in enumerate(socks):
            sock.sendall(b"SET k%d v%d\nGET k%d\nINCR hits\nGET missing%d\nNOPE\n" % (i, i, i, i))
        incrs = []
        for i, sock in enumerate(socks):
            lines = _read_lines(sock, 5)
            assert lines[:2] == [b"OK", b"v%d" % i]
            incrs.append(int(lines[2]))
            assert lines[3] == b"(nil)"
            assert lines[4].startswith(b"ERR unknown command")
            sock.close()
        assert sorted(incrs) == list(range(1, 9))
        companion = server._offload.started_companion
        assert companion is not None
        if loop_kind == "asyncio":
            assert not companion.uses_uvloop


def test_async_lookup_example(run_example: Any, gev_redis_server: Any) -> None:
    pytest.importorskip("redis.asyncio")
    _proc, port = run_example("async_lookup.py", "--redis", gev_redis_server.url)
    with socket.create_connection(("127.0.0.1", port), timeout=DEADLINE) as sock:
        sock.sendall(b"SET fruit apple\nGET fruit\nINCR hits\nINCR hits\nGET nothing\n")
        assert _read_lines(sock, 5) == [b"OK", b"apple", b"1", b"2", b"(nil)"]


def test_redis_down_answers_an_error_and_keeps_the_connection() -> None:
    pytest.importorskip("redis.asyncio")
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "examples"))
    from async_lookup import Lookup

    url = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens there
    with serve(Lookup(url), protocol=LineProtocol()) as server:
        sock = connect(server)
        sock.sendall(b"GET a\nGET b\n")
        assert _read_lines(sock, 2) == [b"ERR redis unavailable"] * 2
        sock.close()


# ---------------------------------------------------------------------- gev serve


APP = """
import asyncio
import threading

gates = {}


class Awaiting:
    async def on_connect(self, conn):
        await asyncio.sleep(0)

    async def on_message(self, conn, ctx, data):
        # later requests finish first: each waits for the one after it to have started
        n = int(data)
        await asyncio.sleep(0.01 * (5 - n))
        return b"done %d" % n


class Offloading:
    def on_message(self, conn, ctx, data):
        conn.offload(self.work, int(data))

    def work(self, n):
        import time

        time.sleep(0.01 * (5 - n))
        return b"done %d on %s" % (n, threading.current_thread().name.encode())
"""


@pytest.mark.parametrize("attr", ["Awaiting", "Offloading"])
def test_gev_serve_runs_async_and_offloading_handlers(tmp_path: Path, attr: str) -> None:
    (tmp_path / "offload_app.py").write_text(textwrap.dedent(APP))
    port = free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "gev_core",
            "serve",
            f"offload_app:{attr}",
            "--app-dir",
            str(tmp_path),
            "--address",
            f"127.0.0.1:{port}",
            "--protocol",
            "line",
            "--offload-threads",
            "3",
            "--max-pending",
            "8",
            "--asyncio-loop",
            "asyncio",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        wait_port(port, proc)
        with socket.create_connection(("127.0.0.1", port), timeout=DEADLINE) as sock:
            sock.sendall(b"1\n2\n3\n4\n")
            lines = _read_lines(sock, 4)
        assert [line.split(b" on ")[0] for line in lines] == [
            b"done 1",
            b"done 2",
            b"done 3",
            b"done 4",
        ]
        if attr == "Offloading":
            assert all(b" on gev-offload-" in line for line in lines)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            _, err = proc.communicate(timeout=DEADLINE)
        except subprocess.TimeoutExpired:
            proc.kill()
            _, err = proc.communicate()
    assert proc.returncode == 0, err
    assert "Traceback" not in err, err


def test_websocket_client_going_away_cancels_its_coroutines() -> None:
    pytest.importorskip("gev_websocket")
    from gev_websocket import WebSocketHandler, WebSocketProtocol

    started = threading.Event()
    cancelled = threading.Event()

    class Slow(WebSocketHandler):
        async def on_message(self, conn: Any, data: Any) -> Any:  # type: ignore[override]
            started.set()
            try:
                await asyncio.sleep(DEADLINE * 2)
            except asyncio.CancelledError:
                cancelled.set()
                raise
            return None

    with serve(Slow(), protocol=WebSocketProtocol()) as server:
        with _ws_client(server.port) as client:
            client.send("x")
            assert started.wait(DEADLINE)
        # The client's close frame went out while the reply was owed, then the connection.
        assert cancelled.wait(DEADLINE)
