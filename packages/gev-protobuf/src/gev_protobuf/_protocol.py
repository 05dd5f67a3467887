"""gev's protobuf framing as a gev-core protocol: ``Server(handler, protocol="protobuf")``.

The handler sees ``on_message(conn, type_name, payload)``, like Go gev's ``ctx.(string)``
and ``data``; with a :class:`MessageRegistry`, ``payload`` is the parsed message instead.
Replies -- what ``on_message`` returns and what ``conn.send`` is given -- are framed here,
unlike gev where ``Packet`` passed bytes through and every handler called ``PackMessage``:

* ``(type_name, payload)``: ``payload`` is bytes-like, or a protobuf message, which is
  serialized and sent under ``type_name``;
* a protobuf message: sent under the name the registry gives its class, or without a
  registry under ``DESCRIPTOR.full_name``;
* ``None`` (from ``on_message``): nothing is sent.

Bare ``bytes`` are refused with a ``TypeError``: in this protocol they would be either a
payload without a type name or an already framed message, and guessing wrong corrupts the
stream. Already framed bytes go out with ``conn.write``, which bypasses ``pack``.

Every error in the peer's bytes becomes a :class:`~gev_core.ProtocolError`, so the reactor
logs the reason and closes only that connection. Errors of the application (a reply that
cannot be framed) stay what they are and are logged with their traceback.
"""

from __future__ import annotations

import codecs
import functools
from collections.abc import Callable
from importlib.machinery import EXTENSION_SUFFIXES
from typing import TYPE_CHECKING, Any, Final

from gev_core import NEED_MORE_DATA, Protocol, ProtocolError
from google.protobuf.message import Message  # type: ignore[import-untyped, unused-ignore]

from ._framing import (
    DEFAULT_MAX_FRAME_SIZE,
    HEADER_SIZE,
    MAX_FRAME_LENGTH,
    FrameError,
    _decoded_names,
    _header_error,
    _name_blocks,
    _unpack_header,
    pack_message,
    parse_frame,
    scan_frames,
)
from ._registry import MessageRegistry

if TYPE_CHECKING:
    from gev_core import Config, Connection
    from gev_ringbuffer import RingBuffer

try:  # read by mypyc at build time; never applied to a compiled class
    from mypy_extensions import mypyc_attr
except ImportError:  # not a dependency: in pure Python the decorator changes nothing

    def mypyc_attr(*_args: object, **_attrs: object) -> Any:  # type: ignore[misc]
        return lambda cls: cls


__all__ = ["ProtobufProtocol"]

_BYTES_REPLY = (
    "{kind} is not a valid protobuf reply: return (type_name, payload) or a protobuf "
    "message, which are framed for you; send bytes that are already framed with conn.write()"
)


def _peer_error(exc: FrameError) -> ProtocolError:
    return ProtocolError(f"protobuf: {exc}")


# receive()'s shortcut: the u32 length field of a reply shorter than this, made once per length
# seen and kept (int.to_bytes and the object it makes cost about 250 instructions a frame; an
# index, a dozen). Small replies are where a frame's fixed costs matter; larger ones take
# to_bytes. 16 KiB of pointers per process, and only the lengths seen get a bytes object.
_HEADS_SIZE: Final = 2048
_heads: Final[list[bytes | None]] = [None] * _HEADS_SIZE

# receive()'s shortcut sends a reply payload of at least this many bytes as a second chunk
# behind its header, which the reactor writes with the header in one writev, instead of
# copying it into a frame. Below it the copy costs less than the writev's second buffer
# (bench/RESULTS.md; gev-websocket's GATHER_MIN is the same).
_GATHER_MIN: Final = 512

# No handler: what receive()'s shortcut has seen before its first frame.
_NOBODY: Final = object()

# Whether this module runs compiled (mypyc): receive()'s shortcut then reads the header by
# indexing and builds a reply in one %-format, both native code. Interpreted, the same steps
# cost more than what they replace (ten subscripts against one struct unpack, a format parse
# against two concatenations), so the pure fallback keeps those.
_NATIVE: Final = __file__.endswith(tuple(EXTENSION_SUFFIXES))


