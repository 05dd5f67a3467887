"""One accepted TCP connection: its fd, its buffers, how it is read, and how it is written.

How a connection is read -- its *read strategy* -- is chosen once, whenever something it
depends on changes (the protocol, a stage before it, input left over, backpressure, closing),
by :meth:`Connection._refresh`, and stored as a small int in ``_reader``. The loop calls
:meth:`Connection._on_read` for every READ event, which dispatches on it:

``READ_MESSAGES``
    the default protocol with no output pending: one read, one ``on_message``, its reply
    written at once (gev's model). The loop runs this one inline, in its own body
    (``EventLoop._run``), because it is what a plain echo costs; ``_read_messages`` is the
    same steps for the events the loop hands over (readable and writable at once).
``READ_FRAMES``
    a protocol with ``accepts_bytes``: one read into a new ``bytes``, ``receive``, the replies
    sent together; an unconsumed tail is kept in the input ring buffer. Also written out in
    the loop's body, like ``READ_MESSAGES``: every protobuf or WebSocket message takes it.
``READ_BUFFERED``
    input left over from an earlier read, a protocol that wants a ``memoryview``, or the
    default protocol while output is pending: the general path through the input ring buffer
    and the protocol's ``receive`` (:meth:`Connection._receive`).
``READ_STAGED``
    a stage sits between the socket and the protocol: the listener's preamble (the PROXY
    protocol header), TLS. Raw bytes pass through the stages, then go the general path.
``READ_DISCARD``
    our FIN is out: read and drop until the peer's FIN (see "Closing" below).
``READ_NONE``
    not reading: paused by backpressure or by the application (``pause_reading``), waiting
    for its turn (``continue_later``), closing.
``READ_MESSAGES_OWN``
    ``READ_MESSAGES`` for a connection whose handler is not its loop's (an outbound connection
    given a handler of its own): the same steps, written out in the loop's body too, which
    calls the connection's handler instead of the loop's (a proxy's upstream side reads every
    reply this way).
``READ_RELAY``
    a connection joined to another by :meth:`Connection.relay`: one read, written as it is to
    the other connection, no protocol, no handler; written out in the loop's body too, as
    ``READ_MESSAGES`` (``_read_relay`` is the same steps). A relayed connection with a stage
    (TLS) reads ``READ_STAGED`` and relays the plaintext from ``_receive``.

Every byte the connection sends goes through one helper, :meth:`Connection._send` (plaintext:
a protocol's frames, replies, ``write``, fan-out), which hands it to :meth:`Connection._transmit`
(write now, buffer what the kernel does not take, backpressure). TLS plugs in between the two
(see "Stages"). Without TLS, the several pieces one ``receive`` appended to ``out`` (a WebSocket
reply's header and payload) go to :meth:`Connection._transmit_out` instead: one writev, not a
join that would copy the payload.

Rules of this file:

* Every method whose name starts with ``_`` runs on the connection's loop thread only. The public
  methods (``send``, ``write``, ``close``, ``shutdown_write``, ``abort``) may be called from any
  thread: off the loop they are queued to it (one wake-up per batch); on the loop, while the loop is
  dispatching a batch of I/O events, they are deferred to the end of that batch, which is what makes
  a reply returned from ``on_message`` leave before anything ``send`` was asked to send inside it.
  One exception: ``write`` to a connection other than the one being handled (the loop's
  ``_handling``), plaintext with nothing buffered, goes out at once while nothing is deferred --
  no reply of that connection's is in the making, and no earlier operation waits to go before
  it -- so a proxy forwarding between two connections pays no deferral per message
  (``_transmit(data, True)``; a failed write still closes that connection after the batch, never
  inside the handler that wrote).
  ``send`` queues the object itself: the protocol's ``pack`` runs on the loop thread, in order, so
  a protocol with per-connection state (a compressor, sequence numbers) needs no lock.
* Every call into the handler's or a plugin's code is isolated in its own ``try`` and ends the
  same way on an exception (:meth:`Connection._code_failed`): a ``ProtocolError`` is the peer's
  fault (one WARNING line), anything else -- an ``OSError`` too -- is a bug (traceback at
  ERROR); either closes that connection only. Socket errors are caught around the socket calls
  alone (:meth:`Connection._io_failed`), never around user code.
* Closing is graceful: once the output is flushed we send FIN and read (discarding) until the
  peer's FIN, at most the loop's ``linger_timeout``. Closing a socket with unread input makes the
  kernel answer with RST, which can destroy our last bytes before the peer has read them.
* What a connection buffers (its two ring buffers, a preamble in progress, plus what its protocol
  reports holding) is accounted to the loop after every change on the slow paths, so that the
  loop can shed the largest holders when the server-wide budget is exceeded (``_account``).
* A closed connection refers to nothing that refers back to it: timers are cancelled, stage
  objects dropped. Reference counting alone frees it (``tests/test_churn.py``).

Stages. Between the socket and the protocol a connection may have, in this order: the
listener's *preamble* (:class:`Preamble`, e.g. the PROXY protocol header), fed the raw first
bytes until it says how many it consumed; then *TLS* (:class:`TLSLayer`: ``_tls_feed`` turns
ciphertext into plaintext and sends the handshake's output, ``_send`` encrypts, ``_close``
adds the close_notify); then the protocol, which may itself be the first-bytes selector
(``SelectingProtocol``). The handler and the plugins' ``gev_connection_made`` learn of a
connection only once its preamble is done (:meth:`Connection._establish`), so they see the
address the preamble set.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Final
from typing import Protocol as _TypingProtocol

from gev_ringbuffer import RingBuffer

from ._base import Weakrefable
from ._bind import format_address
from ._errors import ConnectionClosed, ProtocolError
from ._handler import WritingHooks, writing_hooks
from ._poll import ERROR, READ, WRITE
from ._protocol import DefaultProtocol, Protocol
from ._stats import (
    CLOSE_REASONS,
    R_BUDGET,
    R_EOF,
    R_ERROR,
    R_HANDLER_ERROR,
    R_HARD_CAP,
    R_IDLE,
    R_LOCAL,
    R_PROTOCOL_ERROR,
    R_RESET,
    reason_code,
)
from ._tls import TLSEngine

if TYPE_CHECKING:
    # mypyc's native ints: annotations only, so the pure-Python build does not need
    # mypy_extensions (at run time the fields hold plain ints).
    from mypy_extensions import i32, u8

    from ._connect import ConnectAttempt
    from ._jobs import ConnectionJobs
    from ._loop import EventLoop, TimerHandle

logger = logging.getLogger("gev")

#: The most one read takes from a socket: every read of a connection is one ``read(2)`` of at
#: most this many bytes into a new ``bytes`` object. 64 KiB keeps that allocation below
#: glibc's mmap threshold (128 KiB): a larger one would cost an ``mmap``/``munmap`` pair per
#: read, whatever the message size.
READ_BUFFER_SIZE: Final = 64 * 1024

#: What a connection's reads ask for while its messages are small. A read of READ_BUFFER_SIZE
#: takes 64 KiB from malloc and shrinks it to the bytes read (a realloc), and glibc merges its
#: fast bins before every allocation that large: about 500 instructions of a 64-byte echo's
#: ~4,000 (bench/RESULTS.md). Up to 256 bytes the ``bytes`` comes from CPython's small-object
#: allocator instead, and the size is one of CPython's cached ints. A read that fills it is
#: completed at once by a read of the rest (``Connection._read_rest``): what a read hands on
#: is the same as before, one read of at most READ_BUFFER_SIZE bytes. The connection then
#: reads READ_BUFFER_SIZE at a time until one of those returns a small message again.
READ_SMALL_SIZE: Final = 256

# Connection states. CLOSING: no more reads or new writes; pending output drains. LINGERING: our
# FIN is sent; input is read and discarded until the peer's FIN (or the linger timeout), then the
# fd closes. Final, as the read strategies below: compiled code (this module and its importers)
# compares with the literal instead of looking the name up in the module's dict at every use.
OPEN: Final = 0
CLOSING: Final = 1
LINGERING: Final = 2
CLOSED: Final = 3

# Read strategies (Connection._reader); see the module docstring.
READ_MESSAGES: Final = 0
READ_FRAMES: Final = 1
READ_BUFFERED: Final = 2
READ_STAGED: Final = 3
READ_DISCARD: Final = 4
READ_NONE: Final = 5
READ_MESSAGES_OWN: Final = 6
READ_RELAY: Final = 7

_UNREGISTERED: Final = -1

#: The most pieces of one read's output written with one writev (``Connection._transmit_out``);
#: more are joined first. Linux copies up to 8 iovecs onto its stack (UIO_FASTIOV) and
#: allocates for more.
GATHER_MAX: Final = 8

# The socket calls of the per-message paths: the C kernel _fdio.c where it is built (os.read and
# os.write release the GIL around each call, which on a non-blocking socket costs a few hundred
# instructions and buys nothing), os otherwise (a pure wheel, GEV_PURE_PYTHON=1). Only ever
# called on the non-blocking sockets of connections.
_fd_read: Callable[[int, int], bytes]
_fd_write: Callable[[int, Any], int]  # data: any bytes-like object
_fd_writev: Callable[[int, Any], int]  # buffers: a sequence of them
try:
    from ._fdio import read as _fd_read
    from ._fdio import write as _fd_write
    from ._fdio import writev as _fd_writev
except ImportError:
    _fd_read, _fd_write, _fd_writev = os.read, os.write, os.writev

#: Whether the socket calls keep the GIL (the ``_fdio`` kernel is installed and not disabled).
NATIVE_IO: Final = _fd_read is not os.read

# The socket calls and the thread check, bound once: a compiled module keeps a Final name in a
# C static, where ``os.write`` would be a module attribute lookup per call (a few hundred
# instructions, the price of a small write's copy).
_read: Final = _fd_read
_write: Final = _fd_write
_writev: Final = _fd_writev
_get_ident: Final = threading.get_ident


class PreambleConnection(_TypingProtocol):
    """What a preamble may use of a connection (a :class:`Connection` provides it)."""

    @property
    def remote_address(self) -> Any: ...
    def set(self, key: str, value: Any) -> None: ...
    def set_peer_address(self, address: Any) -> None: ...


class Preamble(_TypingProtocol):
    """Bytes a listener's connections start with, consumed before anything else sees them.

    Installed with :meth:`gev_core.Server.set_preamble` (the PROXY protocol plugin does). For each
    accepted connection, on its loop thread:

    1. ``start(conn)`` right after the accept: False means this connection has no preamble; it
       may raise :class:`~gev_core.ProtocolError` to refuse the connection.
    2. ``feed(conn, data)`` with all the bytes received so far, each time more arrive: ``None``
       for "need more", or how many bytes of ``data`` the preamble took; the rest goes on to the
       next stage. A ``ProtocolError`` closes the connection with the message logged.
    3. The core buffers at most ``max_size`` bytes for it, and closes a connection whose
       preamble is not done ``timeout`` seconds after the accept (``None``: no limit).

    Until ``feed`` returns a count, neither the handler (``on_connect``), the protocol
    (``connection_made``) nor the plugins (``gev_connection_made``) know of the connection.
    One object serves every connection of the listener: keep per-connection state on the
    connection (``conn.set``), not on the preamble.
    """

    name: str
    max_size: int
    timeout: float | None

    def start(self, conn: PreambleConnection) -> bool: ...
    def feed(self, conn: PreambleConnection, data: bytes) -> int | None: ...


class TLSLayer(_TypingProtocol):
    """What a connection needs of a TLS engine (``gev_core._tls.TLSEngine`` has this shape).

    The seam of the TLS stage: ciphertext read from the socket goes through :meth:`feed`
    (``Connection._tls_feed``), plaintext the connection sends through :meth:`encrypt`
    (``Connection._send``), and :meth:`close` gives the close_notify (``Connection._close``),
    :meth:`shutdown` the same for a half-close (``Connection._shutdown_write``).
    """

    @property
    def want_write(self) -> bool: ...
    @property
    def handshake_done(self) -> bool: ...
    @property
    def peer_closed(self) -> bool: ...
    @property
    def version(self) -> str | None: ...
    @property
    def alpn_protocol(self) -> str | None: ...
    @property
    def server_name(self) -> str | None: ...
    @property
    def peer_certificate(self) -> dict[str, Any] | None: ...
    @property
    def ssl_object(self) -> Any: ...
    def feed(self, data: bytes) -> bytes: ...
    def feed_eof(self) -> None: ...
    def take_output(self) -> bytes: ...
    def encrypt(self, data: Any) -> bytes: ...
    def close(self) -> bytes: ...
    def shutdown(self) -> bytes: ...


class _Rare:
    """The fields of a :class:`Connection` that few connections ever set, in one object made
    on first use: an idle plain connection carries one pointer for all of them. Nothing here
    is read per message."""

    __slots__ = (
        "connecting",
        "kv",
        "linger_timer",
        "outbound",
        "preamble",
        "proxy_addr",
        "relay",
        "stage_in",
        "stage_timer",
        "tls",
    )

    def __init__(self) -> None:
        #: The socket's own peer once a preamble replaced ``_addr`` (``set_peer_address``).
        self.proxy_addr: Any = None
        #: ``set``/``get``/``delete``'s store.
        self.kv: dict[str, Any] | None = None
        #: The listener's preamble while it reads, what it has not taken yet, and its timeout
        #: (or the TLS handshake's).
        self.preamble: Preamble | None = None
        self.stage_in = b""
        self.stage_timer: TimerHandle | None = None
        self.linger_timer: TimerHandle | None = None
        #: Opened by ``connect`` rather than accepted; and, until it is ready, its attempt.
        self.connecting: ConnectAttempt | None = None
        self.outbound = False
        #: TLS, the stage between the socket and the protocol (see the module docstring):
        #: read on every send, where an idle plain connection pays one load of ``_rare``
        #: as it paid one of its own field, a TLS connection one more.
        self.tls: TLSLayer | None = None
        #: The connection this one is joined to by ``relay`` (both ways).
        self.relay: Connection | None = None


class Connection(Weakrefable):
    """A TCP connection served by a gev loop.

    Handlers receive it in every callback. ``context`` is a free slot for the application;
    ``set``/``get``/``delete`` offer a small key-value store beside it.
    """

    __slots__ = (
        "__weakref__",
        "_accounted",
        "_addr",
        "_eof",
        "_established",
        "_fd",
        "_fd_obj",
        "_held",
        "_in",
        "_jobs",
        "_jobs_hold",
        "_kind",
        "_loop",
        "_mask",
        "_out",
        "_owed",
        "_paused",
        "_port",
        "_protocol",
        "_rare",
        "_read_paused",
        "_read_size",
        "_reader",
        "_reason",
        "_relay_hold",
        "_shared",
        "_shut",
        "_state",
        "_writing_hooks",
        "_writing_paused",
        "_yielded",
        "context",
        "handler",
        "last_active",
        "state",
    )

    # Compiled, an instance's fields are laid out in the order mypyc first meets them: these
    # here, then the rest in the order __init__ sets them. The one-byte flags first, then the
    # small numbers as one-byte and four-byte native ints: together they fill three words
    # where a bool or a tagged int took a word each (a compiled instance 256 -> 208 bytes
    # with the address and TLS changes).
    _paused: bool
    _shut: bool
    _eof: bool
    _yielded: bool
    _established: bool
    _read_paused: bool
    _writing_paused: bool
    _owed: bool
    _jobs_hold: bool
    _relay_hold: bool
    _state: u8  # OPEN .. CLOSED
    _reader: u8  # READ_*
    _kind: u8  # READ_*
    _reason: u8  # an index into CLOSE_REASONS, 0 while open
    _mask: i32  # poller interest, or _UNREGISTERED
    #: The peer's port when ``_addr`` is its host alone, else -1 (``_split_address``).
    _port: i32
    _read_size: i32  # READ_SMALL_SIZE or READ_BUFFER_SIZE
    _addr: Any

    def __init__(
        self,
        fd: int,
        addr: Any,
        loop: EventLoop,
        handler: Any,
        protocol: Protocol,
    ) -> None:
        self._fd = fd
        # The same number as a Python int, made once: compiled code passing ``_fd`` to
        # os.write would box it, allocating an int per write for every fd above 256.
        self._fd_obj: Any = fd
        self._addr, self._port = _split_address(addr)
        self._loop = loop
        self.handler: Any = handler
        #: Per-connection state owned by the protocol (e.g. a WebSocket session).
        self.state: Any = None
        #: Free for the application, like gev's ``Context()``; touch it on the loop thread.
        self.context: Any = None
        #: The loop's clock reading at the last read or write (kept for idle reaping).
        self.last_active: float = loop.now
        self._in: RingBuffer | None = None
        self._out: RingBuffer | None = None
        self._state = OPEN
        self._paused = False
        self._shut = False
        #: The peer sent FIN: closing needs no lingering.
        self._eof = False
        #: The protocol stopped early (``continue_later``): reading waits until it resumed.
        self._yielded = False
        #: Bytes the protocol holds for this connection (``report_buffered``), and the total
        #: last accounted to the loop.
        self._held = 0
        self._accounted = 0
        self._mask = _UNREGISTERED
        #: Why it closed (a code of ``_stats.CLOSE_REASONS``), set by the first cause; 0: open.
        self._reason = 0
        #: The handler and the plugins know of it (``_establish`` ran).
        self._established = False
        self._protocol = protocol
        #: The protocol's shared packer for this connection, pinned by the protocol
        #: (``pin_shared_packer``); None: fan-out asks ``Protocol.shared_packer``.
        self._shared: Callable[[Any], bytes] | None = None
        #: How the protocol is read when nothing else is in the way (READ_MESSAGES,
        #: READ_FRAMES, READ_BUFFERED or READ_MESSAGES_OWN), decided when the protocol is set.
        self._kind = _reader_for(protocol, handler is loop._handler)
        self._reader = self._kind
        if loop.stats.counting:
            _note_counting(protocol)
        #: What the next read asks for: READ_SMALL_SIZE or READ_BUFFER_SIZE (``_read_rest``).
        self._read_size = READ_SMALL_SIZE
        #: Reading paused by the application (``pause_reading``), not by the core.
        self._read_paused = False
        #: The handler's ``pause_writing``/``resume_writing`` (None: it has neither); with
        #: them, ``_writing_paused`` rather than ``_paused`` says the output is above high_water.
        self._writing_hooks: WritingHooks | None = (
            loop._writing_hooks if handler is loop._handler else writing_hooks(handler)
        )
        self._writing_paused = False
        #: What few connections use (``_Rare``), made on first use: one pointer here for all.
        self._rare: _Rare | None = None
        # Work handed off with offload() or to async def callbacks (see _jobs.py): created on
        # first use; while replies are owed, inline replies queue behind them (``_owed``), and
        # reading stops while the connection is at its limit of owed replies (``_jobs_hold``).
        self._jobs: ConnectionJobs | None = None
        self._owed = False
        self._jobs_hold = False
        #: This one is not read because the output of the one it is relayed to (``_rare``)
        #: is above high_water.
        self._relay_hold = False

    # ------------------------------------------------------------------ public, any thread

    @property
    def loop(self) -> EventLoop:
        return self._loop

    @property
    def protocol(self) -> Protocol:
        """The frame codec serving this connection (a plugin may swap it on the first bytes)."""
        return self._protocol

    @protocol.setter
    def protocol(self, protocol: Protocol) -> None:
        self._protocol = protocol
        self._shared = None  # the previous protocol's answer
        if self._loop.stats.counting:
            _note_counting(protocol)
        rare = self._rare
        if rare is None or rare.relay is None:  # a relayed connection's bytes bypass the protocol
            self._kind = _reader_for(protocol, self.handler is self._loop._handler)
        self._refresh()

    def pin_shared_packer(self, packer: Callable[[Any], bytes] | None) -> None:
        """For protocols: fan-out frames for this connection with ``packer`` without asking.

        Fan-out (:func:`~gev_core.write_shared`) asks every connection's
        :meth:`Protocol.shared_packer <gev_core.Protocol.shared_packer>` once per batch: a
        Python call per subscriber per batch. A protocol whose answer stays the same for a
        while (a WebSocket session from its opening handshake to its close) can give the
        answer once here instead; fan-out then uses it as if ``shared_packer`` had returned it.
        The protocol must pin ``None`` (ask ``shared_packer`` again) *before* anything that
        would change that answer, e.g. before it frames a close. Closing connections are
        skipped either way, and setting :attr:`protocol` unpins. Call it on the loop thread.
        """
        self._shared = packer

    @property
    def connected(self) -> bool:
        """True until the connection starts closing."""
        return self._state == OPEN

    @property
    def outbound(self) -> bool:
        """True for a connection this side opened (``Server.connect``), False for an accepted
        one."""
        rare = self._rare
        return rare is not None and rare.outbound

    @property
    def reading_paused(self) -> bool:
        """True while reading is paused by :meth:`pause_reading`."""
        return self._read_paused

    def pause_reading(self) -> None:
        """Stop reading this connection's socket until :meth:`resume_reading`. Any thread.

        The peer's sends then wait in the kernel's buffers and, once those are full, in its own
        (TCP flow control). Bytes already read are still delivered: every message of the read
        in progress. One exception makes a pause in ``on_connect`` mean the same with and
        without TLS: the plaintext that arrived with the TLS handshake's last flight (read
        before ``on_connect`` ran) is held until :meth:`resume_reading` too. On the loop
        thread it takes effect at once; from another thread it is queued to the loop.
        Independent of the core's own pause while the connection's output is above the high
        water mark: the socket is read only when neither holds it.
        """
        self._pause_call(1)

    def resume_reading(self) -> None:
        """Read again after :meth:`pause_reading`; input left over from before is processed
        first. Any thread, as for :meth:`pause_reading`."""
        self._pause_call(0)

    def _pause_call(self, paused: int) -> None:
        loop = self._loop
        if loop._thread_id == _get_ident():
            self._set_read_paused(paused)
        else:
            loop.call_soon_threadsafe(self._set_read_paused, paused)

    @property
    def closing(self) -> bool:
        """True once ``close`` was called or the peer went away."""
        return self._state != OPEN

    @property
    def close_reason(self) -> str | None:
        """Why the connection closed or is closing (one of ``LoopStats``' reasons: ``"eof"``,
        ``"reset"``, ``"local"``, ``"idle"``, ``"protocol_error"``...); ``None`` while open."""
        reason = self._reason
        return CLOSE_REASONS[reason - 1] if reason else None

    @property
    def peer_addr(self) -> str:
        """The peer as ``"ip:port"`` (``"[ip]:port"`` for IPv6).

        On a Unix socket: ``"unix:"`` for the usual unnamed client, else ``"unix:/its/path"``
        or ``"unix:@name"``. Behind a proxy that announced the client (the PROXY protocol), the
        client; the proxy is :attr:`proxy_address`.
        """
        addr = self._addr
        port = self._port
        if port >= 0:
            return f"[{addr}]:{port}" if ":" in addr else f"{addr}:{port}"
        if isinstance(addr, tuple) and len(addr) >= 2:
            host = addr[0]
            return f"[{host}]:{addr[1]}" if ":" in host else f"{host}:{addr[1]}"
        return format_address(addr)

    @property
    def remote_address(self) -> Any:
        """The peer address as the socket module gives it, e.g. ``("127.0.0.1", 51234)``.

        Behind a proxy that announced the client, the client's address.
        """
        port = self._port
        return (self._addr, port) if port >= 0 else self._addr

    @property
    def proxy_address(self) -> Any:
        """The socket's own peer when a preamble announced another client (the proxy's address,
        as the socket module gives it); ``None`` for a direct connection."""
        rare = self._rare
        return None if rare is None else rare.proxy_addr

    def set_peer_address(self, address: Any) -> None:
        """Make ``address`` the connection's peer (:attr:`peer_addr`, :attr:`remote_address`).

        For a listener's preamble that learns the real client, such as the PROXY protocol;
        the socket's own peer stays available as :attr:`proxy_address`. Loop thread only.
        """
        rare = self._extra()
        if rare.proxy_addr is None:
            rare.proxy_addr = self.remote_address
        self._addr, self._port = _split_address(address)

    @property
    def tls_version(self) -> str | None:
        """The TLS version of a TLS connection (``"TLSv1.3"``, ``"TLSv1.2"``); ``None`` for
        plaintext. A TLS connection is known to the handler only once its handshake completed,
        so in every handler callback, ``on_close`` included, this and the properties below are
        set; they read ``None`` once ``on_close`` has returned."""
        tls = self._tls_layer()
        return tls.version if tls is not None else None

    @property
    def alpn_protocol(self) -> str | None:
        """The application protocol the TLS handshake agreed on (ALPN: ``"h2"``,
        ``"http/1.1"``...); ``None`` for plaintext or when the client offered none the server
        accepts (see ``alpn`` of :func:`~gev_core.server_context`)."""
        tls = self._tls_layer()
        return tls.alpn_protocol if tls is not None else None

    @property
    def server_name(self) -> str | None:
        """The server name the TLS client asked for (SNI), e.g. ``"api.example.com"``;
        ``None`` for plaintext or a client that sent none."""
        tls = self._tls_layer()
        return tls.server_name if tls is not None else None

    @property
    def peer_certificate(self) -> dict[str, Any] | None:
        """The client's certificate, verified, as ``ssl.SSLSocket.getpeercert()`` gives it
        (``subject``, ``issuer``, ``notAfter``, ``subjectAltName``...); ``None`` for plaintext
        or when no certificate was asked for (``verify_client``) or sent."""
        tls = self._tls_layer()
        if tls is None:
            return None
        return tls.peer_certificate or None

    @property
    def ssl_object(self) -> Any:
        """The connection's ``ssl.SSLObject`` (``cipher()``, ``getpeercert(binary_form=True)``,
        ``session_reused``...); ``None`` for plaintext."""
        tls = self._tls_layer()
        return tls.ssl_object if tls is not None else None

    @property
    def read_buffer_length(self) -> int:
        """Bytes received but not yet parsed into a message."""
        buf = self._in
        return len(buf) if buf is not None else 0

    @property
    def write_buffer_length(self) -> int:
        """Bytes accepted for sending that the kernel has not taken yet."""
        buf = self._out
        return len(buf) if buf is not None else 0

    @property
    def buffered(self) -> int:
        """Bytes buffered for this connection, as counted against ``Server.max_buffered``: its
        read and write buffers plus what its protocol reports holding (``report_buffered``)."""
        return self._accounted

    def fileno(self) -> int:
        return self._fd

    def send(self, data: Any) -> None:
        """Frame ``data`` with the connection's protocol and send it. Safe from any thread.

        ``data`` is queued to the connection's loop, where the protocol's ``pack`` frames it:
        sends leave in the order they were made (per thread), and inside ``on_message`` after
        the reply it returns. ``bytearray`` and ``memoryview`` arguments are copied when queued;
        other objects are handed to ``pack`` as they are, so don't change them afterwards. On
        the loop thread outside a batch of events (a timer, a task) ``pack`` runs at once and
        its errors reach the caller; a queued send that ``pack`` refuses closes the connection,
        with the traceback logged. A send still queued when the connection closes is dropped.

        :raises ConnectionClosed: the connection is already closing or closed.
        """
        if self._state != OPEN:
            raise ConnectionClosed(f"{self!r} is closed")
        loop = self._loop
        if loop._thread_id == _get_ident():
            if loop._dispatching:
                loop._deferred.append((self._send_queued, _frozen(data)))
            else:
                frame = self._protocol.pack(self, data)
                if loop.stats.counting:
                    loop.stats.messages_out += 1
                if frame:
                    self._send(frame)
        else:
            loop.call_soon_threadsafe(self._send_queued, _frozen(data))

    def write(self, data: Any) -> None:
        """Send raw bytes, bypassing the protocol's ``pack``. Safe from any thread.

        Writes leave in the order they are made (per thread), and inside ``on_message`` after
        the reply it returns. From the handler of another connection on the same loop (a
        proxy's other side) the write goes out at once unless something made earlier still
        waits to go before it.

        ``bytearray`` and ``memoryview`` arguments are copied when the write has to wait, so the
        caller may reuse them as soon as this returns.
        """
        if self._state != OPEN:
            raise ConnectionClosed(f"{self!r} is closed")
        loop = self._loop
        if loop._thread_id == _get_ident():
            if not loop._dispatching:
                self._send(data)
            elif (
                loop._handling != self._fd
                and not loop._deferred
                and self._out is None
                and (self._rare is None or self._rare.tls is None)
            ):
                # Mid-batch, a write to a connection other than the one being handled (a
                # proxy's other side), while nothing waits to go before it: now.
                self._transmit(data, True)
            else:
                # The connection being handled (its reply goes first), or something deferred
                # that this write must stay behind: at the end of the batch, in order.
                loop._deferred.append((self._send, _owned(data)))
        else:
            loop.call_soon_threadsafe(self._send, _owned(data))

    def relay(self, other: Connection) -> None:
        """Join this connection to ``other``: from now on the bytes each receives are written
        to the other as they are, both ways, with backpressure and closing built in.

        What a proxy or a tunnel does once it has its two connections (the upstream's
        ``connect`` callback; after a handshake of its own, such as SOCKS or HTTP CONNECT):
        gev reads one and writes the other itself, without calling either handler's
        ``on_message`` or the protocols. Input a protocol kept from before (a partial frame) is
        written first. On TLS connections the plaintext is relayed.

        * Backpressure: while one connection's unsent output is above the high water mark, the
          other is not read, until that output has drained to the low water mark; each
          direction on its own. The handlers' ``pause_writing``/``resume_writing`` are not
          called for relayed connections (the relay uses them); ``pause_reading`` still works
          and is independent of the relay's holds.
        * Closing: when either connection closes, for whatever reason, the other is closed
          after what it is still owed, as with :meth:`close`. ``on_close`` runs for both.
        * Bytes are counted in the loop's statistics, messages are not.

        Both connections must be open and belong to the same loop; call it on that loop's
        thread, outside ``on_message`` of a protocol that may hand over several messages per
        read (their rest would still go to the handler). A connection is relayed to one
        other for the rest of its life.

        :raises ValueError: ``other`` is this connection, on another loop, or either is
            already relayed.
        :raises ConnectionClosed: either connection is closing or closed.
        :raises RuntimeError: called off the loop thread.
        """
        loop = self._loop
        if loop._thread_id != _get_ident():
            raise RuntimeError("relay() must be called on the connections' loop thread")
        if other is self or other._loop is not loop:
            raise ValueError("relay() joins two different connections of one loop")
        if self._relay_peer() is not None or other._relay_peer() is not None:
            raise ValueError("a connection is relayed to one other connection only")
        if self._state != OPEN or other._state != OPEN:
            raise ConnectionClosed(f"{self if self._state != OPEN else other!r} is closed")
        pending: list[tuple[Connection, bytes]] = []
        for conn, peer in ((self, other), (other, self)):
            conn._extra().relay = peer
            conn._kind = READ_RELAY
            conn._writing_hooks = _RELAY_HOOKS
            inbuf = conn._in
            if inbuf is not None:
                # What the protocol left unparsed came before anything read from now on.
                view = inbuf.linear_view()
                pending.append((conn, bytes(view)))
                view.release()
                conn._in = None
            conn._yielded = False
            out = conn._out
            if out is not None and len(out) > loop.high_water:
                # Already above high_water: hold the other side until this output drains.
                conn._writing_paused = True
                peer._relay_hold = True
        for conn in (self, other):
            conn._refresh()
            conn._account()
        for conn, data in pending:
            conn._relay_out(data)

    def close(self, *, reason: str = "local") -> None:
        """Close once everything already sent is flushed. Safe from any thread; idempotent.

        :param reason: why, for the loop's statistics and :attr:`close_reason`: ``"local"``
            (the application's decision, the default), or another of the reasons ``LoopStats``
            counts, such as ``"idle"`` for a connection reaped for inactivity.
        :raises ValueError: an unknown ``reason``.
        """
        self._loop_call(self._close, reason_code(reason))

    def abort(self, *, reason: str = "local") -> None:
        """Close at once, dropping pending output. Safe from any thread; idempotent.

        :param reason: as for :meth:`close`.
        """
        self._loop_call(self._abort, reason_code(reason))

    def continue_later(self) -> None:
        """Called by a protocol's ``receive`` that stops before the end of its input on purpose.

        To bound the work one connection does per loop iteration (messages dispatched, bytes
        inflated), ``receive`` may return having consumed less than it could, after calling
        this. The loop then hands the unconsumed bytes to ``receive`` again in its next
        iteration, after the other connections' events, without waiting for the socket to
        become readable; reading from the socket waits meanwhile. Loop thread only.
        """
        self._yielded = True

    def report_buffered(self, nbytes: int) -> None:
        """Tell the server how many bytes the protocol holds for this connection.

        For memory a protocol keeps outside the connection's own buffers (a WebSocket message
        arriving in fragments, decompressed data): it counts against the server-wide
        ``max_buffered`` budget like the read and write buffers. Report the new total whenever
        it changes; it is forgotten when the connection closes. Loop thread only.
        """
        self._held = nbytes
        if self._state != CLOSED:
            self._account()

    def count_messages(self, received: int, sent: int = 0) -> None:
        """For protocols: add to the loop's message counters (``loop.stats``).

        A protocol whose ``receive`` hands messages to the handler reports, once per call, how
        many it handed over and how many replies it put in ``out``; the default protocol is
        counted by the core. Costs a call and a test when statistics are off; a protocol may
        skip the call while its ``counting`` is False (:attr:`Protocol.counting
        <gev_core.Protocol.counting>`: no loop that counts has served it). Loop thread only.
        """
        stats = self._loop.stats
        if stats.counting:
            stats.messages_in += received
            stats.messages_out += sent

    def shutdown_write(self) -> None:
        """Send FIN once pending output has been flushed (gev dropped it). Safe from any thread.

        Over TLS our close_notify goes first, after the pending output. Reading goes on until
        the peer closes (plaintext too, over TLS), then ``on_close`` runs as usual.
        """
        self._loop_call(self._shutdown_write, 0)

    def run_after(self, delay: float, fn: Any, *args: Any) -> Any:
        """Run ``fn(*args)`` on this connection's loop in ``delay`` seconds, unless it has closed.

        Returns a timer with ``cancel()``. Needs a timer plugin (gev-timers).
        """
        return self._loop.server.timers.conn_run_after(self, delay, fn, *args)

    def offload(self, fn: Any, *args: Any, on_error: Any = None) -> None:
        """Answer the request being handled with ``fn(*args)``, run off the loop thread.

        A plain function runs on the server's thread pool (for blocking code: a database
        driver, an HTTP client, file I/O); a coroutine function (or a coroutine, without
        ``args``) runs on the server's asyncio companion. Its return value is the reply: framed
        with the protocol's ``pack`` on the loop thread, and sent once every reply owed before
        it has been sent -- replies leave in request order, whatever finishes first. ``None``
        sends nothing. Call it from a handler callback (the loop thread); it returns at once,
        and ``on_message`` then returns ``None`` (the offloaded result is its reply; a value
        returned as well would be a second reply, whose place in the order is not promised).

        If ``fn`` raises, the connection closes after the replies before it, with the
        traceback logged -- or, given ``on_error(conn, exc)``, what that returns (on the loop
        thread) is the reply. When the connection closes, what it still owes is dropped and its
        coroutines are cancelled. Bounded by the server's ``max_pending`` (replies a connection
        may owe before it stops reading) and ``offload_queue`` (jobs waiting for a thread,
        server-wide: past it, the connection stops reading until there is room).

        :raises ConnectionClosed: the connection is closing or closed.
        :raises RuntimeError: called off the connection's loop thread.
        :raises TypeError: ``fn`` is not callable (or a coroutine given ``args``).
        """
        if self._state != OPEN:
            raise ConnectionClosed(f"{self!r} is closed")
        if self._loop._thread_id != _get_ident():
            raise RuntimeError(
                "offload() is for handler callbacks, on the connection's loop thread"
            )
        self._offload_jobs().offload(fn, args, on_error)

    @property
    def replies_pending(self) -> bool:
        """True while replies produced later (``offload``, ``async def on_message``) are owed.

        For protocols whose ``pack`` keeps state between calls (a compression context): while
        this is true, hand a reply to :meth:`queue_reply` instead of framing it in ``receive``.
        Loop thread only.
        """
        jobs = self._jobs
        # _owed may stay set after the last reply left (ConnectionJobs._update): ask the order.
        return self._owed and jobs is not None and jobs.busy

    def queue_reply(self, reply: Any) -> None:
        """For protocols: send ``reply`` after the replies owed now, framed with ``pack`` then.

        What a protocol whose ``pack`` keeps state calls instead of framing a reply inline
        while :attr:`replies_pending` is true, so that ``pack`` frames in wire order. Without
        replies owed it is framed and sent at once. Loop thread only.
        """
        self._offload_jobs().reply(reply)

    def set(self, key: str, value: Any) -> None:
        rare = self._extra()
        kv = rare.kv
        if kv is None:
            kv = rare.kv = {}
        kv[key] = value

    def get(self, key: str, default: Any = None) -> Any:
        rare = self._rare
        kv = None if rare is None else rare.kv
        return default if kv is None else kv.get(key, default)

    def delete(self, key: str) -> None:
        rare = self._rare
        kv = None if rare is None else rare.kv
        if kv is not None:
            kv.pop(key, None)

    def __repr__(self) -> str:
        state = ("open", "closing", "lingering", "closed")[self._state]
        return (
            f"<Connection fd={self._fd} peer={self.peer_addr} {state}"
            f" in={self.read_buffer_length} out={self.write_buffer_length}"
            f"{' paused' if self._paused else ''}>"
        )

    # ------------------------------------------------------------------ loop thread only

    def _extra(self) -> _Rare:
        rare = self._rare
        if rare is None:
            rare = self._rare = _Rare()
        return rare

    def _tls_layer(self) -> TLSLayer | None:
        rare = self._rare
        return None if rare is None else rare.tls

    def _relay_peer(self) -> Connection | None:
        rare = self._rare
        return None if rare is None else rare.relay

    def _attempt(self) -> ConnectAttempt | None:
        # The outbound attempt this connection is the result of, until it is ready.
        rare = self._rare
        return None if rare is None else rare.connecting

    def _loop_call(self, fn: Any, arg: int) -> None:
        loop = self._loop
        if loop._thread_id == _get_ident():
            if loop._dispatching:
                loop._deferred.append((fn, arg))
            else:
                fn(arg)
        else:
            loop.call_soon_threadsafe(fn, arg)

    def _set_read_paused(self, paused: int) -> None:
        # pause_reading / resume_reading, on the loop thread (at once, even mid-batch: the
        # read in progress finishes, the next one waits).
        self._read_paused = flag = paused != 0
        if self._state != OPEN:
            return
        if (
            not flag
            and self._yielded
            and self._in is not None
            and not self._paused
            and not self._jobs_hold
        ):
            self._loop._queue_ready(self)  # input left waiting while paused
        self._refresh()

    def _refresh(self) -> None:
        """Choose the read strategy for the connection's state now, and the poller interest."""
        state = self._state
        reader: u8
        if state == OPEN:
            if (
                self._paused
                or self._jobs_hold
                or self._read_paused
                or self._relay_hold
                or (self._yielded and self._in is not None)
            ):
                # Backpressure (output, replies owed, the application's pause_reading, or the
                # relayed-to connection's output), or input left waiting for its turn: no
                # reading meanwhile.
                reader = READ_NONE
            elif self._rare is not None and (
                self._rare.tls is not None or self._rare.preamble is not None
            ):
                reader = READ_STAGED
            elif self._in is not None:
                reader = READ_BUFFERED
            else:
                reader = self._kind
                # READ_MESSAGES or READ_MESSAGES_OWN (two compares: ``in (...)`` of module
                # names builds a tuple per call).
                if (
                    (self._out is not None or self._owed)
                    and reader != READ_FRAMES
                    and reader != READ_BUFFERED
                    and reader != READ_RELAY
                ):
                    # Output pending, or replies owed: a reply must queue behind them, which
                    # the general path does (READ_MESSAGES writes at once; READ_FRAMES queues
                    # behind owed replies itself, see _read_frames).
                    reader = READ_BUFFERED
        elif state == LINGERING:
            reader = READ_DISCARD
        else:
            reader = READ_NONE
        self._reader = reader
        old = self._mask
        if old == _UNREGISTERED or state == CLOSED:
            return
        mask = 0 if reader == READ_NONE else READ
        if self._out is not None:
            mask |= WRITE
        if mask != old:
            self._mask = mask
            self._loop._poller.modify(self._fd, mask)

    def _interest(self) -> int:
        # The poller interest _refresh keeps, for the first registration.
        mask = 0 if self._reader == READ_NONE else READ
        return mask | WRITE if self._out is not None else mask

    def _set_reason(self, code: int) -> None:
        if not self._reason:
            self._reason = code

    # ------------------------------------------------------------------ reading

    def _on_read(self) -> None:
        """The loop's entry for a READ event: read the way ``_reader`` says."""
        reader = self._reader
        if reader == READ_RELAY:
            self._read_relay()
        elif reader == READ_MESSAGES:
            self._read_messages()
        elif reader == READ_FRAMES:
            self._read_frames()
        elif reader == READ_BUFFERED:
            self._read_buffered()
        elif reader == READ_STAGED:
            self._read_staged()
        elif reader == READ_DISCARD:
            self._discard_input()
        elif reader == READ_MESSAGES_OWN:
            self._read_messages()
        # READ_NONE: an event from before the interest changed; nothing to do.

    def _on_event(self, ev: int) -> None:
        # Anything but a plain READ event: writable, readable and writable, hang-up, error.
        if ev & WRITE:
            self._on_writable()
        if ev & READ:
            self._on_read()
        elif ev & ERROR and self._state != CLOSED and not ev & WRITE:
            # Hang-up or error with nothing readable: nobody will ever take our output.
            self._set_reason(R_RESET)
            self._finalize()

    def _read_rest(self, data: bytes, size: int) -> bytes:
        # A read of ``size`` returned ``data``, filling it, or a read of READ_BUFFER_SIZE
        # returned a small message (see READ_SMALL_SIZE); the read paths call this only then.
        if len(data) < size:
            self._read_size = READ_SMALL_SIZE
            return data
        self._read_size = READ_BUFFER_SIZE
        if size != READ_SMALL_SIZE:
            return data
        # A small read filled up: take the rest now, as one large read would have.
        try:
            more = _read(self._fd_obj, READ_BUFFER_SIZE - READ_SMALL_SIZE)
        except (BlockingIOError, InterruptedError):
            return data
        except OSError as exc:
            # What was read is handed on first; the error right after, as the next read would
            # have met it. (An EOF, b"" here, the next read meets again.)
            self._loop.call_soon(self._io_failed, exc)
            return data
        return data + more if more else data

    def _read_bytes(self) -> bytes | None:
        """One read from the socket, or None if there is nothing to hand on (it would block,
        or the peer's EOF or a socket error was dealt with)."""
        size = self._read_size
        try:
            data = _read(self._fd_obj, size)
        except (BlockingIOError, InterruptedError):
            return None
        except OSError as exc:
            self._io_failed(exc)
            return None
        if not data:
            self._on_eof()
            return None
        n = len(data)
        if n == size or (size != READ_SMALL_SIZE and n <= READ_SMALL_SIZE):
            data = self._read_rest(data, size)
        loop = self._loop
        self.last_active = loop.now
        stats = loop.stats
        if stats.counting:
            stats.bytes_in += len(data)
        return data

    def _read_messages(self) -> None:
        # READ_MESSAGES (and READ_MESSAGES_OWN): the default protocol, gev's model. One read
        # is one message.
        data = self._read_bytes()
        if data is None:
            return
        loop = self._loop
        try:
            if self._kind == READ_MESSAGES:
                reply = loop._on_message(self, None, data)
            else:  # READ_MESSAGES_OWN: a handler of its own
                reply = self.handler.on_message(self, None, data)
        except Exception as exc:
            self._code_failed(exc, "the handler")
            return
        stats = loop.stats
        if stats.counting:
            stats.messages_in += 1
            if reply is not None:
                stats.messages_out += 1
        if reply is not None:
            try:
                self._send(reply)
            except Exception as exc:  # a reply that is not bytes-like
                self._code_failed(exc, "the handler's reply")

    def _read_frames(self) -> None:
        # READ_FRAMES: a protocol that takes bytes, nothing left over. Every framed message
        # (protobuf, WebSocket) comes this way: _read_bytes and _send_replies are written out.
        size = self._read_size
        try:
            data = _read(self._fd_obj, size)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            self._io_failed(exc)
            return
        if not data:
            self._on_eof()
            return
        n = len(data)
        if n == size or (size != READ_SMALL_SIZE and n <= READ_SMALL_SIZE):
            data = self._read_rest(data, size)
        loop = self._loop
        self.last_active = loop.now
        stats = loop.stats
        if stats.counting:
            stats.bytes_in += len(data)
        out = loop._out
        try:
            consumed = self._protocol.receive(self, data, out)
            if out:
                if self._owed:  # a handler offloaded in this read: inline replies queue
                    self._queue_framed(_take_replies(loop, out))
                elif len(out) == 1:
                    self._send(out.pop())
                else:
                    self._transmit_out(out)  # one writev, no join (no TLS on this strategy)
        except Exception as exc:
            self._code_failed(exc, "protocol or handler")
            return
        if consumed != len(data):
            self._keep(data, consumed)
        elif self._yielded:
            self._yielded = False  # continue_later, then nothing was left after all

    def _read_relay(self) -> None:
        # READ_RELAY: one read, straight to the connection this one is joined to.
        data = self._read_bytes()
        if data is not None:
            self._relay_out(data)

    def _relay_out(self, data: bytes) -> None:
        rare = self._rare
        peer = None if rare is None else rare.relay
        if peer is None or peer._state != OPEN:
            return  # it is closing, and closes this one once closed (_finalize)
        peer_rare = peer._rare
        if self._loop._deferred or (peer_rare is not None and peer_rare.tls is not None):
            # Something deferred in this batch may be for the peer (this write stays behind
            # it), or the bytes need encrypting: the general write.
            peer.write(data)
        else:
            # What write does for another connection mid-batch, and buffers past what the
            # kernel takes (the peer's water marks then hold this connection: _relay_pause).
            peer._transmit(data, True)

    def _read_buffered(self) -> None:
        # READ_BUFFERED: input left over, or a protocol that wants a memoryview.
        data = self._read_bytes()
        if data is not None:
            self._receive(data)

    def _read_staged(self) -> None:
        # READ_STAGED: raw bytes through the stages before the protocol.
        data = self._read_bytes()
        if data is None:
            return
        rare = self._rare
        if rare is not None and rare.preamble is not None:
            rest = self._feed_preamble(data)
            if rest is None:
                return
            data = rest
        if self._tls_layer() is not None:
            fresh = not self._established
            data = self._tls_feed(data)
            if data and fresh and self._established and self._read_paused:
                # on_connect paused reading (a proxy waiting for its upstream, say): the
                # plaintext that came with the handshake's last flight waits with it, as a
                # plaintext connection's first bytes wait in the kernel. resume_reading hands
                # it to the protocol, relay to the other connection.
                self._yielded = True
                self._keep(data, 0)
                data = b""
        if data and self._state == OPEN:
            self._receive(data)
        tls = self._tls_layer()
        if tls is not None and tls.peer_closed and self._state == OPEN:
            # The peer's close_notify: it sends nothing more. Close as for an EOF (our
            # pending output, then our close_notify).
            self._close(R_EOF)

    def _receive(self, data: bytes) -> None:
        """Plaintext for the protocol, the general way: through the input ring buffer when bytes
        are left over from before, as a ``memoryview`` for a protocol that wants one."""
        if self._kind == READ_RELAY:  # plaintext of a relayed TLS connection
            self._relay_out(data)
            return
        loop = self._loop
        out = loop._out
        inbuf = self._in
        if inbuf is not None and len(inbuf) + len(data) > loop.max_read_buffer:
            self._over_budget(
                f"{len(inbuf) + len(data)} unparsed bytes would exceed max_read_buffer"
                f" {loop.max_read_buffer}"
            )
            return
        try:
            if inbuf is None:
                if self._kind == READ_BUFFERED:
                    view = memoryview(data)
                    try:
                        consumed = self._protocol.receive(self, view, out)
                    finally:
                        view.release()
                else:
                    consumed = self._protocol.receive(self, data, out)
                if consumed < len(data) and self._state == OPEN:
                    inbuf = self._in = RingBuffer()
                    inbuf.write(memoryview(data)[consumed:])
            else:
                inbuf.write(data)
                self._receive_buffered(inbuf, out)
        except Exception as exc:
            self._code_failed(exc, "protocol or handler")
            return
        self._after_receive(out)

    def _resume_input(self) -> None:
        # The loop's next iteration after continue_later: the rest of the input, no read.
        self._yielded = False
        inbuf = self._in
        if self._state != OPEN or inbuf is None:
            self._refresh()
            return
        if self._paused or self._jobs_hold or self._read_paused:
            # Output backpressure, too many replies owed, or paused by the application: go on
            # once it drains (_unpause, _jobs_state or _set_read_paused puts us back in line).
            self._yielded = True
            return
        out = self._loop._out
        try:
            self._receive_buffered(inbuf, out)
        except Exception as exc:
            self._code_failed(exc, "protocol or handler")
            return
        self._after_receive(out)

    def _receive_buffered(self, inbuf: RingBuffer, out: list[Any]) -> None:
        view = inbuf.linear_view()
        try:
            consumed = self._protocol.receive(self, view, out)
        finally:
            view.release()
        inbuf.retrieve(consumed)
        if not inbuf:
            self._in = None

    def _after_receive(self, out: list[Any]) -> None:
        # Send what receive produced, then decide how this connection is read next.
        if out:
            try:
                self._send_replies(out)
            except Exception as exc:  # a reply that is not bytes-like
                self._code_failed(exc, "protocol or handler")
                return
        if self._yielded:
            self._yield_turn()
        else:
            self._refresh()
        if self._state != CLOSED:
            self._account()

    def _send_replies(self, out: list[Any]) -> None:
        # Everything one receive produced leaves in one write.
        if len(out) != 1 and not self._owed and (self._rare is None or self._rare.tls is None):
            self._transmit_out(out)
            return
        data = _take_replies(self._loop, out)
        if self._owed:
            self._queue_framed(data)
        else:
            self._send(data)

    # ------------------------------------------------------------------ offloaded work

    def _offload_jobs(self) -> ConnectionJobs:
        """This connection's offloaded work (``_jobs.py``), created on first use.

        A new job answers the request being handled: replies the protocol already put in
        ``out`` answer earlier requests of the same read, so they take their places first.
        """
        jobs = self._jobs
        if jobs is None:
            loop = self._loop
            jobs = self._jobs = loop.server._offload.jobs_for(self, loop)
        if self._state == OPEN:
            out = self._loop._out
            if out:
                if len(out) == 1:
                    data = out.pop()
                else:
                    # Inside receive, which goes on appending to this very list: emptied,
                    # not replaced (_take_replies).
                    data = b"".join(out)
                    out.clear()
                jobs.framed(data)
        return jobs

    def _queue_framed(self, data: Any) -> None:
        # An inline reply while replies are owed: it leaves after them.
        jobs = self._jobs
        assert jobs is not None
        memoryview(data).release()  # TypeError now for a reply that is not bytes-like
        jobs.framed(data)

    def _jobs_write(self, data: Any) -> None:
        # Replies produced later, framed, at their turn (ConnectionJobs, on this thread).
        try:
            self._send(data)
        except Exception as exc:  # a frame that is not bytes-like
            self._code_failed(exc, "its protocol's pack, given a reply produced later,")

    def _jobs_close(self) -> None:
        # close() waited for the replies owed; they are written now.
        self._owed = False
        self._close(R_LOCAL)

    def _jobs_fail(self) -> None:
        # An offloaded job or a coroutine failed (ConnectionJobs logged the traceback): close
        # after the replies written before it.
        self._set_reason(R_HANDLER_ERROR)
        self._loop.stats.handler_errors += 1
        self._owed = False
        self._close(R_HANDLER_ERROR)

    def _jobs_state(self, busy: bool, hold: bool) -> None:
        # ConnectionJobs: replies are owed (``busy``) or reading must stop (``hold``).
        released = self._jobs_hold and not hold
        self._owed = busy
        self._jobs_hold = hold
        if self._state == OPEN:
            if (
                released
                and self._yielded
                and self._in is not None
                and not self._paused
                and not self._read_paused
            ):
                self._loop._queue_ready(self)  # input left waiting for its turn
            self._refresh()

    def _keep(self, data: bytes, consumed: int) -> None:
        # READ_FRAMES left part of a read unparsed: buffer it for the next read (or for the
        # next iteration, if the protocol stopped early).
        if self._state == OPEN:
            inbuf = self._in = RingBuffer()
            inbuf.write(memoryview(data)[consumed:])
            if self._yielded:
                self._yield_turn()
            else:
                self._refresh()
            self._account()

    def _yield_turn(self) -> None:
        # The protocol called continue_later: queue the rest of the input for the loop's next
        # iteration and stop reading meanwhile. Nothing left over: nothing to wait for.
        if self._in is not None and self._state == OPEN:
            if not self._paused and not self._read_paused:
                self._loop._queue_ready(self)
        else:
            self._yielded = False
        self._refresh()

    def _discard_input(self) -> None:
        # READ_DISCARD: our FIN is out; drop what the peer still sends until its FIN.
        try:
            data = _read(self._fd_obj, READ_BUFFER_SIZE)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            self._io_failed(exc)
            return
        if not data:
            self._finalize()

    def _on_eof(self) -> None:
        # The peer will send nothing more; flush what we owe it, then close (no lingering).
        self._eof = True
        self._set_reason(R_EOF)
        tls = self._tls_layer()
        if tls is not None:
            # TLS seam: an EOF in the middle of the handshake is the peer's fault.
            try:
                tls.feed_eof()
            except Exception as exc:
                if self._attempt() is not None:
                    self._outbound_failed(exc)
                else:
                    self._code_failed(exc, "TLS")
                return
        self._close(R_EOF)

    # ------------------------------------------------------------------ stages

    def _start_preamble(self, preamble: Preamble) -> None:
        # Right after the accept: does this connection start with the listener's preamble?
        try:
            wanted = preamble.start(self)
        except Exception as exc:
            self._code_failed(exc, f"the {preamble.name} preamble")
            return
        if not wanted:
            return
        rare = self._extra()
        rare.preamble = preamble
        timeout = preamble.timeout
        if timeout is not None:
            rare.stage_timer = self._loop.call_later(timeout, self._preamble_expired)

    def _feed_preamble(self, data: bytes) -> bytes | None:
        """Raw bytes to the preamble: what follows it once it is done, else None."""
        rare = self._rare
        assert rare is not None
        preamble = rare.preamble
        assert preamble is not None
        if rare.stage_in:
            data = rare.stage_in + data
        try:
            taken = preamble.feed(self, data)
        except Exception as exc:
            self._code_failed(exc, f"the {preamble.name} preamble")
            return None
        if taken is None:
            if len(data) >= preamble.max_size:
                self._set_reason(R_PROTOCOL_ERROR)
                logger.warning(
                    "closing %r: no complete %s preamble in its first %d bytes",
                    self,
                    preamble.name,
                    len(data),
                )
                self._abort(R_PROTOCOL_ERROR)
                return None
            rare.stage_in = data
            self._account()
            return None
        if not 0 <= taken <= len(data):
            self._set_reason(R_HANDLER_ERROR)
            self._loop.stats.handler_errors += 1
            logger.error(
                "closing %r: the %s preamble took %r of %d bytes",
                self,
                preamble.name,
                taken,
                len(data),
            )
            self._abort(R_HANDLER_ERROR)
            return None
        self._preamble_done()
        if self._state != OPEN:
            return None
        return data[taken:]

    def _preamble_done(self) -> None:
        # Nothing of the preamble stays on the connection's path.
        rare = self._rare
        assert rare is not None
        rare.preamble = None
        rare.stage_in = b""
        timer = rare.stage_timer
        if timer is not None:
            rare.stage_timer = None
            timer.cancel()
        self._after_preamble()
        if self._state != CLOSED:
            self._refresh()
            self._account()

    def _preamble_expired(self) -> None:
        rare = self._extra()
        rare.stage_timer = None
        preamble = rare.preamble
        if preamble is not None and self._state == OPEN:
            self._set_reason(R_IDLE)
            logger.warning(
                "closing %r: no complete %s preamble within %.3g s of connecting"
                " (%d bytes received)",
                self,
                preamble.name,
                preamble.timeout,
                len(rare.stage_in),
            )
            self._abort(R_IDLE)

    def _establish(self) -> None:
        """The stages that hide a connection are done: tell the protocol, plugins, handler."""
        self._established = True
        loop = self._loop
        try:
            self._protocol.connection_made(self)
            hook = loop._connection_made_hooks
            if hook is not None:
                hook(self)
            if self.handler is loop._handler:
                loop._on_connect(self)
            else:
                getattr(self.handler, "on_connect", _noop)(self)
        except Exception as exc:
            self._code_failed(exc, "on_connect")
            return
        rare = self._rare
        if rare is None:
            return
        attempt = rare.connecting
        if attempt is not None and self._state != CLOSED:
            # An outbound connection is ready: its caller hears of it now.
            rare.connecting = None
            attempt._succeeded(self)

    def _set_tls(self, tls: TLSLayer | None) -> None:
        """TLS seam: put a TLS engine between the socket and the protocol (or take it away).

        From then on every raw byte read goes through ``tls.feed`` (``_tls_feed``) and every
        byte sent through ``tls.encrypt`` (``_send``): the connection reads with READ_STAGED.
        """
        if tls is not None or self._rare is not None:
            self._extra().tls = tls
        self._refresh()

    def _after_preamble(self) -> None:
        # The next stage after the preamble (or after the accept, without one): the TLS
        # handshake on a TLS listener, else the protocol.
        server = self._loop.server
        context = server.ssl_context
        if context is not None:
            self._start_tls(TLSEngine(context, server_side=True), server.tls_handshake_timeout)
        else:
            self._establish()

    def _start_tls(self, tls: TLSLayer, timeout: float | None) -> None:
        """TLS seam, accepted side: the handshake begins with the first bytes read. The
        handler, protocol and plugins hear of the connection once it has completed
        (``_tls_feed``); a connection that has not completed it ``timeout`` seconds from now
        is closed."""
        self._extra().tls = tls
        if timeout is not None:
            self._extra().stage_timer = self._loop.call_later(timeout, self._tls_expired, timeout)
        self._refresh()

    def _start_client_tls(self, tls: TLSLayer, hello: bytes) -> None:
        """TLS seam, outbound side: the handshake begins with our ClientHello. The attempt's
        own timeout covers it (``_connect.py``)."""
        self._extra().tls = tls
        self._refresh()
        if hello:
            self._transmit(hello)

    def _outbound_failed(self, exc: BaseException) -> None:
        # An outbound connection failed before it was ready (its TLS handshake): the caller is
        # told (the attempt's callback), nothing is logged.
        rare = self._rare
        assert rare is not None
        attempt = rare.connecting
        assert attempt is not None
        rare.connecting = None
        self._set_reason(R_PROTOCOL_ERROR if isinstance(exc, ProtocolError) else R_ERROR)
        self._finalize()
        attempt._failed_with(exc)

    def _tls_expired(self, timeout: float) -> None:
        self._extra().stage_timer = None
        if self._tls_layer() is not None and not self._established and self._state == OPEN:
            self._set_reason(R_IDLE)
            logger.warning(
                "closing %r: TLS handshake not completed within %.3g s of connecting",
                self,
                timeout,
            )
            self._abort(R_IDLE)

    def _tls_established(self) -> None:
        # The handshake completed: the connection's plaintext life begins.
        rare = self._rare
        if rare is not None:
            timer = rare.stage_timer
            if timer is not None:
                rare.stage_timer = None
                timer.cancel()
        self._establish()
        if self._state != CLOSED:
            self._account()

    def _tls_feed(self, data: bytes) -> bytes:
        """TLS seam: ciphertext in, plaintext out; the engine's own output (handshake, alerts,
        tickets) goes out at once. Returns b"" when there is no plaintext, or on failure."""
        tls = self._tls_layer()
        assert tls is not None
        try:
            plain = tls.feed(data)
        except Exception as exc:
            if tls.want_write:
                self._transmit(tls.take_output())  # the alert OpenSSL queued for the peer
            if self._attempt() is not None:
                self._outbound_failed(exc)
            else:
                self._code_failed(exc, "TLS")
            return b""
        if tls.want_write:
            self._transmit(tls.take_output())
        if not self._established and tls.handshake_done and self._state == OPEN:
            self._tls_established()
        return plain

    # ------------------------------------------------------------------ writing

    def _send(self, data: Any) -> None:
        """Send what the protocol or the application produced (plaintext); every byte the
        connection sends passes here. Raises TypeError for data that is not bytes-like."""
        rare = self._rare
        tls = None if rare is None else rare.tls
        if tls is not None:
            # TLS seam: the ciphertext of data (b"" while the handshake is still running:
            # the engine keeps the plaintext and its output follows the handshake).
            try:
                data = tls.encrypt(data)
            except ProtocolError as exc:
                self._set_reason(R_PROTOCOL_ERROR)
                logger.warning("closing %r: %s", self, exc)
                self._abort(R_PROTOCOL_ERROR)
                return
            if not data:
                return
        self._transmit(data)

    def _transmit(self, data: Any, fail_later: bool = False) -> None:
        """Write ``data`` now; buffer what the kernel does not take (with backpressure).

        ``fail_later``: a failed write closes the connection after the batch rather than now
        (``write`` from another connection's handler: its on_close must not run inside the
        handler that wrote)."""
        if self._state >= LINGERING:
            return
        if self._out is not None:
            self._buffer(data, 0)
            return
        try:
            n = _write(self._fd_obj, data)
        except (BlockingIOError, InterruptedError):
            n = 0
        except OSError as exc:
            if fail_later:
                self._loop._deferred.append((self._io_failed, exc))
            else:
                self._io_failed(exc)
            return
        loop = self._loop
        self.last_active = loop.now
        stats = loop.stats
        if stats.counting:
            stats.bytes_out += n
        if n != len(data):
            self._buffer(data, n)

    def _transmit_out(self, out: list[Any]) -> None:
        """``_transmit`` of everything one ``receive`` put in ``out`` (plaintext, more than one
        piece), which it empties: one writev instead of a join, so that a large reply framed
        as a header and its payload (a WebSocket message) is never copied in user space. What
        the kernel does not take is copied to the output buffer in order (``out`` is reused)."""
        try:
            if self._out is not None or len(out) > GATHER_MAX or self._state >= LINGERING:
                self._transmit(b"".join(out))
                return
            try:
                n = _writev(self._fd_obj, out)
            except (BlockingIOError, InterruptedError):
                n = 0
            except OSError as exc:
                self._io_failed(exc)
                return
            loop = self._loop
            self.last_active = loop.now
            stats = loop.stats
            if stats.counting:
                stats.bytes_out += n
            i = 0
            for piece in out:
                size = len(piece) if type(piece) is bytes else memoryview(piece).nbytes
                if n < size:
                    break
                n -= size
                i += 1
            else:
                return
            # The kernel took n bytes of out[i] and nothing after it.
            if i == len(out) - 1:
                self._buffer(out[i], n)
            else:
                rest = out[i:]
                rest[0] = memoryview(rest[0]).cast("B")[n:]
                self._buffer(b"".join(rest), 0)
        finally:
            out.clear()

    def _send_queued(self, data: Any) -> None:
        # A send made off the loop or during a batch: framed here, on the loop, in order.
        if self._state != OPEN:
            return
        try:
            frame = self._protocol.pack(self, data)
        except Exception as exc:
            self._code_failed(exc, f"its protocol's pack, given a {type(data).__name__} to send(),")
            return
        stats = self._loop.stats
        if stats.counting:
            stats.messages_out += 1
        if frame:  # b"": the protocol has nothing to send (yet, or any more)
            try:
                self._send(frame)
            except Exception as exc:  # a frame that is not bytes-like
                self._code_failed(exc, "its protocol's pack")

    def _buffer(self, data: Any, offset: int) -> None:
        out = self._out
        if out is None:
            out = self._out = RingBuffer()
        mv = memoryview(data)
        if mv.itemsize != 1 or mv.ndim != 1:
            mv = mv.cast("B")
        out.write(mv[offset:] if offset else mv)
        loop = self._loop
        size = len(out)
        if size > loop.max_write_buffer:
            self._set_reason(R_HARD_CAP)
            logger.warning(
                "closing %r: %d bytes of unsent output exceed max_write_buffer %d"
                " (the peer is not reading)",
                self,
                size,
                loop.max_write_buffer,
            )
            self._abort(R_HARD_CAP)
            return
        if size > loop.high_water and not self._paused:
            hooks = self._writing_hooks
            if hooks is None:
                # The core's flow control: not read until the output drains to low_water.
                self._paused = True
                loop.stats.backpressure_pauses += 1
            elif not self._writing_paused:
                # A handler with pause_writing takes flow control over (asyncio's model): it
                # is told, and the connection is still read -- a proxy's two directions are
                # independent, and pausing this one could deadlock them.
                self._writing_paused = True
                loop.stats.backpressure_pauses += 1
                self._refresh()
                self._account()
                if self._state != CLOSED:
                    self._call_writing_hook(hooks[0])
                return
        self._refresh()
        self._account()

    def _call_writing_hook(self, hook: Any) -> None:
        # The handler's pause_writing or resume_writing, isolated like any handler code.
        try:
            hook(self)
        except Exception as exc:
            self._code_failed(exc, "the handler's pause_writing/resume_writing")

    def _on_writable(self) -> None:
        out = self._out
        if out is None or self._state == CLOSED:
            return
        first, second = out.peek_all()
        try:
            n = _writev(self._fd_obj, (first, second)) if second else _write(self._fd_obj, first)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            self._io_failed(exc)
            return
        finally:
            first.release()
            second.release()
        loop = self._loop
        self.last_active = loop.now
        stats = loop.stats
        if stats.counting:
            stats.bytes_out += n
        out.retrieve(n)
        if out:
            if self._paused and len(out) <= loop.low_water:
                self._unpause()
            elif self._writing_paused and len(out) <= loop.low_water:
                self._writing_paused = False
                self._account()
                self._resumed_writing()
                return
            self._account()
            return
        self._out = None
        if self._state == CLOSING:
            self._flushed_for_close()
            return
        if self._paused:
            self._unpause()
        resumed = self._writing_paused
        if resumed:
            self._writing_paused = False
        if self._shut:
            self._do_shutdown()
        self._refresh()
        self._account()
        if resumed:
            self._resumed_writing()

    def _unpause(self) -> None:
        self._paused = False
        if self._yielded and self._state == OPEN and not self._read_paused:
            self._loop._queue_ready(self)  # input left waiting while the output drained
        self._refresh()

    def _resumed_writing(self) -> None:
        # After the output drained to low_water: the handler's resume_writing, if it has one.
        hooks = self._writing_hooks
        if hooks is not None and self._state != CLOSED:
            self._call_writing_hook(hooks[1])

    # ------------------------------------------------------------------ closing

    def _shutdown_write(self, _: int = 0) -> None:
        if self._state == CLOSED or self._shut:
            return
        tls = self._tls_layer()
        if tls is not None:
            # Our close_notify goes before the FIN (RFC 8446 6.1: a peer that sees FIN without
            # it cannot tell our end from a truncation); reading goes on.
            self._send_close_notify(tls.shutdown)
            if self._state == CLOSED:  # the write failed
                return
        self._shut = True
        if self._out is None:
            self._do_shutdown()

    def _send_close_notify(self, stop: Callable[[], bytes]) -> None:
        # TLS seam: the engine's close_notify (``stop`` is its close or shutdown), after the
        # pending output. An engine that fails here has nothing more to say to the peer.
        try:
            notify = stop()
        except Exception:
            notify = b""
        if notify:
            self._transmit(notify)

    def _do_shutdown(self) -> None:
        sock = socket.socket(fileno=self._fd)
        try:
            sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass
        finally:
            sock.detach()

    def _close(self, reason: int = R_LOCAL) -> None:
        if self._state != OPEN:
            return
        if self._owed and reason != R_EOF:
            # Replies are still owed: they go out first, then ConnectionJobs calls _jobs_close.
            # (A peer that sent EOF is gone as far as we can tell: what it is owed is dropped.)
            jobs = self._jobs
            assert jobs is not None
            self._set_reason(reason)
            jobs.close_after_replies()
            return
        self._set_reason(reason)
        self._in = None
        self._yielded = False
        tls = self._tls_layer()
        if tls is not None:
            self._send_close_notify(tls.close)
            if self._state != OPEN:  # the write failed
                return
        self._state = CLOSING
        if self._out is None:
            self._flushed_for_close()
            return
        self._refresh()
        self._account()

    def _flushed_for_close(self) -> None:
        # Everything we owe the peer is with the kernel. If the peer has not closed its side,
        # send FIN and discard its input until it does: closing a socket with unread input
        # would answer with RST, which may destroy our last bytes before the peer reads them.
        loop = self._loop
        if self._eof or loop.linger_timeout <= 0:
            self._finalize()
            return
        self._state = LINGERING
        if not self._shut:
            self._shut = True
            self._do_shutdown()
        self._extra().linger_timer = loop.call_later(loop.linger_timeout, self._linger_expired)
        self._refresh()
        self._account()

    def _linger_expired(self) -> None:
        self._extra().linger_timer = None
        if self._state == LINGERING:
            logger.debug("closing %r: no FIN from the peer within the linger timeout", self)
            self._finalize()

    def _abort(self, reason: int = R_LOCAL) -> None:
        if self._state == CLOSED:
            return
        self._set_reason(reason)
        self._finalize()

    def _io_failed(self, exc: OSError) -> None:
        # A socket call failed: the peer reset the connection, or the socket is unusable.
        if self._state == CLOSED:
            return
        if isinstance(exc, (ConnectionResetError, BrokenPipeError)):
            self._set_reason(R_RESET)
        else:
            self._set_reason(R_ERROR)
            logger.debug("closing %r after I/O error: %s", self, exc)
        self._finalize()

    def _over_budget(self, why: str) -> None:
        self._set_reason(R_BUDGET)
        logger.warning("closing %r: %s", self, why)
        self._abort(R_BUDGET)

    def _code_failed(self, exc: BaseException, what: str) -> None:
        """The handler's, a protocol's or a plugin's code raised: close this connection only.

        Called from inside the ``except`` block, so ``logger.exception`` finds the traceback.
        A :class:`ProtocolError` is the peer's fault: one WARNING line with the reason.
        """
        loop = self._loop
        if loop._out:
            loop._out.clear()
            loop._out = _reply_list()  # cleared, it lost its slot
        if self._state == CLOSED:
            return
        if isinstance(exc, ProtocolError):
            self._set_reason(R_PROTOCOL_ERROR)
            logger.warning("closing %r: %s", self, exc)
        else:
            self._set_reason(R_HANDLER_ERROR)
            loop.stats.handler_errors += 1
            logger.exception("closing %r: %s failed", self, what)
        self._finalize()

    def _account(self) -> None:
        # Report what this connection buffers now to its loop; past the budget, the loop sheds
        # the largest holders (possibly this one: callers do nothing after this).
        size = self._held
        rare = self._rare
        if rare is not None:
            size += len(rare.stage_in)
        inbuf = self._in
        if inbuf is not None:
            size += len(inbuf)
        out = self._out
        if out is not None:
            size += len(out)
        old = self._accounted
        if size == old:
            return
        self._accounted = size
        loop = self._loop
        loop._buffered += size - old
        if not size:
            loop._holders.discard(self)
            return
        if not old:
            loop._holders.add(self)
        if size > old and loop._buffered > loop.max_buffered:
            loop._shed()

    def _finalize(self) -> None:
        loop = self._loop
        self._state = CLOSED
        self._reader = READ_NONE
        jobs = self._jobs
        if jobs is not None:
            jobs.cancel()  # owed replies dropped, running coroutines cancelled
        self._yielded = False
        self._in = None
        self._out = None
        rare = self._rare
        if rare is not None:
            rare.preamble = None
            rare.stage_in = b""
            for timer in (rare.linger_timer, rare.stage_timer):
                if timer is not None:
                    timer.cancel()
            rare.linger_timer = rare.stage_timer = None
        if self._accounted:
            loop._buffered -= self._accounted
            self._accounted = 0
            loop._holders.discard(self)
        self._held = 0
        fd = self._fd
        if self._mask != _UNREGISTERED:
            loop._poller.unregister(fd)
        loop._conns.pop(fd, None)
        loop._closed_count += 1
        if not self._reason:
            self._reason = R_LOCAL
        loop.stats.count_close(self._reason)
        try:
            os.close(fd)
        except OSError:
            pass
        if self._established:
            try:
                self._protocol.connection_lost(self)
            except Exception:
                logger.exception(
                    "protocol %r failed in connection_lost for %r", self._protocol, self
                )
            loop._connection_closed(self)
        else:
            loop._connection_gone(self)
        rare = self._rare
        peer = None if rare is None else rare.relay
        if peer is not None:
            # Relayed: the other side closes too, after what it is still owed (as close()).
            assert rare is not None and peer._rare is not None
            rare.relay = peer._rare.relay = None
            peer._loop_call(peer._close, R_LOCAL)
        if rare is not None and rare.connecting is not None:
            # An outbound connection closed before it was ready (on_connect failed, the peer
            # went away during the TLS handshake, the server stopped): tell its caller.
            attempt = rare.connecting
            rare.connecting = None
            attempt._lost(self)
        # After on_close (an async one waits for the cancelled coroutines through it): the
        # jobs object refers to the connection, so let go of it. The TLS engine too: on_close
        # still reads what was negotiated (tls_version, peer_certificate...) for its logs.
        self._jobs = None
        if rare is not None:
            rare.tls = None


