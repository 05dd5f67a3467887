"""The one place that reads wsproto internals.

The fast path may only bypass wsproto when wsproto has nothing in flight: no buffered bytes,
no half-parsed frame, no fragmented message in progress. wsproto has no public API for that,
so :func:`wsproto_idle` looks at its decoder objects. The attribute names are checked against
wsproto 1.2.0 to 1.3.2 (``pyproject.toml`` pins ``wsproto>=1.2,<1.4``), and
``tests/test_compat.py`` fails loudly if a wsproto release renames or reshapes them.
"""

from __future__ import annotations

from wsproto.connection import Connection, ConnectionState

__all__ = ["wsproto_buffered", "wsproto_idle"]

_OPEN = ConnectionState.OPEN


def wsproto_idle(conn: Connection) -> bool:
    """Return True when *conn* is OPEN and sits between two messages with an empty buffer.

    In that state, handing wsproto one complete, unfragmented, uncompressed data frame only
    produces the frame's message event and returns wsproto to the same state, which is what
    makes the fast path's bypass equivalent.

    Internals read (wsproto 1.2-1.3):

    * ``Connection._state``: the connection state behind the public ``state`` property;
    * ``Connection._proto``: the ``FrameProtocol``;
    * ``FrameProtocol._frame_decoder.header``: the header of a frame whose payload is still
      arriving, else None;
    * ``FrameProtocol._frame_decoder.buffer.buffer``: the bytearray of received, unparsed bytes;
    * ``FrameProtocol._message_decoder.opcode``: the opcode of the message in progress (set
      from its first fragment to its last), else None.
    """
    proto = conn._proto
    decoder = proto._frame_decoder
    return (
        conn._state is _OPEN
        and decoder.header is None
        and not decoder.buffer.buffer
        and proto._message_decoder.opcode is None
    )


def wsproto_buffered(conn: Connection) -> int:
    """Bytes wsproto holds received but not yet parsed (a frame header or payload cut short).

    Reads ``FrameProtocol._frame_decoder.buffer.buffer`` (see :func:`wsproto_idle`), for the
    server's memory accounting.
    """
    return len(conn._proto._frame_decoder.buffer.buffer)
