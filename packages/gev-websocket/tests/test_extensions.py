"""permessage-deflate negotiation and codec, decompression bounds, the limits extension."""

from __future__ import annotations

import random
import tracemalloc
import zlib

import pytest
from gev_websocket import Deflate, WebSocketSession
from gev_websocket._extensions import BoundedPerMessageDeflate, MessageLimits
from gev_websocket.testing import (
    BINARY,
    CONT,
    PING,
    TEXT,
    client_events,
    connect,
    deflate_message,
    frame,
    open_session,
    request_bytes,
    wsproto_client,
)
from wsproto.events import BytesMessage, TextMessage
from wsproto.extensions import PerMessageDeflate


def negotiate(offer: str, **config: object) -> tuple[WebSocketSession, bytes | None]:
    """Handshake with the given Sec-WebSocket-Extensions; the response header value."""
    session, out = open_session(
        request_bytes(extensions=offer),
        compression=Deflate(**config),  # type: ignore[arg-type]
    )
    for line in out[0].split(b"\r\n"):
        if line.lower().startswith(b"sec-websocket-extensions:"):
            return session, line.split(b":", 1)[1].strip()
    return session, None


def test_no_offer_no_compression() -> None:
    session, _ = open_session(compression=Deflate())
    assert not session.compression_active
    session, header = negotiate("x-webkit-deflate-frame")
    assert header is None and not session.compression_active


@pytest.mark.parametrize(
    ("offer", "config", "expected"),
    [
        ("permessage-deflate", {}, b"permessage-deflate; server_max_window_bits=12"),
        (
            "permessage-deflate; client_max_window_bits",
            {},
            b"permessage-deflate; server_max_window_bits=12; client_max_window_bits=12",
        ),
        (
            "permessage-deflate; client_max_window_bits=10; server_max_window_bits=10",
            {},
            b"permessage-deflate; server_max_window_bits=10; client_max_window_bits=10",
        ),
        (
            "permessage-deflate; client_no_context_takeover; server_no_context_takeover",
            {"server_max_window_bits": None},
            b"permessage-deflate; server_no_context_takeover; client_no_context_takeover",
        ),
        (
            "permessage-deflate",
            {"client_no_context_takeover": True, "server_no_context_takeover": True},
            b"permessage-deflate; server_no_context_takeover; client_no_context_takeover; "
            b"server_max_window_bits=12",
        ),
        ("permessage-deflate", {"server_max_window_bits": None}, b"permessage-deflate"),
        (
            "permessage-deflate; client_max_window_bits=15",
            {"client_max_window_bits": None, "server_max_window_bits": None},
            b"permessage-deflate",
        ),
        # Several offers: the first acceptable one wins, nothing leaks from declined ones.
        (
            "permessage-deflate; server_max_window_bits=8, permessage-deflate; "
            "client_max_window_bits=9",
            {"client_max_window_bits": 15},
            b"permessage-deflate; server_max_window_bits=12; client_max_window_bits=9",
        ),
        (
            "permessage-deflate; bogus=1, permessage-deflate",
            {},
            b"permessage-deflate; server_max_window_bits=12",
        ),
    ],
)
def test_negotiation(offer: str, config: dict[str, object], expected: bytes) -> None:
    session, header = negotiate(offer, **config)
    assert header == expected
    assert session.compression_active


@pytest.mark.parametrize(
    "offer",
    [
        "permessage-deflate; server_max_window_bits=8",
        "permessage-deflate; server_max_window_bits",
        "permessage-deflate; server_max_window_bits=16",
        "permessage-deflate; client_max_window_bits=07",
        "permessage-deflate; client_max_window_bits=abc",
        "permessage-deflate; server_no_context_takeover=1",
        "permessage-deflate; unknown",
        "permessage-deflate; client_max_window_bits; client_max_window_bits",
    ],
)
def test_declined_offers(offer: str) -> None:
    session, header = negotiate(offer)
    assert header is None and not session.compression_active


def test_round_trip_with_wsproto_client() -> None:
    client, request = wsproto_client(extensions=[PerMessageDeflate()])
    session = WebSocketSession(lambda ctx, msg: msg, compression=Deflate())
    accept = connect(session, client, request)
    assert accept.extensions and session.compression_active
    messages = ["héllo" * 100, b"\x00\x01" * 5000, "", b"", "x"]
    out: list[bytes] = []
    for message in messages:
        data = (
            client.send(TextMessage(data=message))
            if isinstance(message, str)
            else client.send(BytesMessage(data=message))
        )
        assert data[0] & 0x40  # RSV1: the client really compressed it
        session.receive(data, out)
    assert all(chunk[0] & 0x40 for chunk in out)  # ...and so did the server
    got = [event.data for event in client_events(client, out)]  # type: ignore[attr-defined]
    assert got == messages
    assert session.send_text("more") != b"" and session.send_binary(b"more")[0] == 0xC2


@pytest.mark.parametrize("no_context", [False, True])
def test_context_takeover_across_messages(no_context: bool) -> None:
    session, _ = open_session(
        request_bytes(extensions="permessage-deflate; client_max_window_bits"),
        compression=Deflate(client_no_context_takeover=no_context),
    )
    compressor = zlib.compressobj(6, zlib.DEFLATED, -12)
    out: list[bytes] = []
    for _i in range(3):
        if no_context:
            compressor = zlib.compressobj(6, zlib.DEFLATED, -12)
        payload = deflate_message(compressor, b"repeat me " * 20)
        session.receive(frame(TEXT, payload, rsv=4), out)
    assert session.messages == ["repeat me " * 20] * 3 and out == []


