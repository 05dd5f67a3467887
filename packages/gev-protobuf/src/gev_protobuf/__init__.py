"""gev's protobuf plugin for Python: length-prefixed, type-tagged frames.

Wire format (byte-compatible with Go gev's ``plugins/protobuf``)::

    u32 BE length | u16 BE type-name length | type name (UTF-8) | payload
    length = 2 + type-name length + payload length

:class:`ProtobufProtocol` serves it with gev-core (``Server(handler, protocol="protobuf")``;
the ``gev_protobuf.plugin`` entry point registers the name). Framing is sans-IO
(:func:`pack_message`, :func:`scan_frames`, :func:`parse_frame`, :class:`FrameDecoder`), for
clients and tests; :class:`MessageRegistry` optionally maps type names to generated protobuf
classes.
"""

from typing import TYPE_CHECKING, Any

# First: with GEV_PURE_PYTHON=1 the modules below are then loaded from their .py source.
from . import _compiled
from .__about__ import __version__
from ._framing import (
    DEFAULT_MAX_FRAME_SIZE,
    HEADER_SIZE,
    MAX_FRAME_LENGTH,
    MAX_TYPE_NAME_SIZE,
    BytesLike,
    FrameDecoder,
    FrameError,
    pack_message,
    parse_frame,
    scan_frames,
)
from ._registry import MessageDecodeError, MessageRegistry, ProtobufMessage, UnknownMessageType

if TYPE_CHECKING:
    from ._protocol import ProtobufProtocol

COMPILED: bool = _compiled.package_is_compiled(__name__)
"""True when this package runs compiled code (a wheel built with a C compiler, and
``GEV_PURE_PYTHON`` not set); False for the pure-Python source. See the docs' "Compiled
code" page."""

__all__ = [
    "COMPILED",
    "DEFAULT_MAX_FRAME_SIZE",
    "HEADER_SIZE",
    "MAX_FRAME_LENGTH",
    "MAX_TYPE_NAME_SIZE",
    "BytesLike",
    "FrameDecoder",
    "FrameError",
    "MessageDecodeError",
    "MessageRegistry",
    "ProtobufMessage",
    "ProtobufProtocol",
    "UnknownMessageType",
    "__version__",
    "pack_message",
    "parse_frame",
    "scan_frames",
]


def __getattr__(name: str) -> Any:
    # Imported on first use: gev-core brings pluggy and importlib.metadata along, which a
    # client that only frames messages has no use for.
    if name == "ProtobufProtocol":
        from ._protocol import ProtobufProtocol

        return ProtobufProtocol
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
