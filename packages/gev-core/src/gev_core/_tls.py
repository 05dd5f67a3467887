"""TLS without I/O: an ``ssl.SSLObject`` between two ``ssl.MemoryBIO`` buffers.

:class:`TLSEngine` turns ciphertext read from a socket into plaintext for the protocol, and
plaintext from the application into ciphertext for the socket; it never touches a socket, a
clock or a loop (the way ``asyncio.sslproto`` and h11/wsproto are built), so the reactor decides
when bytes move and the engine is tested exhaustively in memory.

How a connection drives it (server side shown; a client calls :meth:`TLSEngine.start` first and
sends what it returns, the ClientHello):

* each socket read: ``plain = engine.feed(data)``; then, if ``engine.want_write``, send
  ``engine.take_output()`` (handshake messages, session tickets, alerts, a backlog of early
  writes encrypted once the handshake completed); then hand ``plain`` (possibly ``b""``) to the
  protocol. ``engine.handshake_done`` turns true inside the ``feed`` that completes the
  handshake; ``engine.peer_closed`` inside the one that sees the peer's close_notify.
* socket EOF: ``engine.feed_eof()`` (raises :class:`~gev_core.TLSError` if the peer cut the
  handshake short), then close as for a plaintext EOF.
* each write: send ``engine.encrypt(data)`` (``b""`` while the handshake is still running: the
  engine keeps the plaintext, bounded by ``max_buffer``, and encrypts it when it completes).
* close: send ``engine.close()`` -- the close_notify alert -- after the pending output, then
  close the socket. The peer's close_notify is not awaited (allowed by RFC 8446 6.1, and what
  servers do).
* any :class:`~gev_core.TLSError`: log its ``reason`` (one WARNING line), send
  ``engine.take_output()`` if any (the alert OpenSSL queued for the peer), close.

Every failure is a :class:`~gev_core.TLSError` whose message says what happened in words a
reader of the log understands: plaintext HTTP sent to a TLS port, not TLS at all, a truncated
handshake, an unknown CA, a refused renegotiation...
"""

from __future__ import annotations

import logging
import ssl
from collections.abc import Callable, Mapping
from typing import Any

from ._errors import TLSError

logger = logging.getLogger("gev")

__all__ = [
    "DEFAULT_MAX_BUFFER",
    "ServerNameCallback",
    "TLSEngine",
    "describe_ssl_error",
    "prepare_context",
    "set_sni",
]

#: Default bound of what an engine holds: plaintext written before the handshake completed,
#: and ciphertext it cannot process yet.
DEFAULT_MAX_BUFFER = 256 * 1024

# SSL_read returns at most one record's plaintext (16 KiB) per call.
_READ_SIZE = 16 * 1024 + 256

# Attribute set on the ssl.SSLObject by the SNI callback of set_sni/prepare_context: Python has no
# getter for the name a client asked for on the server side.
_SNI_ATTR = "_gev_server_name"

#: What a server-name selector gets and returns (see :func:`set_sni`).
ServerNameCallback = Callable[[str | None], "ssl.SSLContext | None"]

