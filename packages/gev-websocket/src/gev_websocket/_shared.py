"""Frames built once for many WebSocket connections (fan-out, ``Protocol.shared_packer``).

A server frame is a pure function of the message on every connection except one: with
permessage-deflate and context takeover, each compressed message continues the connection's own
LZ77 window, so its bytes differ per connection and per message history. What the protocol
hands out for sharing, per kind of session:

* no compression: :func:`~gev_websocket.build_message` -- the same bytes ``send`` produces;
* permessage-deflate with ``server_no_context_takeover``: a compressor made afresh per message
  with the negotiated window, level and memory level, so the compressed frame is the same for
  every session that negotiated the same parameters (RSV1 set); small messages, which deflate
  would only grow, go uncompressed;
* permessage-deflate with context takeover: the *uncompressed* frame (RSV1 clear). RFC 7692
  lets an endpoint send uncompressed messages on a compressed connection; such a message goes
  through neither side's compressor state, so both contexts stay in step. Compressing per
  connection instead would cost one compression per subscriber -- the work fan-out exists to
  avoid. Servers that want compressed broadcasts negotiate ``server_no_context_takeover``.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Callable
from typing import Any

from ._fastpath import build_message

__all__ = ["COMPRESS_MIN_SIZE", "compressed_packer"]

#: Messages shorter than this go out uncompressed even on a no-context-takeover session: the
#: deflate block and its header cost more than they save on a few dozen bytes.
COMPRESS_MIN_SIZE = 128

_pack_medium = struct.Struct("!BBH").pack
_pack_long = struct.Struct("!BBQ").pack
# RFC 7692 7.2.1: a message compressed with a sync flush ends with this empty block, which the
# sender removes.
_SYNC_TAIL = b"\x00\x00\xff\xff"

_packers: dict[tuple[int, int, int], Callable[[Any], bytes]] = {}


def _compressed_frame(first_byte: int, payload: bytes) -> bytes:
    n = len(payload)
    if n < 126:
        return bytes((first_byte, n)) + payload
    if n < 65536:
        return _pack_medium(first_byte, 126, n) + payload
    return _pack_long(first_byte, 127, n) + payload


def compressed_packer(window_bits: int, level: int, mem_level: int) -> Callable[[Any], bytes]:
    """The shared packer of no-context-takeover sessions with these deflate parameters.

    One function object per parameter set, so that every session with the same parameters
    shares its frames.
    """
    key = (window_bits, level, mem_level)
    packer = _packers.get(key)
    if packer is not None:
        return packer

    def pack(message: Any) -> bytes:
        if isinstance(message, str):
            raw = message.encode()
            first = 0xC1  # FIN, RSV1 (compressed), text
        else:
            raw = message if type(message) is bytes else bytes(message)
            first = 0xC2  # FIN, RSV1, binary
        if len(raw) < COMPRESS_MIN_SIZE:
            return build_message(message if first == 0xC1 else raw)
        deflater = zlib.compressobj(level, zlib.DEFLATED, -window_bits, mem_level)
        body = deflater.compress(raw) + deflater.flush(zlib.Z_SYNC_FLUSH)
        if body.endswith(_SYNC_TAIL):
            body = body[:-4]
        return _compressed_frame(first, body)

    # setdefault: two loop threads racing here end up sharing one function.
    return _packers.setdefault(key, pack)
