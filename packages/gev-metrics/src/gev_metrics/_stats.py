"""Where the numbers come from: each event loop's counters, sampled off the hot path.

gev-core counts on the paths that already exist -- plain integer attributes of one small object
per loop, ``loop.stats`` -- and nothing else happens per message. :class:`LoopStats` is what
this package reads from it. Bytes and messages are counted only while the server's
``count_traffic`` is on: gev-metrics turns it on for the servers whose metrics it exports, so
a server without metrics pays nothing for them.
"""

from __future__ import annotations

from typing import Protocol

__all__ = ["BUSY_FIELD", "CLOSE_REASONS", "COUNTER_FIELDS", "LoopStats"]

#: Why connections close: the ``reason`` label of ``gev_connections_closed_total``, each read
#: from the ``closed_<reason>`` field of :class:`LoopStats`. ``eof``: the peer closed; ``reset``:
#: the peer reset it; ``error``: another socket error; ``local``: the application closed it;
#: ``idle``: silent for too long (idle reaping, or a preamble -- a PROXY protocol header -- or
#: a protocol choice that did not arrive in time); ``hard_cap``: unsent output passed
#: ``max_write_buffer``; ``budget``: unparsed input passed ``max_read_buffer`` (or the loop's
#: memory budget); ``protocol_error``: the peer broke the protocol (a malformed, missing or
#: untrusted PROXY header among others); ``handler_error``: the handler (or protocol code)
#: raised; ``stop``: the server stopped or a drain timed out.
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

#: The field of :class:`LoopStats` with the nanoseconds a loop spent outside its poll wait
#: (gev-core counts it while ``count_traffic`` is on); exported in seconds as
#: ``gev_loop_busy_seconds_total``. Read when present: a gev-core without it exports nothing.
BUSY_FIELD = "busy_ns"


class LoopStats(Protocol):
    """One event loop's counters (``loop.stats``), as gev-core keeps them.

    Every field is an ``int`` that only grows, written by the loop's own thread with a plain
    ``+=`` where the event happens anyway, and read here from another thread (a torn read is
    impossible for an ``int`` attribute, and a sample one increment late is fine).
    """

    #: Connections accepted by the server and handed to this loop.
    accepted: int
    #: Bytes read from connections' sockets.
    bytes_in: int
    #: Bytes written to them.
    bytes_out: int
    #: Messages handed to the handler: the default protocol's ``on_message`` calls, and what
    #: other protocols report with ``conn.count_messages``.
    messages_in: int
    #: Replies and sends framed for writing, counted the same way.
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
