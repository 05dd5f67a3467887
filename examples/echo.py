"""The seed's echo server: every message comes straight back.

python examples/echo.py --port 1833 --loops 1
"""

from __future__ import annotations

import argparse
import logging

from gev_core import Handler, Server


class Echo(Handler):
    def on_message(self, conn, ctx, data):  # type: ignore[no-untyped-def]
        return data


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=1833)
    parser.add_argument("--loops", type=int, default=1)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    server = Server(Echo(), address=(args.host, args.port), num_loops=args.loops)
    logging.getLogger("gev").info("echo server on %s:%d, %d loop(s)", *server.address, args.loops)
    server.start()


if __name__ == "__main__":
    main()
