"""``MessageType``, below the session: its fast path tells a typed reply's kind by identity.

Not compiled (an enum); ``gev_websocket`` exports it.
"""

from __future__ import annotations

import enum

__all__ = ["BINARY", "TEXT", "MessageType"]


class MessageType(enum.IntEnum):
    """The type of a message, numbered like the RFC 6455 opcodes (and gev's ``ws.MessageType``)."""

    TEXT = 1
    BINARY = 2


TEXT = MessageType.TEXT
BINARY = MessageType.BINARY