def test_control_frame_inside_compressed_fragmented_message() -> None:
    # wsproto 1.2/1.3's own codec forgets the message is compressed after the ping.
    session, _ = open_session(request_bytes(extensions="permessage-deflate"), compression=Deflate())
    compressed = deflate_message(zlib.compressobj(6, zlib.DEFLATED, -15), b"fragmented " * 50)
    half = len(compressed) // 2
    out: list[bytes] = []
    session.receive(
        frame(TEXT, compressed[:half], fin=False, rsv=4)
        + frame(PING, b"mid")
        + frame(CONT, compressed[half:]),
        out,
    )
    assert session.messages == ["fragmented " * 50]
    assert out == [b"\x8a\x03mid"]


def test_uncompressed_message_with_deflate_negotiated() -> None:
    session, _ = open_session(request_bytes(extensions="permessage-deflate"), compression=Deflate())
    out: list[bytes] = []
    session.receive(frame(BINARY, b"plain") + frame(TEXT, b"text"), out)
    assert session.messages == [b"plain", "text"]


def test_corrupt_compressed_data_1007() -> None:
    session, _ = open_session(request_bytes(extensions="permessage-deflate"), compression=Deflate())
    out: list[bytes] = []
    session.receive(frame(BINARY, b"\xff\xff\xff\xff", rsv=4), out)
    assert session.close_code == 1007
    assert out[0][:4] == b"\x88\x19\x03\xef" and out[0][4:] == b"invalid compressed data"


def test_rsv1_on_continuation_is_1002() -> None:
    session, _ = open_session(request_bytes(extensions="permessage-deflate"), compression=Deflate())
    out: list[bytes] = []
    session.receive(frame(TEXT, b"a", fin=False) + frame(CONT, b"b", rsv=4), out)
    assert session.close_code == 1002


@pytest.mark.parametrize("fragments", [1, 8])
def test_zip_bomb_is_not_inflated(fragments: int) -> None:
    limit = 1 << 20
    bomb = deflate_message(zlib.compressobj(9, zlib.DEFLATED, -15), b"\x00" * (64 << 20))
    assert len(bomb) < 70_000  # 64 MiB of zeros in about 64 KiB
    session, _ = open_session(
        request_bytes(extensions="permessage-deflate"),
        compression=Deflate(server_max_window_bits=None, client_max_window_bits=None),
        max_message_size=limit,
    )
    step = -(-len(bomb) // fragments)
    pieces = [bomb[i : i + step] for i in range(0, len(bomb), step)]
    data = b"".join(
        frame(BINARY if i == 0 else CONT, p, fin=i == len(pieces) - 1, rsv=4 if i == 0 else 0)
        for i, p in enumerate(pieces)
    )
    out: list[bytes] = []
    tracemalloc.start()
    try:
        session.receive(data, out)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert session.close_code == 1009 and session.messages == []
    # Input copies plus at most one message's worth of output, never the 64 MiB.
    assert peak < 4 * limit, peak


def test_bound_is_exact() -> None:
    payload = b"abc" * 1000
    for limit, ok in ((3000, True), (2999, False)):
        session, _ = open_session(
            request_bytes(extensions="permessage-deflate"),
            compression=Deflate(),
            max_message_size=limit,
        )
        compressed = deflate_message(zlib.compressobj(6, zlib.DEFLATED, -12), payload)
        out: list[bytes] = []
        session.receive(frame(BINARY, compressed, rsv=4), out)
        assert (session.messages == [payload]) is ok
        assert (session.close_code == 1009) is not ok


def test_deflate_config_validation() -> None:
    with pytest.raises(ValueError):
        BoundedPerMessageDeflate(100, client_max_window_bits=7)
    with pytest.raises(ValueError):
        BoundedPerMessageDeflate(100, server_max_window_bits=8)


def test_limits_extension_is_never_negotiated() -> None:
    limits = MessageLimits(10, 10)
    assert limits.enabled() and limits.offer() is False and limits.accept("x-gev-limits") is None
    _session, header = negotiate("x-gev-limits")
    assert header is None
    assert "enabled=True" in repr(negotiate("permessage-deflate")[0]._deflate)


@pytest.mark.parametrize("mem_level", [1, 8, 9])
def test_an_incompressible_message_at_the_limit_is_accepted_though_deflate_grew_it(
    mem_level: int,
) -> None:
    limit = 100_000
    payload = random.Random(mem_level).randbytes(limit)
    compressed = deflate_message(zlib.compressobj(6, zlib.DEFLATED, -15, mem_level), payload)
    assert len(compressed) > limit  # stored blocks: deflate made it larger
    session, _ = open_session(
        request_bytes(extensions="permessage-deflate"),
        compression=Deflate(),
        max_message_size=limit,
    )
    out: list[bytes] = []
    session.receive(frame(BINARY, compressed, rsv=4), out)
    assert session.messages == [payload] and session.close_code is None
    # One byte more than the limit still inflates past it: 1009.
    session, _ = open_session(
        request_bytes(extensions="permessage-deflate"),
        compression=Deflate(),
        max_message_size=limit,
    )
    bigger = payload + b"x"
    session.receive(
        frame(BINARY, deflate_message(zlib.compressobj(6, zlib.DEFLATED, -15), bigger), rsv=4), out
    )
    assert session.close_code == 1009
