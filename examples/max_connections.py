"""The seed's maximum-connections example: the (max+1)th client is refused and closed.

python examples/max_connections.py --port 1833 --max 1
"""

from __future__ import annotations

import argparse
import logging
import threading

from gev_core import Handler, Server

log = logging.getLogger("gev.example")


class Limited(Handler):
    def __init__(self, max_connections: int) -> None:
        self.max_connections = max_connections
        self.clients = 0
        self._lock = threading.Lock()  # callbacks of different loops may run concurrently

    def on_connect(self, conn):  # type: ignore[no-untyped-def]
        with self._lock:
            self.clients += 1
            over = self.clients > self.max_connections
        log.info("on_connect %s", conn.peer_addr)
        if over:
            # close(), not shutdown_write(): the descriptor is released once the client has
            # seen the FIN and closed too, or after the server's linger timeout if it never
            # does, instead of staying open for as long as the client keeps its end.
            conn.close()
            log.info("refused connection %s", conn.peer_addr)

    def on_message(self, conn, ctx, data):  # type: ignore[no-untyped-def]
        return data

    def on_close(self, conn):  # type: ignore[no-untyped-def]
        with self._lock:
            self.clients -= 1
        log.info("on_close %s", conn.peer_addr)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=1833)
    parser.add_argument("--max", type=int, default=1, dest="max_connections")
    parser.add_argument("--loops", type=int, default=1)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    server = Server(
        Limited(args.max_connections), address=(args.host, args.port), num_loops=args.loops
    )
    log.info("max %d connections on %s:%d", args.max_connections, *server.address)
    server.start()


if __name__ == "__main__":
    main()
