"""Each event loop's counters: plain integers, incremented where the event happens anyway.

One :class:`LoopStats` per loop (``loop.stats``), written by that loop's thread only and read
from any thread (a metrics plugin samples them on a timer or on a scrape): an ``int``
attribute is read whole, and a sample one increment late is fine. Nothing here calls a hook.

Connection events (accepted, closed by reason, backpressure pauses, handler errors) are always
counted: they happen once per connection or per pause, never per message. Bytes and messages
are counted only while the loop's :attr:`LoopStats.counting` is on, which a metrics plugin
asks for with ``Server.count_traffic = True``: in a pure-Python build each increment on the
per-message path costs a measurable share of an echo.
"""

from __future__ import annotations

__all__ = ["CLOSE_REASONS", "LoopStats"]

#: Why connections close, in the order of their codes (1-based; 0: not closed yet).
#: ``eof``: the peer closed; ``reset``: the peer reset the connection (or hung up);
#: ``error``: another socket error; ``local``: the application closed it; ``idle``: it was
#: silent for too long (idle reaping, a preamble or protocol choice that did not arrive in
#: time); ``hard_cap``: unsent output passed ``max_write_buffer``; ``budget``: unparsed
#: input passed ``max_read_buffer``, or the loop shed it to stay within ``max_buffered``;
#: ``protocol_error``: the peer broke the protocol (a ``ProtocolError``); ``handler_error``:
#: the handler's or the protocol's code raised; ``stop``: the server stopped.
CLOSE_REASONS: tuple[str, ...] = (
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

# The codes of CLOSE_REASONS (a connection's _reason); 0 means "not closed".
R_EOF = 1
R_RESET = 2
R_ERROR = 3
R_LOCAL = 4
R_IDLE = 5
R_HARD_CAP = 6
R_BUDGET = 7
R_PROTOCOL_ERROR = 8
R_HANDLER_ERROR = 9
R_STOP = 10


def reason_code(reason: str) -> int:
    """The code of a close reason name.

    :raises ValueError: ``reason`` is not one of :data:`CLOSE_REASONS`.
    """
    try:
        return CLOSE_REASONS.index(reason) + 1
    except ValueError:
        raise ValueError(
            f"close reason must be one of {', '.join(CLOSE_REASONS)}, not {reason!r}"
        ) from None


class LoopStats:
    """One event loop's counters (``loop.stats``). Every field is an ``int`` that only grows.

    What a metrics plugin reads; ``gev_metrics`` exports them as Prometheus counters.
    """

    def __init__(self) -> None:
        #: Whether bytes and messages are counted (``Server.count_traffic``; see the module).
        self.counting = False
        #: Connections accepted and handed to this loop.
        self.accepted = 0
        #: Bytes read from connections' sockets (while :attr:`counting`).
        self.bytes_in = 0
        #: Bytes written to them, as the kernel took them (while :attr:`counting`).
        self.bytes_out = 0
        #: Messages handed to the handler: each ``on_message`` of the default protocol, and
        #: what other protocols report with ``conn.count_messages`` (while :attr:`counting`).
        self.messages_in = 0
        #: Replies and sends framed for writing, counted the same way (while :attr:`counting`).
        self.messages_out = 0
        #: Times a connection stopped reading because its unsent output passed ``high_water``.
        self.backpressure_pauses = 0
        #: Exceptions raised by handler or protocol code (each closed its connection).
        self.handler_errors = 0
        #: Nanoseconds the loop spent outside its poll wait -- timers, events, handlers,
        #: deferred operations, tasks (while :attr:`counting`: two clock reads per loop
        #: iteration then, none otherwise). Its rate is how busy the loop is (1.0: saturated).
        self.busy_ns = 0
        #: Closed connections, one field per reason of :data:`CLOSE_REASONS`.
        self.closed_eof = 0
        self.closed_reset = 0
        self.closed_error = 0
        self.closed_local = 0
        self.closed_idle = 0
        self.closed_hard_cap = 0
        self.closed_budget = 0
        self.closed_protocol_error = 0
        self.closed_handler_error = 0
        self.closed_stop = 0

    def count_close(self, code: int) -> None:
        """One more connection closed for the reason with this code (see :data:`CLOSE_REASONS`)."""
        if code == R_EOF:
            self.closed_eof += 1
        elif code == R_RESET:
            self.closed_reset += 1
        elif code == R_ERROR:
            self.closed_error += 1
        elif code == R_IDLE:
            self.closed_idle += 1
        elif code == R_HARD_CAP:
            self.closed_hard_cap += 1
        elif code == R_BUDGET:
            self.closed_budget += 1
        elif code == R_PROTOCOL_ERROR:
            self.closed_protocol_error += 1
        elif code == R_HANDLER_ERROR:
            self.closed_handler_error += 1
        elif code == R_STOP:
            self.closed_stop += 1
        else:
            self.closed_local += 1

    @property
    def closed(self) -> int:
        """Connections closed, all reasons together."""
        return (
            self.closed_eof
            + self.closed_reset
            + self.closed_error
            + self.closed_local
            + self.closed_idle
            + self.closed_hard_cap
            + self.closed_budget
            + self.closed_protocol_error
            + self.closed_handler_error
            + self.closed_stop
        )

    def as_dict(self) -> dict[str, int]:
        """Every counter by name (``closed_<reason>`` for each reason); a snapshot."""
        return {
            "accepted": self.accepted,
            "bytes_in": self.bytes_in,
            "bytes_out": self.bytes_out,
            "messages_in": self.messages_in,
            "messages_out": self.messages_out,
            "backpressure_pauses": self.backpressure_pauses,
            "handler_errors": self.handler_errors,
            "busy_ns": self.busy_ns,
            "closed_eof": self.closed_eof,
            "closed_reset": self.closed_reset,
            "closed_error": self.closed_error,
            "closed_local": self.closed_local,
            "closed_idle": self.closed_idle,
            "closed_hard_cap": self.closed_hard_cap,
            "closed_budget": self.closed_budget,
            "closed_protocol_error": self.closed_protocol_error,
            "closed_handler_error": self.closed_handler_error,
            "closed_stop": self.closed_stop,
        }

    def __repr__(self) -> str:
        fields = " ".join(f"{k}={v}" for k, v in self.as_dict().items() if v)
        return f"<LoopStats {fields or 'empty'}>"
