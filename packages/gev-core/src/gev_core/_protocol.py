"""Frame codecs: turn a connection's byte stream into messages and replies back into bytes.

Two ways to write one:

* gev's way -- implement :meth:`Protocol.unpack` over a :class:`~gev_ringbuffer.RingBuffer` (return
  ``(ctx, data)`` for one complete frame, or ``None`` for "need more bytes", using the virtual-read
  cursor to look ahead) and :meth:`Protocol.pack`.
* The fast way -- override :meth:`Protocol.receive`, which sees each socket read as one contiguous
  buffer, dispatches every complete frame to the handler and says how many bytes it consumed. The
  built-in framers do this; the reactor copies only the unconsumed tail into the connection's ring
  buffer.

Either way a frame the peer got wrong is reported by raising :class:`ProtocolError`: the reactor
logs the reason and closes that connection only.

Threading contract: every method of a protocol (``connection_made``, ``receive``, ``unpack``,
``pack``, ``connection_lost``, ``server_stopping``) runs on the connection's loop thread, never
concurrently with another for the same connection; ``Connection.send`` from another thread
queues its object to the loop, where ``pack`` frames it. Per-connection state (a compressor, a
sequence number, a session object) needs no lock. One protocol instance serves every connection
of a server, and a server with several loops calls it from several threads at once for
different connections: state shared between connections must be thread-safe.
"""

from __future__ import annotations

import functools
import struct
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, ClassVar

from gev_ringbuffer import RingBuffer

from ._errors import ProtocolError

if TYPE_CHECKING:
    from ._connection import Connection

__all__ = [
    "DefaultProtocol",
    "LengthFieldProtocol",
    "LineProtocol",
    "Protocol",
]

#: Frames larger than this are refused by the built-in framers unless told otherwise.
DEFAULT_MAX_FRAME_SIZE = 4 * 1024 * 1024


