"""Unit tests for gev_ringbuffer.RingBuffer: one behaviour per test."""

from __future__ import annotations

import array
import socket

import gev_ringbuffer
import pytest
from gev_ringbuffer import (
    DOUBLING_LIMIT,
    MIN_CAPACITY,
    SHRINK_THRESHOLD,
    RingBuffer,
    RingBufferEmpty,
    RingBufferError,
    RingBufferOverflow,
)


def positioned(cap: int, start: int, data: bytes) -> RingBuffer:
    """A RingBuffer of exactly ``cap`` whose readable ``data`` begins at index ``start``.

    Draining snaps the read index to 0, so the cursor is moved by writing filler plus
    the first data byte and retrieving only the filler.
    """
    assert 0 <= start < cap and 1 <= len(data) <= cap
    rb = RingBuffer(cap)
    rb.write(b"\xee" * start + data[:1])
    rb.retrieve(start)
    rb.write(data[1:])
    assert rb.capacity == cap
    return rb


def joined(parts: tuple[memoryview, memoryview]) -> bytes:
    return bytes(parts[0]) + bytes(parts[1])


# --------------------------------------------------------------------- package


def test_version_is_exported() -> None:
    assert gev_ringbuffer.__version__ == "0.1.0"


def test_all_names_resolve() -> None:
    for name in gev_ringbuffer.__all__:
        assert hasattr(gev_ringbuffer, name)


def test_uses_slots() -> None:
    rb = RingBuffer()
    with pytest.raises(AttributeError):
        rb.some_attribute = 1  # type: ignore[attr-defined]


def test_empty_error_is_index_error() -> None:
    assert issubclass(RingBufferEmpty, IndexError)
    assert issubclass(RingBufferEmpty, RingBufferError)


def test_overflow_error_is_buffer_error() -> None:
    assert issubclass(RingBufferOverflow, BufferError)
    assert issubclass(RingBufferOverflow, RingBufferError)


# --------------------------------------------------------------------- construction


def test_default_buffer_is_lazy() -> None:
    rb = RingBuffer()
    assert (rb.capacity, rb.length, rb.free) == (0, 0, 0)


def test_explicit_capacity_is_allocated_eagerly() -> None:
    rb = RingBuffer(100)
    assert rb.capacity == 100
    assert rb.free == 100


def test_negative_capacity_rejected() -> None:
    with pytest.raises(ValueError):
        RingBuffer(-1)


def test_max_capacity_below_capacity_rejected() -> None:
    with pytest.raises(ValueError):
        RingBuffer(100, max_capacity=50)


def test_max_capacity_zero_rejected() -> None:
    with pytest.raises(ValueError):
        RingBuffer(max_capacity=0)


def test_max_capacity_property() -> None:
    assert RingBuffer(8, max_capacity=16).max_capacity == 16
    assert RingBuffer().max_capacity is None


def test_first_write_on_lazy_buffer_allocates_min_capacity() -> None:
    rb = RingBuffer()
    rb.write(b"abc")
    assert rb.capacity == MIN_CAPACITY


def test_first_large_write_on_lazy_buffer_allocates_enough() -> None:
    rb = RingBuffer()
    rb.write(b"x" * 1000)
    assert rb.capacity == 1024


def test_empty_write_does_not_allocate() -> None:
    rb = RingBuffer()
    assert rb.write(b"") == 0
    assert rb.capacity == 0


# --------------------------------------------------------------------- sizes & dunders


def test_len_and_length_agree() -> None:
    rb = RingBuffer()
    rb.write(b"hello")
    assert len(rb) == rb.length == 5


def test_bool_reflects_emptiness() -> None:
    rb = RingBuffer()
    assert not rb
    rb.write(b"x")
    assert rb


def test_is_empty() -> None:
    rb = RingBuffer(4)
    assert rb.is_empty
    rb.write(b"x")
    assert not rb.is_empty


def test_is_full_when_length_equals_capacity() -> None:
    rb = RingBuffer(4)
    rb.write(b"abc")
    assert not rb.is_full
    rb.write(b"d")
    assert rb.is_full


def test_empty_lazy_buffer_is_not_full() -> None:
    assert not RingBuffer().is_full


def test_free_is_capacity_minus_length() -> None:
    rb = RingBuffer(10)
    rb.write(b"abc")
    assert rb.free == 7


