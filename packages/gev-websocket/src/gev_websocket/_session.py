"""Per-connection, server-side WebSocket state machine (sans-IO).

:class:`WebSocketSession` wraps a ``wsproto.WSConnection`` in server mode. wsproto stays the
authority for the opening handshake (through h11), extension negotiation, the closing
handshake and every frame that is not the plain common case. The fast path in
:mod:`gev_websocket._fastpath` (which is the session's ``receive`` method) handles that common
case and calls :meth:`WebSocketSession._slow_path` for the rest.

It is shaped for a reactor that calls one method per socket read::

    closed = session.receive(data, out)   # data: valid only during the call
    # out now holds the bytes to send, in order: handshake response, pongs, replies,
    # close frames.  If closed is true, flush out and then close the transport.

Messages go to ``on_message(context, message)`` as ``str`` (text) or ``bytes`` (binary), in
arrival order and during :meth:`~WebSocketSession.receive`. Whatever the callback returns
(``str``, ``bytes`` or None) is framed and appended to ``out`` right away, so replies keep
their order with respect to pongs and to the close frame.

Bounded work: with ``work_per_turn`` set, ``receive`` stops at a frame boundary once the
frames wsproto parsed since the last stop have cost that much (bytes fed to wsproto and bytes
it inflated or decoded, plus :data:`FRAME_WORK` per frame) and leaves the last
:attr:`~WebSocketSession.unconsumed` bytes of ``data`` for the next call. A few KiB of
compressed input can inflate to megabytes: without the bound, one read could keep a reactor
busy for seconds. Frames the fast path takes cost in proportion to the bytes read, so the size
of ``data`` bounds them already.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from http import HTTPStatus
from struct import error as struct_error
from typing import Any, final

from wsproto import ConnectionType, WSConnection
from wsproto.connection import Connection, ConnectionState
from wsproto.events import (
    AcceptConnection,
    BytesMessage,
    CloseConnection,
    Event,
    Ping,
    Pong,
    RejectConnection,
    RejectData,
    Request,
    TextMessage,
)
from wsproto.frame_protocol import CloseReason
from wsproto.utilities import RemoteProtocolError

from ._compat import wsproto_buffered, wsproto_idle
from ._extensions import BoundedPerMessageDeflate, MessageLimits
from ._fastpath import (
    _BINARY_HEADERS,
    _REPUNIT,
    _SHORT,
    GATHER_MIN,
    INT_UNMASK_MAX,
    _from_bytes,
    _pack_long,
    _pack_medium,
    _repunit,
    _unmask_frame,
    _unmask_translate,
    _unpack_head,
    _unpack_key,
    _unpack_long_size,
    build_binary,
    build_message,
    build_text,
)
from ._message_type import BINARY, TEXT

try:  # read by mypyc at build time (docs/compiled.md); never applied to a compiled class
    from mypy_extensions import mypyc_attr
except ImportError:  # not a dependency: in pure Python the decorator changes nothing

    def mypyc_attr(*_args: object, **_attrs: object) -> Any:  # type: ignore[misc]
        return lambda cls: cls


__all__ = ["Accept", "Deflate", "FrameReader", "Reject", "WebSocketSession"]

HeaderList = Sequence[tuple[bytes | str, bytes | str]]
Message = str | bytes
Reply = str | bytes | bytearray | memoryview | None

DEFAULT_MAX_MESSAGE_SIZE = 1 << 20
DEFAULT_MAX_HANDSHAKE_SIZE = 16 * 1024
#: A fast-path binary frame cut by the end of a read is kept (copied) until it completes if
#: it is at most this big; larger or text frames are streamed through wsproto instead (which
#: lets invalid UTF-8 fail fast, mid-frame).
PENDING_FRAME_MAX = 64 * 1024
#: What one frame parsed by wsproto counts for in ``work_per_turn``, besides its payload: its
#: fixed cost (event objects, extension hooks) is that of a few KiB on the fast path.
FRAME_WORK = 1024
#: No bound on the work of one ``receive`` call.
UNBOUNDED = 1 << 62

# h11 ends a request head at the first blank line, accepting bare LF as well as CRLF; the
# session must cut the request exactly where h11 will, so it uses the same pattern.
_HEAD_END = re.compile(b"\n\r?\n")
_METHOD_START = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZ")

_OPEN = ConnectionState.OPEN
_REMOTE_CLOSING = ConnectionState.REMOTE_CLOSING
_LOCAL_CLOSING = ConnectionState.LOCAL_CLOSING
_CLOSED = ConnectionState.CLOSED
_ABNORMAL_CLOSURE = CloseReason.ABNORMAL_CLOSURE

# wsproto reports every extension failure as "error in extension"; say which one.
_EXTENSION_REASONS = {
    1002: "protocol error",
    1007: "invalid compressed data",
    1009: "message too big",
}


def _reason_phrase(status: int) -> bytes:
    try:
        return HTTPStatus(status).phrase.encode()
    except ValueError:
        return b"Error"


def _with_reason_phrase(response: bytes) -> bytes:
    """h11 writes an empty reason phrase (``HTTP/1.1 401 \r\n``): name the status."""
    line, sep, rest = response.partition(b"\r\n")
    version, _, status = line.partition(b" ")
    code = status.strip()
    if not code.isdigit() or status != code + b" ":
        return response
    return b"%s %s %s%s%s" % (version, code, _reason_phrase(int(code)), sep, rest)


@dataclass(frozen=True)
class Reject:
    """Returned by ``on_request`` to refuse the handshake with an HTTP response.

    The response is written, then the session asks for the transport to be closed.
    """

    status: int = 403
    headers: HeaderList = ()
    body: bytes = b""


@dataclass(frozen=True)
class Accept:
    """Returned by ``on_request`` to accept with a chosen subprotocol and extra headers."""

    subprotocol: str | None = None
    headers: HeaderList = ()


@dataclass(frozen=True)
class Deflate:
    """permessage-deflate (RFC 7692) settings; pass as ``compression=Deflate()``.

    The defaults match the websockets library's server defaults: 12-bit windows and
    ``memLevel`` 5 keep a compressed connection near 64 KiB of zlib state.
    """

    client_no_context_takeover: bool = False
    server_no_context_takeover: bool = False
    client_max_window_bits: int | None = 12
    server_max_window_bits: int | None = 12
    compress_level: int = 6
    mem_level: int = 5


def _collect(inbox: list[Message], message: Message) -> None:
    inbox.append(message)


def _encode_headers(headers: HeaderList) -> list[tuple[bytes, bytes]]:
    return [
        (
            name.encode("latin-1") if isinstance(name, str) else name,
            value.encode("latin-1") if isinstance(value, str) else value,
        )
        for name, value in headers
    ]


def _error_response(status: int, reason: str, headers: HeaderList = ()) -> bytes:
    """A refusal: status line with its reason phrase, the reason as a text body, close."""
    body = f"{status} {_reason_phrase(status).decode()}: {reason}\n".encode()
    head = [b"HTTP/1.1 %d %s" % (status, _reason_phrase(status))]
    head += [b"%s: %s" % pair for pair in _encode_headers(headers)]
    head += [
        b"content-type: text/plain; charset=utf-8",
        b"content-length: %d" % len(body),
        b"connection: close",
    ]
    return b"\r\n".join(head) + b"\r\n\r\n" + body


def _untyped(result: Any, convert: Callable[[Any], Reply]) -> Reply:
    """A handler's ``(MessageType, data)`` reply as the session frames it: str = text, bytes =
    binary, None = nothing.

    The common replies are taken here (compiled: no Python call); anything else goes to
    *convert* (the protocol's ``_typed_reply``), which converts it or raises. The kind is told
    by identity (an ``IntEnum`` compared with ``==`` takes the slow generic path): a plain 1
    or 2 goes to *convert*, which accepts it alike.
    """
    if type(result) is tuple and len(result) == 2:
        reply = result[1]
        kind = result[0]
        if type(reply) is bytes and kind is BINARY:
            return reply
        if type(reply) is str and kind is TEXT:
            return reply
    return convert(result)


def _frame_extent(data: bytes | bytearray | memoryview, pos: int, end: int) -> tuple[int, int]:
    """``(header size, payload size)`` of the frame at ``data[pos]``; ``(-1, 0)`` if cut short.

    Computed the way wsproto parses a header, for any header wsproto does not reject outright,
    so that wsproto can be fed one frame at a time.
    """
    avail = end - pos
    if avail < 2:
        return -1, 0
    b1 = data[pos + 1]
    size = b1 & 0x7F
    header = 6 if b1 & 0x80 else 2
    if size == 126:
        header += 2
        if avail < header:
            return -1, 0
        size = int.from_bytes(data[pos + 2 : pos + 4], "big")
    elif size == 127:
        header += 8
        if avail < header:
            return -1, 0
        size = int.from_bytes(data[pos + 2 : pos + 10], "big")
    elif avail < header:
        return -1, 0
    return header, size


def _can_wait(data: bytes | bytearray | memoryview, pos: int, end: int, limit: int) -> int:
    """How many bytes the incomplete frame at ``data[pos:end]`` needs before it is worth
    looking at again, or 0 if it must go to wsproto now.

    Waiting is allowed when the bytes so far are the start of a fast-path frame (so wsproto,
    fed them now, would neither reject them nor emit anything) and waiting is cheap: the
    header is incomplete (at most 13 bytes kept), or it is a binary frame of at most
    :data:`PENDING_FRAME_MAX` bytes. A text frame with payload bytes goes to wsproto, whose
    incremental decoder rejects invalid UTF-8 before the frame is complete.
    """
    avail = end - pos
    b0 = data[pos]
    if b0 != 0x82 and b0 != 0x81:
        return 0
    if avail < 2:
        return 2
    b1 = data[pos + 1]
    if b1 < 0x80:
        return 0
    size = b1 - 0x80
    header = 6
    if size == 126:
        header = 8
        if avail < 4:
            return 4
        size = int.from_bytes(data[pos + 2 : pos + 4], "big")
        if size < 126:
            return 0
    elif size == 127:
        header = 14
        if avail < 10:
            return 10
        size = int.from_bytes(data[pos + 2 : pos + 10], "big")
        if size < 65536:
            return 0
    if size > limit:
        return 0
    if avail < header:
        return header
    if b0 == 0x82 and avail < header + size <= PENDING_FRAME_MAX:
        return header + size
    return 0


# Compiled, and subclassed by the plugin's own session (gev_websocket._protocol) and maybe by
# users: calls to its overridable methods dispatch like Python's.
@mypyc_attr(allow_interpreted_subclasses=True)
class WebSocketSession:
    """Server side of one WebSocket connection, from the HTTP upgrade to the close.

    :param on_message: ``on_message(context, message)`` gets each complete message (``str``
        for text, ``bytes`` for binary); a non-None return value is sent back as a text
        (``str``) or binary message. Default: append to :attr:`messages`.
    :param context: first argument of every callback (e.g. the reactor's connection).
    :param on_open: ``on_open(context)`` once the 101 response is in ``out``.
    :param on_pong: ``on_pong(context, payload)`` for every pong received.
    :param on_request: ``on_request(request)`` with the parsed ``wsproto.events.Request``
        (``target``, ``host``, ``extra_headers`` with lower-case names, ``subprotocols``);
        return None to accept with the defaults, an :class:`Accept`, or a :class:`Reject`.
    :param subprotocols: subprotocols the server speaks; the first one the client offers
        (in the client's order) is selected unless ``on_request`` returns an :class:`Accept`.
    :param compression: a :class:`Deflate` to negotiate permessage-deflate when offered.
    :param max_message_size: largest message accepted (after decompression); bigger ones
        close the connection with 1009.
    :param max_frame_size: largest frame payload accepted (default: ``max_message_size``).
    :param max_handshake_size: largest HTTP request head accepted (431 beyond).
    :param fast_path: False routes every frame through wsproto (reference behaviour).
    :param work_per_turn: work (bytes, see the module docstring) after which :meth:`receive`
        stops at the next frame boundary, leaving :attr:`unconsumed` bytes; None processes all
        of ``data`` every time. Only with ``fast_path`` (the reference mode is unbounded).
    :param on_buffered: ``on_buffered(context, nbytes)`` whenever the number of bytes the
        session holds between calls changes (a message arriving in fragments, the start of a
        frame cut by the end of a read, an incomplete handshake).
    """

    __slots__ = (
        "_build_reply",
        "_conn",
        "_context",
        "_cut_header",
        "_deflate",
        "_fast",
        "_fast_enabled",
        "_fast_limit",
        "_head",
        "_head_scan",
        "_held",
        "_on_buffered",
        "_on_message",
        "_on_open",
        "_on_pong",
        "_on_request",
        "_opened",
        "_parts",
        "_parts_size",
        "_pending",
        "_pending_need",
        "_turn",
        "_typed_replies",
        "_work",
        "_ws",
        "_wsp_left",
        "close_code",
        "close_reason",
        "closed",
        "compression",
        "failure",
        "max_frame_size",
        "max_handshake_size",
        "max_message_size",
        "messages",
        "received",
        "replied",
        "request",
        "subprotocol",
        "subprotocols",
        "unconsumed",
    )

    def __init__(
        self,
        on_message: Callable[[Any, Message], Reply] | None = None,
        context: Any = None,
        *,
        on_open: Callable[[Any], None] | None = None,
        on_pong: Callable[[Any, bytes], None] | None = None,
        on_request: Callable[[Request], Accept | Reject | None] | None = None,
        subprotocols: Sequence[str] = (),
        compression: Deflate | None = None,
        max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE,
        max_frame_size: int | None = None,
        max_handshake_size: int = DEFAULT_MAX_HANDSHAKE_SIZE,
        fast_path: bool = True,
        work_per_turn: int | None = None,
        on_buffered: Callable[[Any, int], None] | None = None,
    ) -> None:
        if work_per_turn is not None and work_per_turn <= 0:
            raise ValueError("work_per_turn must be > 0 or None")
        if max_message_size < 0 or max_message_size >= 1 << 63:
            raise ValueError("max_message_size out of range")
        if max_frame_size is None:
            max_frame_size = max_message_size
        elif max_frame_size < 0 or max_frame_size >= 1 << 63:
            raise ValueError("max_frame_size out of range")
        #: Messages received, when no ``on_message`` callback was given.
        self.messages: list[Message] = []
        #: How many complete messages were handed to ``on_message`` so far (the protocol
        #: reports them to the loop's counters, ``conn.count_messages``).
        self.received = 0
        #: How many of them ``on_message`` answered with a reply (framed into ``out``).
        self.replied = 0
        if on_message is None:
            on_message = _collect
            context = self.messages
        self._on_message: Callable[[Any, Message], Any] = on_message
        # Set by the reactor's protocol: on_message returns (MessageType, data), as
        # WebSocketHandler's does, unpacked here (see _untyped) rather than by a wrapper
        # around each call; this is the protocol's full conversion, for the other cases.
        self._typed_replies: Callable[[Any], Reply] | None = None
        self._context = context
        self._on_open = on_open
        self._on_pong = on_pong
        self._on_request = on_request
        self.subprotocols = tuple(subprotocols)
        self.compression = compression
        self.max_message_size = max_message_size
        self.max_frame_size = max_frame_size
        self.max_handshake_size = max_handshake_size
        self._fast_enabled = fast_path
        self._fast_limit = min(max_message_size, max_frame_size)
        self._turn = UNBOUNDED if work_per_turn is None else work_per_turn
        self._work = 0
        self._on_buffered = on_buffered
        self._held = 0

        # The handshake object; dropped once OPEN (with h11 inside, it is ~2 KiB per
        # connection that nothing needs any more).
        self._ws: WSConnection | None = WSConnection(ConnectionType.SERVER)
        # The open session's wsproto connection, only while something needs it: without
        # compression it holds no state between two whole messages, and it is ~1.5 KiB of
        # objects that an idle connection whose frames all take the fast path never uses.
        # Made on first use (``_wsproto``), dropped whenever it is idle again.
        self._conn: Connection | None = None
        #: The opening handshake completed (the session is or was OPEN).
        self._opened = False
        self._deflate: BoundedPerMessageDeflate | None = None
        self._build_reply: Callable[[Any], bytes] = build_message
        self._fast = False
        self._head: bytearray | None = bytearray()
        self._head_scan = 0
        # Start of a frame kept from the previous read, and how long it must grow before it
        # is worth parsing again (so a frame trickling in byte by byte costs linear time).
        self._pending = bytearray()
        self._pending_need = 0
        self._cut_header = b""
        self._wsp_left = 0
        self._parts: list[Any] = []
        self._parts_size = 0

        #: True once the transport should be closed (after writing what is in ``out``).
        self.closed = False
        #: Close code received from the peer or sent on failure (1006: transport lost).
        self.close_code: int | None = None
        self.close_reason: str | None = None
        #: The handshake request, once received.
        self.request: Request | None = None
        #: The negotiated subprotocol, if any.
        self.subprotocol: str | None = None
        #: Why the session failed through the peer's fault, for the log: an HTTP refusal of
        #: the handshake or a close for a protocol error (1002, 1007, 1009). None otherwise.
        self.failure: str | None = None
        #: Bytes at the end of the last ``data`` that :meth:`receive` left for the next call
        #: (``work_per_turn`` reached); 0 when it took everything. The caller resets it.
        self.unconsumed = 0

    # -- public state --------------------------------------------------------------------

    @property
    def state(self) -> ConnectionState:
        """wsproto's connection state (CONNECTING, OPEN, ..., CLOSED, REJECTING)."""
        conn = self._conn
        if conn is not None:
            return conn.state
        if self._opened:
            # No wsproto connection: it was OPEN and idle, and only a lost transport
            # (receive_eof) closes it without one.
            return _CLOSED if self.closed else _OPEN
        assert self._ws is not None
        return self._ws.state

    @property
    def compression_active(self) -> bool:
        """True when permessage-deflate was negotiated."""
        return self._deflate is not None

    # -- input ---------------------------------------------------------------------------

    # The per-read entry point is the fast path itself (see gev_websocket._fastpath): one
    # Python call per read; everything it does not do itself goes to _slow_path.
    def receive(self, data: bytes | bytearray | memoryview, out: list[bytes]) -> bool:
        """Process bytes read from the socket; append the bytes to send to *out*.

        Messages are handed to the session's ``on_message`` callback during the call, and each
        reply it returns is framed into *out* at once, so *out* keeps the order of the wire
        (handshake response, replies, pongs, close frame). *data* is only read during the call
        (it may be a view into a reused read buffer); whatever must outlive the call is copied.

        Returns :attr:`~gev_websocket.WebSocketSession.closed`: when true, write *out* and
        then close the transport. With ``work_per_turn`` set it may stop early, leaving the last
        :attr:`~gev_websocket.WebSocketSession.unconsumed` bytes of *data* for the next call:
        the slow path decides that (the fast path's work is bounded by the size of *data*), and
        reports everything taken to this loop, which then ends.
        """
        # Declared: compiled, header fields are then machine integers, not objects.
        pos: int
        b0: int
        b1: int
        word: int
        key: int
        n: int
        start: int
        if self._fast and not self._pending:
            pos = 0
        else:
            data, pos = self._slow_path(data, 0, out, False)
        end = len(data)
        while pos < end:
            try:
                b0, b1, word = _unpack_head(data, pos)
            except struct_error:  # fewer than 6 bytes left (rare): no test on every frame
                b0, b1, word = _SHORT
            # 0x81/0x82: FIN, no RSV bit, text/binary.  b1 >= 0x80: masked.
            if (b0 == 0x82 or b0 == 0x81) and b1 >= 0x80:
                if b1 < 0x80 + 126:  # word is the masking key
                    n = b1 - 0x80
                    start = pos + 6
                elif b1 == 0x80 + 126:  # word starts with the 16-bit length
                    n = word >> 16
                    start = pos + 8 if end - pos >= 8 and n >= 126 else end + 1
                elif end - pos >= 14:
                    n = _unpack_long_size(data, pos + 2)[0]
                    start = pos + 14 if n >= 65536 else end + 1
                else:
                    n = 0
                    start = end + 1
                stop = start + n
                # The limit is below 2**63, so this also refuses a 64-bit length with its top
                # bit set; start > end flags a cut or non-minimal header.
                if stop <= end and n <= self._fast_limit:
                    native = _unmask_frame
                    if native is not None:
                        payload = native(data, start, n)
                    elif n <= INT_UNMASK_MAX:
                        if n >= 126:  # word began with the length: the key follows it
                            word = _unpack_key(data, start - 4)[0]
                        k = (n + 3) >> 2
                        key = word * (_REPUNIT[k] or _repunit(k))
                        if n & 3:
                            key >>= (k << 5) - (n << 3)
                        payload = (_from_bytes(data[start:stop], "big") ^ key).to_bytes(n, "big")
                    else:  # a view, not a slice: _unmask_translate copies it anyway
                        key = _unpack_key(data, start - 4)[0]
                        payload = _unmask_translate(memoryview(data)[start:stop], key)
                    message: str | bytes = payload
                    if b0 == 0x81:
                        try:
                            message = payload.decode()
                        except UnicodeDecodeError:
                            # wsproto fails the connection with 1007 and its own reason.
                            data, pos = self._slow_path(data, pos, out, True)
                            end = len(data)
                            continue
                    pos = stop
                    self.received += 1
                    reply = self._on_message(self._context, message)
                    if reply is not None and self._typed_replies is not None:
                        # _untyped written out: interpreted, its call cost more than its tests.
                        if type(reply) is tuple and len(reply) == 2:
                            # Typed so that compiled code unpacks a tuple, not an iterator.
                            pair: tuple[Any, Any] = reply
                            kind, value = pair
                            if (type(value) is bytes and kind is BINARY) or (
                                type(value) is str and kind is TEXT
                            ):
                                reply = value
                            else:
                                reply = self._typed_replies(reply)
                        else:
                            reply = self._typed_replies(reply)
                    if reply is not None:
                        self.replied += 1
                        if type(reply) is not bytes or self._deflate is not None:
                            out.append(self._build_reply(reply))
                        elif (k := len(reply)) < 126:
                            out.append(_BINARY_HEADERS[k] + reply)
                        elif k < GATHER_MIN:
                            # Small enough that one copy here costs less than a second
                            # buffer in the reactor's writev.
                            out.append(_pack_medium(0x82, 126, k) + reply)
                        else:
                            # Header and payload as two chunks: the reactor writes them with
                            # one writev, so the payload is never copied in user space.
                            out.append(
                                _pack_medium(0x82, 126, k)
                                if k < 65536
                                else _pack_long(0x82, 127, k)
                            )
                            out.append(reply)
                    if self._fast:
                        continue
                    # The handler closed the session (or similar): hand over what is left.
                    data, pos = self._slow_path(data, pos, out, False)
                    end = len(data)
                    continue
            data, pos = self._slow_path(data, pos, out, True)
            end = len(data)
        return self.closed

    def receive_eof(self) -> None:
        """Tell the session that the peer closed the transport."""
        if self.closed:
            return
        self.closed = True
        self._fast = False
        conn = self._conn
        if conn is None:
            if self._opened and self.close_code is None:
                # What wsproto reports for a transport lost while OPEN (RFC 6455 7.1.5).
                self.close_code = _ABNORMAL_CLOSURE
            return
        if conn.state is not _CLOSED:
            conn.receive_data(None)
            for event in conn.events():
                if isinstance(event, CloseConnection) and self.close_code is None:
                    self.close_code = event.code
                    self.close_reason = event.reason

    def release(self) -> None:
        """Forget the context and the callbacks (the transport is gone for good).

        A reactor calls this when the connection closes, so that the connection and its
        session, which refer to each other, are freed by reference counting alone.
        """
        self._context = None
        self._on_request = None
        self._on_open = None
        self._on_pong = None
        self._on_buffered = None
        # A bound method of the session itself (compressed replies): a cycle of its own.
        self._build_reply = build_message

    @property
    def buffered(self) -> int:
        """Bytes the session holds between calls (partial messages, frames, handshake)."""
        return self._held

    def _note_held(self) -> None:
        held = len(self._pending) + self._parts_size + len(self._cut_header)
        head = self._head
        if head is not None:
            held += len(head)
        conn = self._conn
        if conn is not None:
            held += wsproto_buffered(conn)
        if held != self._held:
            self._held = held
            if self._on_buffered is not None:
                self._on_buffered(self._context, held)

    # -- output --------------------------------------------------------------------------

    def send_text(self, text: str) -> bytes:
        """Frame a text message; returns b"" unless the session is OPEN."""
        if not self._is_open():
            return b""
        if self._deflate is None:
            return build_text(text)
        return self._wsproto().send(TextMessage(data=text))

    def send_binary(self, data: bytes | bytearray | memoryview) -> bytes:
        """Frame a binary message; returns b"" unless the session is OPEN."""
        if not self._is_open():
            return b""
        if self._deflate is None:
            return build_binary(data)
        return self._wsproto().send(BytesMessage(data=bytes(data)))

    def send(self, message: str | bytes | bytearray | memoryview) -> bytes:
        """Frame *message* as text if it is a ``str``, else as binary."""
        if isinstance(message, str):
            return self.send_text(message)
        return self.send_binary(message)

    def ping(self, payload: bytes = b"") -> bytes:
        """Frame a ping (at most 125 bytes of payload); b"" unless OPEN."""
        if not self._is_open():
            return b""
        if len(payload) > 125:
            raise ValueError("ping payload larger than 125 bytes")
        return self._wsproto().send(Ping(payload=bytes(payload)))

    def close(self, code: int = 1000, reason: str = "") -> bytes:
        """Start the closing handshake; returns the close frame (b"" if not OPEN).

        The session then waits for the peer's close frame, after which :attr:`closed`
        becomes true. Before the handshake completes, this only sets :attr:`closed`.
        """
        self._fast = False
        if not self._opened:
            self.closed = True
            return b""
        if not self._is_open():
            return b""
        return self._wsproto().send(CloseConnection(code=code, reason=reason or None))

    def _is_open(self) -> bool:
        conn = self._conn
        if conn is not None:
            return conn.state is _OPEN
        return self._opened and not self.closed

    def _wsproto(self) -> Connection:
        """The open session's wsproto connection, made if it was dropped (see ``__init__``)."""
        conn = self._conn
        if conn is None:
            # The extensions as _handshake gave them, minus deflate: with it the connection
            # is never dropped (the compressors' state lives in it).
            limits = MessageLimits(self.max_message_size, self.max_frame_size)
            conn = self._conn = Connection(ConnectionType.SERVER, [limits])
        return conn

    # -- handshake -----------------------------------------------------------------------

    def _handshake_done(self) -> bool:
        return self._opened

    def _receive_head(self, data: bytes | bytearray | memoryview, out: list[bytes]) -> bytes:
        """Collect the request head; once complete, answer it. Returns the bytes after it."""
        head = self._head
        assert head is not None
        head += data
        if not head:
            return b""
        if head[0] not in _METHOD_START:  # not HTTP at all (e.g. a TLS hello): fail now
            self._refuse(out, 400, "not an HTTP request")
            return b""
        match = _HEAD_END.search(head, self._head_scan)
        if match is None:
            if len(head) > self.max_handshake_size:
                self._refuse(out, 431, f"request head over {self.max_handshake_size} bytes")
            else:
                self._head_scan = max(0, len(head) - 2)
            return b""
        end = match.end()
        if end > self.max_handshake_size:
            self._refuse(out, 431, f"request head over {self.max_handshake_size} bytes")
            return b""
        request_bytes = bytes(head[:end])
        rest = bytes(head[end:])
        self._head = None
        self._handshake(request_bytes, out)
        return rest

    def _handshake(self, request_bytes: bytes, out: list[bytes]) -> None:
        ws = self._ws
        assert ws is not None
        request: Request | None = None
        try:
            # The whole head at once: h11 then never applies its own incomplete-head limit,
            # and nothing after the head lands in h11's buffer (wsproto would drop it).
            ws.receive_data(request_bytes)
            for event in ws.events():
                if isinstance(event, Request):
                    request = event
        except RemoteProtocolError as exc:
            hint = exc.event_hint
            if isinstance(hint, RejectConnection):
                self._refuse(out, hint.status_code, str(exc), hint.headers)
            else:
                self._refuse(out, 400, str(exc))
            return
        except (UnicodeError, ValueError):  # e.g. an IDNA-invalid Host header
            self._refuse(out, 400, "invalid Host header")
            return
        if request is None:
            self._refuse(out, 400, "not a WebSocket upgrade request")
            return
        if not _valid_key(request):
            self._refuse(out, 400, "invalid Sec-WebSocket-Key")
            return
        self.request = request

        decision: Accept | Reject | None = None
        if self._on_request is not None:
            try:
                decision = self._on_request(request)
            except BaseException:
                self._refuse(out, 500, "on_request failed")
                self.failure = None  # our fault, not the peer's: logged with the traceback
                raise
        if isinstance(decision, Reject):
            self._reject(out, decision)
            return

        extra_headers: list[tuple[bytes, bytes]] = []
        if isinstance(decision, Accept):
            subprotocol = decision.subprotocol
            if subprotocol is not None and subprotocol not in request.subprotocols:
                self._refuse(out, 500, "on_request chose a subprotocol the client did not offer")
                self.failure = None
                raise ValueError(f"on_request chose subprotocol {subprotocol!r}, not offered")
            extra_headers = _encode_headers(decision.headers)
        else:
            subprotocol = next((p for p in request.subprotocols if p in self.subprotocols), None)

        deflate: BoundedPerMessageDeflate | None = None
        extensions: list[Any] = []
        config = self.compression
        if config is not None:
            deflate = BoundedPerMessageDeflate(
                self.max_message_size,
                client_no_context_takeover=config.client_no_context_takeover,
                server_no_context_takeover=config.server_no_context_takeover,
                client_max_window_bits=config.client_max_window_bits,
                server_max_window_bits=config.server_max_window_bits,
                compress_level=config.compress_level,
                mem_level=config.mem_level,
            )
            extensions.append(deflate)
        # After deflate, so that its payload hook counts inflated bytes.
        extensions.append(MessageLimits(self.max_message_size, self.max_frame_size))

        out.append(
            _with_reason_phrase(
                ws.send(
                    AcceptConnection(
                        subprotocol=subprotocol,
                        extensions=extensions,
                        extra_headers=extra_headers,
                    )
                )
            )
        )
        self._opened = True
        self._ws = None
        self.subprotocol = subprotocol
        if deflate is not None and deflate.enabled():
            self._deflate = deflate
            self._build_reply = self._build_compressed
            self._conn = ws.connection
        elif not self._fast_enabled:
            self._conn = ws.connection  # every frame goes to it: no point in dropping it
        self._fast = self._fast_enabled
        if self._on_open is not None:
            self._on_open(self._context)

    def _refuse(self, out: list[bytes], status: int, reason: str, headers: HeaderList = ()) -> None:
        """Answer a bad or refused request with an HTTP error and ask for the close."""
        self.closed = True
        self._head = None
        self.failure = f"handshake refused with HTTP {status}: {reason}"
        out.append(_error_response(status, reason, headers))

    def _reject(self, out: list[bytes], reject: Reject) -> None:
        self.closed = True
        ws = self._ws
        assert ws is not None
        headers = _encode_headers(reject.headers)
        headers.append((b"connection", b"close"))
        if not reject.body:
            response = ws.send(RejectConnection(status_code=reject.status, headers=headers))
            out.append(_with_reason_phrase(response))
            return
        headers.append((b"content-length", b"%d" % len(reject.body)))
        out.append(
            _with_reason_phrase(
                ws.send(RejectConnection(status_code=reject.status, headers=headers, has_body=True))
            )
            + ws.send(RejectData(data=reject.body, body_finished=True))
        )

    # -- frames --------------------------------------------------------------------------

    def _slow_path(
        self, data: bytes | bytearray | memoryview, pos: int, out: list[bytes], stopped: bool
    ) -> tuple[bytes | bytearray | memoryview, int]:
        """Everything :meth:`receive` does not do itself.

        Handles the handshake, bytes kept from the previous read, and frames that go to
        wsproto (fed one frame at a time). Returns ``(data, pos)``: where the fast path can
        resume (``data`` may be a new buffer), or ``pos == len(data)`` when all is consumed or
        ``work_per_turn`` ran out (then :attr:`unconsumed` says how much is left).
        *stopped* means the fast path stopped at the frame at ``data[pos]`` and that frame
        must be dealt with here. The bytes it leaves held are reported afterwards.
        """
        result = self._slow_path_steps(data, pos, out, stopped)
        self._note_held()
        return result

    def _slow_path_steps(
        self, data: bytes | bytearray | memoryview, pos: int, out: list[bytes], stopped: bool
    ) -> tuple[bytes | bytearray | memoryview, int]:
        if self.closed:
            return data, len(data)
        if not self._opened:
            data = self._receive_head(data[pos:] if pos else data, out)
            pos = 0
            # Not `self._conn is None` again: mypy keeps the narrowing to None across the call
            # that set it, and compiled code would check that.
            if self.closed or not self._handshake_done():
                return data, len(data)
        if self._pending:
            pending = self._pending
            pending += data[pos:]
            if len(pending) < self._pending_need:
                return data, len(data)
            data = pending
            pos = 0
            self._pending = bytearray()
            if self._fast:
                return data, 0
        end = len(data)
        if not self._fast_enabled:
            if pos < end:
                self._feed(data[pos:] if pos else data, out)
            return data, end
        if self._cut_header:
            # wsproto holds the start of a frame header; learn where that frame ends.
            head = self._cut_header + bytes(data[pos : pos + 14])
            header, size = _frame_extent(head, 0, len(head))
            if header < 0:
                self._cut_header += bytes(data[pos:])
                self._feed(data[pos:], out)
                return data, end
            self._wsp_left = header + size - len(self._cut_header)
            self._cut_header = b""
        while pos < end and not self.closed:
            owed = self._wsp_left
            if owed:
                # wsproto is inside a frame: give it exactly the rest of that frame, so the
                # fast path can take over again at the next frame boundary.
                stop = min(end, pos + owed)
                self._wsp_left = owed - (stop - pos)
                self._feed(data[pos:stop], out)
                pos = stop
                if self._wsp_left or self.closed:
                    continue
                if not self._parts:
                    conn = self._conn
                    assert conn is not None
                    self._fast = fast = wsproto_idle(conn)
                    if fast and self._deflate is None:
                        self._conn = None  # idle: see __init__
                if self._work >= self._turn and pos < end:
                    # Out of work at a frame boundary, with nothing of a frame held: the rest
                    # waits for the next call. To the fast path's loop all is consumed.
                    self._work = 0
                    self.unconsumed = end - pos
                    return data, end
                continue
            if self._fast:
                if not stopped:
                    return data, pos
                stopped = False
                need = _can_wait(data, pos, end, self._fast_limit)
                if need:
                    # The fast path will take this frame once the rest arrives, and wsproto
                    # would emit nothing for these bytes yet: keep them.
                    self._pending = bytearray(data[pos:])
                    self._pending_need = need
                    return data, end
            self._fast = False
            header, size = _frame_extent(data, pos, end)
            if header < 0:
                # Feed the cut header now (wsproto may already reject it, e.g. for its RSV
                # bits) and keep a copy to find the frame's end once the rest arrives.
                self._cut_header = bytes(data[pos:])
                self._feed(data[pos:], out)
                return data, end
            self._wsp_left = header + size
        return data, end

    def _feed(self, chunk: bytes | bytearray | memoryview, out: list[bytes]) -> None:
        conn = self._wsproto()
        self._work += FRAME_WORK + len(chunk)
        conn.receive_data(chunk)  # type: ignore[arg-type]  # wsproto copies into its buffer
        for event in conn.events():
            self._dispatch(conn, event, out)
            if self.closed:
                break

    def _dispatch(self, conn: Connection, event: Event, out: list[bytes]) -> None:
        kind = type(event)
        if kind is BytesMessage or kind is TextMessage:
            assert isinstance(event, (BytesMessage, TextMessage))
            parts = self._parts
            data = event.data
            # Inflated (or decoded) payload: what the peer's bytes made us produce.
            self._work += len(data)
            if event.message_finished:
                message: Message
                if parts:
                    parts.append(data)
                    message = "".join(parts) if isinstance(data, str) else b"".join(parts)
                    self._parts = []
                    self._parts_size = 0
                else:
                    message = data if isinstance(data, str) else bytes(data)
                self.received += 1
                reply = self._on_message(self._context, message)
                if reply is not None and self._typed_replies is not None:
                    reply = _untyped(reply, self._typed_replies)
                if reply is not None and conn.state is _OPEN:
                    self.replied += 1
                    out.append(self._build_reply(reply))
            elif data:
                parts.append(data)
                self._parts_size += len(data)
        elif kind is Ping:
            assert isinstance(event, Ping)
            if conn.state is _OPEN:
                out.append(conn.send(event.response()))
        elif kind is Pong:
            assert isinstance(event, Pong)
            if self._on_pong is not None:
                self._on_pong(self._context, event.payload)
        elif kind is CloseConnection:
            assert isinstance(event, CloseConnection)
            self._close_event(conn, event, out)

    def _close_event(self, conn: Connection, event: CloseConnection, out: list[bytes]) -> None:
        state = conn.state
        reason = event.reason
        if state is _REMOTE_CLOSING:
            # The peer started the closing handshake: echo its code (RFC 6455 5.5.1); the
            # server then closes the TCP connection first (7.1.1).
            out.append(conn.send(event.response()))
        elif state is _OPEN:
            # wsproto failed the connection (a ParseFailed): send the close frame ourselves.
            if reason == "error in extension":
                reason = _EXTENSION_REASONS.get(event.code, reason)
            elif event.code == 1007:
                # wsproto's reason is Python's UnicodeDecodeError text: say it plainly.
                reason = "invalid UTF-8"
            out.append(conn.send(CloseConnection(code=event.code, reason=reason)))
            self.failure = f"closed with {event.code}: {reason}"
        # else LOCAL_CLOSING/CLOSED: this is the answer to our own close frame.
        self.close_code = event.code
        self.close_reason = reason
        self.closed = True
        self._fast = False

    def _build_compressed(self, reply: Any) -> bytes:
        conn = self._conn
        assert conn is not None
        if isinstance(reply, str):
            return conn.send(TextMessage(data=reply))
        return conn.send(BytesMessage(data=bytes(reply)))


@final
class FrameReader:
    """``WebSocketProtocol.receive`` for an open session, compiled: the reactor's one call per
    read, without an interpreted frame.

    The protocol (interpreted: applications subclass it) installs :meth:`receive` as its
    instance's ``receive`` when this module is compiled. It does what the protocol's own
    ``receive`` does, in the same order, and hands back to the protocol for everything but the
    steady state: a closed session (lingering), a handler that raised, a close to start.
    """

    __slots__ = ("_protocol", "counting")

    def __init__(self, protocol: Any) -> None:
        self._protocol = protocol
        #: The protocol's ``counting`` (Protocol.counting), set by it: read natively here.
        self.counting = False

    def receive(self, conn: Any, data: bytes | bytearray | memoryview, out: list[bytes]) -> int:
        session = conn.state
        if not isinstance(session, WebSocketSession) or session.closed:
            return self._protocol.receive_general(conn, data, out)  # type: ignore[no-any-return]
        received = session.received
        replied = session.replied
        try:
            closed = session.receive(data, out)
        except Exception:
            closed = self._protocol._handler_failed(conn, session, out)
        if self.counting:
            conn.count_messages(session.received - received, session.replied - replied)
        if closed:
            return self._protocol._closed(conn, session, len(data))  # type: ignore[no-any-return]
        left = session.unconsumed
        if left:
            # Its turn is over: the loop hands the rest back after serving the others.
            session.unconsumed = 0
            conn.continue_later()
            return len(data) - left
        return len(data)


def _valid_key(request: Request) -> bool:
    """RFC 6455 4.2.1: Sec-WebSocket-Key must be a base64-encoded 16-byte value.

    wsproto only checks that the header is present.
    """
    for name, value in request.extra_headers:
        if name == b"sec-websocket-key":
            try:
                return len(base64.b64decode(value, validate=True)) == 16
            except (binascii.Error, ValueError):
                return False
    return False
