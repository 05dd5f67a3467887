# Theory of operation
# -------------------
# The buffer is a single flat block of storage (``_view``, always a 1-D memoryview of
# unsigned bytes) of ``_cap`` bytes.  Readable data starts at index ``_r`` and is ``_len``
# bytes long, continuing at index 0 when it runs past the end of the block ("wraps").
# The write position is derived, never stored: ``(_r + _len) % _cap``.  Keeping a length
# instead of a write index removes the classic full-versus-empty ambiguity of ``r == w``.
#
# The virtual cursor is stored as an offset ``_voff`` from the read cursor
# (``0 <= _voff <= _len``).  Because it is relative, relocating the data (growth,
# compaction) never has to touch it, and "virtual length" is simply ``_len - _voff``.
# Every consuming operation (read*, retrieve*) resets it to 0, as gev does.
#
# Storage is in one of three states:
#   * owned    - a bytearray we allocated; writes go straight into it;
#   * external - a caller's bytes-like adopted by ``wrap``/``reset_to`` without copying;
#                read-only as far as we are concerned, so the first write relocates the
#                unread data into owned storage;
#   * lazy     - no storage at all (capacity 0); the first write allocates.
# External and lazy are both "not owned", which keeps the write fast path to one flag test.
#
# Storage is never resized in place: growth allocates a new bytearray and copies the
# unread bytes to its front.  That matters because peek() hands out memoryviews into
# the storage, and CPython refuses to resize a bytearray with live exports.  Same-size
# in-place moves (compaction for writable_view) are done with memoryview slice
# assignment, which uses memmove for overlapping ranges (bytearray slice assignment
# from a view of itself would use memcpy).
#
# When the buffer drains to empty the read index snaps back to 0, so the next writes
# (and writable_view) see one contiguous free region; this is also where external data
# is dropped and an oversized owned block is given back (see _drained).
"""Implementation of :class:`RingBuffer`."""

from __future__ import annotations

import struct
from typing import TypeAlias

# The errors live in a module that is never compiled: callers catch and may subclass them.
from ._errors import RingBufferEmpty, RingBufferError, RingBufferOverflow

__all__ = [
    "DOUBLING_LIMIT",
    "MIN_CAPACITY",
    "SHRINK_THRESHOLD",
    "BytesLike",
    "RingBuffer",
    "RingBufferEmpty",
    "RingBufferError",
    "RingBufferOverflow",
]

#: What the buffer accepts as input: any contiguous buffer of bytes.
BytesLike: TypeAlias = bytes | bytearray | memoryview

#: Size of the first allocation of a buffer created with ``capacity=0``.
MIN_CAPACITY = 64
#: Below this capacity growth doubles; at or above it, growth is x1.5.
DOUBLING_LIMIT = 256 * 1024
#: An owned block bigger than this (and bigger than 4x the initial capacity) is released
#: when the buffer drains to empty.
SHRINK_THRESHOLD = 64 * 1024

_U16 = struct.Struct(">H")
_U32 = struct.Struct(">I")
_U64 = struct.Struct(">Q")

# Never handed to callers directly (they get slices of it), so nobody can release() it.
_EMPTY_VIEW = memoryview(b"")


def _byte_view(obj: BytesLike) -> memoryview:
    """Return a 1-D unsigned-byte memoryview of a bytes-like object (no copy)."""
    mv = obj if type(obj) is memoryview else memoryview(obj)
    if mv.ndim != 1 or mv.format != "B":
        # Other formats/shapes would make len() count items rather than bytes.
        mv = mv.cast("B")
    return mv


