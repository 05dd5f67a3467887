"""Golden vectors, round trips and hostile input for the frame codec."""

from __future__ import annotations

import array
import tracemalloc
from collections.abc import Callable

import gev_protobuf
import pytest
from gev_protobuf import (
    DEFAULT_MAX_FRAME_SIZE,
    MAX_FRAME_LENGTH,
    MAX_TYPE_NAME_SIZE,
    FrameDecoder,
    FrameError,
    _framing,
    pack_message,
    parse_frame,
    scan_frames,
)

ALL_BYTE_VALUES_HEX = (
    "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f"
    "202122232425262728292a2b2c2d2e2f303132333435363738393a3b3c3d3e3f"
    "404142434445464748494a4b4c4d4e4f505152535455565758595a5b5c5d5e5f"
    "606162636465666768696a6b6c6d6e6f707172737475767778797a7b7c7d7e7f"
    "808182838485868788898a8b8c8d8e8f909192939495969798999a9b9c9d9e9f"
    "a0a1a2a3a4a5a6a7a8a9aaabacadaeafb0b1b2b3b4b5b6b7b8b9babbbcbdbebf"
    "c0c1c2c3c4c5c6c7c8c9cacbcccdcecfd0d1d2d3d4d5d6d7d8d9dadbdcdddedf"
    "e0e1e2e3e4e5e6e7e8e9eaebecedeeeff0f1f2f3f4f5f6f7f8f9fafbfcfdfeff"
)

# (type name, payload, expected frame as hex, spaces between fields). Headers are worked out
# by hand from Go gev's PackMessage: u32 BE 2 + len(type) + len(payload), u16 BE len(type).
GOLDEN: list[tuple[str, bytes, str]] = [
    # The worked example from gev: PackMessage("msg1", []byte{0x08, 0x01}).
    ("msg1", b"\x08\x01", "00000008 0004 6d736731 0801"),
    # Minimal frame: empty type, empty payload (gev's `Length() > 6` check stalls on it).
    ("", b"", "00000002 0000"),
    # Empty payload, e.g. a protobuf message with every field at its default.
    ("msg1", b"", "00000006 0004 6d736731"),
    # 300-byte type name made of 150 two-byte characters: lengths count bytes, not chars.
    ("\u00e9" * 150, b"\x08\x01", "00000130 012c " + "c3a9" * 150 + " 0801"),
    # 4 KiB payload: 2 + 12 + 4096 = 4110 = 0x100e.
    (
        "gevtest.Msg2",
        bytes(range(256)) * 16,
        "0000100e 000c 676576746573742e4d736732 " + ALL_BYTE_VALUES_HEX * 16,
    ),
]
GOLDEN_IDS = ["gev-example", "minimal", "empty-payload", "300-byte-type", "4KiB-payload"]


def _decode_all(
    data: bytes, max_frame_size: int = DEFAULT_MAX_FRAME_SIZE
) -> list[tuple[str, bytes]]:
    decoder = FrameDecoder(max_frame_size)
    decoder.feed(data)
    return list(decoder)


def _parse_all(
    data: bytes, max_frame_size: int = DEFAULT_MAX_FRAME_SIZE
) -> tuple[list[tuple[str, bytes]], int]:
    frames: list[tuple[str, bytes]] = []
    offset = 0
    while (result := parse_frame(data, offset, max_frame_size)) is not None:
        offset, name, payload = result
        frames.append((name, payload))
    return frames, offset


# --- packing ----------------------------------------------------------------------------


@pytest.mark.parametrize(("type_name", "payload", "expected"), GOLDEN, ids=GOLDEN_IDS)
def test_pack_golden(type_name: str, payload: bytes, expected: str) -> None:
    assert pack_message(type_name, payload) == bytes.fromhex(expected)


def test_pack_gev_example_bytes() -> None:
    assert pack_message("msg1", b"\x08\x01") == bytes(
        [0x00, 0x00, 0x00, 0x08, 0x00, 0x04, 0x6D, 0x73, 0x67, 0x31, 0x08, 0x01]
    )


@pytest.mark.parametrize(
    "payload", [bytearray(b"\x08\x01"), memoryview(b"\x08\x01"), memoryview(b"xx\x08\x01")[2:]]
)
def test_pack_accepts_bytes_like(payload: gev_protobuf.BytesLike) -> None:
    assert pack_message("msg1", payload) == pack_message("msg1", b"\x08\x01")


def test_pack_wide_memoryview_counts_bytes_not_items() -> None:
    items = array.array("I", [1, 2])
    frame = pack_message("t", memoryview(items))
    assert frame[:4] == (2 + 1 + 2 * items.itemsize).to_bytes(4, "big")
    assert frame[7:] == items.tobytes()


