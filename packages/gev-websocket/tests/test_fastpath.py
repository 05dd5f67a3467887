"""Unmasking, frame building, and that the fast path really bypasses wsproto."""

from __future__ import annotations

import os
from typing import Any

import pytest
from gev_websocket import build_binary, build_message, build_text, unmask
from gev_websocket._fastpath import INT_UNMASK_MAX
from gev_websocket.testing import BINARY, PING, TEXT, frame, open_session, xor
from hypothesis import given, settings
from hypothesis import strategies as st
from wsproto.connection import Connection

# Every test here runs with the native unmask and with the pure-Python one.
pytestmark = pytest.mark.usefixtures("unmasker")

SIZES = [
    0,
    1,
    2,
    3,
    4,
    5,
    7,
    125,
    126,
    127,
    128,
    1000,
    INT_UNMASK_MAX - 1,
    INT_UNMASK_MAX,
    INT_UNMASK_MAX + 1,
    INT_UNMASK_MAX + 3,
    65535,
    65536,
    100_001,
]


@pytest.mark.parametrize("size", SIZES)
def test_unmask_matches_wsproto_masker(size: int) -> None:
    payload = os.urandom(size)
    key = os.urandom(4)
    expected = xor(payload, key)
    value = int.from_bytes(key, "big")
    assert unmask(payload, value) == expected
    assert unmask(memoryview(payload), value) == expected
    assert unmask(bytearray(payload), value) == expected
    assert unmask(expected, value) == payload


@settings(max_examples=200, deadline=None)
@given(payload=st.binary(max_size=3000), key=st.binary(min_size=4, max_size=4))
def test_unmask_property(payload: bytes, key: bytes) -> None:
    assert unmask(payload, int.from_bytes(key, "big")) == xor(payload, key)


def test_builders() -> None:
    assert build_binary(b"") == b"\x82\x00"
    assert build_text("hi") == b"\x81\x02hi"
    assert build_binary(b"a" * 126)[:4] == b"\x82\x7e\x00\x7e"
    assert build_binary(b"a" * 65536)[:10] == b"\x82\x7f" + (65536).to_bytes(8, "big")
    assert build_message("x") == build_text("x")
    assert build_message(bytearray(b"x")) == build_binary(b"x")


class CountingFeed:
    """Counts what reaches wsproto's Connection.receive_data."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.calls: list[bytes] = []
        original = Connection.receive_data

        def spy(conn: Connection, data: Any) -> None:
            # A new Connection feeds itself its trailing data, b"": the session makes one
            # whenever it needs wsproto again (it drops an idle one), which feeds nothing.
            if data is None or data:
                self.calls.append(bytes(data) if data is not None else b"<eof>")
            original(conn, data)

        monkeypatch.setattr(Connection, "receive_data", spy)


def test_common_frames_bypass_wsproto(monkeypatch: pytest.MonkeyPatch) -> None:
    session, _ = open_session(on_message=lambda ctx, msg: msg)
    spy = CountingFeed(monkeypatch)
    payloads = [
        os.urandom(n) if op == BINARY else "t" * n
        for op, n in [
            (BINARY, 0),
            (TEXT, 5),
            (BINARY, 125),
            (BINARY, 126),
            (TEXT, 4096),
            (BINARY, 65535),
            (BINARY, 65536),
        ]
    ]
    data = b"".join(
        frame(TEXT, p.encode()) if isinstance(p, str) else frame(BINARY, p) for p in payloads
    )
    out: list[bytes] = []
    session.receive(data, out)
    assert spy.calls == []
    assert b"".join(out) == b"".join(build_message(p) for p in payloads)


def test_wsproto_handles_exactly_the_other_frames(monkeypatch: pytest.MonkeyPatch) -> None:
    session, _ = open_session()
    spy = CountingFeed(monkeypatch)
    ping = frame(PING, b"p")
    fragment = frame(TEXT, b"a", fin=False) + frame(0, b"b")
    data = frame(BINARY, b"1") + ping + frame(BINARY, b"2") + fragment + frame(BINARY, b"3")
    out: list[bytes] = []
    session.receive(data, out)
    assert session.messages == [b"1", b"2", "ab", b"3"]
    # wsproto is fed frame by frame, only the ping and the fragmented message.
    assert spy.calls == [ping, frame(TEXT, b"a", fin=False), frame(0, b"b")]


def test_cut_binary_frame_waits_for_the_rest(monkeypatch: pytest.MonkeyPatch) -> None:
    session, _ = open_session()
    spy = CountingFeed(monkeypatch)
    data = frame(BINARY, b"x" * 1000) * 3
    out: list[bytes] = []
    for i in range(0, len(data), 700):
        session.receive(data[i : i + 700], out)
    assert session.messages == [b"x" * 1000] * 3
    assert spy.calls == []


def test_cut_text_frame_streams_through_wsproto(monkeypatch: pytest.MonkeyPatch) -> None:
    session, _ = open_session()
    spy = CountingFeed(monkeypatch)
    data = frame(TEXT, b"y" * 1000) + frame(TEXT, b"after")
    out: list[bytes] = []
    session.receive(data[:500], out)
    session.receive(data[500:], out)
    assert session.messages == ["y" * 1000, "after"]
    assert len(spy.calls) == 2  # the text frame only; "after" is back on the fast path
