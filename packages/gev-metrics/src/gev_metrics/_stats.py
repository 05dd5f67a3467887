"""Where the numbers come from: each event loop's counters, sampled off the hot path.

gev-core counts on the paths that already exist -- plain integer attributes of one small object
per loop, ``loop.stats`` -- and nothing else happens per message. :class:`LoopStats` is what
this package reads from it. A gev-core without ``loop.stats`` still gives the connections: the
open ones from ``loop.connection_count``, accepted and closed ones from the
``gev_connection_made`` / ``gev_connection_lost`` hooks (closed with the reason ``unknown``);
the byte, message, backpressure and error families then stay absent rather than read zero.
"""

from __future__ import annotations

from typing import Protocol

__all__ = ["CLOSE_REASONS", "COUNTER_FIELDS", "LoopStats"]

#: Why connections close: the ``reason`` label of ``gev_connections_closed_total``, each read
#: from the ``closed_<reason>`` field of :class:`LoopStats`. ``eof``: the peer closed; ``reset``:
#: the peer reset it; ``error``: another socket error; ``local``: the application closed it;
#: ``idle``: reaped for inactivity; ``hard_cap``: unsent output passed ``max_write_buffer``;
#: ``budget``: unparsed input passed ``max_read_buffer`` (or the loop's memory budget);
#: ``protocol_error``: the peer broke the protocol; ``handler_error``: the handler (or protocol
#: code) raised; ``stop``: the server stopped or a drain timed out.
CLOSE_REASONS = (
    "eof",
    "reset",
    "error",
    "local",
    "idle",
    "hard_cap",
    "budget",
    "protocol_error",
    "handler_error",
    "stop",
)

#: The monotonic counters of :class:`LoopStats` and the metric family each one feeds.
COUNTER_FIELDS = {
    "accepted": "gev_connections_accepted_total",
    "bytes_in": "gev_received_bytes_total",
    "bytes_out": "gev_sent_bytes_total",
    "messages_in": "gev_received_messages_total",
    "messages_out": "gev_sent_messages_total",
    "backpressure_pauses": "gev_backpressure_pauses_total",
    "handler_errors": "gev_handler_errors_total",
}


class LoopStats(Protocol):
    """One event loop's counters (``loop.stats``), as gev-core keeps them.

    Every field is an ``int`` that only grows, written by the loop's own thread with a plain
    ``+=`` where the event happens anyway, and read here from another thread (a torn read is
    impossible for an ``int`` attribute, and a sample one increment late is fine). A field a
    gev-core does not have is skipped.
    """

    #: Connections accepted by the server and handed to this loop.
    accepted: int
    #: Bytes read from connections' sockets.
    bytes_in: int
    #: Bytes written to them.
    bytes_out: int
    #: Messages handed to the handler (``on_message`` calls).
    messages_in: int
    #: Replies and sends framed for writing.
    messages_out: int
    #: Times a connection stopped reading because its unsent output passed ``high_water``.
    backpressure_pauses: int
    #: Exceptions raised by handler or protocol code (each closes its connection).
    handler_errors: int
    #: Closed connections, one field per reason of :data:`CLOSE_REASONS`.
    closed_eof: int
    closed_reset: int
    closed_error: int
    closed_local: int
    closed_idle: int
    closed_hard_cap: int
    closed_budget: int
    closed_protocol_error: int
    closed_handler_error: int
    closed_stop: int
    #: Optional: nanoseconds the loop spent outside ``poll()`` (working); with it,
    #: ``gev_loop_busy_ratio`` is exported.
    busy_ns: int
