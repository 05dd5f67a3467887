"""The error of the protobuf framing, in a module that is never compiled (see ``_framing``)."""

from __future__ import annotations

__all__ = ["FrameError"]


class FrameError(ValueError):
    """A frame is malformed or violates a size limit.

    Raised while decoding bytes from a peer (the stream cannot be resynchronised, so the
    connection should be closed) and by :func:`pack_message` when a frame cannot be built.
    """