# OpenSSL reason codes -> what happened, from the point of view of the side that sees it.
_REASONS: dict[str, str] = {
    "HTTP_REQUEST": "plaintext HTTP sent to a TLS port",
    "HTTPS_PROXY_REQUEST": "an HTTP proxy request (CONNECT) sent to a TLS port",
    "WRONG_VERSION_NUMBER": "not TLS: the peer sent bytes that are not a TLS record",
    "UNKNOWN_PROTOCOL": "not TLS: the peer sent bytes that are not a TLS record",
    "PACKET_LENGTH_TOO_LONG": "malformed TLS record: length too long",
    "RECORD_LENGTH_MISMATCH": "malformed TLS record: length mismatch",
    "LENGTH_MISMATCH": "malformed TLS handshake message: length mismatch",
    "BAD_PACKET_LENGTH": "malformed TLS record: bad length",
    "RECORD_OVERFLOW": "malformed TLS record: longer than the protocol allows",
    "ENCRYPTED_LENGTH_TOO_LONG": "malformed TLS record: longer than the protocol allows",
    "DATA_LENGTH_TOO_LONG": "malformed TLS record: longer than the protocol allows",
    "BAD_RECORD_TYPE": "malformed TLS record: unknown record type",
    "UNEXPECTED_RECORD": "unexpected TLS record",
    "UNEXPECTED_MESSAGE": "unexpected TLS handshake message",
    "BAD_EXTENSION": "malformed TLS handshake: bad extension",
    "BAD_HANDSHAKE_LENGTH": "malformed TLS handshake: bad length",
    "LENGTH_TOO_SHORT": "malformed TLS handshake: message too short",
    "DECRYPTION_FAILED_OR_BAD_RECORD_MAC": "corrupted TLS record (bad MAC)",
    "DECRYPTION_FAILED": "corrupted TLS record (decryption failed)",
    "BAD_RECORD_MAC": "corrupted TLS record (bad MAC)",
    "UNSUPPORTED_PROTOCOL": "the peer offers only TLS versions this side does not allow",
    "NO_PROTOCOLS_AVAILABLE": "no TLS version is enabled on this side",
    "NO_SHARED_CIPHER": "no cipher suite in common with the peer",
    "NO_SUITABLE_SIGNATURE_ALGORITHM": "no signature algorithm in common with the peer",
    "NO_SHARED_GROUPS": "no key exchange group in common with the peer",
    "CERTIFICATE_VERIFY_FAILED": "the peer's certificate did not verify",
    "PEER_DID_NOT_RETURN_A_CERTIFICATE": "client certificate required, but the client sent none",
    "NO_RENEGOTIATION": "renegotiation refused",
    "UNSAFE_LEGACY_RENEGOTIATION_DISABLED": "renegotiation refused (legacy renegotiation)",
    "UNEXPECTED_EOF_WHILE_READING": "the peer closed the connection in the middle of TLS",
    "INAPPROPRIATE_FALLBACK": "the peer attempted an insecure version fallback",
    "CALLBACK_FAILED": "the server-name callback failed",
    "CLIENTHELLO_TLSEXT": "malformed ClientHello extensions",
    "PARSE_TLSEXT": "malformed TLS extensions",
}

# Alerts the peer sent us (OpenSSL reports them as SSLV3_ALERT_* / TLSV1_ALERT_* /
# TLSV13_ALERT_* / TLSV1_UNRECOGNIZED_NAME reasons).
_ALERTS: dict[str, str] = {
    "UNKNOWN_CA": "the peer does not trust our certificate (unknown CA)",
    "BAD_CERTIFICATE": "the peer rejected our certificate (bad certificate)",
    "CERTIFICATE_UNKNOWN": "the peer rejected our certificate (certificate unknown)",
    "CERTIFICATE_EXPIRED": "the peer rejected our certificate (expired)",
    "CERTIFICATE_REVOKED": "the peer rejected our certificate (revoked)",
    "UNSUPPORTED_CERTIFICATE": "the peer rejected our certificate (unsupported)",
    "CERTIFICATE_REQUIRED": "the peer requires a client certificate",
    "HANDSHAKE_FAILURE": "the peer aborted the handshake (handshake_failure alert)",
    "PROTOCOL_VERSION": "the peer refused the TLS version (protocol_version alert)",
    "INSUFFICIENT_SECURITY": "the peer wants stronger security (insufficient_security alert)",
    "NO_APPLICATION_PROTOCOL": "no ALPN protocol in common with the peer",
    "UNRECOGNIZED_NAME": "the peer does not serve the server name asked for",
    "ACCESS_DENIED": "the peer denied access (access_denied alert)",
    "DECODE_ERROR": "the peer could not decode our messages (decode_error alert)",
    "DECRYPT_ERROR": "the peer failed to verify or decrypt (decrypt_error alert)",
    "ILLEGAL_PARAMETER": "the peer saw an illegal parameter (illegal_parameter alert)",
    "INTERNAL_ERROR": "the peer failed internally (internal_error alert)",
    "UNEXPECTED_MESSAGE": "the peer got an unexpected message (unexpected_message alert)",
    "BAD_RECORD_MAC": "the peer got a corrupted record (bad_record_mac alert)",
    "RECORD_OVERFLOW": "the peer got an oversized record (record_overflow alert)",
    "NO_RENEGOTIATION": "the peer refused renegotiation",
    "USER_CANCELLED": "the peer cancelled the handshake",
}

_ALERT_PREFIXES = ("SSLV3_ALERT_", "TLSV1_ALERT_", "TLSV13_ALERT_", "TLSV1_")


