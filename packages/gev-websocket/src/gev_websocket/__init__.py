"""WebSocket (RFC 6455 + permessage-deflate) for gev.

:class:`WebSocketProtocol` serves WebSocket on a gev server (``protocol="websocket"`` with
the ``gev`` plugin, or :func:`new_websocket_server`); :class:`WebSocketHandler` is the
application's side; ``send_text``/``send_binary``/``ping``/``close`` work from any thread.
Underneath, :class:`WebSocketSession` is the sans-IO per-connection engine.
"""

from __future__ import annotations

from .__about__ import __version__
from ._fastpath import NATIVE_UNMASK, build_binary, build_message, build_text, unmask
from ._protocol import (
    MessageType,
    Upgrader,
    WebSocketHandler,
    WebSocketProtocol,
    close,
    new_websocket_server,
    ping,
    send,
    send_binary,
    send_text,
)
from ._session import Accept, Deflate, Reject, WebSocketSession

__all__ = [
    "NATIVE_UNMASK",
    "Accept",
    "Deflate",
    "MessageType",
    "Reject",
    "Upgrader",
    "WebSocketHandler",
    "WebSocketProtocol",
    "WebSocketSession",
    "__version__",
    "build_binary",
    "build_message",
    "build_text",
    "close",
    "new_websocket_server",
    "ping",
    "send",
    "send_binary",
    "send_text",
    "unmask",
]
