"""The seed's server-timing-push example: every interval, "hello\\n" goes to every client.

    python examples/push.py --port 1833 --interval 1

Needs gev-timers (``pip install gev-timers``). The timer runs on the loop thread, so it may walk
the connection set and send without locks (Go gev needed a mutex: its timers run on goroutines).
"""

from __future__ import annotations

import argparse
import logging

from gev_core import Connection, Handler, Server

log = logging.getLogger("gev.example")


class Push(Handler):
    def __init__(self) -> None:
        self.conns: set[Connection] = set()

    def push(self) -> None:
        for conn in list(self.conns):
            # Skip a client that stopped reading instead of queueing without bound (gev's
            # bufferlength example did this by hand).
            if conn.write_buffer_length < 10240:
                conn.send(b"hello\n")

    def on_connect(self, conn: Connection) -> None:
        log.info("on_connect %s", conn.peer_addr)
        self.conns.add(conn)

    def on_message(self, conn: Connection, ctx: object, data: bytes) -> bytes:
        return data

    def on_close(self, conn: Connection) -> None:
        log.info("on_close %s", conn.peer_addr)
        self.conns.discard(conn)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=1833)
    parser.add_argument("--interval", type=float, default=1.0, metavar="SECONDS")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    handler = Push()
    # One loop: the connection set is touched only by that loop's thread.
    server = Server(handler, address=(args.host, args.port), num_loops=1)
    server.run_every(args.interval, handler.push)
    log.info("pushing every %.3g s on %s:%d", args.interval, *server.address)
    server.start()


if __name__ == "__main__":
    main()
