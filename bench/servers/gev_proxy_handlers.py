"""gev's reverse proxy written with handlers: each side's on_message writes to the other.

The way examples/proxy.py was written before ``Connection.relay``, kept as a benchmark server:
what a gev proxy costs when it forwards bytes in Python (a handler call per read on each side,
``pause_writing`` -> ``pause_reading`` on the other side for backpressure), next to the relay
that examples/proxy.py uses now.

python bench/servers/gev_proxy_handlers.py --listen 127.0.0.1:1834 --upstream 127.0.0.1:1833
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