def describe_ssl_error(exc: BaseException) -> str:
    """A one-line reason for a failed TLS connection, for a log line.

    Knows OpenSSL's reason codes (``exc.reason``) for the usual faults: plaintext or HTTP sent to
    a TLS port, garbage, truncated records and handshakes, alerts the peer sent (unknown CA,
    handshake failure...), certificate verification (with OpenSSL's verify message), refused
    renegotiation. Anything else is described by OpenSSL's own words.
    """
    if isinstance(exc, ssl.SSLEOFError):
        return "the peer closed the connection in the middle of TLS (truncated)"
    reason = getattr(exc, "reason", None)
    if isinstance(reason, str):
        text = _REASONS.get(reason)
        if text is not None:
            if isinstance(exc, ssl.SSLCertVerificationError) and exc.verify_message:
                return f"{text}: {exc.verify_message}"
            return text
        for prefix in _ALERT_PREFIXES:
            if reason.startswith(prefix):
                alert = reason[len(prefix) :]
                return _ALERTS.get(alert, f"the peer sent a fatal alert: {alert.lower()}")
        return f"TLS error: {reason.lower().replace('_', ' ')}"
    return f"TLS error: {exc}"


def _tls_error(exc: BaseException) -> TLSError:
    reason = getattr(exc, "reason", None)
    return TLSError(describe_ssl_error(exc), ssl_reason=reason if isinstance(reason, str) else None)


