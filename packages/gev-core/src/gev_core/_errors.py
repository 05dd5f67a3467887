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


class ConnectError(GevError, OSError):
    """An outbound connection could not be opened (``Server.connect``, ``EventLoop.connect``).

    The message names the address as it was given, e.g. ``"connect to db.internal:6380 failed
    ([Errno 101] Network is unreachable)"``. An ``OSError`` too, so ``except OSError`` clauses
    keep working; :attr:`errno` is the socket error's number when there is one.

    :param message: the reason in words, naming the address.
    :param address: the address connected to, as given.
    :param errno: the socket error's number, or ``None``.
    """

    def __init__(self, message: str, *, address: str, errno: int | None = None) -> None:
        super().__init__(message)
        #: The address connected to, as given to ``connect`` (formatted as a string).
        self.address = address
        self.errno = errno

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class ConnectRefused(ConnectError, ConnectionRefusedError):
    """Nothing listens at the address: the peer (or a Unix socket file without a listener)
    refused the connection. Also a ``ConnectionRefusedError``."""


class ConnectTimeout(ConnectError, TimeoutError):
    """The connect attempt (name resolution, TCP connect and TLS handshake together) did not
    complete within its ``timeout``. Also a ``TimeoutError``; :attr:`timeout` is the limit.

    :param message: as for :class:`ConnectError`.
    :param address: as for :class:`ConnectError`.
    :param timeout: the limit that passed, in seconds.
    """

    def __init__(self, message: str, *, address: str, timeout: float) -> None:
        super().__init__(message, address=address)
        #: The limit that passed, in seconds.
        self.timeout = timeout


class ResolveError(ConnectError):
    """The host name of the address did not resolve (``getaddrinfo`` failed; the
    ``socket.gaierror`` is the ``__cause__``)."""