def test_repr_mentions_lengths() -> None:
    rb = RingBuffer(16, max_capacity=32)
    rb.write(b"abcd")
    rb.virtual_skip(1)
    text = repr(rb)
    assert "length=4" in text
    assert "capacity=16" in text
    assert "virtual_length=3" in text
    assert "max_capacity=32" in text


def test_repr_marks_external_data() -> None:
    assert "external=True" in repr(RingBuffer.wrap(b"abc"))


def test_bytes_dunder() -> None:
    rb = RingBuffer()
    rb.write(b"abc")
    assert bytes(rb) == b"abc"


def test_to_bytes_does_not_consume() -> None:
    rb = RingBuffer()
    rb.write(b"abc")
    assert rb.to_bytes() == b"abc"
    assert len(rb) == 3


def test_to_bytes_of_wrapped_data() -> None:
    assert positioned(8, 6, b"abcde").to_bytes() == b"abcde"


def test_to_bytes_of_empty_buffer() -> None:
    assert RingBuffer().to_bytes() == b""


# --------------------------------------------------------------------- write


def test_write_returns_number_of_bytes() -> None:
    assert RingBuffer().write(b"hello") == 5


def test_write_accepts_bytearray() -> None:
    rb = RingBuffer()
    rb.write(bytearray(b"abc"))
    assert rb.to_bytes() == b"abc"


def test_write_accepts_memoryview_slice() -> None:
    rb = RingBuffer()
    rb.write(memoryview(b"xxabcxx")[2:5])
    assert rb.to_bytes() == b"abc"


def test_write_counts_bytes_of_wide_memoryview() -> None:
    data = array.array("I", [1, 2])
    rb = RingBuffer()
    assert rb.write(memoryview(data)) == 2 * data.itemsize
    assert rb.to_bytes() == data.tobytes()


def test_write_accepts_strided_memoryview() -> None:
    rb = RingBuffer()
    rb.write(memoryview(b"a-b-c-")[::2])
    assert rb.to_bytes() == b"abc"


def test_write_across_wrap_point() -> None:
    rb = RingBuffer(8)
    rb.write(b"123456")
    rb.retrieve(5)
    rb.write(b"abcdef")
    assert rb.capacity == 8
    assert rb.to_bytes() == b"6abcdef"


def test_write_byte_appends() -> None:
    rb = RingBuffer()
    rb.write_byte(0x41)
    rb.write_byte(0)
    assert rb.to_bytes() == b"A\x00"


def test_write_byte_rejects_out_of_range() -> None:
    rb = RingBuffer()
    with pytest.raises(ValueError):
        rb.write_byte(256)
    with pytest.raises(ValueError):
        rb.write_byte(-1)
    assert rb.capacity == 0


def test_write_byte_grows_full_buffer() -> None:
    rb = RingBuffer(2)
    rb.write(b"ab")
    rb.write_byte(ord("c"))
    assert rb.to_bytes() == b"abc"
    assert rb.capacity == 4


def test_write_byte_across_wrap_point() -> None:
    rb = positioned(4, 3, b"a")
    rb.write_byte(ord("b"))
    assert rb.to_bytes() == b"ab"
    assert rb.capacity == 4


def test_write_of_own_peek_view_is_safe() -> None:
    rb = RingBuffer(64)
    rb.write(b"abcdef")
    first, _ = rb.peek(3)
    rb.write(first)
    assert rb.to_bytes() == b"abcdefabc"


# --------------------------------------------------------------------- read


def test_read_returns_requested_bytes_in_order() -> None:
    rb = RingBuffer()
    rb.write(b"hello world")
    assert rb.read(5) == b"hello"
    assert rb.read(6) == b" world"


def test_read_returns_bytes_type() -> None:
    rb = RingBuffer()
    rb.write(b"abc")
    assert type(rb.read(2)) is bytes


def test_read_more_than_available_returns_all() -> None:
    rb = RingBuffer()
    rb.write(b"abc")
    assert rb.read(100) == b"abc"
    assert rb.is_empty


def test_read_zero_returns_empty() -> None:
    rb = RingBuffer()
    rb.write(b"abc")
    assert rb.read(0) == b""
    assert len(rb) == 3


def test_read_negative_raises() -> None:
    with pytest.raises(ValueError):
        RingBuffer().read(-1)


def test_read_from_empty_returns_empty() -> None:
    assert RingBuffer().read(10) == b""


def test_read_across_wrap_point() -> None:
    rb = positioned(8, 5, b"abcdefg")
    assert rb.read(7) == b"abcdefg"