def _split_address(address: Any) -> tuple[Any, int]:
    # A (host, port) pair is kept as its two parts, the port a native int (compiled): the
    # tuple and the port's int object were 96 of an idle connection's ~420 bytes, and
    # remote_address makes the tuple again when asked. Anything else (an IPv6 4-tuple, a Unix
    # socket's path) is kept as given, with port -1. A function, not a method: __init__ calls
    # it, and a method called there would make mypyc give up proving the fields set after it
    # always defined (a check per read of each).
    if type(address) is tuple and len(address) == 2 and type(address[0]) is str:
        port = address[1]
        if type(port) is int and 0 <= port <= 0xFFFF:
            return address[0], port
    return address, -1


def _reply_list() -> list[Any]:
    """An empty list with room for exactly one item: the loop's ``_out``.

    A protocol's ``receive`` appends its reply to it and the reactor takes the reply back with
    ``pop()``. A list that owns one slot keeps it across that append and pop (the list's resize
    rule keeps storage while the new size is at least half of it), where a list emptied by
    ``clear()`` frees its storage and the next append allocates it again: about 150
    instructions a read. CPython 3.12+ frees it on an interpreted ``pop()`` to empty anyway;
    compiled code pops through mypyc's own copy of the rule, on every version.
    """
    out: list[Any] = [None]
    out.pop()
    return out