@pytest.mark.parametrize("payload", ["text", 3, None])
def test_pack_rejects_non_bytes_payload(payload: object) -> None:
    with pytest.raises(TypeError):
        pack_message("msg1", payload)  # type: ignore[arg-type]


@pytest.mark.parametrize("type_name", [b"msg1", 1, None])
def test_pack_rejects_non_str_type_name(type_name: object) -> None:
    # The message names str and what was given; its wording is mypyc's where the framing is
    # compiled (it checks the annotation on entry) and ours in pure Python.
    kind = type(type_name).__name__ if type_name is not None else "None"
    message = rf"(type_name must be str, not|str object expected; got) {kind}"
    with pytest.raises(TypeError, match=message):
        pack_message(type_name, b"")  # type: ignore[arg-type]


def test_pack_type_name_limit() -> None:
    longest = "a" * MAX_TYPE_NAME_SIZE
    frame = pack_message(longest, b"p")
    assert frame[4:6] == b"\xff\xff"
    assert scan_frames(frame) == ([(longest, b"p")], len(frame))
    with pytest.raises(FrameError, match=r"65536 bytes in UTF-8.*at most 65535"):
        pack_message("a" * (MAX_TYPE_NAME_SIZE + 1), b"")
    # The limit is in bytes: 32768 two-byte characters do not fit either.
    with pytest.raises(FrameError, match="65536 bytes"):
        pack_message("\u00e9" * 32768, b"")


def test_pack_rejects_unencodable_type_name() -> None:
    with pytest.raises(FrameError, match="cannot be encoded as UTF-8"):
        pack_message("bad\ud800", b"")


def test_pack_max_frame_size() -> None:
    assert len(pack_message("msg1", b"x" * 10, max_frame_size=16)) == 20  # length == 16
    with pytest.raises(FrameError, match=r"length 17 \(2 \+ 4-byte type name \+ 11-byte"):
        pack_message("msg1", b"x" * 11, max_frame_size=16)


def test_pack_u32_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    # A real 4 GiB payload is too much for a unit test; shrink the format limit instead.
    monkeypatch.setattr(_framing, "MAX_FRAME_LENGTH", 100)
    pack_message("t", b"x" * 97)
    with pytest.raises(FrameError, match=r"length 101 .* exceeds the limit 100"):
        pack_message("t", b"x" * 98)
    # A caller's bound above the format limit does not lift it.
    with pytest.raises(FrameError, match="exceeds the limit 100"):
        pack_message("t", b"x" * 98, max_frame_size=1000)


# --- decoding valid input ------------------------------------------------------------------


@pytest.mark.parametrize(("type_name", "payload", "expected"), GOLDEN, ids=GOLDEN_IDS)
def test_decode_golden(type_name: str, payload: bytes, expected: str) -> None:
    frame = bytes.fromhex(expected)
    assert scan_frames(frame) == ([(type_name, payload)], len(frame))
    assert scan_frames(memoryview(bytearray(frame))) == ([(type_name, payload)], len(frame))
    assert parse_frame(frame) == (len(frame), type_name, payload)
    assert _decode_all(frame) == [(type_name, payload)]


def test_minimal_frame_does_not_stall() -> None:
    minimal = b"\x00\x00\x00\x02\x00\x00"
    assert scan_frames(minimal) == ([("", b"")], 6)
    assert parse_frame(minimal) == (6, "", b"")
    decoder = FrameDecoder()
    decoder.feed(minimal)
    assert decoder.next_frame() == ("", b"")
    assert decoder.buffered == 0


@pytest.mark.parametrize(("type_name", "payload", "expected"), GOLDEN, ids=GOLDEN_IDS)
def test_incomplete_prefixes_consume_nothing(type_name: str, payload: bytes, expected: str) -> None:
    frame = bytes.fromhex(expected)
    for cut in range(len(frame)):
        part = frame[:cut]
        assert scan_frames(part) == ([], 0)
        assert scan_frames(memoryview(bytearray(part))) == ([], 0)
        assert parse_frame(part) is None


def test_payloads_are_independent_bytes() -> None:
    stream = pack_message("a", b"one") + pack_message("b", b"two")
    buf = bytearray(stream)
    frames, consumed = scan_frames(memoryview(buf))
    buf[:] = b"\x00" * len(buf)  # the reactor reuses its read buffer right after the call
    assert frames == [("a", b"one"), ("b", b"two")]
    assert consumed == len(stream)
    assert all(type(name) is str and type(payload) is bytes for name, payload in frames)


def test_scan_many_merged_frames_with_partial_tail() -> None:
    expected = [(f"type{i % 7}", bytes([i % 256]) * (i % 50)) for i in range(500)]
    stream = b"".join(pack_message(t, p) for t, p in expected)
    tail = pack_message("tail", b"x" * 100)[:-1]
    for data in (stream + tail, memoryview(bytearray(stream + tail)), bytearray(stream + tail)):
        assert scan_frames(data) == (expected, len(stream))
    assert _parse_all(stream + tail) == (expected, len(stream))


