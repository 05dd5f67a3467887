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
