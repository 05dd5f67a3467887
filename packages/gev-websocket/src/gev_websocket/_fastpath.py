"""The fast path: complete, unfragmented, uncompressed data frames, without wsproto.

wsproto is exact but costs tens of microseconds per message in pure Python (event objects,
generators, a per-frame masker object, bytearray copies). Nearly every frame a server sees in
steady state is the simple case below, and for it wsproto's whole pipeline reduces to "unmask
the payload, decode it if it is text, deliver it". ``WebSocketSession.receive`` (one Python
call per read) does exactly that in a loop with the helpers of this module, and calls the
session's ``_slow_path`` for everything else.

**When a frame takes the fast path** (all must hold):

1. the session's ``_fast`` flag is set: the session is OPEN and
   :func:`~gev_websocket._compat.wsproto_idle` was true when wsproto last handled a frame, i.e.
   wsproto has no partial frame buffered and no fragmented message in progress; the flag drops
   as soon as a frame goes to wsproto, and nothing is left over from the previous read;
2. the frame is *complete* in the buffer;
3. first byte ``0x81`` or ``0x82``: FIN set, RSV1-3 clear, opcode text or binary (with
   permessage-deflate negotiated, RSV1 clear means "not compressed", which wsproto passes
   through untouched);
4. MASK bit set (RFC 6455 5.1: a server must fail unmasked client frames);
5. the length uses its shortest encoding (wsproto rejects the others) and is at most
   ``min(max_frame_size, max_message_size)`` (otherwise wsproto's limits extension closes
   with 1009);
6. for text, the payload is valid UTF-8 (``bytes.decode`` and wsproto's incremental decoder
   with ``final=True`` apply the same strict codec).

Anything else stops the fast path at the start of that frame and the session hands the frame
to wsproto (one frame at a time, so the fast path resumes at the next frame boundary once
wsproto is idle again), which then decides (close code, reason, state) exactly as it would
have alone. A fast-path frame cut by the end of a read is kept for the next read when wsproto,
fed those bytes, would emit nothing yet (see ``_session._can_wait``).
``tests/test_differential.py`` checks the equivalence on random byte streams.

**Unmasking.** Pure Python costs about 2 ns per byte at best, which at 4 KiB is most of a
message's cost, so a native XOR is used when one is importable: ``_unmask.c``, a C kernel
built into gev-websocket's platform wheels (about 0.1 ns per byte plus a call). Without it (a
pure wheel, or ``GEV_PURE_PYTHON=1``): for small payloads one big-int XOR against the key
repeated to the payload's length (``int.from_bytes``/``to_bytes``, like websockets'
pure-Python ``apply_mask``); the repeated key is ``key * (1 + 2**32 + 2**64 + ...)``, with
those repunit multipliers cached per length. For large payloads four ``bytes.translate``
passes over the strided slices (wsproto's technique) win, because their cost is memory
bandwidth rather than big-int arithmetic. ``benchmarks/session.py --mask`` measures all three.

**Building.** Server frames are unmasked, so an outgoing data frame is a 2, 4 or 10-byte
header followed by the payload; :func:`build_binary` and :func:`build_text` produce
byte-for-byte what ``wsproto.Connection.send(Message(...))`` produces without extensions.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import Any, Final

__all__ = [
    "NATIVE_UNMASK",
    "build_binary",
    "build_message",
    "build_text",
    "unmask",
]

# First byte, second byte and the 32-bit word after them: a short frame's masking key, or a
# medium frame's 16-bit length and the first half of its key. The native unmask reads the key
# in place; the pure one takes a short frame's from here (the common small message: one unpack,
# not two) and a longer frame's with _unpack_key. Only long frames need a 64-bit length.
_unpack_head = struct.Struct("!BBI").unpack_from
_unpack_long_size = struct.Struct("!Q").unpack_from  # at offset 2
_unpack_key = struct.Struct("!I").unpack_from
_pack_medium = struct.Struct("!BBH").pack
_pack_long = struct.Struct("!BBQ").pack
_from_bytes = int.from_bytes

#: Replies of at least this many bytes leave the fast path as two chunks, header and payload,
#: which the reactor writes with one writev instead of copying the payload behind the header.
#: Below it the copy is cheaper than the writev's second buffer (a pymalloc-sized concatenation).
GATHER_MIN: Final = 512

#: Payloads up to this many bytes are unmasked with one big-int XOR, larger ones with
#: ``bytes.translate`` (see the module docstring).
INT_UNMASK_MAX = 1024

# _REPUNIT[k] caches _repunit(k); 0 means "not computed yet" (only k=0 really is 0). Filled
# on demand past the small sizes, so it only costs memory for the sizes a server sees.
_REPUNIT: list[int] = [0] * ((INT_UNMASK_MAX >> 2) + 1)


def _repunit(k: int) -> int:
    """``sum(1 << (32 * i) for i in range(k))``: times a 32-bit key, the key repeated k times."""
    value = ((1 << (32 * k)) - 1) // 0xFFFFFFFF
    _REPUNIT[k] = value
    return value


for _k in range(1, 33):
    _repunit(_k)
del _k


_XOR_TABLES = [bytes(a ^ b for a in range(256)) for b in range(256)]

_NativeMask = Callable[[Any, Any], bytes]
_NativeFrame = Callable[[Any, int, int], bytes]
_apply_mask: _NativeMask | None
_unmask_frame: _NativeFrame | None
try:
    from ._unmask import apply_mask as _apply_mask
    from ._unmask import unmask_frame as _unmask_frame
except ImportError:  # a pure wheel, or GEV_PURE_PYTHON=1
    _apply_mask = None
    _unmask_frame = None

#: Whether :func:`unmask` and the fast path use a native XOR (see the module docstring).
NATIVE_UNMASK = _apply_mask is not None


def _unmask_translate(payload: bytes | bytearray | memoryview, key: int) -> bytes:
    buf = bytearray(payload)
    t = _XOR_TABLES
    buf[0::4] = buf[0::4].translate(t[key >> 24])
    buf[1::4] = buf[1::4].translate(t[(key >> 16) & 0xFF])
    buf[2::4] = buf[2::4].translate(t[(key >> 8) & 0xFF])
    buf[3::4] = buf[3::4].translate(t[key & 0xFF])
    return bytes(buf)


def unmask(payload: bytes | bytearray | memoryview, key: int) -> bytes:
    """XOR *payload* with the 32-bit masking *key* (big-endian, as on the wire).

    Masking is an involution, so this also masks.
    """
    native = _apply_mask
    if native is not None:
        return native(payload, key.to_bytes(4, "big"))
    n = len(payload)
    if n > INT_UNMASK_MAX:
        return _unmask_translate(payload, key)
    k = (n + 3) >> 2
    key *= _REPUNIT[k] or _repunit(k)
    if n & 3:
        key >>= (k << 5) - (n << 3)
    return (_from_bytes(payload, "big") ^ key).to_bytes(n, "big")


_TEXT_HEADERS = tuple(bytes((0x81, n)) for n in range(126))
_BINARY_HEADERS = tuple(bytes((0x82, n)) for n in range(126))


def build_binary(payload: bytes | bytearray | memoryview) -> bytes:
    """Return an unmasked FIN binary frame carrying *payload*."""
    n = len(payload)
    if n < 126:
        return _BINARY_HEADERS[n] + payload
    if n < 65536:
        return _pack_medium(0x82, 126, n) + payload
    return _pack_long(0x82, 127, n) + payload


def build_text(text: str) -> bytes:
    """Return an unmasked FIN text frame carrying *text* encoded as UTF-8."""
    payload = text.encode()
    n = len(payload)
    if n < 126:
        return _TEXT_HEADERS[n] + payload
    if n < 65536:
        return _pack_medium(0x81, 126, n) + payload
    return _pack_long(0x81, 127, n) + payload


def build_message(message: str | bytes | bytearray | memoryview) -> bytes:
    """Frame *message* as text if it is a ``str``, else as binary."""
    if isinstance(message, str):
        return build_text(message)
    return build_binary(message)


# Stands in for a header too short to unpack: fails the first-byte test.
_SHORT = (0, 0, 0)