def test_read_ending_exactly_at_block_end() -> None:
    rb = positioned(8, 5, b"abcdef")
    assert rb.read(3) == b"abc"
    assert rb.read(3) == b"def"


def test_read_byte_returns_int() -> None:
    rb = RingBuffer()
    rb.write(b"\xff\x01")
    assert rb.read_byte() == 255
    assert rb.read_byte() == 1


def test_read_byte_on_empty_raises() -> None:
    with pytest.raises(RingBufferEmpty):
        RingBuffer().read_byte()


def test_read_byte_across_wrap_point() -> None:
    rb = positioned(4, 3, b"ab")
    assert rb.read_byte() == ord("a")
    assert rb.read_byte() == ord("b")


def test_read_into_bytearray() -> None:
    rb = RingBuffer()
    rb.write(b"abcdef")
    out = bytearray(4)
    assert rb.read_into(out) == 4
    assert out == b"abcd"
    assert rb.to_bytes() == b"ef"


def test_read_into_larger_target_reads_available() -> None:
    rb = RingBuffer()
    rb.write(b"ab")
    out = bytearray(b"....")
    assert rb.read_into(out) == 2
    assert out == b"ab.."


def test_read_into_memoryview_slice() -> None:
    rb = RingBuffer()
    rb.write(b"abc")
    out = bytearray(b"......")
    assert rb.read_into(memoryview(out)[2:5]) == 3
    assert out == b"..abc."


def test_read_into_across_wrap_point() -> None:
    rb = positioned(8, 6, b"abcdef")
    out = bytearray(6)
    assert rb.read_into(out) == 6
    assert out == b"abcdef"


def test_read_into_readonly_target_raises() -> None:
    rb = RingBuffer()
    rb.write(b"abc")
    with pytest.raises(TypeError):
        rb.read_into(memoryview(b"xxx"))


def test_read_into_empty_returns_zero() -> None:
    assert RingBuffer().read_into(bytearray(4)) == 0


# --------------------------------------------------------------------- peek


def test_peek_does_not_consume() -> None:
    rb = RingBuffer()
    rb.write(b"abc")
    rb.peek(2)
    assert len(rb) == 3


def test_peek_contiguous_has_empty_second_part() -> None:
    rb = RingBuffer()
    rb.write(b"abcdef")
    first, second = rb.peek(4)
    assert bytes(first) == b"abcd"
    assert len(second) == 0


def test_peek_wrapped_returns_two_parts() -> None:
    rb = positioned(8, 6, b"abcdef")
    first, second = rb.peek(5)
    assert bytes(first) == b"ab"
    assert bytes(second) == b"cde"


def test_peek_more_than_available_is_clamped() -> None:
    rb = RingBuffer()
    rb.write(b"abc")
    assert joined(rb.peek(10)) == b"abc"


def test_peek_negative_raises() -> None:
    with pytest.raises(ValueError):
        RingBuffer().peek(-1)


def test_peek_of_lazy_buffer_is_empty() -> None:
    first, second = RingBuffer().peek(5)
    assert len(first) == len(second) == 0


def test_peek_is_zero_copy() -> None:
    rb = RingBuffer(8)
    rb.write(b"abc")
    first, _ = rb.peek(3)
    first[0] = ord("X")
    assert rb.to_bytes() == b"Xbc"


def test_peek_all_returns_everything() -> None:
    rb = positioned(8, 5, b"abcdefgh")
    assert joined(rb.peek_all()) == b"abcdefgh"


def test_peek_uint8() -> None:
    rb = RingBuffer()
    rb.write(b"\x00\x01")
    assert rb.peek_uint8() == 0
    assert len(rb) == 2


def test_peek_uint16_is_big_endian() -> None:
    rb = RingBuffer()
    rb.write(b"\x01\x02")
    assert rb.peek_uint16() == 0x0102


def test_peek_uint32_is_big_endian() -> None:
    rb = RingBuffer()
    rb.write(b"\x01\x02\x03\x04")
    assert rb.peek_uint32() == 0x01020304


def test_peek_uint64_is_big_endian() -> None:
    rb = RingBuffer()
    rb.write(bytes(range(1, 9)))
    assert rb.peek_uint64() == 0x0102030405060708


@pytest.mark.parametrize(
    ("method", "size"),
    [("peek_uint8", 1), ("peek_uint16", 2), ("peek_uint32", 4), ("peek_uint64", 8)],
)
def test_peek_uint_returns_none_when_short(method: str, size: int) -> None:
    rb = RingBuffer()
    rb.write(b"\xff" * (size - 1))
    assert getattr(rb, method)() is None


