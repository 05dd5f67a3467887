"""One listener, several protocols: the first bytes of each connection choose its protocol.

Hostile or silent peers: a connection that names no protocol within ``timeout`` seconds (nothing
sent, or a prefix that never completes) is closed with a WARNING. Bytes that no protocol claims
go to the fallback (the last protocol listed) only when the fallback has no selector of its own:
a fallback whose plugin answers ``gev_select_protocol`` has already said these bytes are not
its, so nobody claims them and the connection is closed with a WARNING naming the peer. A
fallback without a selector (the built-in ``line``, ``length-field`` and ``default`` framers) is
a catch-all by choice: it receives every byte stream nobody else claims, hostile ones included,
and its own limits (``max_line_length``, ``max_frame_size``, ``max_read_buffer``) are what bound
them. That decision is logged at DEBUG.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from ._errors import ProtocolError
from ._loop import TimerHandle
from ._plugins import NEED_MORE_DATA
from ._protocol import Protocol

if TYPE_CHECKING:
    from ._connection import Connection

logger = logging.getLogger("gev")

#: Bytes shown to ``gev_select_protocol``; past this many without an answer nobody claims them.
SNIFF_BYTES = 64
#: Seconds a connection may take to send bytes that name its protocol.
DEFAULT_SELECT_TIMEOUT = 10.0


class SelectingProtocol(Protocol):
    """Stands in for the real protocol until the connection's first bytes name it.

    The choice is made once, on the loop, by the ``gev_select_protocol`` hook; then the chosen
    protocol's ``connection_made`` runs, ``conn.protocol`` is replaced, and the bytes are handed
    over to it. Nothing of this remains on the connection's path afterwards.

    :param protocols: the candidates, in order; the last one is the fallback.
    :param select_hook: the ``gev_select_protocol`` hook caller.
    :param timeout: seconds before a connection that has not been assigned a protocol is
        closed; ``None`` waits forever.
    :param fallback_selects: the fallback's plugin has a selector of its own, so bytes it did
        not claim are not plausible for it.
    """

    name = "select"

    def __init__(
        self,
        protocols: list[Protocol],
        select_hook: Any,
        *,
        timeout: float | None = DEFAULT_SELECT_TIMEOUT,
        fallback_selects: bool = False,
    ) -> None:
        if len(protocols) < 2:
            raise ValueError("SelectingProtocol needs at least two protocols")
        if timeout is not None and not timeout > 0:
            raise ValueError(f"select timeout must be > 0 seconds or None, not {timeout!r}")
        self.protocols = {p.name: p for p in protocols}
        self.candidates = [p.name for p in protocols]
        self.fallback = protocols[-1]
        self.timeout = timeout
        self.fallback_selects = fallback_selects
        self._select = select_hook

    def connection_made(self, conn: Connection) -> None:
        # Until a protocol is chosen, conn.state holds the selection timer.
        if self.timeout is not None:
            conn.state = conn.loop.call_later(self.timeout, self._expired, conn)

    def connection_lost(self, conn: Connection) -> None:
        _cancel_timer(conn)

    def _expired(self, conn: Connection) -> None:
        if conn.protocol is self and conn.connected:
            conn.state = None
            logger.warning(
                "closing %r: no protocol chosen within %.1f s of connecting (%d bytes received)",
                conn,
                self.timeout,
                conn.read_buffer_length,
            )
            conn.close(reason="idle")

    def receive(self, conn: Connection, data: bytes | memoryview, out: list[Any]) -> int:
        head = bytes(data[:SNIFF_BYTES])
        answer = self._select(connection=conn, data=head, candidates=list(self.candidates))
        if answer == NEED_MORE_DATA:
            if len(head) < SNIFF_BYTES:
                return 0
            answer = None
        if answer is None:
            if self.fallback_selects:
                raise ProtocolError(
                    f"no protocol claims its first bytes {head[:16]!r}"
                    f" (candidates: {', '.join(self.candidates)})"
                )
            logger.debug(
                "%r: no protocol claims its first bytes %r; the fallback %r takes them",
                conn,
                head[:16],
                self.fallback.name,
            )
            chosen = self.fallback
        else:
            try:
                chosen = self.protocols[answer]
            except KeyError:
                raise ProtocolError(
                    f"gev_select_protocol chose {answer!r}, not one of {self.candidates}"
                ) from None
        _cancel_timer(conn)
        conn.protocol = chosen
        chosen.connection_made(conn)
        return chosen.receive(conn, data, out)

    def pack(self, conn: Connection, data: Any) -> Any:
        # Only reachable if the application sends before the peer said anything.
        return self.fallback.pack(conn, data)


def _cancel_timer(conn: Connection) -> None:
    timer = conn.state
    if isinstance(timer, TimerHandle):
        timer.cancel()
        conn.state = None
