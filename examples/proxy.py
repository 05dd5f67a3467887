"""A TCP reverse proxy: each client gets its own connection to the upstream, bytes pass both ways.

python examples/proxy.py --listen 127.0.0.1:1834 --upstream 127.0.0.1:1833

Each client is paused while its upstream connection is opened (``EventLoop.connect``, on the
client's own loop), then the two are joined with ``Connection.relay``: gev passes the bytes
each receives to the other, with backpressure both ways -- when the upstream takes our writes
more slowly than the client sends, the upstream connection's unsent output passes its high
water mark and the client is not read until it has drained; a client that does not read stops
the upstream the same way. So a slow side never makes the proxy buffer more than about one high
water mark per direction. A close on either side closes the other once what is still owed to it
has been flushed; an upstream that cannot be reached closes the client, with the reason logged.
"""

from __future__ import annotations

import argparse
import logging
from functools import partial

from gev_core import Connection, Handler, Server

log = logging.getLogger("proxy")


class Proxy(Handler):
    """The server's handler: opens each client's upstream connection and joins the two."""

    def __init__(self, upstream: str, timeout: float) -> None:
        self.upstream = upstream
        self.timeout = timeout

    def on_connect(self, client: Connection) -> None:
        client.pause_reading()  # nothing to forward to yet
        client.loop.connect(
            self.upstream,
            Handler(),  # relayed: its callbacks have nothing to do
            timeout=self.timeout,
            callback=partial(self.ready, client),
        )

    def ready(self, client: Connection, upstream: Connection | None, exc: BaseException | None):  # type: ignore[no-untyped-def]
        if upstream is None:
            log.warning("closing %s: upstream %s: %s", client.peer_addr, self.upstream, exc)
            client.close()
        elif client.connected:
            client.relay(upstream)
            client.resume_reading()
        else:
            upstream.close()  # the client left while we connected


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--listen", required=True, metavar="HOST:PORT", help="where clients connect"
    )
    parser.add_argument(
        "--upstream", required=True, metavar="HOST:PORT", help="where their bytes go"
    )
    parser.add_argument("--loops", type=int, default=1)
    parser.add_argument(
        "--connect-timeout",
        type=float,
        default=10.0,
        metavar="S",
        help="seconds to reach the upstream before the client is closed (default 10)",
    )
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    server = Server(
        Proxy(args.upstream, args.connect_timeout),
        address=args.listen,
        num_loops=args.loops,
    )
    log.info("proxying to %s", args.upstream)
    server.start()  # logs where it listens


if __name__ == "__main__":
    main()
