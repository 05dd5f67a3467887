"""The reactor-facing side: a gev ``Protocol`` that runs one :class:`WebSocketSession` per
connection, and the handler API built on it.

Threading rule: a session is only ever touched on its connection's loop thread. The public
``send_*``/``ping``/``close`` functions may be called from any thread because they go through
``Connection.send``, which queues the message (or a ping or close request) to the loop, where
:meth:`WebSocketProtocol.pack` builds the frame: with permessage-deflate the compressor's
state then advances in wire order. Even on the loop thread, inside ``on_message``, the send is
deferred, so that the reply the handler returns is built (and compressed) first.

Closing: once the session says the transport should close, the server shuts down its
sending side (FIN after the close frame) and discards input until the peer's FIN, bounded
by ``linger_timeout``. Closing the socket while unread input sits in the kernel would make
it answer with RST, and a RST can overtake our close frame, so the peer would never see it.
A stopping server starts the closing handshake with 1001 "going away" on every connection.

Timers (handshake, close and linger timeouts) come from the loop's ``call_later`` and are
cancelled as soon as they are moot; on close the session forgets its connection, so a closed
connection is freed by reference counting alone. Peer faults (a refused handshake, a close
for a protocol error, a handshake that never completes) are logged as one WARNING line.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from gev_core import Connection, ConnectionClosed, Protocol, Server, TimerHandle
from wsproto.connection import ConnectionState
from wsproto.events import Request

from . import _session
from ._compiled import is_compiled
from ._fastpath import build_message
from ._message_type import BINARY, TEXT, MessageType
from ._session import (
    DEFAULT_MAX_HANDSHAKE_SIZE,
    DEFAULT_MAX_MESSAGE_SIZE,
    Accept,
    Deflate,
    FrameReader,
    Reject,
    WebSocketSession,
)
from ._shared import compressed_packer

__all__ = [
    "MessageType",
    "Upgrader",
    "WebSocketHandler",
    "WebSocketProtocol",
    "close",
    "new_websocket_server",
    "ping",
    "send",
    "send_binary",
    "send_text",
]

logger = logging.getLogger("gev.websocket")

_CONNECTING = ConnectionState.CONNECTING
_OPEN = ConnectionState.OPEN

# Pure Python, the protocol's own receive is the cheaper call (FrameReader would add a frame).
_COMPILED_READER = is_compiled(_session)

RequestHook = Callable[[Request], "Accept | Reject | None"]


class WebSocketHandler:
    """Base class of WebSocket handlers (gev's ``WebSocketHandler``). Callbacks run on the loop.

    Override :meth:`on_message`; the rest is optional. A callback that raises closes that
    connection only, with close code 1011.
    """

    def on_connect(self, conn: Connection) -> None:
        """A TCP connection was accepted; the WebSocket handshake has not happened yet."""

    def on_request(self, conn: Connection, request: Request) -> Accept | Reject | None:
        """The upgrade request arrived (``request.target``, ``request.extra_headers`` with
        lower-case byte names, ``request.subprotocols``): None accepts, :class:`Reject`
        refuses with an HTTP status (e.g. 401), :class:`Accept` picks a subprotocol.

        Only called when overridden; otherwise the upgrader's ``on_request`` applies.
        """
        return None

    def on_open(self, conn: Connection) -> None:
        """The handshake completed: from now on messages can be sent."""

    def on_message(self, conn: Connection, data: str | bytes) -> tuple[Any, Any] | None:
        """A complete message: ``str`` for text, ``bytes`` for binary.

        Return ``(MessageType.TEXT, str)`` or ``(MessageType.BINARY, bytes)`` to reply, or
        ``None`` / ``(None, None)`` to send nothing.
        """
        return None

    def on_pong(self, conn: Connection, payload: bytes) -> None:
        """A pong arrived (normally the answer to :func:`ping`)."""

    def on_close(self, conn: Connection) -> None:
        """The connection is closed (called exactly once, after the TCP connection is gone)."""


@dataclass(frozen=True)
class Upgrader:
    """How the opening handshake is answered (gev's ``ws.Upgrader``).

    :param subprotocols: subprotocols the server speaks; the first one the client offers (in
        the client's order) is selected.
    :param compression: negotiate permessage-deflate when offered: True (default settings), a
        :class:`Deflate` with explicit settings, or False.
    :param on_request: ``on_request(request) -> Accept | Reject | None``, to check headers or
        the path before accepting; a :class:`Reject` answers with its HTTP status.
    :param max_handshake_size: largest request head accepted (431 beyond).
    :param handshake_timeout: seconds a connection may take to complete its upgrade request
        (slow or half-open clients are dropped); None waits forever.
    """

    subprotocols: Sequence[str] = ()
    compression: bool | Deflate = True
    on_request: RequestHook | None = None
    max_handshake_size: int = DEFAULT_MAX_HANDSHAKE_SIZE
    handshake_timeout: float | None = 10.0


#: Default ``work_per_turn`` of a server's sessions: after this much work on one connection
#: the loop serves the others before going on (see ``WebSocketSession``).
DEFAULT_WORK_PER_TURN = 256 * 1024


class _Session(WebSocketSession):
    # ``lingering``: the close is under way; input is discarded until the peer's FIN.
    # ``timer``: the pending handshake, close or linger timeout, if any.
    __slots__ = ("lingering", "timer")

    lingering: bool
    timer: TimerHandle | None

    def set_timer(self, timer: TimerHandle | None) -> None:
        old = self.timer
        if old is not None:
            old.cancel()
        self.timer = timer

    def close(self, code: int = 1000, reason: str = "") -> bytes:
        # Fan-out's pinned answer (_opened) must not outlive the session's last data frame,
        # whoever starts the close: the protocol's paths, or a direct conn.state.close().
        conn: Connection | None = self._context
        if conn is not None:
            conn.pin_shared_packer(None)
        return super().close(code, reason)

    def _build_compressed(self, reply: Any) -> bytes:
        conn: Connection = self._context
        if conn.replies_pending:
            # Replies produced later (conn.offload) are owed: compressing this one now would
            # advance the compressor out of wire order. pack frames it at its turn.
            conn.queue_reply(reply)
            return b""
        return super()._build_compressed(reply)


@dataclass(frozen=True)
class _Ping:
    """A ping asked for with :func:`ping`, queued through ``conn.send``."""

    payload: bytes


@dataclass(frozen=True)
class _Close:
    """A closing handshake asked for with :func:`close`, queued through ``conn.send``."""

    code: int
    reason: str


def _report_buffered(conn: Connection, nbytes: int) -> None:
    conn.report_buffered(nbytes)


def _reply_type_error(kind: Any, reply: Any) -> TypeError:
    return TypeError(
        f"on_message returned ({kind!r}, {type(reply).__name__}): a reply must be"
        " (MessageType.TEXT, str), (MessageType.BINARY, bytes) or None"
    )


def _typed_reply(result: Any) -> Any:
    """``(MessageType, reply)`` as the session frames it: str = text, bytes = binary.

    A WebSocketHandler's session calls its ``on_message`` directly and unpacks the common
    replies itself (``_session._untyped``); it calls this for the others.
    """
    kind, reply = result
    if reply is None:
        return None
    if kind is BINARY:
        if type(reply) is bytes:
            return reply
        if isinstance(reply, (bytearray, memoryview)):
            return bytes(reply)
    elif kind is TEXT:
        if type(reply) is str:
            return reply
    elif kind == 2 and isinstance(reply, (bytes, bytearray, memoryview)):
        return bytes(reply)
    elif kind == 1 and isinstance(reply, str):
        return reply
    raise _reply_type_error(kind, reply)


def _core_adapter(on_message: Callable[..., Any]) -> Callable[[Any, Any], Any]:
    """A gev-core style handler, ``on_message(conn, ctx, data) -> reply``: str replies go out
    as text, bytes-like ones as binary (lets one handler serve several protocols)."""

    def call(conn: Any, message: Any) -> Any:
        return on_message(conn, None, message)

    return call


def _overrides(handler: Any, name: str) -> bool:
    method = getattr(type(handler), name, None)
    return method is not None and method is not getattr(WebSocketHandler, name, None)


class WebSocketProtocol(Protocol):
    """WebSocket over gev: ``Server(handler, protocol=WebSocketProtocol(...))`` or
    ``protocol="websocket"`` with the plugin installed.

    :param upgrader: the handshake settings (:class:`Upgrader`).
    :param max_message_size: largest message accepted (after decompression); bigger ones close
        the connection with 1009.
    :param max_frame_size: largest frame payload accepted (default: ``max_message_size``).
    :param close_timeout: after a server-initiated close, seconds to wait for the peer's close
        frame before dropping the connection.
    :param linger_timeout: seconds to wait for the peer's FIN once our close frame is sent.
    :param fast_path: False routes every frame through wsproto (slower; for comparison).
    :param work_per_turn: bytes of work (payload received, inflated or parsed) one connection
        may do before the loop serves the others; the rest of its input waits for the next
        iteration. Bounds what a few KiB of compressed input can cost the other clients.
    """

    name: ClassVar[str] = "websocket"
    accepts_bytes: ClassVar[bool] = True

    def __init__(
        self,
        upgrader: Upgrader | None = None,
        *,
        max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE,
        max_frame_size: int | None = None,
        close_timeout: float = 5.0,
        linger_timeout: float = 2.0,
        fast_path: bool = True,
        work_per_turn: int = DEFAULT_WORK_PER_TURN,
    ) -> None:
        self.upgrader = upgrader = upgrader if upgrader is not None else Upgrader()
        compression = upgrader.compression
        self._deflate: Deflate | None = (
            Deflate() if compression is True else compression if compression else None
        )
        self.max_message_size = max_message_size
        self.max_frame_size = max_frame_size
        self.close_timeout = close_timeout
        self.linger_timeout = linger_timeout
        self.fast_path = fast_path
        self.work_per_turn = work_per_turn
        # Per handler, built once: what the session calls with each message, whether that
        # returns (MessageType, data), and which optional callbacks exist.
        self._wiring: dict[int, tuple[Any, bool, Any, Any, Any, bool]] = {}
        # Protocol.counting (the property below), and the compiled reader that keeps a copy.
        self._counting = False
        self._reader: FrameReader | None = None
        if _COMPILED_READER and type(self).receive is WebSocketProtocol.receive:
            # The reactor's per-read call without an interpreted frame (see FrameReader). A
            # cycle through this protocol, which lives as long as its server anyway.
            self._reader = FrameReader(self)
            self.receive = self._reader.receive  # type: ignore[method-assign]
        # Fail at construction, not on the first connection, if the limits are nonsense.
        WebSocketSession(
            max_message_size=max_message_size,
            max_frame_size=max_frame_size,
            max_handshake_size=upgrader.max_handshake_size,
            work_per_turn=work_per_turn,
        )

    @classmethod
    def from_config(cls, config: Any) -> WebSocketProtocol:
        """Build from ``config.options`` keys prefixed ``ws_`` (``gev serve --ws-...``)."""
        opts = config.options
        upgrader_kw: dict[str, Any] = {}
        kw: dict[str, Any] = {}
        if opts.get("ws_subprotocols"):
            upgrader_kw["subprotocols"] = tuple(opts["ws_subprotocols"])
        if opts.get("ws_compression") is not None:
            upgrader_kw["compression"] = bool(opts["ws_compression"])
        if opts.get("ws_max_handshake_size") is not None:
            upgrader_kw["max_handshake_size"] = int(opts["ws_max_handshake_size"])
        if "ws_handshake_timeout" in opts and opts["ws_handshake_timeout"] is not None:
            timeout = float(opts["ws_handshake_timeout"])
            upgrader_kw["handshake_timeout"] = timeout if timeout > 0 else None
        if opts.get("ws_on_request") is not None:
            upgrader_kw["on_request"] = opts["ws_on_request"]
        for key in ("max_message_size", "max_frame_size", "work_per_turn"):
            if opts.get("ws_" + key) is not None:
                kw[key] = int(opts["ws_" + key])
        for key in ("close_timeout", "linger_timeout"):
            if opts.get("ws_" + key) is not None:
                kw[key] = float(opts["ws_" + key])
        return cls(Upgrader(**upgrader_kw), **kw)

    # -- per connection ------------------------------------------------------------------

    def _wire(self, handler: Any) -> tuple[Any, bool, Any, Any, Any, bool]:
        wiring = self._wiring.get(id(handler))
        if wiring is None:
            # A handler with async def callbacks comes wrapped by the server (gev-core's
            # AsyncHandler, the application's handler as ``__wrapped__``); its on_message
            # takes the same arguments and returns None, the reply comes later through pack.
            app = getattr(handler, "__wrapped__", handler)
            typed = isinstance(app, WebSocketHandler)
            # A WebSocketHandler's on_message is called as it is, once per message, and its
            # (MessageType, data) reply unpacked by the session.
            adapter = handler.on_message if typed else _core_adapter(handler.on_message)
            on_open = getattr(app, "on_open", None) if _overrides(app, "on_open") else None
            on_pong = getattr(app, "on_pong", None) if _overrides(app, "on_pong") else None
            per_conn_request = _overrides(app, "on_request") and callable(
                getattr(app, "on_request", None)
            )
            wiring = (
                adapter,
                typed,
                on_open,
                on_pong,
                app.on_request if per_conn_request else None,
                per_conn_request,
            )
            # The handler is the server's, alive as long as this protocol: id() is stable.
            self._wiring[id(handler)] = wiring
        return wiring

    def connection_made(self, conn: Connection) -> None:
        adapter, typed, _, on_pong, handler_request, per_conn = self._wire(conn.handler)
        upgrader = self.upgrader
        on_request: Any = upgrader.on_request
        if per_conn:
            # Only a handler that overrides on_request pays for this closure (released on
            # close, with the rest of the session's references to the connection).
            def on_request(request: Request) -> Accept | Reject | None:
                return handler_request(conn, request)  # type: ignore[no-any-return]

        session = _Session(
            adapter,
            conn,
            on_open=self._opened,
            on_pong=on_pong,
            on_request=on_request,
            subprotocols=upgrader.subprotocols,
            compression=self._deflate,
            max_message_size=self.max_message_size,
            max_frame_size=self.max_frame_size,
            max_handshake_size=upgrader.max_handshake_size,
            fast_path=self.fast_path,
            work_per_turn=self.work_per_turn,
            on_buffered=_report_buffered,
        )
        session.lingering = False
        session.timer = None
        if typed:
            session._typed_replies = _typed_reply
        conn.state = session
        timeout = upgrader.handshake_timeout
        if timeout is not None:
            session.timer = conn.loop.call_later(timeout, self._handshake_expired, conn, session)

    def _opened(self, conn: Connection) -> None:
        session = conn.state
        if isinstance(session, _Session):
            session.set_timer(None)  # the handshake completed in time
        # Fan-out's answer holds from now until a close frame (_start_close, _linger unpin
        # it): pinned, it costs no call per subscriber per published batch.
        conn.pin_shared_packer(self.shared_packer(conn))
        on_open = self._wire(conn.handler)[2]
        if on_open is not None:
            on_open(conn)

    def connection_lost(self, conn: Connection) -> None:
        session = conn.state
        if isinstance(session, _Session):
            session.set_timer(None)
            session.receive_eof()
            # The session and the connection refer to each other: cut the session's side so
            # that both are freed as soon as the application lets go of the connection.
            session.release()

    def receive(self, conn: Connection, data: bytes | memoryview, out: list[Any]) -> int:
        # Compiled, __init__ installs FrameReader.receive in its place: the same steps for an
        # open session (keep the two in step), and this method (receive_general) for the rest.
        session: _Session = conn.state
        if session.lingering:
            return len(data)
        received = session.received
        replied = session.replied
        try:
            closed = session.receive(data, out)
        except Exception:
            closed = self._handler_failed(conn, session, out)
        # Messages handed to the handler and the replies it returned: the loop's counters,
        # once a loop that counts has served this protocol (control frames and the handshake
        # are not messages).
        if self._counting:
            conn.count_messages(session.received - received, session.replied - replied)
        if closed:
            return self._closed(conn, session, len(data))
        left = session.unconsumed
        if left:
            # Its turn is over: the loop hands the rest back after serving the others.
            session.unconsumed = 0
            conn.continue_later()
            return len(data) - left
        return len(data)

    # What FrameReader hands back to: this class's receive, whatever the instance's now is.
    receive_general = receive

    @property
    def counting(self) -> bool:
        """:attr:`Protocol.counting <gev_core.Protocol.counting>`; the compiled reader keeps a
        copy, which it reads natively (this property would be a lookup and a call per read)."""
        return self._counting

    @counting.setter
    def counting(self, on: bool) -> None:
        self._counting = on
        if self._reader is not None:
            self._reader.counting = on

    def _handler_failed(self, conn: Connection, session: _Session, out: list[Any]) -> bool:
        logger.exception("closing %r with 1011: the WebSocket handler failed", conn)
        frame = session.close(1011, "internal error")
        if frame:
            out.append(frame)
        return True

    def _closed(self, conn: Connection, session: _Session, consumed: int) -> int:
        if session.failure is not None:
            logger.warning("closing %r: %s", conn, session.failure)
        self._linger(conn, session)
        return consumed

    def pack(self, conn: Connection, data: Any) -> bytes:
        """Frame what ``conn.send`` was given (on the loop thread, in send order).

        ``str`` goes out as a text message, bytes-like as binary, and a reply as handlers
        return it, ``(MessageType, data)`` (what an ``async def on_message`` or a function given
        to ``conn.offload`` returns reaches here); :func:`ping` and :func:`close` queue their
        requests through here too. Returns ``b""`` (nothing is sent) unless the session is open.
        """
        session = conn.state
        if not isinstance(session, _Session):
            return b""  # no session (yet): the protocol has not been chosen
        kind = type(data)
        if kind is _Ping:
            return session.ping(data.payload)
        if kind is _Close:
            return self._start_close(conn, session, data.code, data.reason)
        if kind is tuple:
            data = _typed_reply(data)
            if data is None:
                return b""
        return session.send(data)

    def shared_packer(self, conn: Connection) -> Callable[[Any], bytes] | None:
        """Frames shared between connections for fan-out (see ``gev_websocket._shared``).

        ``str`` goes out as text, anything else bytes-like as binary, as with :meth:`pack`.
        ``None`` unless the session is OPEN: a frame before the handshake or after a close
        frame must not be written, and ``pack`` then writes nothing.
        """
        session = conn.state
        if not isinstance(session, WebSocketSession):
            return None
        if not session._is_open():
            return None
        deflate = session._deflate
        if deflate is None or not deflate.server_no_context_takeover:
            return build_message
        return compressed_packer(deflate.deflate_bits, deflate.compress_level, deflate.mem_level)

    def server_stopping(self, conn: Connection) -> None:
        """The server is stopping: start the closing handshake with 1001 "going away"."""
        session = conn.state
        if isinstance(session, _Session) and conn.connected:
            frame = self._start_close(conn, session, 1001, "going away")
            if frame:
                conn.write(frame)
        else:
            conn.close()

    # -- closing -------------------------------------------------------------------------

    def _linger(self, conn: Connection, session: _Session) -> None:
        conn.pin_shared_packer(None)  # a close frame is out (or the session failed)
        if session.lingering:
            return
        session.lingering = True
        if conn.closing:
            # The core closed it already: the buffer budget sheds a connection from inside
            # receive, when the session reports what it holds. connection_lost has run (or
            # will), and a timer started now would keep the connection alive until it is due.
            return
        conn.shutdown_write()
        session.set_timer(conn.loop.call_later(self.linger_timeout, _drop, conn))

    def _start_close(self, conn: Connection, session: _Session, code: int, reason: str) -> bytes:
        # The close frame to send (b"" if there is none), with the close timeout started.
        # No data frame may follow it: fan-out asks shared_packer again, which says None.
        conn.pin_shared_packer(None)
        if conn.closing or session.lingering:
            return b""
        if session.state is _CONNECTING:
            session.close(code, reason)
            self._linger(conn, session)
            return b""
        frame = session.close(code, reason)
        if frame:
            session.set_timer(
                conn.loop.call_later(self.close_timeout, self._close_expired, conn, session)
            )
        return frame

    def _close_expired(self, conn: Connection, session: _Session) -> None:
        session.timer = None
        if conn.state is session and not session.lingering and not conn.closing:
            logger.debug("closing %r: no close frame from the peer in time", conn)
            session.closed = True
            self._linger(conn, session)

    def _handshake_expired(self, conn: Connection, session: _Session) -> None:
        session.timer = None
        if conn.state is session and not conn.closing and session.state is _CONNECTING:
            logger.warning(
                "closing %r: no WebSocket handshake within %s s",
                conn,
                self.upgrader.handshake_timeout,
            )
            conn.abort()


def _drop(conn: Connection) -> None:
    session = conn.state
    if isinstance(session, _Session):
        session.timer = None
    conn.abort()  # no-op when the peer's FIN already closed it


# -- sending from any thread -------------------------------------------------------------


def send_text(conn: Connection, text: str) -> None:
    """Send a text message. Safe from any thread; dropped unless the connection is OPEN when the
    loop gets to it.

    :raises ConnectionClosed: the connection is already closing.
    """
    if type(text) is not str:
        raise TypeError(f"send_text needs a str, not {type(text).__name__}")
    conn.send(text)


def send_binary(conn: Connection, data: bytes | bytearray | memoryview) -> None:
    """Send a binary message. Safe from any thread (``data`` is copied unless it is bytes)."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise TypeError(f"send_binary needs bytes, not {type(data).__name__}")
    conn.send(data if type(data) is bytes else bytes(data))


def send(conn: Connection, message_type: MessageType | int, data: str | bytes) -> None:
    """Send ``data`` as ``message_type`` (gev's ``SendWebsocketData``)."""
    if message_type == TEXT:
        send_text(conn, data)  # type: ignore[arg-type]
    elif message_type == BINARY:
        send_binary(conn, data)  # type: ignore[arg-type]
    else:
        raise ValueError(f"message_type must be MessageType.TEXT or BINARY, not {message_type!r}")


def ping(conn: Connection, payload: bytes = b"") -> None:
    """Send a ping; the pong goes to the handler's ``on_pong``. Safe from any thread."""
    payload = bytes(payload)
    if len(payload) > 125:
        raise ValueError("ping payload larger than 125 bytes")
    conn.send(_Ping(payload))


def close(conn: Connection, code: int = 1000, reason: str = "") -> None:
    """Start the closing handshake. Safe from any thread.

    The close frame is sent (after anything sent before it), the peer's close frame awaited
    (at most the protocol's ``close_timeout``), then the TCP connection is closed. A
    ``conn.close()`` right after it still lets the close frame out first.
    """
    if not (code in (1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011) or 3000 <= code < 5000):
        raise ValueError(f"close code {code} may not be sent")
    if len(reason.encode()) > 123:
        raise ValueError("close reason longer than 123 bytes")
    try:
        conn.send(_Close(code, reason))
    except ConnectionClosed:
        pass  # already closing: nothing more to say


def new_websocket_server(
    handler: Any,
    upgrader: Upgrader | None = None,
    *,
    max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE,
    max_frame_size: int | None = None,
    close_timeout: float = 5.0,
    linger_timeout: float = 2.0,
    **server_options: Any,
) -> Server:
    """A :class:`gev_core.Server` speaking WebSocket (gev's ``NewWebSocketServer``).

    ``server_options`` go to :class:`gev_core.Server` (``address``, ``num_loops``, ...). No
    plugin needs to be installed: the protocol is passed as an instance. Unless given,
    ``max_write_buffer`` is raised to hold an echo of the largest message twice over (the
    core's 8 MiB default would drop a peer whose reply to one big message is still queued).
    """
    server_options.setdefault("max_write_buffer", max(8 << 20, 2 * max_message_size + (1 << 20)))
    protocol = WebSocketProtocol(
        upgrader,
        max_message_size=max_message_size,
        max_frame_size=max_frame_size,
        close_timeout=close_timeout,
        linger_timeout=linger_timeout,
    )
    return Server(handler, protocol=protocol, **server_options)
