"""The ``gev`` entry point of gev-proxy-protocol: hook implementations only.

``gev serve --proxy-protocol [--proxy-protocol-trusted CIDR,...] [--proxy-protocol-policy
required|optional] ...`` (or ``Server(options={"proxy_protocol": True, ...})``) puts a
:class:`~gev_proxy_protocol.ProxyProtocol` preamble on the server's listener.
"""

from __future__ import annotations

import argparse
import logging
from typing import Any

from gev_core import Preamble, hookimpl

from ._options import preamble_from_options
from ._parse import DEFAULT_MAX_SIZE, MAX_SIZE_LIMIT, MIN_MAX_SIZE
from ._preamble import DEFAULT_TIMEOUT, POLICIES

__all__ = ["gev_addoption", "gev_configure"]

logger = logging.getLogger("gev.proxy_protocol")


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid number of seconds: {text!r}") from None
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, not {text}")
    return value


def _size(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid number of bytes: {text!r}") from None
    if not MIN_MAX_SIZE <= value <= MAX_SIZE_LIMIT:
        raise argparse.ArgumentTypeError(f"must be {MIN_MAX_SIZE} to {MAX_SIZE_LIMIT}")
    return value


@hookimpl
def gev_addoption(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("PROXY protocol (gev-proxy-protocol)")
    group.add_argument(
        "--proxy-protocol",
        action="store_true",
        default=None,
        help="read HAProxy's PROXY protocol header (v1 or v2) in front of every connection:"
        " conn.peer_addr becomes the client's address",
    )
    group.add_argument(
        "--proxy-protocol-trusted",
        action="append",
        default=None,
        metavar="CIDR,...",
        help="networks allowed to send the header, e.g. 10.0.0.0/8,::1 (repeatable; default:"
        " any peer); others are refused, or served directly with --proxy-protocol-policy"
        " optional",
    )
    group.add_argument(
        "--proxy-protocol-policy",
        choices=POLICIES,
        default=None,
        help="required (default): every connection must come from a trusted network and send"
        " a header; optional: trusted peers must send one, other peers are served as direct"
        " clients",
    )
    group.add_argument(
        "--proxy-protocol-version",
        choices=("1", "2", "any"),
        default=None,
        help="accept only v1 (text) or v2 (binary) headers (default any)",
    )
    group.add_argument(
        "--proxy-protocol-timeout",
        type=_seconds,
        default=None,
        metavar="SECONDS",
        help=f"close connections whose header has not arrived in time (default"
        f" {DEFAULT_TIMEOUT:g}; 0: no limit)",
    )
    group.add_argument(
        "--proxy-protocol-max-size",
        type=_size,
        default=None,
        metavar="BYTES",
        help=f"largest v2 header accepted, TLVs included (default {DEFAULT_MAX_SIZE})",
    )


@hookimpl
def gev_configure(config: Any) -> None:
    preamble = preamble_from_options(config.options)
    server = config.server
    if preamble is None or server is None:
        return
    # The listener's preamble stage: gev-core reads the header before TLS, protocol selection
    # and on_connect, and closes the connection with the logged reason on ProxyProtocolError.
    # (Annotated as gev-core's Preamble protocol: mypy checks that ProxyProtocol is one.)
    stage: Preamble = preamble
    server.set_preamble(stage)
    if preamble.trusted.any and preamble.policy == "required":
        logger.warning(
            "PROXY protocol headers are trusted from any peer: restrict them with"
            " --proxy-protocol-trusted CIDR,... unless only your proxies can reach this port"
        )
    logger.info("PROXY protocol on the listener: %r", preamble)
