"""WebSocket chat with rooms as gev-pubsub topics, and its page, on one port.

    python examples/chat.py --port 8080        # then open http://127.0.0.1:8080/ in a browser

A client connecting to ``/`` joins the room ``lobby``, one connecting to ``/room/NAME`` joins
``NAME``; a text message it sends reaches everyone in its room (itself included). A plain HTTP
GET of those paths returns the chat page. Across worker processes and hosts, run the handler
with ``gev serve`` and a Redis bridge (the page is then served by this script only)::

    gev serve chat:Chat --app-dir examples --protocol websocket --workers 4 \\
        --pubsub-redis redis://127.0.0.1:6379/0
"""

from __future__ import annotations

import argparse
import logging
import os
import re
from typing import Any

import gev_pubsub
from gev_core import Connection, Protocol, Server
from gev_websocket import Reject, Upgrader, WebSocketHandler, WebSocketProtocol, send_text
from wsproto.events import Request

log = logging.getLogger("gev.example.chat")

DEFAULT_ROOM = "lobby"
_ROOM_PATH = re.compile(r"^/room/([A-Za-z0-9_.-]{1,64})$")
MAX_MESSAGE = 4096


def room_of(path: str) -> str | None:
    """The room a request path joins, or ``None`` for a path that is not a room."""
    path = path.split("?", 1)[0]
    if path == "/":
        return DEFAULT_ROOM
    match = _ROOM_PATH.match(path)
    return match.group(1) if match else None


class Chat(WebSocketHandler):
    """Rooms are topics of the default hub (``gev serve --pubsub-redis`` bridges it)."""

    def on_request(self, conn: Connection, request: Request) -> Reject | None:
        room = room_of(request.target)
        if room is None:
            return Reject(404, body=b"no such room\n")
        conn.context = room
        return None

    def on_open(self, conn: Connection) -> None:
        gev_pubsub.subscribe(conn, "room:" + conn.context)
        send_text(conn, f"* you joined #{conn.context} (served by process {os.getpid()})")

    def on_message(self, conn: Connection, data: str | bytes) -> None:
        if isinstance(data, str) and data.strip():
            gev_pubsub.publish("room:" + conn.context, data[:MAX_MESSAGE])
        return None


PAGE_FILE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "chat.html")


class ChatProtocol(Protocol):
    """WebSocket for upgrade requests, the chat page for any other GET.

    Reads the request head; an upgrade hands the connection (and the head) to the WebSocket
    protocol, which then serves it alone (``conn.protocol`` is swapped), anything else gets
    the page and is closed.
    """

    name = "chat"
    accepts_bytes = True

    def __init__(self, websocket: WebSocketProtocol, page: bytes) -> None:
        self.websocket = websocket
        self.page = page

    def connection_made(self, conn: Connection) -> None:
        self.websocket.connection_made(conn)
        conn.set("chat.head", bytearray())

    def receive(self, conn: Connection, data: bytes | memoryview, out: list[Any]) -> int:
        head: bytearray = conn.get("chat.head")
        head += data
        end = head.find(b"\r\n\r\n")
        if end < 0:
            if len(head) > 16384:
                conn.close()
            return len(data)
        conn.delete("chat.head")
        lines = bytes(head[:end]).split(b"\r\n")
        headers = {k.strip().lower(): v.strip().lower() for k, _, v in
                   (line.partition(b":") for line in lines[1:])}  # fmt: skip
        if headers.get(b"upgrade") == b"websocket":
            conn.protocol = self.websocket
            self.websocket.receive(conn, bytes(head), out)
            return len(data)
        method, _, rest = lines[0].partition(b" ")
        path = rest.partition(b" ")[0].decode("latin-1")
        if method != b"GET" or room_of(path) is None:
            out.append(_response(b"404 Not Found", b"text/plain", b"not found\n"))
        else:
            out.append(_response(b"200 OK", b"text/html; charset=utf-8", self.page))
        conn.close()
        return len(data)

    def connection_lost(self, conn: Connection) -> None:
        self.websocket.connection_lost(conn)

    def pack(self, conn: Connection, data: Any) -> bytes:
        return self.websocket.pack(conn, data)


def _response(status: bytes, content_type: bytes, body: bytes) -> bytes:
    return (
        b"HTTP/1.1 %s\r\ncontent-type: %s\r\ncontent-length: %d\r\nconnection: close\r\n\r\n"
        % (status, content_type, len(body))
    ) + body


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument(
        "--redis", metavar="URL", default=None, help="bridge the rooms through this Redis"
    )
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    with open(PAGE_FILE, "rb") as f:
        page = f.read()
    websocket = WebSocketProtocol(Upgrader(), max_message_size=MAX_MESSAGE * 4)
    options = {"pubsub_redis": args.redis} if args.redis else {}
    server = Server(
        Chat(),
        address=(args.host, args.port),
        protocol=ChatProtocol(websocket, page),
        options=options,
    )
    log.info("chat on http://%s:%d/ (rooms at /room/NAME)", *server.address)
    server.start()


if __name__ == "__main__":
    main()
