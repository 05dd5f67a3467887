"""Sans-IO framing for gev's protobuf wire format.

Every frame is::

    +----------------+----------------+--------------------+-----------------+
    | length  u32 BE | typeLen u16 BE | type name (UTF-8)  | payload         |
    +----------------+----------------+--------------------+-----------------+
    length = 2 + typeLen + len(payload)     (the length field does not count itself)

This is byte-compatible with Go gev's ``plugins/protobuf`` but fixes its bugs: sizes are
validated instead of silently truncated when packing, a peer-claimed length is checked
against a bound before anything is buffered for it, a length too small for its own
type-name field is an error instead of a panic, and the minimal 6-byte frame is accepted
as soon as it is complete.

Nothing here does I/O or imports gev-core. The reactor-facing hot path is
:func:`scan_frames`, called once per socket read; a protocol's per-read method needs little
more than::

    def receive(self, conn, data, out):
        try:
            frames, consumed = scan_frames(data, self.max_frame_size)
        except FrameError as exc:
            raise ProtocolError(str(exc)) from exc  # the peer's fault: close, no traceback
        on_message = conn.handler.on_message
        for type_name, payload in frames:
            if conn.closing:
                break  # the rest of this read dies with the connection
            reply = on_message(conn, type_name, payload)
            if reply is not None:
                out.append(reply)
        return consumed

:func:`parse_frame` parses one frame at an offset of a ``bytes`` buffer for callers that
prefer to drive the loop themselves, and :class:`FrameDecoder` buffers a byte stream
that arrives in arbitrary pieces.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from typing import Final, NoReturn, TypeAlias

# Never compiled: FrameError is subclassed by the registry's errors and by callers, and code
# compiled by mypyc checks a native class's exact type, which a subclass would not pass.
from ._errors import FrameError

__all__ = [
    "DEFAULT_MAX_FRAME_SIZE",
    "HEADER_SIZE",
    "MAX_FRAME_LENGTH",
    "MAX_TYPE_NAME_SIZE",
    "BytesLike",
    "FrameDecoder",
    "FrameError",
    "pack_message",
    "parse_frame",
    "scan_frames",
]

#: What the framing functions accept as input: any contiguous buffer of bytes.
BytesLike: TypeAlias = bytes | bytearray | memoryview
"""Any contiguous bytes-like object accepted as input."""

#: Default bound on a frame's length field. gRPC uses the same 4 MiB default for received
#: messages: large enough for any sensibly sized protobuf message (protobuf is not meant for
#: multi-megabyte blobs), small enough that a peer cannot make one connection buffer an
#: arbitrary amount of memory by announcing a huge frame and trickling it in.
DEFAULT_MAX_FRAME_SIZE = 4 * 1024 * 1024

#: Largest value the u32 length field can carry (the format's own limit).
MAX_FRAME_LENGTH = 0xFFFFFFFF

#: Largest type name, in UTF-8 bytes, that the u16 type-length field can carry.
MAX_TYPE_NAME_SIZE = 0xFFFF

#: Bytes before the type name: the u32 length and the u16 type-name length.
HEADER_SIZE = 6

# Final: where this module and _protocol are compiled, these are C statics, read without the
# lookup in the module's globals that every other module-level name costs (once per frame on
# receive()'s fast path).
_HEADER = struct.Struct(">IH")
_unpack_header: Final = _HEADER.unpack_from
_U32 = struct.Struct(">I")
_unpack_u32 = _U32.unpack_from
_pack_u32: Final = _U32.pack
_U16 = struct.Struct(">H")

# Decoded type names keyed by their raw bytes, so the common case (a handful of message
# types) costs a dict hit instead of a UTF-8 decode and a new str per frame. Bounded in both
# entry count and entry size because the keys come from the peer: a peer cycling through
# unique names only gets the uncached speed, never unbounded memory.
_NAME_CACHE_MAX_ENTRIES = 1024
_NAME_CACHE_MAX_NAME_SIZE = 256
_decoded_names: Final[dict[bytes, str]] = {}

# scan_frames copies a buffer larger than this only once it holds a complete frame. Below it
# the check costs about as much as the copy; above it, skipping useless copies wins, and a
# peer trickling a large frame in tiny reads cannot make each read copy more than this.
_COPY_CHECK_SIZE = 4096

# Type name -> u16 length + UTF-8 bytes, already validated, so packing a reply is one u32
# pack and two concatenations. Keys come from local code; bounded anyway for safety.
_name_blocks: Final[dict[str, bytes]] = {}


def _preview(raw: bytes) -> str:
    if len(raw) <= 32:
        return raw.hex(" ")
    return raw[:32].hex(" ") + f" ... ({len(raw)} bytes)"


def _header_error(
    offset: int, length: int, type_len: int | None, max_frame_size: int
) -> FrameError:
    # Only reached once a header is known to be bad, so the classification can be slow.
    where = f"frame at offset {offset}"
    if length > max_frame_size:
        return FrameError(
            f"{where} declares length {length} (0x{length:08x}), which exceeds "
            f"max_frame_size {max_frame_size}; rejected before reading its body"
        )
    if length < 2:
        return FrameError(
            f"{where} declares length {length}, which is smaller than the 2-byte type-name "
            f"length field every frame must contain"
        )
    return FrameError(
        f"{where} declares type-name length {type_len}, but its length {length} leaves only "
        f"{length - 2} bytes for type name and payload"
    )


def _decode_name(raw: bytes, offset: int) -> str:
    try:
        name = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise FrameError(
            f"type name of the frame at offset {offset} is not valid UTF-8 "
            f"({exc.reason} at byte {exc.start} of {len(raw)}): {_preview(raw)}"
        ) from None
    if len(raw) <= _NAME_CACHE_MAX_NAME_SIZE:
        if len(_decoded_names) >= _NAME_CACHE_MAX_ENTRIES:
            _decoded_names.clear()
        _decoded_names[raw] = name
    return name


def _check_partial_header(buf: BytesLike, offset: int, avail: int, max_frame_size: int) -> None:
    """Reject a bad length as soon as its 4 bytes are in, even before the type length."""
    if avail >= 4:
        (length,) = _unpack_u32(buf, offset)
        if length > max_frame_size or length < 2:
            raise _header_error(offset, length, None, max_frame_size)


def _first_frame_incomplete(buf: BytesLike, max_frame_size: int) -> bool:
    """Validate the header at ``buf[0]`` as far as it has arrived; say if the frame is partial."""
    size = buf.nbytes if isinstance(buf, memoryview) else len(buf)
    if size < 6:
        _check_partial_header(buf, 0, size, max_frame_size)
        return True
    header: tuple[int, int] = _unpack_header(buf, 0)
    length, type_len = header
    if length > max_frame_size or type_len > length - 2:
        raise _header_error(0, length, type_len, max_frame_size)
    return length + 4 > size


def parse_frame(
    buf: bytes, offset: int = 0, max_frame_size: int = DEFAULT_MAX_FRAME_SIZE
) -> tuple[int, str, bytes] | None:
    """Parse the one frame starting at ``buf[offset]``.

    Returns ``(end_offset, type_name, payload)`` where ``end_offset`` is where the next frame
    starts, or ``None`` if the frame is not complete yet. ``buf`` must be ``bytes`` (slices of
    it are then ``bytes`` too, which is what makes this fast); convert a ``memoryview`` once
    per read, not once per frame. Raises :class:`FrameError` on a malformed header, a length
    above ``max_frame_size`` (decided from the header alone, whatever follows it) or a type
    name that is not UTF-8.
    """
    avail = len(buf) - offset
    if avail >= 6:
        length, type_len = _unpack_header(buf, offset)
        # length < 2 also lands here: then length - 2 is negative and type_len is not.
        if length > max_frame_size or type_len > length - 2:
            raise _header_error(offset, length, type_len, max_frame_size)
        end = offset + 4 + length
        if end <= len(buf):
            name_end = offset + 6 + type_len
            raw = buf[offset + 6 : name_end]
            try:
                name = _decoded_names[raw]
            except KeyError:
                name = _decode_name(raw, offset)
            return end, name, buf[name_end:end]
    elif avail >= 4:
        # Inlined _check_partial_header: a function call costs more than the check.
        (length,) = _unpack_u32(buf, offset)
        if length > max_frame_size or length < 2:
            raise _header_error(offset, length, None, max_frame_size)
    return None


def scan_frames(
    data: BytesLike, max_frame_size: int = DEFAULT_MAX_FRAME_SIZE
) -> tuple[list[tuple[str, bytes]], int]:
    """Parse every complete frame at the start of ``data``.

    Returns ``(frames, consumed)``: the ``(type_name, payload)`` pairs in order and the number
    of bytes they occupy. Scanning stops at the first incomplete frame, whose bytes the caller
    keeps for the next call. Payloads are independent ``bytes`` objects, so ``data`` may be a
    view of a buffer that is reused as soon as this returns.

    Raises :class:`FrameError` if any frame is malformed (see :func:`parse_frame`); frames
    before the bad one are then discarded along with the connection. Offsets in error
    messages are relative to the start of ``data``.
    """
    # One copy per read, then plain bytes slicing per frame: measured faster than slicing the
    # view per frame (see benchmarks/scan.py); tobytes() beats bytes() on a view. A large
    # buffer is copied only once its first frame is complete, or a large frame arriving over
    # many reads would be copied again on every read.
    if type(data) is memoryview:
        if data.nbytes > _COPY_CHECK_SIZE and _first_frame_incomplete(data, max_frame_size):
            return [], 0
        data = data.tobytes()
    elif type(data) is not bytes:
        if len(data) > _COPY_CHECK_SIZE and _first_frame_incomplete(data, max_frame_size):
            return [], 0
        data = bytes(data)
    size = len(data)
    if size < 6:
        _check_partial_header(data, 0, size, max_frame_size)
        return [], 0
    length, type_len = _unpack_header(data, 0)
    frames: list[tuple[str, bytes]] = []
    offset = 0
    # parse_frame's logic, inlined because a Python call per frame costs more than the
    # parsing itself. The loop is entered with the header at `offset` already unpacked.
    while True:
        # length < 2 also lands here: then length - 2 is negative and type_len is not.
        if length > max_frame_size or type_len > length - 2:
            raise _header_error(offset, length, type_len, max_frame_size)
        end = offset + 4 + length
        if end > size:
            break
        name_end = offset + 6 + type_len
        raw = data[offset + 6 : name_end]
        try:
            name = _decoded_names[raw]
        except KeyError:
            name = _decode_name(raw, offset)
        # Not a cached bound method: CPython 3.11+ specialises a direct list.append call.
        frames.append((name, data[name_end:end]))
        offset = end
        if size - offset < 6:
            if size - offset >= 4:  # inlined _check_partial_header
                (length,) = _unpack_u32(data, offset)
                if length > max_frame_size or length < 2:
                    raise _header_error(offset, length, None, max_frame_size)
            break
        length, type_len = _unpack_header(data, offset)
    return frames, offset


def _name_block(type_name: str) -> bytes:
    if not isinstance(type_name, str):
        raise TypeError(f"type_name must be str, not {type(type_name).__name__}")
    try:
        raw = type_name.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise FrameError(
            f"type name {type_name!r} cannot be encoded as UTF-8: {exc.reason}"
        ) from None
    if len(raw) > MAX_TYPE_NAME_SIZE:
        raise FrameError(
            f"type name is {len(raw)} bytes in UTF-8; the u16 type-length field allows at most "
            f"{MAX_TYPE_NAME_SIZE}"
        )
    block = _U16.pack(len(raw)) + raw
    if len(raw) <= _NAME_CACHE_MAX_NAME_SIZE:
        if len(_name_blocks) >= _NAME_CACHE_MAX_ENTRIES:
            _name_blocks.clear()
        _name_blocks[type_name] = block
    return block


def pack_message(type_name: str, payload: BytesLike, max_frame_size: int | None = None) -> bytes:
    """Build one frame carrying ``payload`` (usually a serialized protobuf message).

    ``pack_message("msg1", b"\\x08\\x01")`` is ``00 00 00 08 00 04 6d 73 67 31 08 01``,
    exactly what Go gev's ``PackMessage`` produces. Unlike gev, sizes that do not fit are an
    error, never silently truncated: raises :class:`FrameError` if the type name exceeds
    65535 UTF-8 bytes or the length field would exceed 2**32-1 or ``max_frame_size`` (pass the
    peer's limit to fail here instead of on the peer), and :class:`TypeError` for a
    non-``str`` type name or a payload that is not bytes-like.
    """
    try:
        block = _name_blocks[type_name]
    except KeyError:
        block = _name_block(type_name)
    if type(payload) is not bytes:
        # memoryview() rejects str and int (bytes(3) would silently build b"\0\0\0") and
        # tobytes() counts bytes, not items, for views with a wider format.
        payload = memoryview(payload).tobytes()
    length = len(block) + len(payload)
    if length > MAX_FRAME_LENGTH or (max_frame_size is not None and length > max_frame_size):
        limit = MAX_FRAME_LENGTH
        if max_frame_size is not None:
            limit = min(limit, max_frame_size)
        raise FrameError(
            f"frame for type {type_name!r} would have length {length} (2 + {len(block) - 2}-byte "
            f"type name + {len(payload)}-byte payload), which exceeds the limit {limit}"
        )
    return _pack_u32(length) + block + payload


class FrameDecoder:
    """Incremental decoder for a byte stream that arrives in arbitrary pieces.

    ``feed()`` bytes as they come, then call ``next_frame()`` (or iterate) until it returns
    ``None``. Memory is bounded by the peer-independent ``max_frame_size``: a declared length
    is checked as soon as its 4 bytes arrive, nothing is ever allocated from a declared size,
    and once all complete frames have been taken at most ``max_frame_size + 3`` bytes of the
    frame in progress remain buffered.

    After a :class:`FrameError` the stream cannot be resynchronised, so every later call
    raises the same error.
    """

    __slots__ = ("_buf", "_error", "_max_frame_size", "_stream_offset")

    def __init__(self, max_frame_size: int = DEFAULT_MAX_FRAME_SIZE) -> None:
        if not 2 <= max_frame_size <= MAX_FRAME_LENGTH:
            raise ValueError(
                f"max_frame_size must be between 2 and {MAX_FRAME_LENGTH}, got {max_frame_size}"
            )
        self._max_frame_size = max_frame_size
        self._buf = bytearray()
        self._stream_offset = 0  # stream position of _buf[0]: errors report stream offsets
        self._error: FrameError | None = None

    @property
    def max_frame_size(self) -> int:
        """Largest accepted value of a frame's length field."""
        return self._max_frame_size

    @property
    def buffered(self) -> int:
        """Number of bytes fed but not yet returned as frames."""
        return len(self._buf)

    def feed(self, data: BytesLike) -> None:
        """Append received bytes.

        Raises :class:`FrameError` right away if the frame at the head of the buffer declares
        an invalid length, so an oversized claim is refused before its body is waited for.
        """
        if self._error is not None:
            raise self._error
        self._buf += data
        buf = self._buf
        if len(buf) >= 4:
            if len(buf) >= 6:
                length, type_len = _unpack_header(buf, 0)
                if length > self._max_frame_size or type_len > length - 2:
                    self._fail_header(length, type_len)
            else:
                self._check_partial()

    def next_frame(self) -> tuple[str, bytes] | None:
        """Return the next complete ``(type_name, payload)``, or ``None`` if none is buffered."""
        if self._error is not None:
            raise self._error
        buf = self._buf
        if len(buf) < 6:
            self._check_partial()
            return None
        length, type_len = _unpack_header(buf, 0)
        if length > self._max_frame_size or type_len > length - 2:
            self._fail_header(length, type_len)
        end = 4 + length
        if end > len(buf):
            return None
        name_end = 6 + type_len
        # A view avoids copying the payload twice (bytearray slice, then bytes); it must be
        # released before the bytearray is resized below.
        with memoryview(buf) as view:
            raw = view[6:name_end].tobytes()
            payload = view[name_end:end].tobytes()
        try:
            name = _decoded_names[raw]
        except KeyError:
            try:
                name = _decode_name(raw, self._stream_offset)
            except FrameError as exc:
                self._fail(exc)
        # Deleting from the front of a bytearray only moves its start pointer.
        del buf[:end]
        self._stream_offset += end
        return name, payload

    def __iter__(self) -> Iterator[tuple[str, bytes]]:
        """Yield every complete frame currently buffered."""
        while (frame := self.next_frame()) is not None:
            yield frame

    def _check_partial(self) -> None:
        try:
            _check_partial_header(self._buf, 0, len(self._buf), self._max_frame_size)
        except FrameError as exc:
            self._fail(exc)

    def _fail_header(self, length: int, type_len: int) -> NoReturn:
        self._fail(_header_error(self._stream_offset, length, type_len, self._max_frame_size))

    def _fail(self, exc: FrameError) -> NoReturn:
        self._error = exc
        # Drop what a hostile peer sent; nothing after the error is usable.
        self._buf = bytearray()
        raise exc
