"""Shared helpers for the reference echo servers (argument parsing, fd limit)."""

import argparse
import resource
import ssl
from collections.abc import Callable


def parse_args(
    description: str, extra: Callable[[argparse.ArgumentParser], None] | None = None
) -> argparse.Namespace:
    """``--host``, ``--port`` or ``--unix``, ``--backlog``; ``extra(parser)`` adds more."""
    ap = argparse.ArgumentParser(description=description)
    ap.add_argument("--host", default="127.0.0.1")
    where = ap.add_mutually_exclusive_group(required=True)
    where.add_argument("--port", type=int)
    where.add_argument("--unix", metavar="PATH", help="listen on a Unix socket instead")
    ap.add_argument("--backlog", type=int, default=4096)
    ap.add_argument("--certfile", help="serve TLS with this certificate (PEM)")
    ap.add_argument("--keyfile", help="its private key (PEM)")
    if extra is not None:
        extra(ap)
    return ap.parse_args()


def tls_context(args: argparse.Namespace) -> ssl.SSLContext | None:
    """The standard library's server defaults (what an asyncio user writes), or None."""
    if not args.certfile:
        return None
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(args.certfile, args.keyfile)
    return ctx


def raise_nofile() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
