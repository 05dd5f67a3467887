"""Property tests: RingBuffer against a plain bytearray model, plus exhaustive wrap-around."""

from __future__ import annotations

import pytest
from gev_ringbuffer import SHRINK_THRESHOLD, RingBuffer, RingBufferEmpty, RingBufferOverflow
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    rule,
)

# Small sizes keep the buffer wrapping, growing and compacting constantly.
sizes = st.integers(min_value=0, max_value=24)
payloads = st.binary(max_size=24)


class RingBufferMachine(RuleBasedStateMachine):
    """The model is the readable bytes plus the virtual cursor's offset into them."""

    def __init__(self) -> None:
        super().__init__()
        self.rb = RingBuffer()
        self.model = bytearray()
        self.voff = 0
        self.init_cap = 0
        self.max_cap: int | None = None

    @initialize(
        capacity=st.sampled_from([0, 1, 2, 3, 5, 8, 16]),
        extra_max=st.one_of(st.none(), st.integers(min_value=0, max_value=40)),
    )
    def create(self, capacity: int, extra_max: int | None) -> None:
        self.init_cap = capacity
        self.max_cap = None if extra_max is None else max(capacity, 1) + extra_max
        self.rb = RingBuffer(capacity, max_capacity=self.max_cap)

    # ------------------------------------------------------------------ helpers

    def fits(self, n: int) -> bool:
        return self.max_cap is None or len(self.model) + n <= self.max_cap

    def consumed(self, n: int) -> None:
        del self.model[:n]
        self.voff = 0

    # ------------------------------------------------------------------ writes

    @rule(data=payloads, kind=st.sampled_from(["bytes", "bytearray", "memoryview"]))
    def write(self, data: bytes, kind: str) -> None:
        arg: bytes | bytearray | memoryview = data
        if kind == "bytearray":
            arg = bytearray(data)
        elif kind == "memoryview":
            arg = memoryview(b"<" + data + b">")[1:-1]
        if self.fits(len(data)):
            assert self.rb.write(arg) == len(data)
            self.model += data
        else:
            with pytest.raises(RingBufferOverflow):
                self.rb.write(arg)

    @rule(b=st.integers(min_value=0, max_value=255))
    def write_byte(self, b: int) -> None:
        if self.fits(1):
            self.rb.write_byte(b)
            self.model.append(b)
        else:
            with pytest.raises(RingBufferOverflow):
                self.rb.write_byte(b)

    @rule(min_size=sizes, data=payloads)
    def writable_view_and_commit(self, min_size: int, data: bytes) -> None:
        if not self.fits(min_size):
            cap_before = self.rb.capacity
            with pytest.raises(RingBufferOverflow):
                self.rb.writable_view(min_size)
            assert self.rb.capacity == cap_before
            return
        view = self.rb.writable_view(min_size)
        assert len(view) >= min_size
        assert len(view) <= self.rb.free
        n = min(len(view), len(data))
        view[:n] = data[:n]
        self.rb.commit(n)
        self.model += data[:n]

    @rule()
    def burst(self) -> None:
        # Big enough to push capacity past the shrink threshold.
        chunk = bytes(range(256)) * (SHRINK_THRESHOLD // 256 + 1)
        if self.fits(len(chunk)):
            self.rb.write(chunk)
            self.model += chunk
        else:
            with pytest.raises(RingBufferOverflow):
                self.rb.write(chunk)

    # ------------------------------------------------------------------ reads

    @rule(n=sizes)
    def read(self, n: int) -> None:
        assert self.rb.read(n) == self.model[:n]
        self.consumed(n)

    @rule(n=sizes)
    def read_into(self, n: int) -> None:
        buf = bytearray(n)
        got = self.rb.read_into(buf)
        expected = self.model[:n]
        assert got == len(expected)
        assert buf[:got] == expected
        self.consumed(n)

    @rule()
    def read_byte(self) -> None:
        if self.model:
            assert self.rb.read_byte() == self.model[0]
            self.consumed(1)
        else:
            with pytest.raises(RingBufferEmpty):
                self.rb.read_byte()

    @rule(n=sizes)
    def peek(self, n: int) -> None:
        first, second = self.rb.peek(n)
        assert bytes(first) + bytes(second) == self.model[:n]
        if len(second):
            # A second part only exists when the first runs to the end of storage.
            assert len(first) > 0
            assert len(first) < len(self.model[:n])

    @rule()
    def peek_all(self) -> None:
        first, second = self.rb.peek_all()
        assert bytes(first) + bytes(second) == self.model

    @rule(size=st.sampled_from([1, 2, 4, 8]))
    def peek_uint(self, size: int) -> None:
        got = getattr(self.rb, f"peek_uint{size * 8}")()
        if len(self.model) < size:
            assert got is None
        else:
            assert got == int.from_bytes(self.model[:size], "big")

    @rule(n=sizes)
    def retrieve(self, n: int) -> None:
        assert self.rb.retrieve(n) == min(n, len(self.model))
        self.consumed(n)

    @rule()
    def retrieve_all(self) -> None:
        assert self.rb.retrieve_all() == len(self.model)
        self.consumed(len(self.model))

    @rule()
    def linear_view(self) -> None:
        assert bytes(self.rb.linear_view()) == self.model
        # Afterwards the data is contiguous, so peek_all has no second part.
        assert len(self.rb.peek_all()[1]) == 0

    @rule()
    def reset(self) -> None:
        self.rb.reset()
        self.model.clear()
        self.voff = 0
        assert self.rb.capacity == self.init_cap

    @rule(data=payloads, as_view=st.booleans())
    def reset_to(self, data: bytes, as_view: bool) -> None:
        if self.max_cap is not None and len(data) > self.max_cap:
            with pytest.raises(RingBufferOverflow):
                self.rb.reset_to(data)
            return
        self.rb.reset_to(memoryview(data) if as_view else data)
        self.model = bytearray(data)
        self.voff = 0

    # ------------------------------------------------------------------ virtual cursor

    @rule(n=sizes)
    def virtual_read(self, n: int) -> None:
        expected = self.model[self.voff : self.voff + n]
        assert self.rb.virtual_read(n) == expected
        self.voff += len(expected)

    @rule(n=sizes)
    def virtual_skip(self, n: int) -> None:
        k = min(n, len(self.model) - self.voff)
        assert self.rb.virtual_skip(n) == k
        self.voff += k

    @rule()
    def virtual_flush(self) -> None:
        self.rb.virtual_flush()
        del self.model[: self.voff]
        self.voff = 0

    @rule()
    def virtual_revert(self) -> None:
        self.rb.virtual_revert()
        self.voff = 0

    # ------------------------------------------------------------------ invariants

    @invariant()
    def contents_match(self) -> None:
        assert self.rb.to_bytes() == self.model

    @invariant()
    def sizes_match(self) -> None:
        rb = self.rb
        assert len(rb) == rb.length == len(self.model)
        assert rb.virtual_length == len(self.model) - self.voff
        assert rb.free == rb.capacity - len(self.model)
        assert rb.capacity >= len(self.model)
        assert rb.is_empty == (not self.model) == (not rb)
        assert rb.is_full == (bool(self.model) and len(self.model) == rb.capacity)

    @invariant()
    def peek_all_is_well_formed(self) -> None:
        first, second = self.rb.peek_all()
        # The read cursor never sits at the very end of storage with data pending.
        if self.model:
            assert len(first) > 0
        assert bytes(first) + bytes(second) == self.model

    @invariant()
    def max_capacity_respected(self) -> None:
        if self.max_cap is not None:
            assert self.rb.capacity <= self.max_cap

    @invariant()
    def empty_buffer_does_not_pin_a_burst(self) -> None:
        if not self.model:
            assert self.rb.capacity <= max(SHRINK_THRESHOLD, 4 * self.init_cap)


RingBufferMachine.TestCase.settings = settings(
    max_examples=120, stateful_step_count=40, deadline=None
)
TestRingBufferMachine = RingBufferMachine.TestCase


# ---------------------------------------------------------------------- exhaustive wrap-around

CAP = 8
OFFSETS = range(CAP)
LENGTHS = range(1, CAP + 1)


def at_offset(offset: int, data: bytes) -> RingBuffer:
    """A RingBuffer of capacity CAP holding ``data`` with its first byte at ``offset``.

    Draining snaps the read index to 0, so the cursor is parked on a sentinel byte that
    is consumed after ``data`` goes in.  When ``data`` fills the whole buffer there is no
    room for the sentinel; its first byte plays that role and the rest is written after.
    """
    rb = RingBuffer(CAP)
    if len(data) < CAP:
        sentinel_at = (offset - 1) % CAP
        rb.write(b"\xee" * sentinel_at + b"S")
        rb.retrieve(sentinel_at)
        rb.write(data)  # a single write, crossing the end when offset + len > CAP
        assert rb.read_byte() == ord("S")
    else:
        rb.write(b"\xee" * offset + data[:1])
        rb.retrieve(offset)
        rb.write(data[1:])
    assert rb.capacity == CAP, "positioning must not grow the buffer"
    return rb


def payload(n: int) -> bytes:
    return bytes(range(0x30, 0x30 + n))


def wraps(offset: int, n: int) -> bool:
    return offset + n > CAP


@pytest.mark.parametrize("offset", OFFSETS)
@pytest.mark.parametrize("n", LENGTHS)
def test_wrapped_write_reads_back_identical(offset: int, n: int) -> None:
    rb = at_offset(offset, payload(n))
    assert rb.read(n) == payload(n)
    assert rb.is_empty


@pytest.mark.parametrize("offset", OFFSETS)
@pytest.mark.parametrize("n", LENGTHS)
def test_peek_has_two_parts_exactly_when_wrapped(offset: int, n: int) -> None:
    rb = at_offset(offset, payload(n))
    first, second = rb.peek_all()
    assert bytes(first) + bytes(second) == payload(n)
    assert (len(second) > 0) == wraps(offset, n)
    if wraps(offset, n):
        assert len(first) == CAP - offset


@pytest.mark.parametrize("offset", OFFSETS)
@pytest.mark.parametrize("n", LENGTHS)
def test_wrapped_read_into_and_virtual_read(offset: int, n: int) -> None:
    rb = at_offset(offset, payload(n))
    assert rb.virtual_read(n) == payload(n)
    rb.virtual_revert()
    out = bytearray(n)
    assert rb.read_into(out) == n
    assert out == payload(n)


@pytest.mark.parametrize("offset", OFFSETS)
@pytest.mark.parametrize("n", LENGTHS)
def test_wrapped_byte_by_byte(offset: int, n: int) -> None:
    rb = at_offset(offset, payload(n))
    assert bytes(rb.read_byte() for _ in range(n)) == payload(n)


@pytest.mark.parametrize("offset", OFFSETS)
@pytest.mark.parametrize("size", [2, 4, 8])
def test_wrapped_peek_uint(offset: int, size: int) -> None:
    data = bytes(range(0xF1, 0xF1 + size))
    rb = at_offset(offset, data)
    assert getattr(rb, f"peek_uint{size * 8}")() == int.from_bytes(data, "big")


@pytest.mark.parametrize("offset", OFFSETS)
@pytest.mark.parametrize("n", LENGTHS)
def test_wrapped_linear_view(offset: int, n: int) -> None:
    rb = at_offset(offset, payload(n))
    assert bytes(rb.linear_view()) == payload(n)
    assert rb.capacity == CAP


@pytest.mark.parametrize("offset", OFFSETS)
@pytest.mark.parametrize("n", range(1, CAP))
def test_wrapped_writable_view_fills_free_space(offset: int, n: int) -> None:
    rb = at_offset(offset, payload(n))
    free = CAP - n
    view = rb.writable_view(free)
    assert len(view) == free
    assert rb.capacity == CAP
    view[:] = b"\xaa" * free
    rb.commit(free)
    assert rb.is_full
    assert rb.to_bytes() == payload(n) + b"\xaa" * free


@pytest.mark.parametrize("offset", OFFSETS)
@pytest.mark.parametrize("n", LENGTHS)
def test_wrapped_growth_preserves_order(offset: int, n: int) -> None:
    rb = at_offset(offset, payload(n))
    rb.virtual_skip(n // 2)
    rb.write(b"+" * CAP)
    assert rb.capacity > CAP
    assert rb.to_bytes() == payload(n) + b"+" * CAP
    assert rb.virtual_length == n - n // 2 + CAP


@pytest.mark.parametrize("offset", OFFSETS)
@pytest.mark.parametrize("n", LENGTHS)
def test_wrapped_split_virtual_reads(offset: int, n: int) -> None:
    for split in range(n + 1):
        rb = at_offset(offset, payload(n))
        assert rb.virtual_read(split) + rb.virtual_read(n) == payload(n)
        rb.virtual_revert()
        rb.virtual_skip(split)
        assert rb.virtual_read(n) == payload(n)[split:]


@pytest.mark.parametrize("offset", OFFSETS)
@pytest.mark.parametrize("n", LENGTHS)
def test_wrapped_split_reads_then_peek(offset: int, n: int) -> None:
    for split in range(n + 1):
        rb = at_offset(offset, payload(n))
        assert rb.read(split) == payload(n)[:split]
        first, second = rb.peek_all()
        assert bytes(first) + bytes(second) == payload(n)[split:]
        assert (len(first) > 0) == (split < n)
        assert (len(second) > 0) == (split < n and wraps((offset + split) % CAP, n - split))


@pytest.mark.parametrize("offset", OFFSETS)
@pytest.mark.parametrize("n", LENGTHS)
def test_wrapped_split_virtual_flush(offset: int, n: int) -> None:
    for split in range(n + 1):
        rb = at_offset(offset, payload(n))
        rb.virtual_skip(split)
        rb.virtual_flush()
        assert rb.to_bytes() == payload(n)[split:]
        first, _ = rb.peek_all()
        assert (len(first) > 0) == (split < n)
