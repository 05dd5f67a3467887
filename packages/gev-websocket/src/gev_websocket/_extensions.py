"""wsproto extensions that bound what a peer can make the server hold in memory.

wsproto runs every frame through the hooks of its :class:`~wsproto.extensions.Extension`
objects, in list order: ``frame_inbound_header`` once the header is parsed,
``frame_inbound_payload_data`` for every chunk of payload consumed, ``frame_inbound_complete``
when a frame ends. Two extensions plug into those hooks:

* :class:`MessageLimits` is never negotiated (no client offers it, and it refuses every offer)
  but is always enabled, so wsproto consults it for every frame. It closes with 1009 as soon
  as a frame header announces more than the frame or message limit allows, instead of
  buffering the payload first, and it counts the (decompressed) payload bytes of each message.
* :class:`BoundedPerMessageDeflate` is permessage-deflate (RFC 7692) with the codec rewritten
  on top of wsproto's class. wsproto 1.2/1.3's own codec inflates each chunk with no output
  limit (a zip bomb of a few KiB inflates to gigabytes), forgets that a message is compressed
  when a control frame arrives between its fragments, leaks state between several offers in
  one handshake, and keeps a configured ``client_max_window_bits`` for decompression even
  when the client never agreed to it. The subclass keeps wsproto's name and hook protocol but
  holds its own state, so it depends on no private attribute of the parent class.

Both only implement the server side.
"""

from __future__ import annotations

import zlib
from typing import TYPE_CHECKING

from wsproto.extensions import Extension, PerMessageDeflate
from wsproto.frame_protocol import CloseReason, Opcode, RsvBits

if TYPE_CHECKING:
    from wsproto.frame_protocol import FrameDecoder, FrameProtocol

__all__ = ["BoundedPerMessageDeflate", "MessageLimits"]

_NO_RSV = RsvBits(False, False, False)
_RSV1 = RsvBits(True, False, False)
# RFC 7692 7.2.1: the sender strips this empty stored block; the receiver appends it back.
_SYNC_TAIL = b"\x00\x00\xff\xff"


def _deflate_bound(size: int) -> int:
    """The most bytes deflate can turn ``size`` bytes into, whatever its settings.

    zlib's own conservative ``deflateBound`` (for a non-default window or memLevel, whose small
    blocks cost 5 bytes of header each).
    """
    return size + ((size + 7) >> 3) + ((size + 63) >> 6) + 11


class MessageLimits(Extension):
    """Enforce ``max_frame_size`` and ``max_message_size`` inside wsproto's frame pipeline.

    Place it *after* :class:`BoundedPerMessageDeflate` in the extension list so that the
    payload hook sees decompressed bytes.

    wsproto may call ``frame_inbound_header`` twice for one frame (it re-parses a header whose
    masking key had not fully arrived), so that hook only *sets* state derived from the header
    and never accumulates; sizes are accumulated in the payload hook, which runs once per
    consumed chunk.
    """

    name = "x-gev-limits"

    def __init__(self, max_message_size: int, max_frame_size: int) -> None:
        self.max_message_size = max_message_size
        self.max_frame_size = max_frame_size
        self._message_bytes = 0
        self._compressed = False
        self._control = False

    def enabled(self) -> bool:
        return True

    def offer(self) -> bool:
        return False

    def accept(self, offer: str) -> None:
        # Never negotiated: a client naming this extension gets no answer for it.
        return None

    def frame_inbound_header(
        self,
        proto: FrameDecoder | FrameProtocol,
        opcode: Opcode,
        rsv: RsvBits,
        payload_length: int,
    ) -> CloseReason | RsvBits:
        if opcode & 0x08:  # control frames are capped at 125 bytes by wsproto itself
            self._control = True
            return _NO_RSV
        self._control = False
        if opcode is not Opcode.CONTINUATION:
            self._message_bytes = 0
            self._compressed = rsv.rsv1
        limit = self.max_frame_size
        if self._compressed:
            # Deflate makes an incompressible payload a little larger (stored blocks): a
            # message within the limits may arrive in a frame just over max_frame_size. What
            # it inflates to is bounded by the deflate extension and the payload hook below.
            limit = _deflate_bound(limit)
        if payload_length > limit:
            return CloseReason.MESSAGE_TOO_BIG
        # A compressed frame's length says nothing about the inflated size: the payload
        # hook and the deflate extension's own bound handle compressed messages.
        if not self._compressed and self._message_bytes + payload_length > self.max_message_size:
            return CloseReason.MESSAGE_TOO_BIG
        return _NO_RSV

    def frame_inbound_payload_data(
        self, proto: FrameDecoder | FrameProtocol, data: bytes
    ) -> bytes | CloseReason:
        if self._control:
            return data
        self._message_bytes += len(data)
        if self._message_bytes > self.max_message_size:
            return CloseReason.MESSAGE_TOO_BIG
        return data

    def frame_inbound_complete(
        self, proto: FrameDecoder | FrameProtocol, fin: bool
    ) -> bytes | CloseReason | None:
        if fin and not self._control:
            # Forget the finished message, so that the state between two messages is the
            # same whether or not the fast path bypassed wsproto for some of them.
            self._message_bytes = 0
            self._compressed = False
        return None


