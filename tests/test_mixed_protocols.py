"""Several protocols on one port, chosen per connection from its first bytes.

gev-protobuf's ``gev_select_protocol`` hook claims a connection whose first bytes plausibly
start a protobuf frame and leaves everything else (an HTTP upgrade, a text line) to the other
plugins or to the fallback, the last protocol listed.
"""

from __future__ import annotations

import importlib
import logging
import socket
import time
from typing import Any

import pytest
from gev_core import Handler, ProtocolRegistry, get_plugin_manager
from gev_core.testing import connect, recv_exactly, serve

gev_protobuf = pytest.importorskip("gev_protobuf")
from gev_protobuf import FrameDecoder, pack_message, plugin  # noqa: E402


class Tagged(Handler):
    """Answers in the protocol the connection was given, saying which one it was."""

    def on_message(self, conn: Any, ctx: Any, data: Any) -> Any:
        name = conn.protocol.name
        if name == "protobuf":
            return ctx, b"pb:" + data
        if name == "line":
            return b"line:" + data
        return data  # websocket: echo the message as it came


def read_frame(sock: socket.socket) -> tuple[str, bytes]:
    decoder = FrameDecoder()
    while (frame := decoder.next_frame()) is None:
        chunk = sock.recv(65536)
        assert chunk, "server closed the protobuf connection"
        decoder.feed(chunk)
    return frame


def protobuf_only_plugins() -> Any:
    pm = get_plugin_manager(autoload=False)
    pm.register(plugin, name="protobuf")
    return pm


# ---------------------------------------------------------------------------- protobuf + line


def test_protobuf_and_line_share_a_port() -> None:
    pm = protobuf_only_plugins()
    with (
        serve(Tagged(), protocol=["protobuf", "line"], plugins=pm) as server,
        connect(server) as text,
        connect(server) as binary,
    ):
        text.sendall(b"hello\n")
        binary.sendall(pack_message("msg1", b"\x08\x01"))
        assert recv_exactly(text, 11) == b"line:hello\n"
        assert read_frame(binary) == ("msg1", b"pb:\x08\x01")
        # Each keeps its protocol for good, whatever it sends next.
        text.sendall(b"\x00\x00\x00\x02\x00\x00\n")
        assert recv_exactly(text, 12) == b"line:\x00\x00\x00\x02\x00\x00\n"
        binary.sendall(pack_message("line?", b"a\nb\n"))
        assert read_frame(binary) == ("line?", b"pb:a\nb\n")


def test_header_arriving_byte_by_byte_waits_for_the_choice() -> None:
    pm = protobuf_only_plugins()
    frame = pack_message("slow", b"payload")
    with (
        serve(Tagged(), protocol=["protobuf", "line"], plugins=pm) as server,
        connect(server) as sock,
    ):
        for i in range(6):  # up to 6 bytes the hook answers NEED_MORE_DATA
            sock.sendall(frame[i : i + 1])
            time.sleep(0.02)
        sock.sendall(frame[6:])
        assert read_frame(sock) == ("slow", b"pb:payload")


def test_text_starting_like_nothing_protobuf_goes_to_the_fallback() -> None:
    pm = protobuf_only_plugins()
    with (
        serve(Tagged(), protocol=["protobuf", "line"], plugins=pm) as server,
        connect(server) as sock,
    ):
        sock.sendall(b"G")  # ruled out by one byte: no waiting for more
        sock.sendall(b"ET / HTTP/1.1\n")
        assert recv_exactly(sock, 20) == b"line:GET / HTTP/1.1\n"


def test_hostile_frame_after_selection_closes_only_that_connection(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="gev")
    pm = protobuf_only_plugins()
    with (
        serve(Tagged(), protocol=["protobuf", "line"], plugins=pm) as server,
        connect(server) as text,
        connect(server) as bad,
    ):
        bad.sendall(pack_message("ok", b""))
        assert read_frame(bad) == ("ok", b"pb:")
        bad.sendall(b"\xff\xff\xff\xff")
        assert bad.recv(10) == b""
        text.sendall(b"still here\n")
        assert recv_exactly(text, 16) == b"line:still here\n"
    assert any("declares length 4294967295" in r.getMessage() for r in caplog.records)


# ---------------------------------------------------------------------------- websocket + protobuf


def websocket_and_protobuf_plugins() -> Any:
    pytest.importorskip("gev_websocket")
    pm = get_plugin_manager()  # the installed entry points (the hatch test environment)
    names = ProtocolRegistry(pm).names()
    if "protobuf" not in names:
        pm.register(plugin, name="protobuf")
    if "websocket" not in names:
        try:
            ws_plugin = importlib.import_module("gev_websocket.plugin")
        except ImportError:
            pytest.skip("gev-websocket does not provide its gev plugin (gev_websocket.plugin) yet")
        pm.register(ws_plugin, name="websocket")
    if "websocket" not in ProtocolRegistry(pm).names():
        pytest.skip("gev-websocket does not register the 'websocket' protocol yet")
    return pm


def websocket_echo(port: int, message: bytes) -> Any:
    try:
        from websockets.sync.client import connect as ws_connect
    except ImportError:
        return _wsproto_echo(port, message)
    with ws_connect(f"ws://127.0.0.1:{port}/", open_timeout=10, close_timeout=5) as ws:
        ws.send(message)
        return ws.recv(timeout=10)


def _wsproto_echo(port: int, message: bytes) -> Any:
    wsproto = pytest.importorskip("wsproto")
    from wsproto.events import (
        AcceptConnection,
        BytesMessage,
        CloseConnection,
        Request,
        TextMessage,
    )

    ws = wsproto.WSConnection(wsproto.ConnectionType.CLIENT)
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(ws.send(Request(host="127.0.0.1", target="/")))
        reply: Any = None
        while reply is None:
            data = sock.recv(65536)
            assert data, "server closed the WebSocket connection"
            ws.receive_data(data)
            for event in ws.events():
                if isinstance(event, AcceptConnection):
                    sock.sendall(ws.send(BytesMessage(data=message)))
                elif isinstance(event, (BytesMessage, TextMessage)):
                    reply = event.data
        sock.sendall(ws.send(CloseConnection(code=1000)))
        return reply


def test_websocket_and_protobuf_share_a_port() -> None:
    pm = websocket_and_protobuf_plugins()
    with (
        serve(Tagged(), protocol=["websocket", "protobuf"], plugins=pm) as server,
        connect(server) as pb,
    ):
        pb.sendall(pack_message("msg1", b"\x08\x01"))
        assert read_frame(pb) == ("msg1", b"pb:\x08\x01")
        assert websocket_echo(server.port, b"hello") == b"hello"
        pb.sendall(pack_message("msg2", b""))  # still served while the other came and went
        assert read_frame(pb) == ("msg2", b"pb:")
