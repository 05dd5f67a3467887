"""The native XOR kernel against the pure-Python unmask it replaces."""

from __future__ import annotations

import os

import pytest
from gev_websocket import _fastpath
from hypothesis import given
from hypothesis import strategies as st

try:
    from gev_websocket._unmask import apply_mask, unmask_frame
except ImportError:
    if os.environ.get("GEV_EXPECT_COMPILED") == "1":
        raise
    pytest.skip("the native unmask is not built here (pure install)", allow_module_level=True)


def _reference(data: bytes, key: bytes) -> bytes:
    return bytes(b ^ key[i % 4] for i, b in enumerate(data))


@given(st.binary(max_size=5000), st.binary(min_size=4, max_size=4))
def test_matches_the_byte_by_byte_definition(data: bytes, key: bytes) -> None:
    assert apply_mask(data, key) == _reference(data, key)


@pytest.mark.parametrize("n", [*range(0, 20), 125, 126, 127, 1023, 1024, 1025, 65536 + 3])
def test_every_length_and_the_pure_fallback_agree(n: int) -> None:
    data = bytes((i * 7 + 3) & 0xFF for i in range(n))
    key = 0x9A3F01C2
    expected = _reference(data, key.to_bytes(4, "big"))
    assert apply_mask(data, key.to_bytes(4, "big")) == expected
    # the fallbacks of _fastpath.unmask: big-int XOR up to 1 KiB, translate beyond
    saved = _fastpath._apply_mask
    try:
        _fastpath._apply_mask = None
        assert _fastpath.unmask(data, key) == expected
    finally:
        _fastpath._apply_mask = saved


def test_accepts_every_bytes_like_and_returns_bytes() -> None:
    data = b"hello, websocket"
    key = b"\x01\x02\x03\x04"
    want = _reference(data, key)
    for arg in (data, bytearray(data), memoryview(data), memoryview(b"xx" + data)[2:]):
        out = apply_mask(arg, key)
        assert type(out) is bytes and out == want
    assert apply_mask(data, bytearray(key)) == want
    assert apply_mask(apply_mask(data, key), key) == data  # an involution


def test_rejects_a_mask_that_is_not_four_bytes_and_non_buffers() -> None:
    with pytest.raises(ValueError, match="4 bytes"):
        apply_mask(b"abc", b"\x00\x01\x02")
    with pytest.raises(TypeError):
        apply_mask("text", b"\x00\x01\x02\x03")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        apply_mask(b"abc")  # type: ignore[call-arg]


@given(st.binary(max_size=5000), st.binary(min_size=4, max_size=4), st.binary(max_size=20))
def test_unmask_frame_reads_the_key_before_the_payload(
    payload: bytes, key: bytes, before: bytes
) -> None:
    data = before + key + payload + b"trailing"
    start = len(before) + 4
    want = _reference(payload, key)
    for arg in (data, bytearray(data), memoryview(data)):
        out = unmask_frame(arg, start, len(payload))
        assert type(out) is bytes and out == want


def test_unmask_frame_rejects_a_frame_outside_the_buffer() -> None:
    for start, size in ((3, 0), (4, 3), (4, -1), (10, 0)):
        with pytest.raises(ValueError, match="masking key"):
            unmask_frame(b"abcdef", start, size)
    with pytest.raises(TypeError):
        unmask_frame("text", 4, 0)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        unmask_frame(b"abcdef", 4)  # type: ignore[call-arg]
