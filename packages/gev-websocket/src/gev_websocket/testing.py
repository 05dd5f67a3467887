"""Test helpers for code built on gev-websocket: raw client frames, handshakes, a feed driver.

They drive a :class:`~gev_websocket.WebSocketSession` in memory, without a socket or a loop,
the way the package's own tests do: build a client's upgrade request (:func:`request_bytes`)
and frames (:func:`frame`, valid or deliberately broken), open a session past its handshake
(:func:`open_session`), feed it bytes cut anywhere (:func:`feed_chunks`, :func:`feed_turns`),
and read what it answered with a real client implementation (:func:`wsproto_client`,
:func:`client_events`, :func:`parse_response`)::

    session, _ = open_session()
    out: list[bytes] = []
    session.receive(frame(TEXT, b"hi"), out)
    assert session.messages == ["hi"]

Not imported by the package itself; wsproto is the only dependency it needs.
"""

from __future__ import annotations

import itertools
import struct
import zlib
from collections.abc import Iterable, Sequence
from typing import Any

from wsproto import ConnectionType, WSConnection
from wsproto.events import AcceptConnection, Event, RejectConnection, RejectData, Request
from wsproto.frame_protocol import XorMaskerSimple

from ._session import WebSocketSession

__all__ = [
    "ACCEPT",
    "BINARY",
    "CLOSE",
    "CONT",
    "KEY",
    "MASK",
    "PING",
    "PONG",
    "TEXT",
    "client_events",
    "close_payload",
    "connect",
    "deflate_message",
    "feed_chunks",
    "feed_turns",
    "frame",
    "open_session",
    "parse_response",
    "request_bytes",
    "wsproto_client",
    "xor",
]

KEY = b"dGhlIHNhbXBsZSBub25jZQ=="
"""The ``Sec-WebSocket-Key`` of :func:`request_bytes` (RFC 6455's own example)."""
ACCEPT = b"s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
"""The ``Sec-WebSocket-Accept`` a server must answer to :data:`KEY`."""
MASK = b"\x37\xfa\x21\x3d"
"""The masking key :func:`frame` uses unless told otherwise (RFC 6455's example)."""

TEXT = 0x1
"""Opcode of a text frame."""
BINARY = 0x2
"""Opcode of a binary frame."""
CONT = 0x0
"""Opcode of a continuation frame."""
CLOSE = 0x8
"""Opcode of a close frame."""
PING = 0x9
"""Opcode of a ping frame."""
PONG = 0xA
"""Opcode of a pong frame."""


def request_bytes(
    *,
    target: str = "/",
    connection: str = "Upgrade",
    upgrade: str = "websocket",
    key: bytes = KEY,
    version: str = "13",
    extensions: str | None = None,
    protocols: str | None = None,
    extra: Sequence[tuple[str, str]] = (),
    method: str = "GET",
    eol: bytes = b"\r\n",
) -> bytes:
    """A client's HTTP upgrade request; every part can be changed to make a bad one.

    ``extensions`` and ``protocols`` add ``Sec-WebSocket-Extensions`` /
    ``Sec-WebSocket-Protocol`` headers, ``extra`` more headers, and ``eol`` the line ending.
    """
    lines = [
        f"{method} {target} HTTP/1.1".encode(),
        b"Host: example.com",
        f"Upgrade: {upgrade}".encode(),
        f"Connection: {connection}".encode(),
        b"Sec-WebSocket-Key: " + key,
        f"Sec-WebSocket-Version: {version}".encode(),
    ]
    if extensions is not None:
        lines.append(f"Sec-WebSocket-Extensions: {extensions}".encode())
    if protocols is not None:
        lines.append(f"Sec-WebSocket-Protocol: {protocols}".encode())
    lines += [f"{k}: {v}".encode() for k, v in extra]
    return eol.join(lines) + eol + eol


def xor(payload: bytes, mask: bytes) -> bytes:
    """``payload`` masked (or unmasked) with the 4-byte ``mask``.

    wsproto's masker, so that tests do not check gev-websocket's own unmask against itself.
    """
    return bytes(XorMaskerSimple(mask).process(bytearray(payload)))


def frame(
    opcode: int,
    payload: bytes = b"",
    *,
    fin: bool = True,
    rsv: int = 0,
    mask: bytes | None = MASK,
    length_bytes: int | None = None,
) -> bytes:
    """A client frame, valid or not: any opcode, ``fin`` and ``rsv`` bits, masked with
    ``mask`` (``None`` sends it unmasked, which a server must refuse). ``length_bytes``
    (0, 2, 8) forces the length form, even a non-minimal one."""
    n = len(payload)
    if length_bytes is None:
        length_bytes = 0 if n < 126 else 2 if n < 65536 else 8
    b0 = (0x80 if fin else 0) | (rsv << 4) | opcode
    mbit = 0x80 if mask is not None else 0
    if length_bytes == 0:
        head = bytes((b0, mbit | n))
    elif length_bytes == 2:
        head = bytes((b0, mbit | 126)) + struct.pack("!H", n)
    else:
        head = bytes((b0, mbit | 127)) + struct.pack("!Q", n)
    if mask is None:
        return head + payload
    return head + mask + xor(payload, mask)