class BoundedPerMessageDeflate(PerMessageDeflate):
    """Server-side permessage-deflate whose inflation never exceeds ``max_message_size``.

    Negotiation (RFC 7692 section 7) follows the same rules as the ``websockets`` library:

    * Only the first acceptable offer of a handshake is accepted.
    * An offer with an unknown, duplicate or malformed parameter is declined.
    * ``server_max_window_bits=8`` is declined, because zlib cannot produce an 8-bit window.
    * ``client_max_window_bits`` is only asked for when the client advertised support for it.
      Otherwise the decompressor uses the full 15-bit window.

    :param max_message_size: most bytes one message may inflate to; beyond that the frame
        is rejected with 1009 and inflation stops.
    :param client_no_context_takeover: ask the client to reset its compressor per message.
    :param server_no_context_takeover: reset our compressor per message (less memory, worse
        ratio).
    :param client_max_window_bits: ask the client for at most this window (8-15), when the
        client advertises ``client_max_window_bits``.
    :param server_max_window_bits: use at most this window (9-15) for our compressor.
    :param compress_level: zlib level for outgoing messages.
    :param mem_level: zlib ``memLevel`` for outgoing messages (memory vs speed).
    """

    def __init__(
        self,
        max_message_size: int,
        *,
        client_no_context_takeover: bool = False,
        server_no_context_takeover: bool = False,
        client_max_window_bits: int | None = None,
        server_max_window_bits: int | None = None,
        compress_level: int = 6,
        mem_level: int = 8,
    ) -> None:
        super().__init__()
        if client_max_window_bits is not None and not 8 <= client_max_window_bits <= 15:
            raise ValueError("client_max_window_bits must be between 8 and 15")
        if server_max_window_bits is not None and not 9 <= server_max_window_bits <= 15:
            raise ValueError("server_max_window_bits must be between 9 and 15")
        self.max_message_size = max_message_size
        self._cfg_client_nct = client_no_context_takeover
        self._cfg_server_nct = server_no_context_takeover
        self._cfg_client_bits = client_max_window_bits
        self._cfg_server_bits = server_max_window_bits
        self.compress_level = compress_level
        self.mem_level = mem_level
        # Negotiated values, valid once enabled() is true.
        self.client_no_context_takeover = False
        self.server_no_context_takeover = False
        self.inflate_bits = 15
        self.deflate_bits = 15
        self._accepted = False
        self._inflater: zlib._Decompress | None = None
        self._deflater: zlib._Compress | None = None
        self._in_message = False  # inside a message that started with RSV1 set
        self._in_data_frame = False  # the current frame is a data frame (not control)
        self._inflated = 0

    def enabled(self) -> bool:
        return self._accepted

    # -- negotiation -----------------------------------------------------------------

    def accept(self, offer: str) -> str | None:
        if self._accepted:
            return None
        params = _parse_offer(offer)
        if params is None:
            return None

        server_nct = self._cfg_server_nct or "server_no_context_takeover" in params
        client_nct = self._cfg_client_nct or "client_no_context_takeover" in params
        if params.get("server_no_context_takeover") or params.get("client_no_context_takeover"):
            return None  # these two take no value

        response = []
        if server_nct:
            response.append("server_no_context_takeover")
        if client_nct:
            response.append("client_no_context_takeover")

        deflate_bits = 15
        if "server_max_window_bits" in params:
            requested = _window_bits(params["server_max_window_bits"], required=True)
            if requested is None:
                return None
            deflate_bits = min(requested, self._cfg_server_bits or 15)
            response.append(f"server_max_window_bits={deflate_bits}")
        elif self._cfg_server_bits is not None:
            deflate_bits = self._cfg_server_bits
            response.append(f"server_max_window_bits={deflate_bits}")
        if deflate_bits == 8:
            return None

        inflate_bits = 15
        if "client_max_window_bits" in params:
            value = params["client_max_window_bits"]
            advertised = _window_bits(value, required=False)
            if advertised is None:
                return None
            if self._cfg_client_bits is not None:
                inflate_bits = min(advertised, self._cfg_client_bits)
                response.append(f"client_max_window_bits={inflate_bits}")

        self.server_no_context_takeover = server_nct
        self.client_no_context_takeover = client_nct
        # zlib rejects an 8-bit window for raw inflate on some builds; a larger window
        # always decodes a stream made with a smaller one.
        self.inflate_bits = max(inflate_bits, 9)
        self.deflate_bits = deflate_bits
        self._accepted = True
        return "; ".join(response)

    # -- inbound ---------------------------------------------------------------------

    def frame_inbound_header(
        self,
        proto: FrameDecoder | FrameProtocol,
        opcode: Opcode,
        rsv: RsvBits,
        payload_length: int,
    ) -> CloseReason | RsvBits:
        if opcode & 0x08:
            # A control frame between two fragments must leave the message state alone.
            self._in_data_frame = False
            return CloseReason.PROTOCOL_ERROR if rsv.rsv1 else _RSV1
        self._in_data_frame = True
        if opcode is Opcode.CONTINUATION:
            return CloseReason.PROTOCOL_ERROR if rsv.rsv1 else _RSV1
        # First frame of a message (wsproto rejects a TEXT/BINARY frame inside a message
        # right after this hook, so resetting here is safe). Idempotent on re-parse.
        self._in_message = rsv.rsv1
        self._inflated = 0
        if rsv.rsv1 and self._inflater is None:
            self._inflater = zlib.decompressobj(-self.inflate_bits)
        return _RSV1

    def _inflate(self, data: bytes) -> bytes | CloseReason:
        inflater = self._inflater
        assert inflater is not None
        budget = self.max_message_size - self._inflated
        try:
            # Asking for one byte more than the budget tells "exactly at the limit" from
            # "over it" without ever producing more than budget + 1 bytes.
            out = inflater.decompress(data, budget + 1)
        except zlib.error:
            return CloseReason.INVALID_FRAME_PAYLOAD_DATA
        if len(out) > budget:
            return CloseReason.MESSAGE_TOO_BIG
        self._inflated += len(out)
        return out

    def frame_inbound_payload_data(
        self, proto: FrameDecoder | FrameProtocol, data: bytes
    ) -> bytes | CloseReason:
        if not (self._in_data_frame and self._in_message) or not data:
            return data
        return self._inflate(data)

    def frame_inbound_complete(
        self, proto: FrameDecoder | FrameProtocol, fin: bool
    ) -> bytes | CloseReason | None:
        if not (fin and self._in_data_frame and self._in_message):
            return None
        self._in_message = False
        out = self._inflate(_SYNC_TAIL)
        # A peer may end its stream with a final block; start afresh for the next message
        # rather than feeding it to an inflater that already hit end-of-stream.
        if self.client_no_context_takeover or (self._inflater and self._inflater.eof):
            self._inflater = None
        return out

    # -- outbound --------------------------------------------------------------------

    def frame_outbound(
        self,
        proto: FrameDecoder | FrameProtocol,
        opcode: Opcode,
        rsv: RsvBits,
        data: bytes,
        fin: bool,
    ) -> tuple[RsvBits, bytes]:
        if opcode & 0x08:
            return (rsv, data)
        if opcode is not Opcode.CONTINUATION:
            rsv = RsvBits(True, rsv.rsv2, rsv.rsv3)
        deflater = self._deflater
        if deflater is None:
            deflater = self._deflater = zlib.compressobj(
                self.compress_level, zlib.DEFLATED, -self.deflate_bits, self.mem_level
            )
        out = deflater.compress(data)
        if fin:
            out += deflater.flush(zlib.Z_SYNC_FLUSH)
            out = out[:-4]
            if self.server_no_context_takeover:
                self._deflater = None
        return (rsv, out)

    def __repr__(self) -> str:
        return (
            f"<{type(self).__name__} enabled={self._accepted} "
            f"client_no_context_takeover={self.client_no_context_takeover} "
            f"server_no_context_takeover={self.server_no_context_takeover} "
            f"inflate_bits={self.inflate_bits} deflate_bits={self.deflate_bits}>"
        )


_KNOWN_PARAMS = frozenset(
    {
        "server_no_context_takeover",
        "client_no_context_takeover",
        "server_max_window_bits",
        "client_max_window_bits",
    }
)


def _parse_offer(offer: str) -> dict[str, str | None] | None:
    """Parse ``permessage-deflate; a; b=1`` into ``{"a": None, "b": "1"}``.

    Returns None (decline) for unknown or repeated parameters.
    """
    params: dict[str, str | None] = {}
    for part in offer.split(";")[1:]:
        part = part.strip()
        if not part:
            continue
        name, sep, value = part.partition("=")
        name = name.strip().lower()
        if name not in _KNOWN_PARAMS or name in params:
            return None
        params[name] = value.strip().strip('"') if sep else None
    return params


def _window_bits(value: str | None, *, required: bool) -> int | None:
    """Validate a window-bits value: 8-15, decimal, no leading zero.

    A missing value means "any" (15) unless ``required``; None means "decline the offer".
    """
    if value is None:
        return None if required else 15
    if len(value) > 2 or not value.isdigit() or value[0] == "0":
        return None
    bits = int(value)
    return bits if 8 <= bits <= 15 else None