@pytest.mark.parametrize(
    ("method", "size"),
    [("peek_uint16", 2), ("peek_uint32", 4), ("peek_uint64", 8)],
)
def test_peek_uint_across_wrap_point(method: str, size: int) -> None:
    data = bytes(range(0xA0, 0xA0 + size))
    for start in range(1, 8):
        rb = positioned(8, start, data)
        assert getattr(rb, method)() == int.from_bytes(data, "big")


def test_peek_uint_does_not_consume() -> None:
    rb = RingBuffer()
    rb.write(b"\x00\x00\x00\x07")
    rb.peek_uint32()
    assert len(rb) == 4


# --------------------------------------------------------------------- retrieve


def test_retrieve_discards_prefix() -> None:
    rb = RingBuffer()
    rb.write(b"abcdef")
    assert rb.retrieve(2) == 2
    assert rb.to_bytes() == b"cdef"


def test_retrieve_more_than_available_empties() -> None:
    rb = RingBuffer()
    rb.write(b"abc")
    assert rb.retrieve(10) == 3
    assert rb.is_empty


def test_retrieve_negative_raises() -> None:
    with pytest.raises(ValueError):
        RingBuffer().retrieve(-1)


def test_retrieve_across_wrap_point() -> None:
    rb = positioned(8, 6, b"abcdef")
    rb.retrieve(3)
    assert rb.to_bytes() == b"def"


def test_retrieve_all_returns_count() -> None:
    rb = RingBuffer()
    rb.write(b"abcd")
    assert rb.retrieve_all() == 4
    assert rb.is_empty


# --------------------------------------------------------------------- virtual cursor


def test_virtual_read_advances_only_virtual_cursor() -> None:
    rb = RingBuffer()
    rb.write(b"abcdef")
    assert rb.virtual_read(2) == b"ab"
    assert rb.virtual_read(2) == b"cd"
    assert len(rb) == 6
    assert rb.virtual_length == 2


def test_virtual_length_starts_at_length() -> None:
    rb = RingBuffer()
    rb.write(b"abc")
    assert rb.virtual_length == 3


def test_virtual_read_clamps_to_virtual_length() -> None:
    rb = RingBuffer()
    rb.write(b"abc")
    rb.virtual_read(2)
    assert rb.virtual_read(10) == b"c"
    assert rb.virtual_read(1) == b""


def test_virtual_read_negative_raises() -> None:
    with pytest.raises(ValueError):
        RingBuffer().virtual_read(-1)


def test_virtual_read_across_wrap_point() -> None:
    rb = positioned(8, 5, b"abcdefg")
    rb.virtual_read(1)
    assert rb.virtual_read(5) == b"bcdef"


def test_virtual_read_starting_past_block_end() -> None:
    rb = positioned(8, 6, b"abcdef")
    rb.virtual_skip(3)
    assert rb.virtual_read(3) == b"def"


def test_virtual_flush_commits() -> None:
    rb = RingBuffer()
    rb.write(b"abcdef")
    rb.virtual_read(4)
    rb.virtual_flush()
    assert rb.to_bytes() == b"ef"
    assert rb.virtual_length == 2


def test_virtual_flush_without_virtual_reads_is_noop() -> None:
    rb = RingBuffer()
    rb.write(b"abc")
    rb.virtual_flush()
    assert rb.to_bytes() == b"abc"


def test_virtual_flush_to_empty_empties() -> None:
    rb = RingBuffer()
    rb.write(b"abc")
    rb.virtual_skip(3)
    rb.virtual_flush()
    assert rb.is_empty
    assert rb.virtual_length == 0


def test_virtual_flush_across_wrap_point() -> None:
    rb = positioned(8, 6, b"abcdef")
    rb.virtual_skip(4)
    rb.virtual_flush()
    assert rb.to_bytes() == b"ef"


def test_virtual_revert_rolls_back() -> None:
    rb = RingBuffer()
    rb.write(b"abcdef")
    rb.virtual_read(4)
    rb.virtual_revert()
    assert rb.virtual_length == 6
    assert rb.virtual_read(2) == b"ab"


def test_virtual_skip_returns_count_and_clamps() -> None:
    rb = RingBuffer()
    rb.write(b"abc")
    assert rb.virtual_skip(2) == 2
    assert rb.virtual_skip(5) == 1
    assert rb.virtual_length == 0


