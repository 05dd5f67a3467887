from __future__ import annotations

from gev_core import ProtocolError


class ProxyProtocolError(ProtocolError):
    """A PROXY protocol header is malformed, too large, missing, or came from an untrusted peer.

    A :class:`~gev_core.ProtocolError`: the server logs the message as the reason (one WARNING
    line with the peer, no traceback) and closes that one connection.
    """
