"""Shared helpers for the reference echo servers (argument parsing, fd limit)."""

import argparse
import resource


def parse_args(description: str) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=description)
    ap.add_argument("--host", default="127.0.0.1")
    where = ap.add_mutually_exclusive_group(required=True)
    where.add_argument("--port", type=int)
    where.add_argument("--unix", metavar="PATH", help="listen on a Unix socket instead")
    ap.add_argument("--backlog", type=int, default=4096)
    return ap.parse_args()


def raise_nofile() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