def close_payload(code: int | None, reason: bytes = b"") -> bytes:
    """The payload of a close frame: ``code`` and ``reason``; empty for ``code=None``."""
    return b"" if code is None else struct.pack("!H", code) + reason


def deflate_message(compressor: Any, data: bytes) -> bytes:
    """Compress one message the way RFC 7692 wants it on the wire (permessage-deflate: the
    trailing ``00 00 ff ff`` removed). ``compressor`` is a raw-deflate ``zlib.compressobj``
    (``wbits=-15``), kept across messages for context takeover."""
    out: bytes = compressor.compress(data) + compressor.flush(zlib.Z_SYNC_FLUSH)
    assert out.endswith(b"\x00\x00\xff\xff")
    return out[:-4]


def open_session(
    request: bytes | None = None, **kwargs: Any
) -> tuple[WebSocketSession, list[bytes]]:
    """A session past a successful handshake, with the handshake's output.

    ``request`` defaults to :func:`request_bytes`; ``kwargs`` go to
    :class:`~gev_websocket.WebSocketSession`."""
    session = WebSocketSession(**kwargs)
    out: list[bytes] = []
    session.receive(request or request_bytes(), out)
    assert out and out[0].startswith(b"HTTP/1.1 101 "), out
    return session, out


def wsproto_client(
    extensions: Iterable[Any] = (), subprotocols: Sequence[str] = ()
) -> tuple[WSConnection, bytes]:
    """A wsproto client connection and its upgrade request (to pass to :func:`connect`).

    ``extensions`` are wsproto extension objects (e.g. ``PerMessageDeflate()``).
    """
    client = WSConnection(ConnectionType.CLIENT)
    data = client.send(
        Request(
            host="example.com",
            target="/chat",
            extensions=list(extensions),
            subprotocols=list(subprotocols),
        )
    )
    return client, data


def connect(session: WebSocketSession, client: WSConnection, request: bytes) -> AcceptConnection:
    """Run the handshake of ``session`` with a :func:`wsproto_client`; the client's accept
    event (the negotiated extensions and subprotocol are on it)."""
    out: list[bytes] = []
    session.receive(request, out)
    client.receive_data(b"".join(out))
    events = list(client.events())
    assert len(events) == 1 and isinstance(events[0], AcceptConnection), events
    return events[0]


def client_events(client: WSConnection, out: Sequence[bytes]) -> list[Event]:
    """What the wsproto ``client`` makes of the bytes a session wrote to ``out``."""
    client.receive_data(b"".join(out))
    return list(client.events())


def parse_response(raw: bytes) -> tuple[int, dict[bytes, bytes], bytes]:
    """Status, lower-cased headers and body of an HTTP response produced by the session."""
    client = WSConnection(ConnectionType.CLIENT)
    client.send(Request(host="example.com", target="/"))
    client.receive_data(raw)
    status = 0
    headers: dict[bytes, bytes] = {}
    body = b""
    for event in client.events():
        if isinstance(event, RejectConnection):
            status = event.status_code
            headers = {k.lower(): v for k, v in event.headers}
        elif isinstance(event, RejectData):
            body += event.data
    return status, headers, body


def feed_chunks(
    session: WebSocketSession, data: bytes, cuts: Sequence[int], *, view: bool = False
) -> list[tuple[list[Any], bytes, bool]]:
    """Feed *data* cut at *cuts*; per call: (messages delivered, bytes out, closed).

    With ``view``, each chunk is a memoryview into a scratch buffer that is overwritten
    afterwards, the way a reactor's reused read buffer behaves.
    """
    bounds = [0, *sorted(set(c for c in cuts if 0 < c < len(data))), len(data)]
    calls = []
    scratch = bytearray(len(data) + 1)
    for a, b in itertools.pairwise(bounds):
        before = len(session.messages)
        out: list[bytes] = []
        if view:
            scratch[: b - a] = data[a:b]
            closed = session.receive(memoryview(scratch)[: b - a], out)
            scratch[: b - a] = b"\xee" * (b - a)
        else:
            closed = session.receive(data[a:b], out)
        calls.append((session.messages[before:], b"".join(out), closed))
    return calls


def feed_turns(
    session: WebSocketSession, data: bytes, cuts: Sequence[int]
) -> tuple[list[Any], bytes, bool]:
    """Feed *data* cut at *cuts* the way a reactor does when the session bounds its work.

    Bytes a call leaves (:attr:`~gev_websocket.WebSocketSession.unconsumed`) are handed back
    first on the next call, with the next chunk behind them once they have all been taken,
    until everything is consumed or the session closed. Returns (messages delivered, every
    byte out, closed).
    """
    bounds = [0, *sorted(set(c for c in cuts if 0 < c < len(data))), len(data)]
    before = len(session.messages)
    out: list[bytes] = []
    pending = b""
    closed = False
    for a, b in itertools.pairwise(bounds):
        pending += data[a:b]
        while pending and not closed:
            closed = session.receive(pending, out)
            left = session.unconsumed
            session.unconsumed = 0
            pending = pending[len(pending) - left :] if left else b""
            if not left:
                break
        if closed:
            break
    return session.messages[before:], b"".join(out), closed
