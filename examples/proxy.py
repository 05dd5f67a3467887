"""A TCP reverse proxy: each client gets its own connection to the upstream, bytes pass both ways.

python examples/proxy.py --listen 127.0.0.1:1834 --upstream 127.0.0.1:1833

Backpressure goes both ways: when the upstream takes our writes more slowly than the client
sends, the upstream connection's unsent output passes its high water mark (the handler's
``pause_writing``) and the proxy stops reading the client until it has drained
(``resume_writing``); a client that does not read stops the upstream the same way. So a slow
side never makes the proxy buffer more than about one high water mark per direction. A close
on either side closes the other once what is still owed to it has been flushed; an upstream
that cannot be reached closes the client, with the reason logged.

The upstream connection is opened on the client connection's own loop
(``EventLoop.connect``), so both connections' callbacks run on one thread and call each other
directly.
"""

from __future__ import annotations

import argparse
import logging
from functools import partial

from gev_core import Connection, Handler, Server

log = logging.getLogger("proxy")


class Upstream(Handler):
    """The upstream side of one client: what the upstream sends goes to the client."""

    def __init__(self, client: Connection) -> None:
        self.client = client

    def on_message(self, upstream, ctx, data):  # type: ignore[no-untyped-def]
        client = self.client
        if client.connected:
            client.write(data)

    def pause_writing(self, upstream: Connection) -> None:
        self.client.pause_reading()  # the upstream reads slowly: stop reading the client

    def resume_writing(self, upstream: Connection) -> None:
        self.client.resume_reading()

    def on_close(self, upstream: Connection) -> None:
        self.client.close()  # after what the client is still owed


class Downstream(Handler):
    """The server's handler: the clients. ``client.context`` is its upstream connection."""

    def __init__(self, upstream: str, timeout: float) -> None:
        self.upstream = upstream
        self.timeout = timeout

    def on_connect(self, client: Connection) -> None:
        client.pause_reading()  # nothing to forward to yet
        client.loop.connect(
            self.upstream,
            Upstream(client),
            timeout=self.timeout,
            callback=partial(self.ready, client),
        )

    def ready(self, client: Connection, upstream: Connection | None, exc: BaseException | None):  # type: ignore[no-untyped-def]
        if upstream is None:
            log.warning("closing %s: upstream %s: %s", client.peer_addr, self.upstream, exc)
            client.close()
        elif client.connected:
            client.context = upstream
            client.resume_reading()
        else:
            upstream.close()  # the client left while we connected

    def on_message(self, client, ctx, data):  # type: ignore[no-untyped-def]
        client.context.write(data)

    def pause_writing(self, client: Connection) -> None:
        client.context.pause_reading()  # the client reads slowly: stop reading the upstream

    def resume_writing(self, client: Connection) -> None:
        client.context.resume_reading()

    def on_close(self, client: Connection) -> None:
        upstream = client.context
        if upstream is not None:
            upstream.close()  # after what the upstream is still owed


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
        Downstream(args.upstream, args.connect_timeout),
        address=args.listen,
        num_loops=args.loops,
    )
    log.info("proxying to %s", args.upstream)
    server.start()  # logs where it listens


if __name__ == "__main__":
    main()
