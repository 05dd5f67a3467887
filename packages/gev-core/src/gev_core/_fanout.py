"""One message to many connections of a loop: the reactor's side of fan-out.

Fan-out (gev-pubsub) writes the same bytes to thousands of connections per message; done with
``conn.write`` per connection, the interpreter work of the public path (thread check, state
checks, two calls) costs as much as the rest. :func:`write_shared` is that loop written once,
inside the core, with the connection internals at hand: per connection one call of its
protocol's ``shared_packer`` (none when the protocol pinned its answer on the connection) and
its send helper (``Connection._send``: one ``write(2)``, or the output buffer behind pending
output; encrypted first on a TLS connection).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from ._connection import OPEN

if TYPE_CHECKING:
    from ._connection import Connection

__all__ = ["write_shared"]

Packer = Callable[[Any], bytes]


def write_shared(
    conns: Iterable[Connection],
    frame: Callable[[Packer], bytes],
    limit: int,
) -> tuple[int, list[Connection], list[Connection]]:
    """Write to each connection the bytes its protocol shares with the others.

    For every open connection of ``conns`` the protocol's
    :meth:`~gev_core.Protocol.shared_packer` is asked (unless the protocol pinned its answer
    with :meth:`~gev_core.Connection.pin_shared_packer`); ``frame(packer)`` is called once per
    distinct packer and its bytes written to every connection that answered with it (behind
    any output already pending, with the usual backpressure and ``max_write_buffer`` rules;
    encrypted for each TLS connection).

    :param conns: connections of one event loop; call this on that loop's thread, outside its
        I/O dispatch (from a task queued with ``call_soon``/``call_soon_threadsafe`` or a
        timer), so that replies returned by handlers keep their place before it.
    :param frame: ``frame(packer) -> bytes``; empty bytes: nothing to write for that packer.
    :param limit: a connection with more unsent bytes than this gets nothing.
    :returns: ``(written, slow, unshared)``: how many connections were written to, those
        skipped for ``limit``, and those whose protocol shares nothing (``shared_packer``
        returned ``None``: pack for them one by one). Closing and closed connections are
        skipped silently.
    :raises RuntimeError: called off the loop thread or during its I/O dispatch.
    """
    slow: list[Connection] = []
    unshared: list[Connection] = []
    frames: dict[Packer, bytes] = {}
    # The packer of the previous connection and its bytes: subscribers mostly share one
    # packer, so most connections need no dict lookup.
    last: Packer | None = None
    data = b""
    empty = True
    written = 0
    loop = None
    counting = False
    # The same object when conns is a tuple already; compiled, a tuple is indexed, not iterated
    # through the iterator protocol.
    items: tuple[Connection, ...] = tuple(conns)
    for c in items:
        if loop is not c._loop:
            loop = c._loop
            if not loop.in_loop_thread() or loop._dispatching:
                raise RuntimeError(
                    "write_shared runs on the connections' loop thread, outside I/O dispatch"
                )
            counting = loop.stats.counting
        if c._state != OPEN:
            continue
        out = c._out
        if out is not None and len(out) > limit:
            slow.append(c)
            continue
        # Pinned by the protocol (Connection.pin_shared_packer): no Python call per connection.
        packer = c._shared
        if packer is None:
            packer = c._protocol.shared_packer(c)
            if packer is None:
                unshared.append(c)
                continue
        if packer is not last:
            found = frames.get(packer)
            if found is None:
                found = frames[packer] = frame(packer)
            last = packer
            data = found
            empty = len(found) == 0
        if empty:
            continue
        written += 1
        # The connection's one send helper: written now or buffered, encrypted under TLS.
        c._send(data)
        if counting:
            c._loop.stats.messages_out += 1
    return written, slow, unshared
