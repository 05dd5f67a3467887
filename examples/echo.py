"""The seed's echo server: every message comes straight back.

python examples/echo.py --port 1833 --loops 1
python examples/echo.py --unix /tmp/echo.sock
python examples/echo.py --port 8443 --certfile cert.pem --keyfile key.pem   # over TLS
"""

from __future__ import annotations

import argparse
import logging

from gev_core import Handler, Server, server_context


class Echo(Handler):
    def on_message(self, conn, ctx, data):  # type: ignore[no-untyped-def]
        return data


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=1833)
    parser.add_argument("--loops", type=int, default=1)
    parser.add_argument("--unix", metavar="PATH", help="serve on a Unix socket instead")
    parser.add_argument("--certfile", metavar="PEM", help="serve TLS with this certificate")
    parser.add_argument("--keyfile", metavar="PEM", help="the certificate's private key")
    parser.add_argument(
        "--tls-handshake-timeout",
        type=float,
        default=10.0,
        metavar="S",
        help="disconnect clients whose TLS handshake takes longer (default 10)",
    )
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    address = f"unix:{args.unix}" if args.unix else (args.host, args.port)
    context = server_context(args.certfile, args.keyfile) if args.certfile else None
    server = Server(
        Echo(),
        address=address,
        num_loops=args.loops,
        ssl=context,
        tls_handshake_timeout=args.tls_handshake_timeout,
    )
    server.start()  # logs where it listens


if __name__ == "__main__":
    main()
