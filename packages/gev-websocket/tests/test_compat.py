"""Fails loudly when a wsproto release changes the internals the fast path relies on."""

from __future__ import annotations

import wsproto
from gev_websocket._compat import wsproto_idle
from gev_websocket.testing import (
    BINARY,
    CLOSE,
    CONT,
    PING,
    TEXT,
    close_payload,
    frame,
    open_session,
)
from wsproto.connection import Connection, ConnectionState
from wsproto.frame_protocol import Buffer, FrameDecoder, FrameProtocol, MessageDecoder


def _version() -> tuple[int, ...]:
    return tuple(int(part) for part in wsproto.__version__.split(".")[:2])


def test_wsproto_version_is_in_the_pinned_range() -> None:
    # pyproject.toml pins wsproto>=1.2,<1.4; widen both only after re-checking _compat.py.
    assert (1, 2) <= _version() < (1, 4), wsproto.__version__


def test_internal_attributes_exist() -> None:
    session, _ = open_session()
    conn = session._wsproto()
    assert isinstance(conn, Connection)
    assert conn._state is ConnectionState.OPEN
    assert isinstance(conn._proto, FrameProtocol)
    decoder = conn._proto._frame_decoder
    assert isinstance(decoder, FrameDecoder)
    assert decoder.header is None
    assert isinstance(decoder.buffer, Buffer) and isinstance(decoder.buffer.buffer, bytearray)
    assert isinstance(conn._proto._message_decoder, MessageDecoder)
    assert conn._proto._message_decoder.opcode is None


def test_idle_tracks_wsproto_state() -> None:
    session, _ = open_session(fast_path=False)
    conn = session._wsproto()
    assert conn is not None and wsproto_idle(conn)
    out: list[bytes] = []

    session.receive(frame(BINARY, b"x")[:1], out)  # partial header buffered
    assert not wsproto_idle(conn)
    session.receive(frame(BINARY, b"x")[1:], out)
    assert wsproto_idle(conn)

    session.receive(frame(BINARY, b"0123456789")[:9], out)  # header parsed, payload pending
    assert conn._proto._frame_decoder.header is not None and not wsproto_idle(conn)
    session.receive(frame(BINARY, b"0123456789")[9:], out)
    assert wsproto_idle(conn)

    session.receive(frame(TEXT, b"a", fin=False), out)  # message in progress
    assert not wsproto_idle(conn)
    session.receive(frame(PING, b"p"), out)
    assert not wsproto_idle(conn)
    session.receive(frame(CONT, b"b"), out)
    assert wsproto_idle(conn)
    assert session.messages == [b"x", b"0123456789", "ab"]

    session.receive(frame(CLOSE, close_payload(1000)), out)
    assert not wsproto_idle(conn)  # no longer OPEN