class Protocol:
    """Base class of frame codecs. One instance serves every connection of a server.

    Per-connection parsing state, if any, belongs in ``conn.state`` (set it up in
    :meth:`connection_made`). Every method runs on the connection's loop thread, never
    concurrently with another for the same connection (see the module docstring).
    """

    #: The name this protocol is registered and selected under (``Server(protocol="name")``).
    name: ClassVar[str] = ""

    #: True if :meth:`receive` also accepts ``bytes`` (not only a ``memoryview``). The loop then
    #: reads a connection with nothing left over and nothing backlogged straight into a new
    #: ``bytes`` object and calls ``receive`` inline, skipping its general read path -- about a
    #: fifth less interpreter work per message for a small framed protocol. ``receive`` must
    #: still accept a ``memoryview`` (input left over from an earlier read comes as one), so use
    #: only what both types offer: ``len``, slicing, ``struct.unpack_from``, ``bytes(data)``.
    accepts_bytes: ClassVar[bool] = False

    #: True once a loop that counts traffic (``Server.count_traffic``) has served this
    #: protocol; the loops set it, nothing clears it. While it is False no loop that counts
    #: uses this protocol, and :meth:`receive` may skip ``conn.count_messages``: for a protocol
    #: compiled apart from gev-core that call is a tenth of a small frame's echo. Once True,
    #: report as usual (``count_messages`` still checks the connection's own loop, so loops
    #: that don't count stay at zero).
    counting: bool = False

    def connection_made(self, conn: Connection) -> None:
        """Called on the connection's loop before the handler's ``on_connect``."""

    def connection_lost(self, conn: Connection) -> None:
        """Called on the connection's loop once it is closed, before the handler's ``on_close``."""

    def unpack(self, conn: Connection, buffer: RingBuffer) -> tuple[Any, Any] | None:
        """Take one complete frame out of ``buffer`` and return ``(ctx, data)``, or ``None``.

        ``None`` means "not enough bytes yet": leave the buffer as it was (``virtual_revert``).
        ``ctx`` and ``data`` are handed to ``handler.on_message(conn, ctx, data)``.
        """
        raise NotImplementedError(
            f"{type(self).__name__} implements neither unpack() nor receive()"
        )

    def pack(self, conn: Connection, data: Any) -> bytes | bytearray | memoryview:
        """Frame a reply (what ``on_message`` returned, or what was given to ``conn.send``).

        Runs on the loop thread, in the order the frames go out, so it may update
        per-connection state (compression, sequence numbers). For ``conn.send`` from another
        thread it runs later, on the loop, when the connection may already be closing: return
        ``b""`` to send nothing.
        """
        return data  # type: ignore[no-any-return]

    def shared_packer(self, conn: Connection) -> Callable[[Any], bytes] | None:
        """A function that frames a message once for many connections, or ``None``.

        Fan-out (one message published to many connections, as gev-pubsub does) asks each
        connection's protocol for this function, calls it once per message for all the
        connections that answered with the *same* function object, and writes the same bytes
        to each of them instead of calling :meth:`pack` per connection.

        Return a function only when framing depends on nothing per connection: it must read and
        change no connection's state, may be called on any loop's thread, and its bytes must be
        a valid framing of the message for ``conn`` (normally exactly what ``pack(conn, data)``
        would return). Return ``None`` -- the default -- when ``pack`` depends on or updates
        per-connection state (a compression context, a sequence number), or when ``conn``
        cannot take a message right now; fan-out then calls ``pack(conn, data)`` on the
        connection's loop thread.

        Called on the connection's loop thread, once per connection per fan-out batch: keep it
        cheap, and return a function built once (not a new closure per call). The built-in
        framers return one unless a subclass overrides their ``pack``. A protocol whose answer
        holds for a stretch of the connection's life can pin it instead
        (:meth:`Connection.pin_shared_packer <gev_core.Connection.pin_shared_packer>`), and is
        then not asked until it unpins: the WebSocket protocol pins from the opening handshake
        to the close frame.
        """
        return None

    def server_stopping(self, conn: Connection) -> None:
        """The server is stopping (``Server.stop``, SIGTERM): say goodbye and close.

        Called on the loop for each open connection when the stop begins. Send what the
        protocol sends to a peer that is going away (WebSocket: a 1001 close frame), then close
        gracefully; the default just calls ``conn.close()``, which flushes pending output,
        sends FIN and waits for the peer's. Connections still open when the stop's timeout
        runs out are dropped.
        """
        conn.close()

    def receive(self, conn: Connection, data: bytes | memoryview, out: list[Any]) -> int:
        """Dispatch every complete frame in ``data``; return the number of bytes consumed.

        ``data`` is valid only during the call (it may point into the loop's shared read buffer);
        a protocol that sets :attr:`accepts_bytes` is given ``bytes`` on the common path.
        For each frame call ``conn.handler.on_message(conn, ctx, payload)`` and append the packed
        reply, if not ``None``, to ``out``: the reactor sends everything in ``out`` with one write.
        Report what one call handed over with ``conn.count_messages(received, sent)`` (the
        loop's statistics; it returns at once while they are off). A protocol may skip that
        call while its :attr:`counting` is False: no loop that counts has served it yet.
        Stop early once ``conn.closing`` is true. The default runs :meth:`unpack` over a zero-copy
        ring buffer.

        To bound the work of one call (a peer can pack thousands of messages, or megabytes of
        compressed data, into one read), a protocol may also stop at a frame boundary, call
        ``conn.continue_later()`` and return what it consumed: the rest comes back in the
        loop's next iteration, after the other connections have had their turn.
        """
        buf = RingBuffer.wrap(data)
        unpack = self.unpack
        pack = self.pack
        on_message = conn.handler.on_message
        total = len(buf)
        received = sent = 0
        while not conn.closing:
            frame = unpack(conn, buf)
            if frame is None:
                break
            reply = on_message(conn, frame[0], frame[1])
            received += 1
            if reply is not None:
                out.append(pack(conn, reply))
                sent += 1
        if received and self.counting:
            conn.count_messages(received, sent)
        return total - len(buf)


