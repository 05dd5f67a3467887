"""SIGTERM to a real ``gev serve``: every client is told goodbye and every on_close runs.

WebSocket clients get a 1001 "going away" close frame and a clean TCP close (FIN, not RST);
plain TCP clients get their pending output and a FIN; the application's ``on_close`` runs once
per connection (each writes a marker file, counted after the process has exited).
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("gev_websocket")
websockets_client = pytest.importorskip("websockets.asyncio.client")
from websockets.exceptions import ConnectionClosed  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent

APP = """
import os
from pathlib import Path

from gev_websocket import MessageType, WebSocketHandler

MARKERS = Path(os.environ["GEV_TEST_MARKERS"])


class Echo(WebSocketHandler):
    def on_message(self, conn, data):
        return (MessageType.TEXT if isinstance(data, str) else MessageType.BINARY), data

    def on_close(self, conn):
        (MARKERS / conn.peer_addr.rpartition(":")[2]).touch()


class Plain:
    def on_message(self, conn, ctx, data):
        return data

    def on_close(self, conn):
        (MARKERS / conn.peer_addr.rpartition(":")[2]).touch()
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _start(tmp_path: Path, app: str, *args: str) -> tuple[subprocess.Popen[bytes], int, Path]:
    (tmp_path / "app.py").write_text(APP)
    markers = tmp_path / "markers"
    markers.mkdir()
    port = _free_port()
    env = {**os.environ, "GEV_TEST_MARKERS": str(markers)}
    paths = [str(p) for p in sorted((ROOT / "packages").glob("*/src"))]
    env["PYTHONPATH"] = os.pathsep.join([*paths, env.get("PYTHONPATH", "")])
    log = (tmp_path / "server.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "gev_core", "serve", app, "--address", f"127.0.0.1:{port}", *args],
        cwd=tmp_path,
        env=env,
        stdout=log,
        stderr=log,
        start_new_session=True,
    )
    deadline = time.monotonic() + 60
    while True:
        assert proc.poll() is None, (tmp_path / "server.log").read_text()
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            assert time.monotonic() < deadline, "the server never listened"
            time.sleep(0.05)
    return proc, port, markers


def _kill(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(10)


def test_sigterm_sends_1001_to_every_websocket_client(tmp_path: Path) -> None:
    clients = 50
    proc, port, markers = _start(tmp_path, "app:Echo", "--protocol", "websocket")
    try:

        async def client(opened: list[int]) -> Any:
            uri = f"ws://127.0.0.1:{port}/"
            async with websockets_client.connect(uri, open_timeout=30, close_timeout=30) as ws:
                await ws.send("hello")
                assert await ws.recv() == "hello"
                opened.append(ws.local_address[1])
                try:
                    await asyncio.wait_for(ws.recv(), 60)
                except ConnectionClosed as exc:
                    return exc
            return None

        async def main() -> tuple[list[Any], list[int]]:
            opened: list[int] = []
            tasks = [asyncio.ensure_future(client(opened)) for _ in range(clients)]
            while len(opened) < clients:
                await asyncio.sleep(0.05)
                if any(t.done() for t in tasks):
                    break
            proc.send_signal(signal.SIGTERM)
            return await asyncio.gather(*tasks), opened

        results, opened = asyncio.run(main())
        assert proc.wait(30) == 0
    finally:
        _kill(proc)
    received = [exc.rcvd.code if exc is not None and exc.rcvd else None for exc in results]
    assert received == [1001] * clients, received
    # Our reply to the close frame reached the server, and the TCP connection ended cleanly.
    assert all(exc.sent is not None and exc.sent.code == 1001 for exc in results)
    # (The readiness probe was a connection too: it has a marker of its own.)
    assert set(opened) <= {int(p.name) for p in markers.iterdir()}
    assert len(opened) == clients


def _stream_until_eof(sock: socket.socket, endings: list[str]) -> None:
    """Keep sending until the server's FIN arrives; record how the connection ended."""
    sock.setblocking(False)
    deadline = time.monotonic() + 60
    try:
        while time.monotonic() < deadline:
            try:
                sock.send(b"x" * 512)
            except BlockingIOError:
                pass
            try:
                if sock.recv(65536) == b"":
                    endings.append("fin")
                    return
            except BlockingIOError:
                pass
            time.sleep(0.002)
        endings.append("timeout")
    except (ConnectionResetError, BrokenPipeError) as exc:
        endings.append(type(exc).__name__)
    finally:
        sock.close()


def test_sigterm_ends_plain_connections_with_fin_and_calls_every_on_close(tmp_path: Path) -> None:
    clients = 30
    proc, port, markers = _start(tmp_path, "app:Plain")
    try:
        ports = []
        endings: list[str] = []
        threads = []
        for _ in range(clients):
            sock = socket.create_connection(("127.0.0.1", port), timeout=30)
            sock.sendall(b"ping")
            assert sock.recv(4) == b"ping"
            ports.append(sock.getsockname()[1])
            thread = threading.Thread(target=_stream_until_eof, args=(sock, endings))
            thread.start()
            threads.append(thread)
        time.sleep(0.2)
        proc.send_signal(signal.SIGTERM)
        for thread in threads:
            thread.join(90)
        assert proc.wait(30) == 0
    finally:
        _kill(proc)
    assert endings == ["fin"] * clients
    assert set(ports) <= {int(p.name) for p in markers.iterdir()}