def test_virtual_skip_negative_raises() -> None:
    with pytest.raises(ValueError):
        RingBuffer().virtual_skip(-1)


def test_read_resets_virtual_cursor() -> None:
    rb = RingBuffer()
    rb.write(b"abcdef")
    rb.virtual_read(4)
    rb.read(1)
    assert rb.virtual_length == 5
    assert rb.virtual_read(1) == b"b"


def test_retrieve_resets_virtual_cursor() -> None:
    rb = RingBuffer()
    rb.write(b"abcdef")
    rb.virtual_read(4)
    rb.retrieve(1)
    assert rb.virtual_length == 5


def test_read_byte_resets_virtual_cursor() -> None:
    rb = RingBuffer()
    rb.write(b"abcdef")
    rb.virtual_read(4)
    rb.read_byte()
    assert rb.virtual_length == 5


def test_write_keeps_virtual_cursor() -> None:
    rb = RingBuffer()
    rb.write(b"abc")
    rb.virtual_read(2)
    rb.write(b"de")
    assert rb.virtual_read(10) == b"cde"


def test_growth_preserves_virtual_cursor() -> None:
    rb = positioned(8, 5, b"abcdef")
    rb.virtual_read(4)
    rb.write(b"ghijklmnop")
    assert rb.capacity > 8
    assert rb.virtual_read(100) == b"efghijklmnop"


def test_speculative_frame_parsing_pattern() -> None:
    # Length-prefixed frames arriving in arbitrary fragments.
    def try_parse(rb: RingBuffer) -> bytes | None:
        header = rb.virtual_read(2)
        if len(header) < 2:
            rb.virtual_revert()
            return None
        size = int.from_bytes(header, "big")
        if rb.virtual_length < size:
            rb.virtual_revert()
            return None
        body = rb.virtual_read(size)
        rb.virtual_flush()
        return body

    rb = RingBuffer(8)
    stream = b"\x00\x03abc\x00\x05hello\x00\x00"
    frames = []
    for i in range(len(stream)):
        rb.write(stream[i : i + 1])
        while (frame := try_parse(rb)) is not None:
            frames.append(frame)
    assert frames == [b"abc", b"hello", b""]
    assert rb.is_empty


# --------------------------------------------------------------------- growth


def test_growth_doubles_below_limit() -> None:
    rb = RingBuffer(16)
    rb.write(b"x" * 17)
    assert rb.capacity == 32


def test_growth_is_one_and_a_half_above_limit() -> None:
    rb = RingBuffer(DOUBLING_LIMIT)
    rb.write(b"x" * (DOUBLING_LIMIT + 1))
    assert rb.capacity == DOUBLING_LIMIT + DOUBLING_LIMIT // 2


def test_growth_preserves_order_of_wrapped_data() -> None:
    rb = positioned(8, 6, b"abcdefgh")
    rb.write(b"ijk")
    assert rb.to_bytes() == b"abcdefghijk"


def test_growth_leaves_outstanding_peek_views_valid() -> None:
    rb = RingBuffer(4)
    rb.write(b"abcd")
    first, _ = rb.peek(4)
    rb.write(b"efgh")
    assert bytes(first) == b"abcd"


def test_overflow_raises() -> None:
    rb = RingBuffer(4, max_capacity=8)
    rb.write(b"12345678")
    with pytest.raises(RingBufferOverflow):
        rb.write(b"9")


def test_overflow_changes_nothing() -> None:
    rb = RingBuffer(4, max_capacity=8)
    rb.write(b"abcde")
    rb.virtual_read(2)
    before = (rb.capacity, rb.to_bytes(), rb.virtual_length)
    with pytest.raises(RingBufferOverflow):
        rb.write(b"fghi")
    assert (rb.capacity, rb.to_bytes(), rb.virtual_length) == before


def test_growth_is_clamped_to_max_capacity() -> None:
    rb = RingBuffer(4, max_capacity=6)
    rb.write(b"abcdef")
    assert rb.capacity == 6
    assert rb.is_full


def test_write_byte_overflow_raises() -> None:
    rb = RingBuffer(2, max_capacity=2)
    rb.write(b"ab")
    with pytest.raises(RingBufferOverflow):
        rb.write_byte(1)


