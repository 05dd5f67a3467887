from __future__ import annotations


class GevError(Exception):
    """Base class of every error gev raises on purpose."""


class ConnectionClosed(GevError, ConnectionError):
    """The connection is closed (or closing): nothing more can be sent on it."""


class ProtocolError(GevError, ValueError):
    """A peer sent bytes the protocol cannot accept.

    Raised by a :class:`~gev_core.Protocol` while parsing; the reactor logs the message as the
    reason
    and closes that one connection. No traceback is logged: the peer is at fault, not the code.
    """


class TLSError(ProtocolError):
    """A TLS connection failed: the peer sent something wrong, or the handshake did not succeed.

    The message is the reason in words (``"plaintext HTTP sent to a TLS port"``, ``"the peer
    does not trust our certificate (unknown CA)"``...), logged when the connection is closed.
    ``ssl_reason`` is OpenSSL's reason code when there is one (``"HTTP_REQUEST"``), for programs
    that tell failures apart.
    """

    def __init__(self, message: str, *, ssl_reason: str | None = None) -> None:
        super().__init__(message)
        self.ssl_reason = ssl_reason
