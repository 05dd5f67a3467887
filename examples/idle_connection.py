"""The seed's idle-connection example: an echo server that closes clients silent for too long.

    python examples/idle_connection.py --port 1833 --idle-time 5

Needs gev-timers (``pip install gev-timers``), found through its ``gev`` entry point.
"""

from __future__ import annotations

import argparse
import logging

from gev_core import Handler, Server

log = logging.getLogger("gev.example")


class Echo(Handler):
    def on_connect(self, conn):  # type: ignore[no-untyped-def]
        log.info("on_connect %s", conn.peer_addr)

    def on_message(self, conn, ctx, data):  # type: ignore[no-untyped-def]
        log.info("on_message from %s", conn.peer_addr)
        return data

    def on_close(self, conn):  # type: ignore[no-untyped-def]
        log.info("on_close %s", conn.peer_addr)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=1833)
    parser.add_argument("--loops", type=int, default=1)
    parser.add_argument("--idle-time", type=float, default=5.0, metavar="SECONDS")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    server = Server(
        Echo(), address=(args.host, args.port), num_loops=args.loops, idle_time=args.idle_time
    )
    log.info("echo on %s:%d, idle time %.3g s", *server.address, args.idle_time)
    server.start()


if __name__ == "__main__":
    main()