def _take_replies(loop: EventLoop, out: list[Any]) -> Any:
    """Everything one ``receive`` appended to ``out`` (the loop's ``_out``), in one piece.

    ``out`` is left empty. After several replies the loop gets a fresh one-slot list, as
    ``out`` has grown past one slot for good (see :func:`_reply_list`).
    """
    if len(out) == 1:
        return out.pop()
    data = b"".join(out)
    out.clear()
    loop._out = _reply_list()
    return data


def _noop(conn: Any) -> None:
    return None


# A relayed connection's writing hooks (Connection.relay): its output crossing the water marks
# holds and releases reading the connection that feeds it.
def _relay_pause(conn: Connection) -> None:
    src = conn._relay_peer()
    if src is not None and not src._relay_hold:
        src._relay_hold = True
        src._refresh()


def _relay_resume(conn: Connection) -> None:
    src = conn._relay_peer()
    if src is not None and src._relay_hold:
        src._relay_hold = False
        src._refresh()


_RELAY_HOOKS: Final[WritingHooks] = (_relay_pause, _relay_resume)


def _reader_for(protocol: Protocol, loop_handler: bool = True) -> int:
    """How a protocol's connections are read when nothing else is in the way; ``loop_handler``:
    the connection's handler is its loop's (the loop's body calls that one inline)."""
    if type(protocol).receive is DefaultProtocol.receive:
        return READ_MESSAGES if loop_handler else READ_MESSAGES_OWN
    if getattr(protocol, "accepts_bytes", False) is True:
        return READ_FRAMES
    return READ_BUFFERED


def _note_counting(protocol: Any) -> None:
    """A loop that counts traffic serves ``protocol``: set its ``counting`` (``Protocol``).

    A protocol that keeps no such flag, or refuses it, reports as it always has.
    """
    if getattr(protocol, "counting", True) is False:
        try:
            protocol.counting = True
        except (AttributeError, TypeError):
            pass


def _owned(data: Any) -> Any:
    # A write that waits must not see later changes the caller makes to a mutable buffer.
    return data if type(data) is bytes else bytes(data)


def _frozen(data: Any) -> Any:
    # The same for a queued send, whose object may be anything pack() accepts.
    return bytes(data) if isinstance(data, (bytearray, memoryview)) else data