class DefaultProtocol(Protocol):
    """Everything one read brings is one message, as in gev. No framing at all."""

    name = "default"

    def unpack(self, conn: Connection, buffer: RingBuffer) -> tuple[Any, Any] | None:
        if not buffer:
            return None
        data = buffer.to_bytes()
        buffer.retrieve_all()
        return None, data

    def receive(self, conn: Connection, data: bytes | memoryview, out: list[Any]) -> int:
        reply = conn.handler.on_message(conn, None, bytes(data))
        if reply is not None:
            out.append(reply)
        # The general path (output pending); the common one is counted by the loop itself.
        if self.counting:
            conn.count_messages(1, 0 if reply is None else 1)
        return len(data)

    def shared_packer(self, conn: Connection) -> Callable[[Any], bytes] | None:
        if type(self).pack is not DefaultProtocol.pack:
            return None
        return _raw_bytes


def _raw_bytes(data: Any) -> bytes:
    # DefaultProtocol's framing: none. What pack would write, as one immutable object.
    return data if type(data) is bytes else bytes(data)


_LENGTH_FORMATS = {1: "B", 2: "H", 4: "I", 8: "Q"}


class LengthFieldProtocol(Protocol):
    """Frames prefixed by their length: ``[length][body]``, the length counting the body only.

    :param header_size: size of the length field in bytes: 1, 2, 4 or 8.
    :param byteorder: ``"big"`` (network order, the default) or ``"little"``.
    :param max_frame_size: largest body accepted; a peer claiming more is disconnected as soon as
        the header arrives, before anything is buffered for it.
    """

    name = "length-field"
    accepts_bytes = True

    def __init__(
        self,
        header_size: int = 4,
        byteorder: str = "big",
        max_frame_size: int = DEFAULT_MAX_FRAME_SIZE,
    ) -> None:
        if header_size not in _LENGTH_FORMATS:
            raise ValueError(f"header_size must be 1, 2, 4 or 8, not {header_size!r}")
        if byteorder not in ("big", "little"):
            raise ValueError(f"byteorder must be 'big' or 'little', not {byteorder!r}")
        if max_frame_size < 0:
            raise ValueError("max_frame_size must be >= 0")
        self.header_size = header_size
        self.max_frame_size = max_frame_size
        self._header = struct.Struct(
            ("<" if byteorder == "little" else ">") + _LENGTH_FORMATS[header_size]
        )
        # Built once: shared_packer must return the same object for every connection.
        self._shared = functools.partial(self.pack, None)

    def _too_big(self, length: int) -> ProtocolError:
        return ProtocolError(f"frame length {length} exceeds max_frame_size {self.max_frame_size}")

    def receive(self, conn: Connection, data: bytes | memoryview, out: list[Any]) -> int:
        unpack_from = self._header.unpack_from
        hsize = self.header_size
        limit = self.max_frame_size
        on_message = conn.handler.on_message
        pack = self.pack
        end = len(data)
        pos = received = sent = 0
        while end - pos >= hsize and not conn.closing:
            (length,) = unpack_from(data, pos)
            if length > limit:
                raise self._too_big(length)
            stop = pos + hsize + length
            if stop > end:
                break
            reply = on_message(conn, None, bytes(data[pos + hsize : stop]))
            pos = stop
            received += 1
            if reply is not None:
                out.append(pack(conn, reply))
                sent += 1
        if received and self.counting:
            conn.count_messages(received, sent)
        return pos

    def unpack(self, conn: Connection, buffer: RingBuffer) -> tuple[Any, Any] | None:
        hsize = self.header_size
        if len(buffer) < hsize:
            return None
        (length,) = self._header.unpack(buffer.virtual_read(hsize))
        if length > self.max_frame_size:
            raise self._too_big(length)
        if buffer.virtual_length < length:
            buffer.virtual_revert()
            return None
        body = buffer.virtual_read(length)
        buffer.virtual_flush()
        return None, body

    def shared_packer(self, conn: Connection) -> Callable[[Any], bytes] | None:
        if type(self).pack is not LengthFieldProtocol.pack:
            return None
        return self._shared

    def pack(self, conn: Connection | None, data: Any) -> bytes:
        length = len(data)
        if length > self.max_frame_size:
            raise ValueError(
                f"reply of {length} bytes exceeds max_frame_size {self.max_frame_size}"
            )
        return self._header.pack(length) + bytes(data)


