from __future__ import annotations

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