class TLSEngine:
    """One TLS connection's state machine, sans I/O (see the module docstring for the driving).

    :param context: the ``ssl.SSLContext`` (a server context for ``server_side=True``). Prepare
        a server's context once with :func:`prepare_context`.
    :param server_side: True for an accepted connection, False for an outbound one.
    :param server_hostname: the name a client verifies the server's certificate against and
        sends as SNI (client side only; required when the context checks host names).
    :param max_buffer: the most bytes the engine holds: plaintext written before the handshake
        completed, and ciphertext received but not yet processable. More raises
        :class:`~gev_core.TLSError`.
    :param session: an ``ssl.SSLSession`` to resume (client side).

    Every method runs on one thread at a time (the connection's loop thread).
    """

    __slots__ = (
        "_backlog",
        "_backlog_size",
        "_incoming",
        "_max_buffer",
        "_outgoing",
        "_peer_cert",
        "_peer_der",
        "_sslobj",
        "_version",
        "closed",
        "handshake_done",
        "heard",
        "peer_closed",
        "server_side",
        "write_shut",
    )

    def __init__(
        self,
        context: ssl.SSLContext,
        *,
        server_side: bool,
        server_hostname: str | None = None,
        max_buffer: int = DEFAULT_MAX_BUFFER,
        session: ssl.SSLSession | None = None,
    ) -> None:
        if max_buffer < _READ_SIZE:
            raise ValueError(f"max_buffer must be >= {_READ_SIZE} (one TLS record)")
        if server_side and server_hostname is not None:
            raise ValueError("server_hostname is for the client side only")
        self._incoming = ssl.MemoryBIO()
        self._outgoing = ssl.MemoryBIO()
        self._sslobj: ssl.SSLObject = context.wrap_bio(
            self._incoming,
            self._outgoing,
            server_side=server_side,
            server_hostname=server_hostname,
            session=session,
        )
        self._max_buffer = max_buffer
        self._backlog: list[bytes] = []
        self._backlog_size = 0
        # What was negotiated, kept at the handshake: after a peer's EOF OpenSSL forgets the
        # version and the peer's certificate, and on_close still wants them for its logs.
        self._version: str | None = None
        self._peer_cert: dict[str, Any] | None = None
        self._peer_der: bytes | None = None
        self.server_side = server_side
        #: True once the handshake has completed (set inside the ``feed`` that completes it).
        self.handshake_done = False
        #: True once the peer sends nothing more: its close_notify arrived (in a ``feed``), or
        #: its end of the TCP connection closed (``feed_eof``).
        self.peer_closed = False
        #: True once :meth:`close` was called (our close_notify is out) or the engine failed.
        self.closed = False
        #: True once the peer sent a byte: a server whose peer closes before that was probed
        #: by a TCP health check, not cut short in a handshake (see :meth:`feed_eof`).
        self.heard = False
        #: True once :meth:`shutdown` sent our close_notify: no more writing, reading goes on.
        self.write_shut = False

    # ------------------------------------------------------------------ driving

    def start(self) -> bytes:
        """Begin the handshake; returns what to send first (a client's ClientHello, else ``b""``).

        A server need not call it: its first :meth:`feed` starts the handshake.
        """
        if not self.handshake_done and not self.closed:
            self._handshake()
        return self._outgoing.read()

    def feed(self, data: bytes | bytearray | memoryview) -> bytes:
        """Take ciphertext from the peer; return the plaintext it carried (maybe ``b""``).

        Check :attr:`want_write` afterwards: the handshake, session tickets, key updates and
        alerts produce output to send.

        :raises TLSError: the peer sent something wrong, or more than ``max_buffer`` of it is
            waiting; the connection must be closed (after sending :meth:`take_output`).
        """
        if self.closed or self.peer_closed:
            return b""  # after close_notify either way, more records mean nothing
        incoming = self._incoming
        if data:
            incoming.write(data)
        if not self.handshake_done:
            if data:
                self.heard = True
            if not self._handshake():
                if incoming.pending > self._max_buffer:
                    self._fail_bound("unprocessed handshake bytes")
                return b""
        sslobj = self._sslobj
        if not incoming.pending and not sslobj.pending():
            return b""  # a handshake record, or nothing
        chunks: list[bytes] = []
        try:
            chunk = sslobj.read(_READ_SIZE)
            if chunk and not incoming.pending and not sslobj.pending():
                return chunk  # the common case: one record, one read, no exception
            # An empty read is the peer's close_notify (Python returns b"" for it).
            while chunk:
                chunks.append(chunk)
                if not incoming.pending and not sslobj.pending():
                    break
                chunk = sslobj.read(_READ_SIZE)
            else:
                self.peer_closed = True
        except ssl.SSLWantReadError:
            # A partial record is left in the incoming buffer: fine, unless it is huge.
            if incoming.pending > self._max_buffer:
                self._fail_bound("unprocessed ciphertext")
        except ssl.SSLZeroReturnError:
            self.peer_closed = True
        except ssl.SSLError as exc:
            self.closed = True
            if exc.reason == "SSLV3_ALERT_HANDSHAKE_FAILURE":
                # After the handshake: the peer tried to renegotiate, we refused, it gave up.
                raise TLSError(
                    "the peer aborted after its renegotiation was refused (handshake_failure)",
                    ssl_reason=exc.reason,
                ) from None
            raise _tls_error(exc) from None
        if not chunks:
            return b""
        return chunks[0] if len(chunks) == 1 else b"".join(chunks)

    def feed_eof(self) -> None:
        """The peer closed its side of the TCP connection.

        After the handshake this returns quietly, with or without the peer's close_notify: most
        clients close TCP without one, and the plaintext of every complete record was already
        returned by :meth:`feed` (a partial record cut by the EOF is dropped, as Python's
        ``ssl`` sockets do with their default ``suppress_ragged_eofs``).

        A server's peer that closes before sending a single byte is not an error either: that is
        how load balancers and orchestrators check a TCP port (connect, then close). The engine
        is closed and nothing is raised, so the connection ends like a plaintext EOF, without a
        WARNING line for every probe.

        :raises TLSError: the peer closed during the handshake, after starting it.
        """
        if self.closed or self.peer_closed:
            return
        self._incoming.write_eof()
        self.peer_closed = True
        if not self.handshake_done:
            self.closed = True
            if self.server_side and not self.heard:
                return
            raise TLSError(
                "the peer closed the connection during the TLS handshake",
                ssl_reason="UNEXPECTED_EOF_WHILE_READING",
            )

    def encrypt(self, data: bytes | bytearray | memoryview) -> bytes:
        """Ciphertext for ``data``, to be sent after everything sent before.

        Before the handshake completes the plaintext is kept (copied) and ``b""`` is returned;
        it is encrypted by the ``feed`` that completes the handshake and comes out of
        :meth:`take_output`.

        :raises TLSError: more than ``max_buffer`` bytes would be kept, or the engine is closed.
        """
        if self.closed:
            raise TLSError("TLS connection is closed: cannot send")
        if self.write_shut:
            raise TLSError("TLS connection is shut for writing (close_notify sent): cannot send")
        if not self.handshake_done:
            size = self._backlog_size + len(data)
            if size > self._max_buffer:
                self.closed = True
                raise TLSError(
                    f"{size} bytes written before the TLS handshake completed exceed"
                    f" max_buffer {self._max_buffer}"
                )
            self._backlog.append(bytes(data))
            self._backlog_size = size
            return b""
        self._write(data)
        return self._outgoing.read()

    @property
    def want_write(self) -> bool:
        """True when there is ciphertext to send (see :meth:`take_output`)."""
        return self._outgoing.pending > 0

    def take_output(self) -> bytes:
        """Everything the engine has to send, in order (``b""`` if nothing)."""
        return self._outgoing.read()

    def shutdown(self) -> bytes:
        """Stop sending but go on reading (a half-close): returns our close_notify.

        The peer's records still decrypt in :meth:`feed` until its own close_notify or EOF; only
        :meth:`encrypt` refuses from now on. Before the handshake completed there is nothing to
        notify and ``b""`` is returned. Idempotent; :meth:`close` later adds nothing.
        """
        if self.closed or self.write_shut or not self.handshake_done:
            return b""
        self.write_shut = True
        self._unwrap()
        return self._outgoing.read()

    def close(self) -> bytes:
        """Stop sending: returns the close_notify alert to send after the pending output.

        Before the handshake completed there is nothing to close and ``b""`` is returned (the
        connection is simply closed). Idempotent.
        """
        if self.closed:
            return self._outgoing.read()
        self.closed = True
        self._backlog.clear()
        self._backlog_size = 0
        if self.handshake_done and not self.write_shut:
            self.write_shut = True
            self._unwrap()
        return self._outgoing.read()

    def _unwrap(self) -> None:
        # SSL_shutdown queues our close_notify in the outgoing buffer and then wants the peer's,
        # which is not waited for.
        try:
            self._sslobj.unwrap()
        except ssl.SSLWantReadError:
            pass  # the peer's close_notify has not arrived
        except ssl.SSLError:
            pass  # a failed connection: nothing more to say to the peer

    # ------------------------------------------------------------------ what was negotiated

    @property
    def ssl_object(self) -> ssl.SSLObject:
        """The underlying ``ssl.SSLObject`` (for what the properties below do not cover)."""
        return self._sslobj

    @property
    def version(self) -> str | None:
        """The negotiated protocol, e.g. ``"TLSv1.3"``; ``None`` before the handshake."""
        return self._version

    @property
    def cipher(self) -> tuple[str, str, int] | None:
        """``(name, protocol, secret bits)`` of the negotiated cipher; ``None`` before."""
        return self._sslobj.cipher() if self.handshake_done else None

    @property
    def alpn_protocol(self) -> str | None:
        """The ALPN protocol agreed on (``"h2"``, ``"http/1.1"``...), or ``None``."""
        return self._sslobj.selected_alpn_protocol() if self.handshake_done else None

    @property
    def server_name(self) -> str | None:
        """The server name (SNI): the one the client asked for, on either side.

        On the server side it is known when the context was prepared with
        :func:`prepare_context` or :func:`set_sni` (Python has no other way to read it).
        """
        if not self.server_side:
            return self._sslobj.server_hostname
        name = getattr(self._sslobj, _SNI_ATTR, None)
        return name if isinstance(name, str) else None

    @property
    def peer_certificate(self) -> dict[str, Any] | None:
        """The peer's certificate as ``ssl.SSLSocket.getpeercert()`` gives it (verified ones
        only: an unverified certificate gives ``{}``); ``None`` if it sent none."""
        return self._peer_cert

    @property
    def peer_certificate_der(self) -> bytes | None:
        """The peer's certificate in DER form, verified or not; ``None`` if it sent none."""
        return self._peer_der

    @property
    def session_reused(self) -> bool:
        """True when the handshake resumed an earlier session."""
        return self._sslobj.session_reused

    @property
    def session(self) -> ssl.SSLSession | None:
        """The session, for resuming it on a later connection (client side)."""
        return self._sslobj.session

    @property
    def buffered(self) -> int:
        """Bytes held: plaintext written before the handshake plus ciphertext not processed yet
        (besides, OpenSSL holds at most one partial record of its own)."""
        return self._backlog_size + self._incoming.pending

    def __repr__(self) -> str:
        side = "server" if self.server_side else "client"
        state = (
            "closed"
            if self.closed
            else "peer-closed"
            if self.peer_closed
            else (self.version or "open")
            if self.handshake_done
            else "handshaking"
        )
        return f"<TLSEngine {side} {state}>"

    # ------------------------------------------------------------------ internals

    def _handshake(self) -> bool:
        """Advance the handshake; True once it has completed."""
        try:
            self._sslobj.do_handshake()
        except ssl.SSLWantReadError:
            return False
        except ssl.SSLError as exc:
            self.closed = True
            self._backlog.clear()
            raise _tls_error(exc) from None
        self.handshake_done = True
        sslobj = self._sslobj
        self._version = sslobj.version()
        self._peer_der = der = sslobj.getpeercert(binary_form=True)
        if der is not None:
            self._peer_cert = sslobj.getpeercert()
        if self._backlog:
            backlog = self._backlog
            self._backlog = []
            self._backlog_size = 0
            for data in backlog:
                self._write(data)
        return True

    def _write(self, data: bytes | bytearray | memoryview) -> None:
        sslobj = self._sslobj
        view = memoryview(data)
        try:
            n = sslobj.write(view)
            # A memory BIO takes everything; the loop is for the letter of SSL_write's contract.
            while n < len(view):
                view = view[n:]
                n = sslobj.write(view)
        except ssl.SSLError as exc:
            self.closed = True
            raise _tls_error(exc) from None

    def _fail_bound(self, what: str) -> None:
        self.closed = True
        raise TLSError(
            f"{self._incoming.pending} bytes of {what} exceed max_buffer {self._max_buffer}"
        )


