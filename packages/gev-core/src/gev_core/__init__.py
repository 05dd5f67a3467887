"""gev-core: a fast, non-blocking TCP server library on the Reactor pattern."""

from __future__ import annotations

# First: with GEV_PURE_PYTHON=1 the modules below are then loaded from their .py source.
from . import _compiled
from .__about__ import __version__
from ._client import Client
from ._connect import ConnectAttempt
from ._connection import Connection, Preamble, PreambleConnection
from ._errors import (
    ConnectError,
    ConnectionClosed,
    ConnectRefused,
    ConnectTimeout,
    GevError,
    ProtocolError,
    ResolveError,
    TLSError,
)
from ._fanout import write_shared
from ._handler import Handler
from ._loop import EventLoop, TimerHandle
from ._plugins import (
    NEED_MORE_DATA,
    Config,
    GevPluginManager,
    PluginError,
    PluginInfo,
    ProtocolRegistry,
    get_plugin_manager,
    hookimpl,
)
from ._protocol import DefaultProtocol, LengthFieldProtocol, LineProtocol, Protocol
from ._server import Server, least_connections, round_robin
from ._sslcontext import client_context, server_context
from ._stats import CLOSE_REASONS, LoopStats
from ._workers import Supervisor, serve_workers

COMPILED: bool = _compiled.package_is_compiled(__name__)
"""True when this package runs compiled code (a wheel built with a C compiler, and
``GEV_PURE_PYTHON`` not set); False for the pure-Python source. See the docs' "Compiled
code" page."""

__all__ = [
    "CLOSE_REASONS",
    "COMPILED",
    "NEED_MORE_DATA",
    "Client",
    "Config",
    "ConnectAttempt",
    "ConnectError",
    "ConnectRefused",
    "ConnectTimeout",
    "Connection",
    "ConnectionClosed",
    "DefaultProtocol",
    "EventLoop",
    "GevError",
    "GevPluginManager",
    "Handler",
    "LengthFieldProtocol",
    "LineProtocol",
    "LoopStats",
    "PluginError",
    "PluginInfo",
    "Preamble",
    "PreambleConnection",
    "Protocol",
    "ProtocolError",
    "ProtocolRegistry",
    "ResolveError",
    "Server",
    "Supervisor",
    "TLSError",
    "TimerHandle",
    "__version__",
    "client_context",
    "get_plugin_manager",
    "hookimpl",
    "least_connections",
    "round_robin",
    "serve_workers",
    "server_context",
    "write_shared",
]
