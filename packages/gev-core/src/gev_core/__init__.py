"""gev-core: a fast, non-blocking TCP server library on the Reactor pattern."""

from __future__ import annotations

from .__about__ import __version__
from ._connection import Connection
from ._errors import ConnectionClosed, GevError, ProtocolError
from ._handler import Handler
from ._loop import EventLoop
from ._protocol import DefaultProtocol, LengthFieldProtocol, LineProtocol, Protocol
from ._server import Server, least_connections, round_robin

__all__ = [
    "Connection",
    "ConnectionClosed",
    "DefaultProtocol",
    "EventLoop",
    "GevError",
    "Handler",
    "LengthFieldProtocol",
    "LineProtocol",
    "Protocol",
    "ProtocolError",
    "Server",
    "__version__",
    "least_connections",
    "round_robin",
]
