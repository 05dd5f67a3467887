"""Property tests: arbitrary bytes and randomly chunked valid streams."""

from __future__ import annotations

import os
from itertools import pairwise

from gev_protobuf import (
    DEFAULT_MAX_FRAME_SIZE,
    FrameDecoder,
    FrameError,
    _framing,
    pack_message,
    parse_frame,
    scan_frames,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

# GEV_PROTOBUF_FUZZ_EXAMPLES raises the example count for a longer soak.
SETTINGS = settings(
    max_examples=int(os.environ.get("GEV_PROTOBUF_FUZZ_EXAMPLES", "300")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)

# Any encodable text. An explicit alphabet: the default one makes Hypothesis compute its
# codec tables on a fresh checkout, which takes seconds.
names_alphabet = st.characters(exclude_categories=["Cs"])
type_names = st.text(names_alphabet, max_size=12)
payloads = st.binary(max_size=80)
frames = st.tuples(type_names, payloads)
max_sizes = st.one_of(st.integers(2, 64), st.just(DEFAULT_MAX_FRAME_SIZE))

# Mostly-garbage streams that still contain real frames and near-miss headers, so the
# decoder's accept and reject paths both get exercised.
segments = st.one_of(
    st.binary(max_size=24),
    frames.map(lambda f: pack_message(*f)),
    st.tuples(st.integers(0, 80), st.integers(0, 0xFFFF)).map(
        lambda h: h[0].to_bytes(4, "big") + h[1].to_bytes(2, "big")
    ),
)
hostile_streams = st.lists(segments, max_size=8).map(b"".join)


def _chunks(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    edges = [0, *points, len(data)]
    return [data[a:b] for a, b in pairwise(edges)]


def _scan_outcome(data: bytes, max_frame_size: int) -> tuple[list[tuple[str, bytes]], int] | None:
    try:
        return scan_frames(data, max_frame_size)
    except FrameError:
        return None


@SETTINGS
@given(data=hostile_streams, cuts=st.lists(st.integers(0, 400), max_size=6), bound=max_sizes)
def test_decoder_on_arbitrary_bytes(data: bytes, cuts: list[int], bound: int) -> None:
    decoder = FrameDecoder(bound)
    decoded: list[tuple[str, bytes]] = []
    failed = False
    try:
        for chunk in _chunks(data, cuts):
            decoder.feed(chunk)
            decoded.extend(decoder)
            # Whatever is left is one frame in progress, bounded whatever the peer claimed.
            assert decoder.buffered <= bound + 3
    except FrameError:
        failed = True

    # Every frame handed out re-packs to exactly the bytes it came from.
    repacked = b"".join(pack_message(name, payload) for name, payload in decoded)
    assert data.startswith(repacked)
    for name, payload in decoded:
        assert len(pack_message(name, payload)) - 4 <= bound

    # The one-shot scanners agree with the incremental decoder.
    outcome = _scan_outcome(data, bound)
    view_outcome = _scan_outcome(memoryview(bytearray(data)), bound)  # type: ignore[arg-type]
    assert view_outcome == outcome
    # Same through the check-before-copy path that scan_frames takes for large buffers.
    saved = _framing._COPY_CHECK_SIZE
    _framing._COPY_CHECK_SIZE = 0
    try:
        assert _scan_outcome(memoryview(bytearray(data)), bound) == outcome  # type: ignore[arg-type]
        assert _scan_outcome(bytearray(data), bound) == outcome  # type: ignore[arg-type]
    finally:
        _framing._COPY_CHECK_SIZE = saved
    if failed:
        assert outcome is None
    else:
        assert outcome == (decoded, len(data) - decoder.buffered)
        parsed, offset = [], 0
        while (result := parse_frame(data, offset, bound)) is not None:
            offset, name, payload = result
            parsed.append((name, payload))
        assert (parsed, offset) == outcome


@SETTINGS
@given(
    sent=st.lists(frames, max_size=20),
    cuts=st.lists(st.integers(0, 4000), max_size=12),
)
def test_valid_stream_any_chunking(sent: list[tuple[str, bytes]], cuts: list[int]) -> None:
    packed = [pack_message(name, payload) for name, payload in sent]
    stream = b"".join(packed)

    decoder = FrameDecoder()
    received: list[tuple[str, bytes]] = []
    for chunk in _chunks(stream, cuts):
        decoder.feed(chunk)
        received.extend(decoder)
    assert received == sent
    assert decoder.buffered == 0

    assert scan_frames(stream) == (sent, len(stream))

    # A reactor read can end anywhere: the scanner takes exactly the complete frames.
    for cut in _chunks(stream, cuts)[:-1]:
        end = len(cut)
        boundaries = [sum(map(len, packed[: i + 1])) for i in range(len(packed))]
        complete = sum(1 for b in boundaries if b <= end)
        got, consumed = scan_frames(memoryview(bytearray(stream[:end])))
        assert got == sent[:complete]
        assert consumed == (boundaries[complete - 1] if complete else 0)


@SETTINGS
@given(name=st.text(names_alphabet, max_size=40), payload=st.binary(max_size=300))
def test_pack_scan_round_trip(name: str, payload: bytes) -> None:
    frame = pack_message(name, payload)
    encoded = name.encode()
    assert frame[:4] == (2 + len(encoded) + len(payload)).to_bytes(4, "big")
    assert frame[4:6] == len(encoded).to_bytes(2, "big")
    assert frame[6:] == encoded + payload
    assert scan_frames(frame) == ([(name, payload)], len(frame))
