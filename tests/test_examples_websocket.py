"""The WebSocket examples, run as a user would run them."""

from __future__ import annotations

import pytest

sync = pytest.importorskip("websockets.sync.client")
pytest.importorskip("gev_websocket")


def test_websocket_echo_example(run_example):
    _proc, port = run_example("websocket_echo.py", "--loops", "2")
    with sync.connect(f"ws://127.0.0.1:{port}/", open_timeout=10, close_timeout=5) as ws:
        ws.send("text")
        assert ws.recv(timeout=10) == "text"
        ws.send(b"\x00" * 100_000)
        assert ws.recv(timeout=10) == b"\x00" * 100_000


def test_websocket_server_example_echoes_sends_or_closes(run_example):
    from websockets.exceptions import ConnectionClosedOK

    _proc, port = run_example("websocket_server.py", "--seed", "7")
    seen = set()
    for _ in range(20):
        with sync.connect(f"ws://127.0.0.1:{port}/", open_timeout=10, close_timeout=5) as ws:
            ws.send("hello")
            try:
                reply = ws.recv(timeout=10)
            except ConnectionClosedOK as exc:
                assert exc.rcvd is not None and exc.rcvd.reason == "close"
                seen.add("close")
            else:
                assert reply in ("hello", b"hello")
                seen.add(type(reply).__name__)
        if len(seen) == 3:
            break
    assert seen == {"str", "bytes", "close"}
