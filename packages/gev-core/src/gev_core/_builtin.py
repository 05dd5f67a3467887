"""gev-core's own plugin: registers the built-in framers like any other plugin would."""

from __future__ import annotations

from ._plugins import hookimpl
from ._protocol import DefaultProtocol, LengthFieldProtocol, LineProtocol, Protocol


@hookimpl
def gev_register_protocols() -> list[type[Protocol]]:
    return [DefaultProtocol, LengthFieldProtocol, LineProtocol]
