"""WebSocket echo server: every message comes back with its own type (text or binary).

python examples/websocket_echo.py --port 9001 --loops 1

Used by the Autobahn test suite run and the benchmarks. The default message limit is 16 MiB
because Autobahn's section 9 sends messages of up to 16 MiB.
"""

from __future__ import annotations

import argparse
import logging

from gev_websocket import MessageType, Upgrader, WebSocketHandler, new_websocket_server

TEXT = MessageType.TEXT
BINARY = MessageType.BINARY


class Echo(WebSocketHandler):
    def on_message(self, conn, data):  # type: ignore[no-untyped-def]
        return (TEXT if type(data) is str else BINARY), data


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9001)
    parser.add_argument("--loops", type=int, default=1)
    parser.add_argument("--max-message-size", type=int, default=16 * 1024 * 1024)
    parser.add_argument(
        "--no-compression", action="store_true", help="do not negotiate permessage-deflate"
    )
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    server = new_websocket_server(
        Echo(),
        Upgrader(compression=not args.no_compression),
        max_message_size=args.max_message_size,
        address=(args.host, args.port),
        num_loops=args.loops,
    )
    logging.getLogger("gev").info(
        "websocket echo server on %s:%d, %d loop(s)", *server.address, args.loops
    )
    server.start()


if __name__ == "__main__":
    main()