def test_writable_view_overflow_raises() -> None:
    rb = RingBuffer(2, max_capacity=4)
    with pytest.raises(RingBufferOverflow):
        rb.writable_view(5)
    assert rb.capacity == 2


def test_max_capacity_allows_exactly_full() -> None:
    rb = RingBuffer(max_capacity=10)
    rb.write(b"x" * 10)
    assert rb.capacity == 10


# --------------------------------------------------------------------- shrink


def big_burst(rb: RingBuffer) -> None:
    rb.write(b"x" * (SHRINK_THRESHOLD + 1))
    assert rb.capacity > SHRINK_THRESHOLD


def test_draining_via_retrieve_all_shrinks_to_initial() -> None:
    rb = RingBuffer(1024)
    big_burst(rb)
    rb.retrieve_all()
    assert rb.capacity == 1024


def test_draining_via_read_shrinks() -> None:
    rb = RingBuffer(1024)
    big_burst(rb)
    rb.read(len(rb))
    assert rb.capacity == 1024


def test_draining_via_read_into_shrinks() -> None:
    rb = RingBuffer(1024)
    big_burst(rb)
    rb.read_into(bytearray(len(rb)))
    assert rb.capacity == 1024


def test_draining_via_virtual_flush_shrinks() -> None:
    rb = RingBuffer(1024)
    big_burst(rb)
    rb.virtual_skip(len(rb))
    rb.virtual_flush()
    assert rb.capacity == 1024


def test_draining_via_read_byte_shrinks() -> None:
    rb = RingBuffer(1024)
    big_burst(rb)
    rb.retrieve(len(rb) - 1)
    rb.read_byte()
    assert rb.capacity == 1024


def test_lazy_buffer_shrinks_back_to_unallocated() -> None:
    rb = RingBuffer()
    big_burst(rb)
    rb.retrieve_all()
    assert rb.capacity == 0


def test_partial_drain_does_not_shrink() -> None:
    rb = RingBuffer(1024)
    big_burst(rb)
    cap = rb.capacity
    rb.retrieve(len(rb) - 1)
    assert rb.capacity == cap


def test_small_growth_is_kept_after_drain() -> None:
    rb = RingBuffer(16)
    rb.write(b"x" * 1000)
    cap = rb.capacity
    rb.retrieve_all()
    assert rb.capacity == cap


def test_large_initial_capacity_is_not_shrunk() -> None:
    init = 4 * SHRINK_THRESHOLD
    rb = RingBuffer(init)
    rb.write(b"x" * (init + 1))
    cap = rb.capacity
    rb.retrieve_all()
    assert rb.capacity == cap


def test_drain_rewinds_to_start_of_block() -> None:
    rb = RingBuffer(8)
    rb.write(b"abcde")
    rb.read(5)
    assert len(rb.writable_view(1)) == 8


def test_reset_empties() -> None:
    rb = RingBuffer()
    rb.write(b"abc")
    rb.virtual_skip(1)
    rb.reset()
    assert rb.is_empty
    assert rb.virtual_length == 0


def test_reset_returns_to_initial_capacity() -> None:
    rb = RingBuffer(16)
    rb.write(b"x" * 100)
    rb.reset()
    assert rb.capacity == 16


def test_reset_frees_storage_of_lazy_buffer() -> None:
    rb = RingBuffer()
    rb.write(b"abc")
    rb.reset()
    assert rb.capacity == 0


def test_reset_keeps_storage_of_initial_size() -> None:
    rb = RingBuffer(16)
    rb.write(b"abc")
    view_before = rb.writable_view(1).obj
    rb.reset()
    assert rb.writable_view(1).obj is view_before


# --------------------------------------------------------------------- wrap / reset_to


def test_wrap_is_full() -> None:
    rb = RingBuffer.wrap(b"abcdef")
    assert len(rb) == rb.capacity == 6
    assert rb.is_full
    assert rb.free == 0


def test_wrap_does_not_copy() -> None:
    data = bytearray(b"abcdef")
    rb = RingBuffer.wrap(data)
    first, _ = rb.peek(3)
    assert first.obj is data


def test_wrap_keeps_given_memoryview() -> None:
    data = bytearray(b"abcdef")
    rb = RingBuffer.wrap(memoryview(data)[1:4])
    assert rb.to_bytes() == b"bcd"
    assert rb.peek(1)[0].obj is data


def test_wrap_reads_and_peeks() -> None:
    rb = RingBuffer.wrap(b"\x00\x02hi!")
    assert rb.peek_uint16() == 2
    assert rb.read(2) == b"\x00\x02"
    assert rb.read(2) == b"hi"
    assert len(rb) == 1


