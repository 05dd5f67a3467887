"""Protobuf echo server: every frame comes back unchanged, same type name and payload.

python examples/protobuf_echo.py --port 1833 --loops 1

The payload is not parsed (no registry), so any gev-protobuf frame is echoed; this is the
server `bench/run.py` measures as `gev-pb`.
"""

from __future__ import annotations

import argparse
import logging

from gev_core import Handler, Server
from gev_protobuf import DEFAULT_MAX_FRAME_SIZE, ProtobufProtocol


class Echo(Handler):
    def on_message(self, conn, ctx, data):  # type: ignore[no-untyped-def]
        return ctx, data  # (type name, payload): framed again by the protocol


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=1833)
    parser.add_argument("--loops", type=int, default=1)
    parser.add_argument("--max-frame-size", type=int, default=DEFAULT_MAX_FRAME_SIZE)
    parser.add_argument(
        "--count-traffic", action="store_true", help="count bytes and messages (loop.stats)"
    )
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    server = Server(
        Echo(),
        address=(args.host, args.port),
        num_loops=args.loops,
        protocol=ProtobufProtocol(max_frame_size=args.max_frame_size),
        count_traffic=args.count_traffic,
    )
    logging.getLogger("gev").info(
        "protobuf echo server on %s:%d, %d loop(s)", *server.address, args.loops
    )
    server.start()


if __name__ == "__main__":
    main()