def test_parse_frame_walks_offsets() -> None:
    one, two = pack_message("a", b"1"), pack_message("bb", b"22")
    data = one + two
    assert parse_frame(data, 0) == (len(one), "a", b"1")
    assert parse_frame(data, len(one)) == (len(data), "bb", b"22")
    assert parse_frame(data, len(data)) is None


def test_decoder_split_at_every_byte_boundary() -> None:
    expected = [(t, p) for t, p, _ in GOLDEN]
    stream = b"".join(bytes.fromhex(h) for _, _, h in GOLDEN)
    for cut in range(len(stream) + 1):
        decoder = FrameDecoder()
        decoder.feed(stream[:cut])
        got = list(decoder)
        decoder.feed(stream[cut:])
        got.extend(decoder)
        assert got == expected, cut
        assert decoder.buffered == 0


def test_decoder_byte_by_byte() -> None:
    expected = [(t, p) for t, p, _ in GOLDEN]
    stream = b"".join(bytes.fromhex(h) for _, _, h in GOLDEN)
    decoder = FrameDecoder()
    got: list[tuple[str, bytes]] = []
    for i in range(len(stream)):
        decoder.feed(stream[i : i + 1])
        got.extend(decoder)
    assert got == expected


def test_decoder_accepts_bytes_like() -> None:
    frame = pack_message("msg1", b"\x08\x01")
    decoder = FrameDecoder()
    decoder.feed(bytearray(frame[:5]))
    decoder.feed(memoryview(frame)[5:])
    assert decoder.next_frame() == ("msg1", b"\x08\x01")
    assert decoder.next_frame() is None


def test_decoder_rejects_bad_bound() -> None:
    for bad in (1, 0, -1, MAX_FRAME_LENGTH + 1):
        with pytest.raises(ValueError, match="max_frame_size must be between 2 and"):
            FrameDecoder(bad)
    assert FrameDecoder(2).max_frame_size == 2


# --- hostile input ---------------------------------------------------------------------------

Decode = Callable[[bytes], object]


def _via_decoder(data: bytes) -> object:
    decoder = FrameDecoder()
    decoder.feed(data)
    return list(decoder)


DECODERS: list[Decode] = [
    scan_frames,
    lambda data: scan_frames(memoryview(bytearray(data))),
    _parse_all,
    _via_decoder,
]
DECODER_IDS = ["scan-bytes", "scan-memoryview", "parse_frame", "FrameDecoder"]

HOSTILE: list[tuple[str, str]] = [
    # Claimed length 0xFFFFFFFF: rejected from the 4 length bytes alone.
    ("ffffffff", r"length 4294967295 \(0xffffffff\), which exceeds max_frame_size 4194304"),
    ("ffffffff0004", "declares length 4294967295"),
    ("00400001", "declares length 4194305"),  # DEFAULT_MAX_FRAME_SIZE + 1
    ("00000000", "declares length 0, which is smaller than the 2-byte type-name length field"),
    ("00000001ff", "declares length 1, which is smaller"),
    ("00000004 0005 aabb", "type-name length 5, but its length 4 leaves only 2 bytes"),
    ("00000002 ffff", "type-name length 65535, but its length 2 leaves only 0 bytes"),
    # Same fault in a frame whose body has not arrived yet: no need to wait for it.
    ("00000010 0020", "type-name length 32, but its length 16 leaves only 14 bytes"),
    ("00000004 0002 fffe", r"not valid UTF-8 \(invalid start byte at byte 0 of 2\): ff fe"),
    ("00000005 0003 61c328", "not valid UTF-8"),  # truncated two-byte sequence
]


@pytest.mark.parametrize("decode", DECODERS, ids=DECODER_IDS)
@pytest.mark.parametrize(("data", "message"), HOSTILE)
def test_hostile_input_raises_frame_error(decode: Decode, data: str, message: str) -> None:
    with pytest.raises(FrameError, match=message):
        decode(bytes.fromhex(data))


@pytest.mark.parametrize("wrap", [memoryview, bytearray, bytes])
@pytest.mark.parametrize(
    ("header", "message"),
    [
        ("ffffffff 0004", "declares length 4294967295"),
        ("00000010 0020", "type-name length 32, but its length 16"),
        ("00000001 0000", "declares length 1, which is smaller"),
    ],
)
def test_hostile_header_in_large_buffer(
    wrap: Callable[[bytes], gev_protobuf.BytesLike], header: str, message: str
) -> None:
    # Large buffers take the check-before-copy path in scan_frames.
    data = bytes.fromhex(header) + bytes(64 * 1024)
    with pytest.raises(FrameError, match=message):
        scan_frames(wrap(data))


