"""gev fan-out server for bench/fanout.c: /sub subscribes, every binary message from /pub goes
to every subscriber.

--mode pubsub (default): gev-pubsub's publish (framed once, one write per subscriber per
batch). --mode loop: the naive way, gev_websocket.send_binary to each subscriber in a loop.
"""

import argparse
import logging
import resource

from gev_core import Connection
from gev_pubsub import PubSub, TopicPolicy
from gev_websocket import Upgrader, WebSocketHandler, new_websocket_server, send_binary

TOPIC = "bench"


class Fanout(WebSocketHandler):
    def __init__(self, mode: str) -> None:
        # The client's flow control bounds every backlog; never drop in a benchmark.
        self.hub = PubSub(policy=TopicPolicy(water_mark=64 * 1024 * 1024))
        self.subs: dict[Connection, None] = {}
        self.loop_mode = mode == "loop"

    def on_request(self, conn, request):  # type: ignore[no-untyped-def]
        conn.context = request.target
        return None

    def on_open(self, conn: Connection) -> None:
        if conn.context == "/sub":
            if self.loop_mode:
                self.subs[conn] = None
            else:
                self.hub.subscribe(conn, TOPIC)

    def on_message(self, conn: Connection, data):  # type: ignore[no-untyped-def]
        if self.loop_mode:
            for sub in list(self.subs):
                send_binary(sub, data)
        else:
            self.hub.publish(TOPIC, data)
        return None

    def on_close(self, conn: Connection) -> None:
        self.subs.pop(conn, None)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--backlog", type=int, default=4096)
    ap.add_argument("--mode", choices=["pubsub", "loop"], default="pubsub")
    args = ap.parse_args()
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    logging.basicConfig(level=logging.WARNING)
    server = new_websocket_server(
        Fanout(args.mode),
        Upgrader(compression=False),
        address=(args.host, args.port),
        backlog=args.backlog,
    )
    server.start()


if __name__ == "__main__":
    main()
