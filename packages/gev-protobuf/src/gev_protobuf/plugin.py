"""The gev plugin of gev-protobuf (entry point ``protobuf`` in the ``gev`` group).

Registers :class:`~gev_protobuf.ProtobufProtocol` under the name ``"protobuf"``, adds
``--protobuf-max-frame-size`` to ``gev serve`` and recognises protobuf frames among the first
bytes of a connection when one port serves several protocols.
"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from gev_core import Protocol, hookimpl

from ._framing import DEFAULT_MAX_FRAME_SIZE, MAX_FRAME_LENGTH
from ._protocol import ProtobufProtocol

if TYPE_CHECKING:
    from gev_core import Connection

__all__ = ["gev_addoption", "gev_register_protocols", "gev_select_protocol"]


@hookimpl
def gev_register_protocols() -> list[type[Protocol]]:
    return [ProtobufProtocol]


def _frame_size(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number of bytes: {text!r}") from None
    if not 2 <= value <= MAX_FRAME_LENGTH:
        raise argparse.ArgumentTypeError(f"must be between 2 and {MAX_FRAME_LENGTH}, got {value}")
    return value


@hookimpl
def gev_addoption(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("protobuf (gev-protobuf)")
    group.add_argument(
        "--protobuf-max-frame-size",
        type=_frame_size,
        default=None,
        metavar="BYTES",
        help="largest frame length a peer may announce; a bigger one closes the connection"
        f" before anything is buffered for it (default {DEFAULT_MAX_FRAME_SIZE})",
    )


@hookimpl
def gev_select_protocol(connection: Connection, data: bytes, candidates: list[str]) -> str | None:
    if ProtobufProtocol.name not in candidates:
        return None
    # Asked before the protocol is chosen, so conn.protocol is still the core's selector,
    # which holds the configured instances by name; the limit they were given is the one to
    # judge by. Anything unexpected there: the default one.
    protocols = getattr(connection.protocol, "protocols", None)
    chosen = protocols.get(ProtobufProtocol.name) if isinstance(protocols, dict) else None
    if not isinstance(chosen, ProtobufProtocol):
        chosen = ProtobufProtocol()
    return chosen.sniff(data)