class RingBuffer:
    """A growable byte ring buffer with a second, "virtual" read cursor.

    The virtual cursor lets a parser consume bytes speculatively
    (:meth:`virtual_read`, :meth:`virtual_skip`) and then either commit
    (:meth:`virtual_flush`) or roll back (:meth:`virtual_revert`) once it knows whether
    a complete frame is present.

    Memoryviews returned by :meth:`peek`, :meth:`peek_all`, :meth:`linear_view` and
    :meth:`writable_view` alias the internal storage: they are only meaningful until
    the next call that changes the buffer.

    Not thread-safe.
    """

    __slots__ = ("_cap", "_init_cap", "_len", "_max_cap", "_owned", "_r", "_view", "_voff")

    _view: memoryview
    _cap: int
    _r: int
    _len: int
    _voff: int
    _owned: bool
    _init_cap: int
    _max_cap: int | None

    def __init__(self, capacity: int = 0, *, max_capacity: int | None = None) -> None:
        """Create an empty buffer.

        ``capacity`` bytes are allocated immediately; ``0`` (the default) defers the
        allocation to the first write, so idle buffers cost almost nothing.
        ``max_capacity``, if given, bounds the storage size: a write that would need
        more raises :class:`RingBufferOverflow` and changes nothing.
        """
        if capacity < 0:
            raise ValueError(f"capacity must be >= 0, got {capacity}")
        if max_capacity is not None and (max_capacity < 1 or max_capacity < capacity):
            raise ValueError(
                f"max_capacity must be >= max(capacity, 1), got {max_capacity} "
                f"(capacity={capacity})"
            )
        self._init_cap = capacity
        self._max_cap = max_capacity
        self._r = 0
        self._len = 0
        self._voff = 0
        self._set_initial_storage()

    @classmethod
    def wrap(cls, data: BytesLike) -> RingBuffer:
        """Adopt ``data`` as a full buffer without copying it (gev's ``WithData``).

        Reads, peeks and virtual reads run directly over ``data``.  The first write
        (or :meth:`writable_view`) copies the unread part into storage owned by the
        buffer, so ``data`` itself is never modified.  While adopted, a ``bytearray``
        passed here cannot be resized (it has a live memoryview export); the buffer
        lets go of it when it drains to empty, on :meth:`reset` and on
        :meth:`reset_to`.

        The returned buffer has ``capacity == len(data)`` initially and an initial
        capacity of 0 (it reverts to lazy allocation once drained).
        """
        # Not cls.__new__ plus attribute stores: a compiled (mypyc) class has no such path,
        # and an empty lazy buffer costs no allocation.
        self = cls()
        self.reset_to(data)
        return self

    def reset_to(self, data: BytesLike) -> None:
        """Drop the current contents and storage and adopt ``data`` like :meth:`wrap`.

        Lets a reactor reuse one buffer object per event loop for parsing each
        received chunk in place, with no allocation beyond a memoryview.
        Raises :class:`RingBufferOverflow` (changing nothing) if ``data`` is longer
        than ``max_capacity``.
        """
        t = type(data)
        if t is bytes or t is bytearray:
            mv = memoryview(data)
        else:
            mv = _byte_view(data)
            if not mv.c_contiguous:
                # struct.unpack_from and b"".join need a contiguous buffer; a strided
                # view is unusual enough that one copy is the simplest answer.
                mv = memoryview(mv.tobytes())
        n = len(mv)
        max_cap = self._max_cap
        if max_cap is not None and n > max_cap:
            raise RingBufferOverflow(f"cannot adopt {n} bytes: max_capacity is {max_cap}")
        self._r = 0
        self._voff = 0
        self._len = n
        self._owned = False
        if n:
            self._view = mv
            self._cap = n
        else:
            self._view = _EMPTY_VIEW
            self._cap = 0

    # ------------------------------------------------------------------ storage

    def _set_initial_storage(self) -> None:
        init = self._init_cap
        if init:
            self._view = memoryview(bytearray(init))
            self._cap = init
            self._owned = True
        else:
            self._view = _EMPTY_VIEW
            self._cap = 0
            self._owned = False

    def _relocate(self, new_cap: int) -> None:
        """Move the unread bytes to the front of a fresh owned block of ``new_cap``."""
        dst = memoryview(bytearray(new_cap))
        ln = self._len
        if ln:
            r = self._r
            cap = self._cap
            src = self._view
            end = r + ln
            if end <= cap:
                dst[0:ln] = src[r:end]
            else:
                head = cap - r
                dst[0:head] = src[r:cap]
                dst[head:ln] = src[0 : end - cap]
        self._view = dst
        self._cap = new_cap
        self._r = 0
        self._owned = True

    def _reserve(self, extra: int) -> None:
        """Make sure owned storage has room for ``extra`` more bytes.

        Raises before touching anything if ``max_capacity`` would be exceeded.
        """
        need = self._len + extra
        max_cap = self._max_cap
        if max_cap is not None and need > max_cap:
            raise RingBufferOverflow(
                f"cannot write {extra} bytes: length {self._len} + {extra} "
                f"would exceed max_capacity {max_cap}"
            )
        cap = self._cap
        if self._owned:
            if need <= cap:
                return
            new = cap
        else:
            new = self._init_cap or MIN_CAPACITY
        # Geometric growth keeps the total copying amortised O(1) per byte; switching
        # to x1.5 for big blocks limits how much memory a burst can over-allocate.
        while new < need:
            new = new * 2 if new < DOUBLING_LIMIT else new + (new >> 1)
        if max_cap is not None and new > max_cap:
            new = max_cap
        self._relocate(new)

    def _drained(self) -> None:
        """Bookkeeping once the buffer has become empty through consumption."""
        self._r = 0
        self._voff = 0
        if not self._owned:
            # Let go of the caller's data (and its export) as soon as it is used up.
            self._view = _EMPTY_VIEW
            self._cap = 0
            return
        cap = self._cap
        if cap > SHRINK_THRESHOLD and cap > 4 * self._init_cap:
            # A burst grew the block; don't pin that memory on an idle connection.
            self._set_initial_storage()

    # ------------------------------------------------------------------ sizes

    @property
    def length(self) -> int:
        """Number of readable bytes (from the read cursor)."""
        return self._len

    def __len__(self) -> int:
        return self._len

    def __bool__(self) -> bool:
        return self._len != 0

    @property
    def capacity(self) -> int:
        """Size of the current storage block in bytes (0 while lazily unallocated)."""
        return self._cap

    @property
    def max_capacity(self) -> int | None:
        """Upper bound on :attr:`capacity`, or ``None`` for unbounded."""
        return self._max_cap

    @property
    def free(self) -> int:
        """``capacity - length``: bytes that fit without growing.

        For adopted external data the next write still copies into owned storage.
        """
        return self._cap - self._len

    @property
    def is_empty(self) -> bool:
        """True when there is nothing to read."""
        return self._len == 0

    @property
    def is_full(self) -> bool:
        """True when the storage holds no free byte; an empty buffer is never full."""
        return self._len != 0 and self._len == self._cap

    @property
    def virtual_length(self) -> int:
        """Bytes between the virtual cursor and the end of the data."""
        return self._len - self._voff

    def __repr__(self) -> str:
        extra = ""
        if self._max_cap is not None:
            extra += f", max_capacity={self._max_cap}"
        if not self._owned and self._cap:
            extra += ", external=True"
        return (
            f"{type(self).__name__}(length={self._len}, capacity={self._cap}, "
            f"virtual_length={self._len - self._voff}{extra})"
        )

    # ------------------------------------------------------------------ writing

    def write(self, data: BytesLike) -> int:
        """Append all of ``data``, growing as needed; returns the number of bytes.

        Accepts any bytes-like object (memoryviews of other formats count bytes).
        Raises :class:`RingBufferOverflow`, changing nothing, if ``max_capacity``
        would be exceeded.
        """
        t = type(data)
        if t is not bytes and t is not bytearray:
            data = _byte_view(data)
        n = len(data)
        if n == 0:
            return 0
        ln = self._len
        if not self._owned or n > self._cap - ln:
            self._reserve(n)
        cap = self._cap
        w = self._r + ln
        if w >= cap:
            w -= cap
        end = w + n
        view = self._view
        if end <= cap:
            view[w:end] = data
        else:
            # Slicing bytes would copy; a memoryview slice does not.
            src = data if type(data) is memoryview else memoryview(data)
            head = cap - w
            view[w:cap] = src[:head]
            view[0 : n - head] = src[head:]
        self._len = ln + n
        return n

    def write_byte(self, b: int) -> None:
        """Append a single byte (an int in ``range(256)``)."""
        if not 0 <= b <= 255:
            raise ValueError(f"byte must be in range(0, 256), got {b}")
        ln = self._len
        if not self._owned or ln == self._cap:
            self._reserve(1)
        w = self._r + ln
        if w >= self._cap:
            w -= self._cap
        self._view[w] = b
        self._len = ln + 1

    def writable_view(self, min_size: int = 1) -> memoryview:
        """Return a contiguous writable view of at least ``min_size`` free bytes.

        Intended for ``sock.recv_into(rb.writable_view(n))`` followed by
        :meth:`commit` with the number of bytes actually received.  The view covers
        all contiguous free space at the write position, so it may be larger than
        ``min_size``.  The buffer compacts or grows (subject to ``max_capacity``)
        when the contiguous free space is too small; the view is invalidated by
        any other call that changes the buffer.
        """
        if min_size < 0:
            raise ValueError(f"min_size must be >= 0, got {min_size}")
        ln = self._len
        if not self._owned or self._cap - ln < min_size:
            self._reserve(min_size)
            # Relocation (if any) left the data at the front; free space is the tail.
        cap = self._cap
        r = self._r
        w = r + ln
        view = self._view
        if w >= cap:
            # Data wraps (or ends exactly at the block end): free space is [w, r).
            w -= cap
            return view[w:r]
        if cap - w >= min_size:
            return view[w:cap]
        # Enough free space in total but split around the data: slide the data to the
        # front (memmove via memoryview) so the free space becomes one tail run.
        if ln:
            view[0:ln] = view[r:w]
        self._r = 0
        return view[ln:cap]

    def commit(self, n: int) -> None:
        """Mark ``n`` bytes written into the last :meth:`writable_view` as readable."""
        if n < 0 or n > self._cap - self._len:
            raise ValueError(f"cannot commit {n} bytes: only {self._cap - self._len} free")
        if n and not self._owned:
            raise ValueError("commit() without a preceding writable_view()")
        self._len += n

    # ------------------------------------------------------------------ reading

    def read(self, n: int) -> bytes:
        """Consume and return up to ``n`` bytes; also resets the virtual cursor."""
        if n < 0:
            raise ValueError(f"n must be >= 0, got {n}")
        ln = self._len
        if n > ln:
            n = ln
        self._voff = 0
        if n == 0:
            return b""
        r = self._r
        cap = self._cap
        view = self._view
        end = r + n
        if end < cap:
            out = view[r:end].tobytes()
            self._r = end
        elif end == cap:
            out = view[r:end].tobytes()
            self._r = 0
        else:
            out = b"".join((view[r:cap], view[0 : end - cap]))
            self._r = end - cap
        ln -= n
        self._len = ln
        if ln == 0:
            self._drained()
        return out

    def read_into(self, buf: bytearray | memoryview) -> int:
        """Consume up to ``len(buf)`` bytes into the writable buffer ``buf``.

        Returns the number of bytes copied; also resets the virtual cursor.
        """
        dst = _byte_view(buf)
        n = len(dst)
        ln = self._len
        if n > ln:
            n = ln
        self._voff = 0
        if n == 0:
            return 0
        r = self._r
        cap = self._cap
        view = self._view
        end = r + n
        if end <= cap:
            dst[0:n] = view[r:end]
        else:
            head = cap - r
            dst[0:head] = view[r:cap]
            dst[head:n] = view[0 : end - cap]
        if end >= cap:
            end -= cap
        self._r = end
        ln -= n
        self._len = ln
        if ln == 0:
            self._drained()
        return n

    def read_byte(self) -> int:
        """Consume and return one byte; raises :class:`RingBufferEmpty` if empty."""
        ln = self._len
        if ln == 0:
            raise RingBufferEmpty("read_byte from an empty RingBuffer")
        r = self._r
        b = self._view[r]
        r += 1
        if r == self._cap:
            r = 0
        self._r = r
        self._voff = 0
        ln -= 1
        self._len = ln
        if ln == 0:
            self._drained()
        return b

    def retrieve(self, n: int) -> int:
        """Discard up to ``n`` readable bytes; returns how many were discarded.

        Also resets the virtual cursor.
        """
        if n < 0:
            raise ValueError(f"n must be >= 0, got {n}")
        ln = self._len
        if n >= ln:
            return self.retrieve_all()
        r = self._r + n
        if r >= self._cap:
            r -= self._cap
        self._r = r
        self._len = ln - n
        self._voff = 0
        return n

    def retrieve_all(self) -> int:
        """Discard everything readable; returns how many bytes were discarded."""
        ln = self._len
        self._len = 0
        self._drained()
        return ln

    def peek(self, n: int) -> tuple[memoryview, memoryview]:
        """Return zero-copy views of up to ``n`` readable bytes without consuming them.

        The second view is empty unless the data wraps past the end of the storage,
        in which case the two views, concatenated, are the data.
        """
        if n < 0:
            raise ValueError(f"n must be >= 0, got {n}")
        if n > self._len:
            n = self._len
        r = self._r
        cap = self._cap
        view = self._view
        end = r + n
        if end <= cap:
            return view[r:end], view[0:0]
        return view[r:cap], view[0 : end - cap]

    def peek_all(self) -> tuple[memoryview, memoryview]:
        """Like :meth:`peek` for every readable byte."""
        return self.peek(self._len)

    def _peek_wrapped_int(self, size: int) -> int:
        r = self._r
        cap = self._cap
        view = self._view
        raw = b"".join((view[r:cap], view[0 : size - (cap - r)]))
        return int.from_bytes(raw, "big")

    def peek_uint8(self) -> int | None:
        """Return the next byte without consuming it, or ``None`` if empty."""
        if self._len < 1:
            return None
        return self._view[self._r]

    def peek_uint16(self) -> int | None:
        """Return the next 2 bytes as a big-endian int, or ``None`` if fewer remain.

        gev returns 0 in that case; ``None`` is used here because 0 is a valid value.
        """
        if self._len < 2:
            return None
        r = self._r
        if r + 2 <= self._cap:
            v: int = _U16.unpack_from(self._view, r)[0]
            return v
        return self._peek_wrapped_int(2)

    def peek_uint32(self) -> int | None:
        """Return the next 4 bytes as a big-endian int, or ``None`` if fewer remain."""
        if self._len < 4:
            return None
        r = self._r
        if r + 4 <= self._cap:
            v: int = _U32.unpack_from(self._view, r)[0]
            return v
        return self._peek_wrapped_int(4)

    def peek_uint64(self) -> int | None:
        """Return the next 8 bytes as a big-endian int, or ``None`` if fewer remain."""
        if self._len < 8:
            return None
        r = self._r
        if r + 8 <= self._cap:
            v: int = _U64.unpack_from(self._view, r)[0]
            return v
        return self._peek_wrapped_int(8)

    def to_bytes(self) -> bytes:
        """Return a copy of all readable bytes without consuming them."""
        ln = self._len
        if ln == 0:
            return b""
        r = self._r
        cap = self._cap
        view = self._view
        end = r + ln
        if end <= cap:
            return view[r:end].tobytes()
        return b"".join((view[r:cap], view[0 : end - cap]))

    def __bytes__(self) -> bytes:
        return self.to_bytes()

    def linear_view(self) -> memoryview:
        """Return one contiguous view of all readable bytes.

        If the data wraps it is first moved to the front of a fresh block of the same
        capacity (the only case that copies); views obtained earlier keep showing the
        old block.
        """
        r = self._r
        end = r + self._len
        if end > self._cap:
            self._relocate(self._cap)
            return self._view[0 : self._len]
        return self._view[r:end]

    # ------------------------------------------------------------------ virtual cursor

    def virtual_read(self, n: int) -> bytes:
        """Copy up to ``n`` bytes from the virtual cursor and advance only it."""
        if n < 0:
            raise ValueError(f"n must be >= 0, got {n}")
        voff = self._voff
        avail = self._len - voff
        if n > avail:
            n = avail
        if n == 0:
            return b""
        cap = self._cap
        start = self._r + voff
        if start >= cap:
            start -= cap
        end = start + n
        view = self._view
        if end <= cap:
            out = view[start:end].tobytes()
        else:
            out = b"".join((view[start:cap], view[0 : end - cap]))
        self._voff = voff + n
        return out

    def virtual_skip(self, n: int) -> int:
        """Advance the virtual cursor by up to ``n`` bytes; returns how many."""
        if n < 0:
            raise ValueError(f"n must be >= 0, got {n}")
        avail = self._len - self._voff
        if n > avail:
            n = avail
        self._voff += n
        return n

    def virtual_flush(self) -> None:
        """Commit the virtual reads: move the read cursor to the virtual cursor."""
        voff = self._voff
        if voff == 0:
            return
        ln = self._len - voff
        if ln == 0:
            self._len = 0
            self._drained()
            return
        r = self._r + voff
        if r >= self._cap:
            r -= self._cap
        self._r = r
        self._len = ln
        self._voff = 0

    def virtual_revert(self) -> None:
        """Undo the virtual reads: move the virtual cursor back to the read cursor."""
        self._voff = 0

    # ------------------------------------------------------------------ lifecycle

    def reset(self) -> None:
        """Empty the buffer and return its storage to the initial capacity.

        Any larger block (or adopted external data) is released; with an initial
        capacity of 0 this frees the storage entirely.
        """
        self._r = 0
        self._len = 0
        self._voff = 0
        if not (self._owned and self._cap == self._init_cap):
            self._set_initial_storage()
