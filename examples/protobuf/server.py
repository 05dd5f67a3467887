"""The seed's protobuf example server: logs every msg1 and msg2 it receives.

python examples/protobuf/server.py --port 1833

Like gev's, it dispatches on the frame's type name; unlike gev's, the payload arrives already
parsed, because the protocol is given a registry of the message classes. The registry is
lenient, so an unknown type name is logged (with its raw payload) instead of closing the
connection, as gev's example does.
"""

from __future__ import annotations

import argparse
import logging

from _proto import load
from gev_core import Handler, Server
from gev_protobuf import MessageRegistry, ProtobufProtocol
from google.protobuf import text_format

log = logging.getLogger("gev.example")
pb = load()


class Example(Handler):
    def on_connect(self, conn):  # type: ignore[no-untyped-def]
        log.info("OnConnect: %s", conn.peer_addr)

    def on_message(self, conn, ctx, data):  # type: ignore[no-untyped-def]
        if ctx in ("msg1", "msg2"):
            log.info("%s %s", ctx, text_format.MessageToString(data, as_one_line=True))
        else:
            log.info("unknown msg type %r (%d bytes)", ctx, len(data))
        return None  # gev's example does not answer

    def on_close(self, conn):  # type: ignore[no-untyped-def]
        log.info("OnClose: %s", conn.peer_addr)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=1833)
    parser.add_argument("--loops", type=int, default=1)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")

    registry = MessageRegistry(strict=False)
    registry.register(pb.Msg1, "msg1")
    registry.register(pb.Msg2, "msg2")
    server = Server(
        Example(),
        address=(args.host, args.port),
        num_loops=args.loops,
        protocol=ProtobufProtocol(registry=registry),
    )
    log.info("server start on %s:%d", *server.address)
    server.start()


if __name__ == "__main__":
    main()