def test_wrap_virtual_ops() -> None:
    rb = RingBuffer.wrap(b"abcdef")
    assert rb.virtual_read(3) == b"abc"
    rb.virtual_flush()
    assert rb.to_bytes() == b"def"


def test_wrap_write_leaves_original_untouched() -> None:
    data = bytearray(b"abcdef")
    rb = RingBuffer.wrap(data)
    rb.read(4)
    rb.write(b"XYZ")
    assert rb.to_bytes() == b"efXYZ"
    assert data == b"abcdef"


def test_wrap_write_byte_copies_first() -> None:
    data = bytearray(b"ab")
    rb = RingBuffer.wrap(data)
    rb.read_byte()
    rb.write_byte(ord("c"))
    assert rb.to_bytes() == b"bc"
    assert data == b"ab"


def test_wrap_writable_view_copies_first() -> None:
    data = bytearray(b"abcd")
    rb = RingBuffer.wrap(data)
    rb.retrieve(2)
    view = rb.writable_view(2)
    view[:2] = b"!!"
    rb.commit(2)
    assert rb.to_bytes() == b"cd!!"
    assert data == b"abcd"


def test_wrap_commit_without_writable_view_raises() -> None:
    rb = RingBuffer.wrap(b"abcd")
    rb.retrieve(2)
    with pytest.raises(ValueError):
        rb.commit(1)


def test_wrap_accepts_wide_memoryview() -> None:
    data = array.array("H", [0x0102, 0x0304])
    rb = RingBuffer.wrap(memoryview(data))
    assert len(rb) == 4
    assert rb.to_bytes() == data.tobytes()


def test_wrap_accepts_strided_memoryview() -> None:
    rb = RingBuffer.wrap(memoryview(b"\x00-\x01-")[::2])
    assert rb.peek_uint16() == 1


def test_wrap_of_empty_data_is_empty() -> None:
    rb = RingBuffer.wrap(b"")
    assert rb.is_empty
    assert rb.capacity == 0


def test_wrap_drained_releases_data() -> None:
    data = bytearray(b"abc")
    rb = RingBuffer.wrap(data)
    rb.read(3)
    data.extend(b"more")  # would raise BufferError while still exported
    assert rb.capacity == 0


def test_wrap_then_write_after_drain_allocates() -> None:
    rb = RingBuffer.wrap(b"abc")
    rb.retrieve_all()
    rb.write(b"xyz")
    assert rb.to_bytes() == b"xyz"
    assert rb.capacity == MIN_CAPACITY


def test_write_after_reset_to_drains_uses_initial_capacity() -> None:
    rb = RingBuffer(16)
    rb.reset_to(b"abc")
    rb.retrieve_all()
    rb.write(b"x")
    assert rb.capacity == 16


def test_linear_view_of_wrapped_external_data_is_zero_copy() -> None:
    data = b"abcdef"
    rb = RingBuffer.wrap(data)
    rb.retrieve(2)
    view = rb.linear_view()
    assert view.obj is data
    assert bytes(view) == b"cdef"


def test_reset_to_replaces_contents() -> None:
    rb = RingBuffer(16)
    rb.write(b"old")
    rb.virtual_skip(1)
    rb.reset_to(b"new data")
    assert rb.to_bytes() == b"new data"
    assert rb.virtual_length == 8


def test_reset_to_reuses_object() -> None:
    rb = RingBuffer()
    for chunk in (b"one", b"two", b"three"):
        rb.reset_to(chunk)
        assert rb.read(10) == chunk


def test_reset_to_respects_max_capacity() -> None:
    rb = RingBuffer(max_capacity=4)
    rb.write(b"ab")
    with pytest.raises(RingBufferOverflow):
        rb.reset_to(b"abcde")
    assert rb.to_bytes() == b"ab"


def test_reset_after_reset_to_returns_to_initial_capacity() -> None:
    rb = RingBuffer(16)
    rb.reset_to(b"abc")
    rb.reset()
    assert rb.capacity == 16
    assert rb.is_empty


# --------------------------------------------------------------------- linear_view


def test_linear_view_of_contiguous_data_does_not_relocate() -> None:
    rb = RingBuffer(8)
    rb.write(b"abcdef")
    rb.retrieve(2)
    storage = rb.peek(1)[0].obj
    view = rb.linear_view()
    assert bytes(view) == b"cdef"
    assert view.obj is storage


