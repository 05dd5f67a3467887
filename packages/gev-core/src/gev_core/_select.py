"""One listener, several protocols: the first bytes of each connection choose its protocol."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ._errors import ProtocolError
from ._plugins import NEED_MORE_DATA
from ._protocol import Protocol

if TYPE_CHECKING:
    from ._connection import Connection

#: Bytes shown to ``gev_select_protocol``; past this many without an answer the fallback is used.
SNIFF_BYTES = 64


class SelectingProtocol(Protocol):
    """Stands in for the real protocol until the connection's first bytes name it.

    The choice is made once, on the loop, by the ``gev_select_protocol`` hook; then the chosen
    protocol's ``connection_made`` runs, ``conn.protocol`` is replaced, and the bytes are handed
    over to it. Nothing of this remains on the connection's path afterwards.
    """

    name = "select"

    def __init__(self, protocols: list[Protocol], select_hook: Any) -> None:
        if len(protocols) < 2:
            raise ValueError("SelectingProtocol needs at least two protocols")
        self.protocols = {p.name: p for p in protocols}
        self.candidates = [p.name for p in protocols]
        self.fallback = protocols[-1]
        self._select = select_hook

    def receive(self, conn: Connection, data: bytes | memoryview, out: list[Any]) -> int:
        head = bytes(data[:SNIFF_BYTES])
        answer = self._select(connection=conn, data=head, candidates=list(self.candidates))
        if answer == NEED_MORE_DATA:
            if len(head) < SNIFF_BYTES:
                return 0
            answer = None
        if answer is None:
            chosen = self.fallback
        else:
            try:
                chosen = self.protocols[answer]
            except KeyError:
                raise ProtocolError(
                    f"gev_select_protocol chose {answer!r}, not one of {self.candidates}"
                ) from None
        conn.protocol = chosen
        chosen.connection_made(conn)
        return chosen.receive(conn, data, out)

    def pack(self, conn: Connection, data: Any) -> Any:
        # Only reachable if the application sends before the peer said anything.
        return self.fallback.pack(conn, data)
