from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ._connection import Connection


class Handler:
    """Optional base class for handlers; any object with the same methods works.

    Every callback runs on the connection's loop thread and must not block it: blocking work
    goes to :meth:`Connection.offload <gev_core.Connection.offload>`. ``on_message``,
    ``on_connect`` and ``on_close`` may instead be ``async def``: they then run on the server's
    asyncio companion loop (a thread of its own), and what ``on_message`` returns is the reply,
    sent in request order.
    """

    def on_connect(self, conn: Connection) -> None:
        """A connection was accepted. Runs before any ``on_message`` for it."""

    def on_message(self, conn: Connection, ctx: Any, data: Any) -> Any:
        """A complete message arrived; return the reply (bytes-like) or ``None``.

        The reply is framed with the protocol's ``pack`` and leaves before anything ``conn.send``
        was asked to send during this call.
        """
        return None

    def on_close(self, conn: Connection) -> None:
        """The connection is closed. Called exactly once per connection."""

    def pause_writing(self, conn: Connection) -> None:
        """Optional: ``conn``'s unsent output rose above its high water mark.

        Called once when :attr:`~gev_core.Connection.write_buffer_length` crosses the server's
        ``high_water`` upwards; :meth:`resume_writing` follows once it has drained to
        ``low_water``. They come in pairs and never after ``on_close``. What a proxy uses to
        stop reading the connection that feeds ``conn`` (:meth:`Connection.pause_reading
        <gev_core.Connection.pause_reading>`). Only called when a handler defines it: looked
        up once per handler, never per write.

        A handler that defines it takes flow control over, as in asyncio: the core then goes
        on reading ``conn`` while its output is above ``high_water`` (without the hooks it
        stops, until the output drains), and ``max_write_buffer`` stays the hard limit.
        """

    def resume_writing(self, conn: Connection) -> None:
        """Optional: ``conn``'s unsent output drained to its low water mark after
        :meth:`pause_writing`."""


#: What a connection calls when its output crosses the water marks: ``(pause_writing,
#: resume_writing)`` of a handler that defines them.
WritingHooks = tuple[Callable[[Any], Any], Callable[[Any], Any]]


def _noop_hook(conn: Any) -> None:
    return None


def writing_hooks(handler: Any) -> WritingHooks | None:
    """A handler's ``pause_writing``/``resume_writing``, or ``None`` when it defines neither
    (inheriting :class:`Handler`'s empty ones counts as not defining them). Resolved once per
    handler: a connection without them pays nothing on its write path."""
    handler = getattr(handler, "__wrapped__", handler)  # an AsyncHandler's application handler
    found: list[Callable[[Any], Any]] = []
    for name in ("pause_writing", "resume_writing"):
        method = getattr(handler, name, None)
        if method is None or getattr(type(handler), name, None) is getattr(Handler, name):
            found.append(_noop_hook)
        else:
            found.append(method)
    if found[0] is _noop_hook and found[1] is _noop_hook:
        return None
    return found[0], found[1]