# Compiled where the wheel is: a native class on top of gev-core's interpreted Protocol (mypyc
# builds it at import time from the base it finds, which is safe as long as that base is not
# itself compiled: tests/test_compiled.py keeps gev_core._protocol interpreted). Users may
# still subclass it, hence allow_interpreted_subclasses.
@mypyc_attr(allow_interpreted_subclasses=True)
class ProtobufProtocol(Protocol):
    """Frames of gev's ``plugins/protobuf``: ``u32 length | u16 type length | type | payload``.

    :param max_frame_size: largest length field accepted from the peer (type name, payload
        and 2). A peer announcing more is disconnected as soon as the 4 length bytes arrive,
        before anything is buffered for the frame. Replies are bounded only by the format.
    :param registry: parse payloads into message objects (a strict registry disconnects a
        peer that sends an unregistered type) and name the message objects given as replies.
    """

    name = "protobuf"
    accepts_bytes = True

    def __init__(
        self,
        max_frame_size: int = DEFAULT_MAX_FRAME_SIZE,
        registry: MessageRegistry | None = None,
    ) -> None:
        if isinstance(max_frame_size, bool) or not isinstance(max_frame_size, int):
            raise TypeError(f"max_frame_size must be an int, not {type(max_frame_size).__name__}")
        if not 2 <= max_frame_size <= MAX_FRAME_LENGTH:
            raise ValueError(
                f"max_frame_size must be between 2 and {MAX_FRAME_LENGTH}, got {max_frame_size}"
            )
        if registry is not None and not isinstance(registry, MessageRegistry):
            raise TypeError(f"registry must be a MessageRegistry or None, not {registry!r}")
        self._max_frame_size = max_frame_size
        self._registry = registry
        # receive()'s one-frame shortcut takes frames up to this length; -1 (none) with a
        # registry, whose parsing lives on the general path. One compare instead of two.
        # So does a subclass's own pack: the shortcut frames replies without calling it.
        direct = registry is None and type(self).pack is ProtobufProtocol.pack
        self._shortcut_max = max_frame_size if direct else -1
        #: receive()'s shortcut: the last frame it took (see there).
        self._recent: tuple[bytes, str, int, bytes] = (b"", "", -1, b"")
        #: receive()'s shortcut: the handler it called last and that handler's bound
        #: ``on_message``, so that the next frame for it (usually every frame: the server's
        #: handler) costs an identity check instead of a method lookup. Replaced whole, as
        #: _recent. Keeps that handler alive until another one takes its place.
        self._dispatch: tuple[object, Any] = (_NOBODY, None)
        # Built once: shared_packer must hand every connection the same object.
        self._shared = functools.partial(self.pack, None)
        # Protocol.counting, declared again here: compiled, a field of this class is read
        # natively, an attribute inherited from the interpreted base by a lookup.
        self.counting: bool = False

    @property
    def max_frame_size(self) -> int:
        """The largest length field accepted from the peer."""
        return self._max_frame_size

    @property
    def registry(self) -> MessageRegistry | None:
        """The registry payloads are parsed with, if any."""
        return self._registry

    @classmethod
    def from_config(cls, config: Config) -> ProtobufProtocol:
        """Build from ``config.options``: ``protobuf_max_frame_size`` (``gev serve
        --protobuf-max-frame-size``) and ``protobuf_registry`` (``Server(options=...)``)."""
        options = config.options
        size = options.get("protobuf_max_frame_size")
        registry = options.get("protobuf_registry")
        # Checked here, not only in __init__: where this module is compiled, a wrong type is
        # refused on entry to __init__ in mypyc's words, which name no option.
        if size is not None and (isinstance(size, bool) or not isinstance(size, int)):
            raise TypeError(f"protobuf_max_frame_size must be an int, not {type(size).__name__}")
        if registry is not None and not isinstance(registry, MessageRegistry):
            raise TypeError(
                f"protobuf_registry must be a MessageRegistry or None, not {registry!r}"
            )
        try:
            return cls(
                max_frame_size=DEFAULT_MAX_FRAME_SIZE if size is None else size,
                registry=registry,
            )
        except (TypeError, ValueError) as exc:
            # The messages start with the parameter's name: make it the option's.
            raise type(exc)(f"protobuf_{exc}") from None

    def __repr__(self) -> str:
        registry = "" if self.registry is None else f", registry={len(self.registry)} types"
        return f"ProtobufProtocol(max_frame_size={self.max_frame_size}{registry})"

    # ------------------------------------------------------------------ first bytes

    def sniff(self, data: bytes) -> str | None:
        """Whether ``data``, a connection's first bytes, can start a stream of frames.

        What the plugin's ``gev_select_protocol`` answers on a port shared with other
        protocols: ``"protobuf"`` once a whole 6-byte header is plausible (length within
        ``max_frame_size``, type name fitting in it, whatever of the name has arrived valid
        UTF-8), ``None`` as soon as the bytes rule it out, else ``NEED_MORE_DATA``.
        """
        max_frame_size = self.max_frame_size
        if len(data) < 4:
            # Ruled out if even the smallest length these bytes can grow into is too big:
            # below a 16 MiB limit a frame starts with a zero byte, text never does.
            if int.from_bytes(data.ljust(4, b"\0"), "big") > max_frame_size:
                return None
            return NEED_MORE_DATA
        length = int.from_bytes(data[:4], "big")
        if length < 2 or length > max_frame_size:
            return None
        if len(data) < HEADER_SIZE:
            return NEED_MORE_DATA
        type_len = int.from_bytes(data[4:HEADER_SIZE], "big")
        if type_len > length - 2:
            return None
        name = data[HEADER_SIZE : HEADER_SIZE + type_len]
        try:
            # Final only if the whole name is here: a multi-byte character may be cut short.
            codecs.getincrementaldecoder("utf-8")().decode(name, final=len(name) == type_len)
        except UnicodeDecodeError:
            return None
        return ProtobufProtocol.name

    # ------------------------------------------------------------------ receiving

    def receive(self, conn: Connection, data: bytes | memoryview, out: list[Any]) -> int:
        # A request-reply peer sends one frame and waits, so most reads hold exactly one
        # complete frame. That case is parsed here without scan_frames' list and tuples, and
        # a (type_name, bytes) reply is framed without a call to pack: about 30 % fewer
        # instructions per read than a scan_frames or parse_frame loop (benchmarks/receive.py).
        # Everything else -- several frames, a partial one, a bad header, a type name not
        # seen before, a registry -- goes to scan_frames, which validates everything, so this
        # shortcut only ever accepts frames scan_frames accepts too.
        buf: bytes
        length: int
        type_len: int
        if type(data) is bytes:
            buf = data
            size = len(buf)
            if size <= 5:
                return self._receive_frames(conn, buf, out)
        else:
            # The rest of a frame that took several reads (the reactor's input buffer). Copied
            # only if it is one whole frame, as its payload would be; else the general path
            # copies what it must.
            size = len(data)
            if size <= 5:
                return self._receive_frames(conn, data, out)
            length, type_len = _unpack_header(data, 0)
            if length + 4 != size or length > self._shortcut_max:
                return self._receive_frames(conn, data, out)
            buf = bytes(data)
        # The last frame's header and name (bytes 0 to its payload; empty until two frames
        # in a row have had one size), its name decoded, its size and its name block (bytes
        # 4 to the payload, a reply's under that name). One tuple, read and replaced whole:
        # the loops of a server share this object.
        head, name, last_size, block = self._recent
        # len(), not truth: compiled, a bytes object's truth is a generic call.
        if size == last_size and len(head) != 0 and buf.startswith(head):
            # The last frame's length and name, which passed every check below: a stream of
            # fixed-size messages costs one compare here.
            name_end = len(head)
        else:
            if _NATIVE:
                # Compiled, indexing bytes is a native load: no struct call, no tuple.
                length = buf[0] << 24 | buf[1] << 16 | buf[2] << 8 | buf[3]
                type_len = buf[4] << 8 | buf[5]
            else:
                length, type_len = _unpack_header(buf, 0)
            if length + 4 != size or length > self._shortcut_max or type_len > length - 2:
                return self._receive_frames(conn, buf, out)
            name_end = 6 + type_len
            # The same name as the last frame's costs a compare instead of a hash and a dict
            # lookup; names are cached once decoded and validated (_framing), and a name not
            # cached yet takes the long way.
            named = buf[4:name_end]
            if named == block:
                # Kept from the second frame of one size and name on: a stream whose sizes
                # or names vary does not pay for a header it would not match.
                head = buf[:name_end] if size == last_size else b""
            else:
                found = _decoded_names.get(named[2:])
                if found is None:
                    return self._receive_frames(conn, buf, out)
                name = found
                block = named
                head = b""
            self._recent = (head, name, size, block)
        handler = conn.handler
        seen, on_message = self._dispatch
        if handler is not seen:
            on_message = handler.on_message
            self._dispatch = (handler, on_message)
        reply = on_message(conn, name, buf[name_end:])
        # The loop's message counters, once a loop that counts has served this protocol
        # (Protocol.counting): the call into the core is ~400 instructions, a tenth of this
        # echo, and a native flag a few.
        if self.counting:
            conn.count_messages(1, 0 if reply is None else 1)
        if type(reply) is tuple and len(reply) == 2:
            reply_name, payload = reply
            if type(payload) is bytes:
                payload_size = len(payload)
                if reply_name is name:
                    if len(head) == name_end and payload_size + name_end == size:
                        # A reply of the request's name and size has the request's header.
                        if payload_size < _GATHER_MIN:
                            out.append(head + payload)
                        else:
                            out.append(head)
                            out.append(payload)
                        return size
                else:
                    found_block = _name_blocks.get(reply_name)
                    if found_block is None:
                        out.append(self.pack(conn, reply))
                        return size
                    block = found_block
                total = len(block) + payload_size
                length_field: bytes | None = None
                if total < _HEADS_SIZE:
                    length_field = _heads[total]
                    if length_field is None:
                        length_field = _heads[total] = total.to_bytes(4, "big")
                elif total <= MAX_FRAME_LENGTH:
                    length_field = total.to_bytes(4, "big")
                # else over 4 GiB: pack() below raises the FrameError
                if length_field is not None:
                    if payload_size >= _GATHER_MIN:
                        out.append(length_field + block)
                        out.append(payload)
                    # Compiled, the frame is built in one allocation (two concatenations
                    # would be two).
                    elif _NATIVE:
                        out.append(b"%b%b%b" % (length_field, block, payload))
                    else:
                        out.append(length_field + block + payload)
                    return size
        if reply is not None:
            out.append(self.pack(conn, reply))
        return size

    def _receive_frames(self, conn: Connection, data: bytes | memoryview, out: list[Any]) -> int:
        try:
            frames, consumed = scan_frames(data, self.max_frame_size)
        except FrameError as exc:
            raise _peer_error(exc) from exc
        on_message = conn.handler.on_message
        pack = self.pack
        registry = self.registry
        received = sent = 0
        try:
            for type_name, payload in frames:
                if conn.closing:
                    break  # the rest of this read dies with the connection
                if registry is None:
                    reply = on_message(conn, type_name, payload)
                else:
                    try:
                        message = registry.parse(type_name, payload)
                    except FrameError as exc:
                        raise _peer_error(exc) from exc
                    reply = on_message(conn, type_name, message)
                received += 1
                if reply is not None:
                    out.append(pack(conn, reply))
                    sent += 1
        finally:
            if received and self.counting:
                conn.count_messages(received, sent)
        return consumed

    def unpack(self, conn: Connection, buffer: RingBuffer) -> tuple[Any, Any] | None:
        """gev's ``UnPacket`` over the connection's ring buffer, one frame per call.

        Not used by the reactor (``receive`` is faster); kept for code written against
        gev's protocol interface. The length is checked from the header alone, so an
        oversized claim is refused before its body is waited for.
        """
        limit = self.max_frame_size
        length = buffer.peek_uint32()
        if length is None:
            return None
        if length > limit or length < 2:
            raise _peer_error(_header_error(0, length, None, limit))
        available = len(buffer)
        if available < 4 + length:
            if available >= 6:
                # The type-name length has arrived: a bad one fails now, not once the body has.
                head = buffer.virtual_read(6)
                buffer.virtual_revert()
                _, type_len = _unpack_header(head, 0)
                if type_len > length - 2:
                    raise _peer_error(_header_error(0, length, type_len, limit))
            return None
        # Read on the virtual cursor: the buffer is consumed only once the frame proved valid.
        try:
            parsed = parse_frame(buffer.virtual_read(4 + length), 0, limit)
            if parsed is None:  # pragma: no cover - all 4 + length bytes were just read
                raise AssertionError("a complete frame was reported incomplete")
            _, type_name, payload = parsed
            # A name of its own: payload is bytes, the parsed message is not (compiled code
            # checks the declared type of every assignment).
            message: Any = payload
            if self.registry is not None:
                message = self.registry.parse(type_name, payload)
        except FrameError as exc:
            buffer.virtual_revert()
            raise _peer_error(exc) from exc
        buffer.virtual_flush()
        return type_name, message

    # ------------------------------------------------------------------ sending

    def shared_packer(self, conn: Connection) -> Callable[[Any], bytes] | None:
        """Frames do not depend on the connection: fan-out frames each message once."""
        if type(self).pack is not ProtobufProtocol.pack:
            return None
        return self._shared

    def pack(self, conn: Connection | None, data: Any) -> bytes:
        """Frame a reply: ``(type_name, payload_or_message)`` or a protobuf message.

        Called on the loop for returned replies and on the caller's thread for
        ``conn.send``. ``conn`` is not used: it is ``None`` when a message is framed once
        for many connections (:meth:`shared_packer`). Raises ``TypeError`` for anything
        else, bare bytes included, and :class:`~gev_protobuf.FrameError` for a frame the
        format cannot carry.
        """
        if isinstance(data, tuple):
            if len(data) != 2:
                raise TypeError(
                    f"a protobuf reply tuple is (type_name, payload), got {len(data)} items"
                )
            type_name, payload = data
            if isinstance(payload, Message):
                payload = payload.SerializeToString()
            return pack_message(type_name, payload)
        if isinstance(data, Message):
            if self.registry is not None:
                return self.registry.pack(data)
            return pack_message(type(data).DESCRIPTOR.full_name, data.SerializeToString())
        if isinstance(data, (bytes, bytearray, memoryview)):
            raise TypeError(_BYTES_REPLY.format(kind=type(data).__name__))
        raise TypeError(_BYTES_REPLY.format(kind=repr(data)[:60]))