@pytest.mark.parametrize("decode", DECODERS, ids=DECODER_IDS)
def test_error_reports_stream_offset(decode: Decode) -> None:
    good = pack_message("ok", b"1") * 3
    with pytest.raises(FrameError, match=f"frame at offset {len(good)} declares length 0"):
        decode(good + b"\x00\x00\x00\x00\x00\x00")


def test_frame_error_is_value_error() -> None:
    assert issubclass(FrameError, ValueError)


def test_oversized_claim_allocates_nothing() -> None:
    header = b"\xff\xff\xff\xff\x00\x04msg1"
    decoder = FrameDecoder()
    tracemalloc.start()
    try:
        with pytest.raises(FrameError):
            decoder.feed(header)
        with pytest.raises(FrameError):
            scan_frames(memoryview(bytearray(header)))
        with pytest.raises(FrameError):
            parse_frame(header)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 64 * 1024


def test_largest_allowed_claim_waits_without_allocating() -> None:
    # A claim of exactly max_frame_size is legal: wait for the body, but reserve nothing.
    header = (DEFAULT_MAX_FRAME_SIZE).to_bytes(4, "big") + b"\x00\x04msg1"
    decoder = FrameDecoder()
    tracemalloc.start()
    try:
        decoder.feed(header)
        assert decoder.next_frame() is None
        assert scan_frames(memoryview(bytearray(header))) == ([], 0)
        assert parse_frame(header) is None
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 64 * 1024
    assert decoder.buffered == len(header)


def test_incomplete_large_frame_is_not_copied() -> None:
    # The reactor passes its whole accumulated buffer on every read while a big frame trickles
    # in; copying it each time would make receiving that frame quadratic.
    partial = pack_message("big", bytes(2 * 1024 * 1024))[: 1024 * 1024]
    view, array_ = memoryview(bytearray(partial)), bytearray(partial)
    tracemalloc.start()
    try:
        assert scan_frames(view) == ([], 0)
        assert scan_frames(array_) == ([], 0)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 64 * 1024


def test_small_bound_is_enforced_everywhere() -> None:
    frame = pack_message("t", b"x" * 20)  # length 23
    assert scan_frames(frame, 23) == ([("t", b"x" * 20)], len(frame))
    with pytest.raises(FrameError, match="exceeds max_frame_size 22"):
        scan_frames(frame, 22)
    with pytest.raises(FrameError, match="exceeds max_frame_size 22"):
        parse_frame(frame[:4], 0, 22)
    decoder = FrameDecoder(22)
    with pytest.raises(FrameError, match="exceeds max_frame_size 22"):
        decoder.feed(frame[:4])


def test_decoder_stays_failed() -> None:
    decoder = FrameDecoder()
    decoder.feed(pack_message("ok", b""))
    decoder.feed(b"\x00\x00\x00\x01")  # the good frame is still at the head: no error yet
    assert decoder.next_frame() == ("ok", b"")
    with pytest.raises(FrameError) as first:
        decoder.next_frame()
    assert decoder.buffered == 0
    with pytest.raises(FrameError) as again:
        decoder.feed(pack_message("ok", b""))
    assert again.value is first.value
    with pytest.raises(FrameError):
        decoder.next_frame()


def test_scan_discards_frames_before_an_error() -> None:
    with pytest.raises(FrameError):
        scan_frames(pack_message("ok", b"") + b"\xff\xff\xff\xff")


def test_name_cache_is_bounded() -> None:
    names = [f"n{i}" for i in range(3 * _framing._NAME_CACHE_MAX_ENTRIES)]
    frames, _ = scan_frames(b"".join(pack_message(n, b"") for n in names))
    assert [n for n, _ in frames] == names
    assert len(_framing._decoded_names) <= _framing._NAME_CACHE_MAX_ENTRIES
    long_name = "L" * (_framing._NAME_CACHE_MAX_NAME_SIZE + 1)
    assert scan_frames(pack_message(long_name, b""))[0] == [(long_name, b"")]
    assert long_name.encode() not in _framing._decoded_names
    assert long_name not in _framing._name_blocks


def test_public_api() -> None:
    assert gev_protobuf.__version__ == "0.1.0"
    for name in gev_protobuf.__all__:
        assert hasattr(gev_protobuf, name), name
    assert {
        "pack_message",
        "FrameError",
        "FrameDecoder",
        "MessageRegistry",
        "UnknownMessageType",
        "DEFAULT_MAX_FRAME_SIZE",
        "scan_frames",
        "parse_frame",
    } <= set(gev_protobuf.__all__)
    assert DEFAULT_MAX_FRAME_SIZE == 4 * 1024 * 1024