class LineProtocol(Protocol):
    """Delimiter-terminated messages (text lines by default); the delimiter is stripped.

    :param delimiter: bytes ending each message, ``b"\\n"`` by default. A trailing ``b"\\r"`` is
        stripped too when the delimiter is ``b"\\n"`` (telnet-style clients).
    :param max_line_length: longest message accepted; a peer sending more without a delimiter is
        disconnected instead of being buffered forever.
    :param append_delimiter: :meth:`pack` adds the delimiter to replies that lack it.
    """

    name = "line"
    accepts_bytes = True

    def __init__(
        self,
        delimiter: bytes = b"\n",
        max_line_length: int = 64 * 1024,
        append_delimiter: bool = True,
    ) -> None:
        if not delimiter:
            raise ValueError("delimiter must not be empty")
        self.delimiter = bytes(delimiter)
        self.max_line_length = max_line_length
        self.append_delimiter = append_delimiter
        self._strip_cr = self.delimiter == b"\n"
        self._shared = functools.partial(self.pack, None)

    def receive(self, conn: Connection, data: bytes | memoryview, out: list[Any]) -> int:
        # bytes.find runs in C: one copy of a view per read, not per line.
        raw = data if type(data) is bytes else bytes(data)
        delim = self.delimiter
        dlen = len(delim)
        on_message = conn.handler.on_message
        pack = self.pack
        strip_cr = self._strip_cr
        pos = received = sent = 0
        while not conn.closing:
            idx = raw.find(delim, pos)
            if idx < 0:
                break
            if idx - pos > self.max_line_length:
                raise ProtocolError(
                    f"line of {idx - pos} bytes exceeds max_line_length {self.max_line_length}"
                )
            stop = idx
            if strip_cr and stop > pos and raw[stop - 1] == 13:
                stop -= 1
            reply = on_message(conn, None, raw[pos:stop])
            pos = idx + dlen
            received += 1
            if reply is not None:
                out.append(pack(conn, reply))
                sent += 1
        if received and self.counting:
            conn.count_messages(received, sent)
        if len(raw) - pos > self.max_line_length + dlen:
            raise ProtocolError(f"no delimiter within max_line_length {self.max_line_length} bytes")
        return pos

    def unpack(self, conn: Connection, buffer: RingBuffer) -> tuple[Any, Any] | None:
        raw = bytes(buffer.linear_view())
        idx = raw.find(self.delimiter)
        if idx < 0:
            if len(raw) > self.max_line_length + len(self.delimiter):
                raise ProtocolError(
                    f"no delimiter within max_line_length {self.max_line_length} bytes"
                )
            return None
        buffer.retrieve(idx + len(self.delimiter))
        if self._strip_cr and raw[idx - 1 : idx] == b"\r":
            idx -= 1
        return None, raw[:idx]

    def shared_packer(self, conn: Connection) -> Callable[[Any], bytes] | None:
        if type(self).pack is not LineProtocol.pack:
            return None
        return self._shared

    def pack(self, conn: Connection | None, data: Any) -> bytes:
        raw = data.encode() if isinstance(data, str) else bytes(data)
        if self.append_delimiter and not raw.endswith(self.delimiter):
            return raw + self.delimiter
        return raw
