"""The fast path must be invisible: same messages, same bytes out, same close as pure wsproto.

Random client byte streams (valid and invalid frames, fragmentation, interleaved control
frames, every length class, compressed messages when deflate is negotiated) are cut at
random points and fed to two sessions: one with the fast path, one with ``fast_path=False``
(every byte straight to wsproto). They must agree after every single ``receive`` call.
"""

from __future__ import annotations

import itertools
import os
import random
import zlib
from typing import Any

import pytest
from gev_websocket import Deflate, WebSocketSession, build_binary, build_text
from gev_websocket.testing import (
    BINARY,
    CLOSE,
    CONT,
    PING,
    PONG,
    TEXT,
    close_payload,
    deflate_message,
    feed_chunks,
    feed_turns,
    frame,
    request_bytes,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from wsproto import ConnectionType, WSConnection
from wsproto.events import BytesMessage, TextMessage

# Every test here runs with the native unmask and with the pure-Python one.
pytestmark = pytest.mark.usefixtures("unmasker")

# GEV_WS_DIFF_EXAMPLES=5000 for a deep run; the default keeps the suite fast.
SETTINGS = settings(
    max_examples=int(os.environ.get("GEV_WS_DIFF_EXAMPLES", "150")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

masks = st.binary(min_size=4, max_size=4)


@st.composite
def payload_sizes(draw: st.DrawFn) -> int:
    kind = draw(st.integers(0, 19))
    if kind < 14:
        return draw(st.integers(0, 125))
    if kind < 19:
        return draw(st.sampled_from([126, 127, 200, 1023, 1024, 1025, 2049, 4096, 65535]))
    return draw(st.sampled_from([65536, 70001]))


@st.composite
def payloads(draw: st.DrawFn, text: bool) -> bytes:
    size = draw(payload_sizes())
    rng = random.Random(draw(st.integers(0, 2**32)))
    if not text:
        return rng.randbytes(size)
    alphabet = "aZ09 é€😀\u0800"
    data = "".join(rng.choices(alphabet, k=size)).encode()[:size]
    # Cutting at a byte count may split the last code point: keep it valid unless the
    # test below asks for invalid UTF-8.
    return data.decode("utf-8", "ignore").encode()


def split(data: bytes, parts: int, rng: random.Random) -> list[bytes]:
    cuts = sorted(rng.randint(0, len(data)) for _ in range(parts - 1))
    bounds = [0, *cuts, len(data)]
    return [data[a:b] for a, b in itertools.pairwise(bounds)]


@st.composite
def control_frame(draw: st.DrawFn) -> bytes:
    opcode = draw(st.sampled_from([PING, PONG]))
    return frame(opcode, draw(st.binary(max_size=125)), mask=draw(masks))


@st.composite
def message(draw: st.DrawFn, compressor: Any) -> bytes:
    """One data message, maybe fragmented with control frames in between."""
    text = draw(st.booleans())
    data = draw(payloads(text))
    if text and draw(st.integers(0, 9)) == 0:  # invalid UTF-8 somewhere
        at = draw(st.integers(0, len(data)))
        data = data[:at] + draw(st.sampled_from([b"\xff", b"\xc3", b"\xed\xa0\x80", b"\xf4\x90"]))
        data += data[at:]
    rsv = 0
    if compressor is not None and draw(st.booleans()):
        data = deflate_message(compressor, data)
        rsv = 4
    rng = random.Random(draw(st.integers(0, 2**32)))
    pieces = split(data, draw(st.sampled_from([1, 1, 1, 2, 3, 5])), rng)
    out = []
    for i, piece in enumerate(pieces):
        opcode = (TEXT if text else BINARY) if i == 0 else CONT
        last = i == len(pieces) - 1
        out.append(frame(opcode, piece, fin=last, rsv=rsv if i == 0 else 0, mask=draw(masks)))
        if not last and draw(st.integers(0, 3)) == 0:
            out.append(draw(control_frame()))
    return b"".join(out)


@st.composite
def bad_frame(draw: st.DrawFn) -> bytes:
    mask = draw(masks)
    kind = draw(st.integers(0, 10))
    if kind == 0:  # reserved bits
        return frame(
            draw(st.sampled_from([TEXT, BINARY, PING])),
            b"x",
            rsv=draw(st.integers(1, 7)),
            mask=mask,
        )
    if kind == 1:  # reserved opcodes
        return frame(draw(st.sampled_from([3, 4, 5, 6, 7, 0xB, 0xC, 0xF])), b"abc", mask=mask)
    if kind == 2:  # unmasked client frame
        return frame(BINARY, b"abc", mask=None)
    if kind == 3:  # non-minimal length encodings
        size = draw(st.sampled_from([0, 5, 125, 126, 300]))
        return frame(BINARY, b"z" * size, mask=mask, length_bytes=draw(st.sampled_from([2, 8])))
    if kind == 4:  # control frame too long / fragmented control frame
        if draw(st.booleans()):
            return frame(PING, b"p" * 126, mask=mask)
        return frame(PING, b"p", fin=False, mask=mask)
    if kind == 5:  # continuation with nothing to continue
        return frame(CONT, b"orphan", mask=mask)
    if kind == 6:  # a new message inside a fragmented one
        return frame(TEXT, b"a", fin=False, mask=mask) + frame(BINARY, b"b", mask=mask)
    if kind == 7:  # 1-byte close payload
        return frame(CLOSE, b"\x03", mask=mask)
    if kind == 8:  # invalid UTF-8 in close reason
        return frame(CLOSE, close_payload(1000, b"\xff\xfe"), mask=mask)
    if kind == 9:  # 64-bit length with the top bit set
        return bytes((0x82, 0xFF)) + b"\x80" + b"\x00" * 7 + mask + b"data"
    return frame(TEXT, b"\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5\xed\xa0\x80", mask=mask)


@st.composite
def close_frame(draw: st.DrawFn) -> bytes:
    code = draw(
        st.sampled_from(
            [
                None,
                1000,
                1001,
                1002,
                1003,
                1004,
                1005,
                1006,
                1007,
                1011,
                1015,
                1016,
                999,
                0,
                2000,
                2999,
                3000,
                3999,
                4000,
                4999,
                5000,
                65535,
            ]
        )
    )
    reason = draw(st.sampled_from([b"", b"bye", "ünïcødé".encode()])) if code else b""
    return frame(CLOSE, close_payload(code, reason), mask=draw(masks))


@st.composite
def stream(draw: st.DrawFn, compressor: Any = None) -> bytes:
    items = []
    for _ in range(draw(st.integers(1, 10))):
        roll = draw(st.integers(0, 19))
        if roll < 13:
            items.append(draw(message(compressor)))
        elif roll < 16:
            items.append(draw(control_frame()))
        elif roll < 18:
            items.append(draw(bad_frame()))
        else:
            items.append(draw(close_frame()))
    return b"".join(items)


@st.composite
def cuts(draw: st.DrawFn, size: int) -> list[int]:
    mode = draw(st.integers(0, 3))
    if mode == 0 or size == 0:
        return []  # one read
    if mode == 1:  # a few random cuts
        return draw(st.lists(st.integers(0, size), max_size=8))
    step = draw(st.integers(1, 64 if mode == 2 else 5000))  # fixed-size reads
    # Tiny reads over a big stream are slow for no extra coverage: cap the number of reads.
    step = max(step, size // 3000)
    return list(range(step, size, step))


def make_pair(**kwargs: Any) -> tuple[WebSocketSession, WebSocketSession]:
    return WebSocketSession(**kwargs), WebSocketSession(fast_path=False, **kwargs)


def run_pair(
    fast: WebSocketSession,
    ref: WebSocketSession,
    head: bytes,
    data: bytes,
    cut: list[int],
    view: bool,
) -> None:
    fast_calls = feed_chunks(
        fast, head + data, [len(head) + c for c in cut] + [len(head)], view=view
    )
    ref_calls = feed_chunks(ref, head + data, [len(head) + c for c in cut] + [len(head)])
    assert fast_calls == ref_calls
    assert (fast.close_code, fast.close_reason, fast.closed, fast.state) == (
        ref.close_code,
        ref.close_reason,
        ref.closed,
        ref.state,
    )
    fast.receive_eof()
    ref.receive_eof()
    assert (fast.close_code, fast.close_reason, fast.state) == (
        ref.close_code,
        ref.close_reason,
        ref.state,
    )


limits = st.sampled_from([1 << 20, 1 << 20, 100, 5000, 65536])


@SETTINGS
@given(data=st.data(), max_size=limits, view=st.booleans())
def test_random_streams_match_wsproto(data: st.DataObject, max_size: int, view: bool) -> None:
    body = data.draw(stream())
    cut = data.draw(cuts(len(body)))
    fast, ref = make_pair(max_message_size=max_size)
    run_pair(fast, ref, request_bytes(), body, cut, view)


@SETTINGS
@given(data=st.data(), max_size=limits)
def test_random_streams_with_deflate_match_wsproto(data: st.DataObject, max_size: int) -> None:
    compressor = zlib.compressobj(6, zlib.DEFLATED, -12)
    body = data.draw(stream(compressor))
    cut = data.draw(cuts(len(body)))
    fast, ref = make_pair(max_message_size=max_size, compression=Deflate())
    head = request_bytes(extensions="permessage-deflate; client_max_window_bits")
    run_pair(fast, ref, head, body, cut, view=False)
    assert fast.compression_active and ref.compression_active


@SETTINGS
@given(data=st.data())
def test_echo_replies_match_wsproto(data: st.DataObject) -> None:
    """Replies returned by the handler come out in the same order in both modes."""
    body = data.draw(stream())
    cut = data.draw(cuts(len(body)))

    def echo(inbox: list[Any], message: Any) -> Any:
        inbox.append(message)
        return message

    fast = WebSocketSession(echo)
    ref = WebSocketSession(echo, fast_path=False)
    # The echo handler collects into the context; point it at each session's inbox.
    fast._context = fast.messages
    ref._context = ref.messages
    run_pair(fast, ref, request_bytes(), body, cut, view=False)


@settings(max_examples=300, deadline=None)
@given(
    payload=st.one_of(
        st.binary(max_size=300),
        st.sampled_from([125, 126, 65535, 65536]).map(
            lambda n: bytes(range(256)) * (n // 256) + bytes(n % 256)
        ),
    )
)
def test_builder_matches_wsproto_binary(payload: bytes) -> None:
    assert build_binary(payload) == _wsproto_server().send(BytesMessage(data=payload))
    assert build_binary(bytearray(payload)) == build_binary(memoryview(payload))
    assert build_binary(payload) == build_binary(memoryview(payload))


@settings(max_examples=300, deadline=None)
@given(text=st.one_of(st.text(max_size=200), st.sampled_from(["é" * 63, "€" * 42, "x" * 70000])))
def test_builder_matches_wsproto_text(text: str) -> None:
    assert build_text(text) == _wsproto_server().send(TextMessage(data=text))


def _wsproto_server() -> WSConnection:
    server = WSConnection(ConnectionType.SERVER)
    server.receive_data(request_bytes())
    request = next(server.events())
    from wsproto.events import AcceptConnection

    assert request
    server.send(AcceptConnection())
    return server


# -- bounded work per call ------------------------------------------------------------------

turns = st.sampled_from([1, 100, 3000, 70000])


@SETTINGS
@given(data=st.data(), max_size=limits, turn=turns, deflate=st.booleans())
def test_bounded_work_per_call_changes_nothing_but_the_pace(
    data: st.DataObject, max_size: int, turn: int, deflate: bool
) -> None:
    """Stopping at frame boundaries and resuming with the rest gives what one call gives."""
    compressor = zlib.compressobj(6, zlib.DEFLATED, -12) if deflate else None
    body = data.draw(stream(compressor))
    cut = data.draw(cuts(len(body)))
    options: dict[str, Any] = {"max_message_size": max_size}
    head = request_bytes()
    if deflate:
        options["compression"] = Deflate()
        head = request_bytes(extensions="permessage-deflate; client_max_window_bits")
    bounded = WebSocketSession(work_per_turn=turn, **options)
    ref = WebSocketSession(fast_path=False, **options)
    cuts_all = [len(head) + c for c in cut] + [len(head)]
    got = feed_turns(bounded, head + body, cuts_all)
    expected = feed_chunks(ref, head + body, cuts_all)
    assert got[0] == [m for call in expected for m in call[0]]
    assert got[1] == b"".join(call[1] for call in expected)
    assert got[2] == (expected[-1][2] if expected else False)
    assert (bounded.close_code, bounded.close_reason, bounded.state) == (
        ref.close_code,
        ref.close_reason,
        ref.state,
    )


def test_a_bounded_call_stops_at_a_frame_boundary_and_says_how_much_is_left() -> None:
    session = WebSocketSession(work_per_turn=2000)
    out: list[bytes] = []
    assert not session.receive(request_bytes(), out)
    # Fragments go through wsproto: 1 KiB of work each plus their bytes. The budget runs out
    # with the second; the plain frame after it waits for the next call.
    frames = frame(BINARY, b"a" * 8, fin=False) + frame(CONT, b"b" * 8) + frame(TEXT, b"c" * 8)
    assert not session.receive(frames, out)
    assert session.messages == [b"a" * 8 + b"b" * 8]
    left = session.unconsumed
    assert left == len(frame(TEXT, b"c" * 8))
    session.unconsumed = 0
    assert not session.receive(frames[-left:], out)
    assert session.messages[-1] == "c" * 8 and session.unconsumed == 0