def test_linear_view_compacts_wrapped_data() -> None:
    rb = positioned(8, 6, b"abcdef")
    view = rb.linear_view()
    assert bytes(view) == b"abcdef"
    assert rb.capacity == 8
    assert len(rb.peek_all()[1]) == 0


def test_linear_view_preserves_virtual_cursor() -> None:
    rb = positioned(8, 6, b"abcdef")
    rb.virtual_skip(3)
    rb.linear_view()
    assert rb.virtual_read(3) == b"def"


def test_linear_view_of_empty_buffer() -> None:
    assert len(RingBuffer().linear_view()) == 0


# --------------------------------------------------------------------- writable_view / commit


def test_writable_view_has_at_least_min_size() -> None:
    rb = RingBuffer()
    assert len(rb.writable_view(100)) >= 100


def test_writable_view_then_commit_makes_data_readable() -> None:
    rb = RingBuffer(16)
    rb.write(b"ab")
    view = rb.writable_view(3)
    view[:3] = b"cde"
    rb.commit(3)
    assert rb.to_bytes() == b"abcde"


def test_writable_view_does_not_change_length() -> None:
    rb = RingBuffer(16)
    rb.writable_view(4)
    assert rb.is_empty


def test_writable_view_negative_raises() -> None:
    with pytest.raises(ValueError):
        RingBuffer().writable_view(-1)


def test_writable_view_compacts_when_tail_too_small() -> None:
    rb = RingBuffer(8)
    rb.write(b"abcdef")
    rb.retrieve(4)  # data "ef" at [4, 6): tail 2, head 4
    view = rb.writable_view(5)
    assert len(view) == 6
    assert rb.capacity == 8
    view[:5] = b"ghijk"
    rb.commit(5)
    assert rb.to_bytes() == b"efghijk"


def test_writable_view_uses_gap_when_data_wraps() -> None:
    rb = positioned(8, 6, b"abcd")  # data at 6,7,0,1: gap [2, 6)
    view = rb.writable_view(4)
    assert len(view) == 4
    view[:] = b"efgh"
    rb.commit(4)
    assert rb.capacity == 8
    assert rb.to_bytes() == b"abcdefgh"


def test_writable_view_grows_when_free_space_is_short() -> None:
    rb = RingBuffer(8)
    rb.write(b"abcdef")
    view = rb.writable_view(10)
    assert len(view) >= 10
    assert rb.capacity >= 16
    assert rb.to_bytes() == b"abcdef"


def test_writable_view_when_data_ends_at_block_end() -> None:
    rb = positioned(8, 4, b"abcd")
    view = rb.writable_view(4)
    assert len(view) == 4
    view[:] = b"efgh"
    rb.commit(4)
    assert rb.to_bytes() == b"abcdefgh"


def test_commit_more_than_free_raises() -> None:
    rb = RingBuffer(4)
    rb.writable_view(1)
    with pytest.raises(ValueError):
        rb.commit(5)


def test_commit_negative_raises() -> None:
    rb = RingBuffer(4)
    with pytest.raises(ValueError):
        rb.commit(-1)


def test_commit_zero_is_noop() -> None:
    rb = RingBuffer(4)
    rb.writable_view(1)
    rb.commit(0)
    assert rb.is_empty


def test_writable_view_with_socket_recv_into() -> None:
    a, b = socket.socketpair()
    try:
        rb = RingBuffer(8)
        rb.write(b"head")
        rb.retrieve(2)
        payload = bytes(range(256)) * 4
        a.sendall(payload)
        received = 0
        while received < len(payload):
            n = b.recv_into(rb.writable_view(64))
            assert n > 0
            rb.commit(n)
            received += n
        assert rb.to_bytes() == b"ad" + payload
    finally:
        a.close()
        b.close()


def test_recv_into_small_ring_with_interleaved_reads() -> None:
    a, b = socket.socketpair()
    try:
        rb = RingBuffer(16, max_capacity=16)
        payload = bytes(range(200))
        a.sendall(payload)
        out = bytearray()
        received = 0
        while received < len(payload):
            view = rb.writable_view(1)
            n = b.recv_into(view, min(len(view), 7))
            assert n > 0
            rb.commit(n)
            received += n
            out += rb.read(5)
        out += rb.read(len(rb))
        assert bytes(out) == payload
        assert rb.capacity == 16
    finally:
        a.close()
        b.close()