# ---------------------------------------------------------------------------- contexts


def set_sni(
    context: ssl.SSLContext,
    select: Mapping[str, ssl.SSLContext] | ServerNameCallback | None = None,
) -> None:
    """Choose the certificate per server name (SNI) and record the name for
    :attr:`TLSEngine.server_name`.

    :param context: the server's context; it serves clients that send no name or one that
        ``select`` does not know.
    :param select: a mapping from server name (lower case; ``"*.example.com"`` matches one
        label) to the ``ssl.SSLContext`` holding that name's certificate, or a callable
        ``select(name) -> SSLContext | None`` (``None``: keep ``context``). It runs during the
        handshake, on the loop thread: keep it fast. An exception in it is logged with its
        traceback and fails that handshake with an internal_error alert.
    """
    if select is None:
        chooser: ServerNameCallback | None = None
    elif isinstance(select, Mapping):
        table = {name.lower(): ctx for name, ctx in select.items()}
        chooser = _mapping_chooser(table)
    elif callable(select):
        chooser = select
    else:
        raise TypeError("select must be a mapping of names to SSLContext or a callable")

    def sni_callback(sslobj: Any, server_name: str | None, ctx: ssl.SSLContext) -> int | None:
        setattr(sslobj, _SNI_ATTR, server_name)
        if chooser is None:
            return None
        # Our code's or the user's failure, not the peer's: a traceback at ERROR, and the
        # handshake fails with an internal_error alert (an exception escaping the callback
        # would only be printed by the ssl module).
        try:
            chosen = chooser(server_name)
            if chosen is not None and chosen is not ctx:
                if not isinstance(chosen, ssl.SSLContext):
                    raise TypeError(f"SNI selector returned {chosen!r}, not an SSLContext")
                sslobj.context = chosen
        except Exception:
            logger.exception("SNI selector %r failed for server name %r", chooser, server_name)
            return ssl.ALERT_DESCRIPTION_INTERNAL_ERROR
        return None

    context.sni_callback = sni_callback


def _mapping_chooser(table: dict[str, ssl.SSLContext]) -> ServerNameCallback:
    def choose(name: str | None) -> ssl.SSLContext | None:
        if name is None:
            return None
        name = name.lower().rstrip(".")
        found = table.get(name)
        if found is None and "." in name:
            found = table.get("*." + name.split(".", 1)[1])
        return found

    return choose


def prepare_context(context: ssl.SSLContext) -> ssl.SSLContext:
    """Make a server context safe to serve with, once, before serving (returns it).

    Refuses renegotiation (``ssl.OP_NO_RENEGOTIATION``), refuses TLS below 1.2, and installs
    the SNI recorder (:func:`set_sni` without a selector) unless an SNI callback is set already
    (one from :func:`set_sni` records the name too; a foreign one is kept as it is).
    """
    context.options |= ssl.OP_NO_RENEGOTIATION
    if context.minimum_version < ssl.TLSVersion.TLSv1_2 or (
        context.minimum_version == ssl.TLSVersion.MINIMUM_SUPPORTED
    ):
        context.minimum_version = ssl.TLSVersion.TLSv1_2
    if context.sni_callback is None:
        set_sni(context)
    return context
