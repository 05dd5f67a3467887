"""WebSocket (RFC 6455 + permessage-deflate) for gev.

:class:`WebSocketProtocol` serves WebSocket on a gev server (``protocol="websocket"`` with
the ``gev`` plugin, or :func:`new_websocket_server`); :class:`WebSocketHandler` is the
application's side; ``send_text``/``send_binary``/``ping``/``close`` work from any thread.
Underneath, :class:`WebSocketSession` is the sans-IO per-connection engine.
"""

from __future__ import annotations

# First: with GEV_PURE_PYTHON=1 the modules below are then loaded from their .py source.
from . import _compiled
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

COMPILED: bool = _compiled.package_is_compiled(__name__)
"""True when this package runs compiled code (a wheel built with a C compiler, and
``GEV_PURE_PYTHON`` not set); False for the pure-Python source. See the docs' "Compiled
code" page."""

__all__ = [
    "COMPILED",
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
