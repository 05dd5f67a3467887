"""The seed's WebSocket example: each message is, at random, echoed as binary, sent back as
text, or answered by closing the connection.

python examples/websocket_server.py --port 1833 --loops 1 [--seed N]
"""

from __future__ import annotations

import argparse
import logging
import random

import gev_websocket
from gev_websocket import MessageType, WebSocketHandler, new_websocket_server

log = logging.getLogger("websocket_server")


class Example(WebSocketHandler):
    def __init__(self, rng: random.Random) -> None:
        self.rng = rng

    def on_connect(self, conn):  # type: ignore[no-untyped-def]
        log.info("OnConnect: %s", conn.peer_addr)

    def on_message(self, conn, data):  # type: ignore[no-untyped-def]
        log.info("OnMessage: %r", data)
        payload = data.encode() if isinstance(data, str) else data
        choice = self.rng.randrange(3)
        if choice == 0:
            return MessageType.BINARY, payload
        if choice == 1:
            # Sent with the any-thread API instead of returned: what gev's c.Send(msg) did.
            gev_websocket.send_text(conn, payload.decode("utf-8", "replace"))
        else:
            gev_websocket.close(conn, 1000, "close")
        return None

    def on_close(self, conn):  # type: ignore[no-untyped-def]
        log.info("OnClose: %s", conn.peer_addr)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=1833)
    parser.add_argument("--loops", type=int, default=1)
    parser.add_argument("--seed", type=int, default=None, help="seed the random choice")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    server = new_websocket_server(
        Example(random.Random(args.seed)), address=(args.host, args.port), num_loops=args.loops
    )
    log.info("websocket server on %s:%d, %d loop(s)", *server.address, args.loops)
    server.start()


if __name__ == "__main__":
    main()
