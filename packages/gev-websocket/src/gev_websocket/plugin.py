"""The ``gev`` entry point of gev-websocket: hook implementations only."""

from __future__ import annotations

import argparse
from typing import Any

from gev_core import NEED_MORE_DATA, hookimpl

from ._protocol import WebSocketProtocol

_GET = b"GET "


@hookimpl
def gev_register_protocols() -> list[type[WebSocketProtocol]]:
    return [WebSocketProtocol]


@hookimpl
def gev_addoption(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("gev-websocket")
    group.add_argument(
        "--ws-max-message-size",
        type=int,
        default=None,
        metavar="BYTES",
        help="largest WebSocket message accepted (default 1 MiB); bigger ones close with 1009",
    )
    group.add_argument(
        "--ws-max-frame-size",
        type=int,
        default=None,
        metavar="BYTES",
        help="largest WebSocket frame payload accepted (default: the message limit)",
    )
    group.add_argument(
        "--ws-compression",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="negotiate permessage-deflate when the client offers it (default: on)",
    )
    group.add_argument(
        "--ws-subprotocol",
        dest="ws_subprotocols",
        action="append",
        default=None,
        metavar="NAME",
        help="a subprotocol the server speaks (repeat in order of preference)",
    )
    group.add_argument(
        "--ws-handshake-timeout",
        type=float,
        default=None,
        metavar="SECONDS",
        help="drop connections that have not completed the upgrade by then (default 10; 0: never)",
    )
    group.add_argument(
        "--ws-work-per-turn",
        type=int,
        default=None,
        metavar="BYTES",
        help="work (bytes received, inflated or parsed) one connection does before the others"
        " get their turn (default 256 KiB)",
    )
    group.add_argument(
        "--ws-close-timeout",
        type=float,
        default=None,
        metavar="SECONDS",
        help="wait this long for the peer's close frame after closing (default 5)",
    )


@hookimpl
def gev_select_protocol(connection: Any, data: bytes, candidates: list[str]) -> str | None:
    if "websocket" not in candidates:
        return None
    if data.startswith(_GET):
        return "websocket"
    if len(data) < len(_GET) and _GET.startswith(data):
        return NEED_MORE_DATA
    return None
