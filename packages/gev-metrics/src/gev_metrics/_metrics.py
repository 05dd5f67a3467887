"""The metric families of a gev server, and the sampler that feeds them from its loops.

Families (labels ``protocol`` and ``worker`` on all; ``reason`` and ``loop`` where said), each
counter read from the field of gev-core's ``loop.stats`` named in :data:`COUNTER_FIELDS`:

=====================================  =========  ==========================================
``gev_connections_open``               gauge      connections open now
``gev_connections_accepted_total``     counter    connections accepted
``gev_connections_closed_total``       counter    connections closed, by ``reason`` (idle
                                                  reaps: ``idle``; output over the hard cap:
                                                  ``hard_cap``; ...)
``gev_received_bytes_total``           counter    bytes read from connections
``gev_sent_bytes_total``               counter    bytes written to them
``gev_received_messages_total``        counter    messages handed to the handler
``gev_sent_messages_total``            counter    replies and sends
``gev_backpressure_pauses_total``      counter    reads paused by unsent output
``gev_handler_errors_total``           counter    handler or protocol code that raised
``gev_loop_busy_seconds_total``        counter    seconds the loops spent outside their poll
                                                  wait (its rate over the number of loops:
                                                  how busy they are, 1.0 saturated)
``gev_loop_lag_seconds``               histogram  how late a task queued to a loop ran (``loop``)
=====================================  =========  ==========================================

Nothing here runs per message: the loops increment plain integers (bytes and messages only
while ``Server.count_traffic`` is on, which this package turns on), and a sampler thread reads
them every ``interval`` seconds (and, in a single process, right before each scrape) and adds the
differences to the Prometheus counters.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from ._stats import BUSY_FIELD, CLOSE_REASONS, COUNTER_FIELDS

__all__ = ["LAG_BUCKETS", "ServerMetrics", "protocol_label"]

logger = logging.getLogger("gev.metrics")

#: Buckets of ``gev_loop_lag_seconds``: from a loop that is idle (tens of microseconds) to one
#: that is blocked.
LAG_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
               0.5, 1.0, 2.5, 5.0, 10.0)  # fmt: skip

_LABELS = ("protocol", "worker")
_HELP = {
    "gev_connections_accepted_total": "Connections accepted",
    "gev_received_bytes_total": "Bytes read from connections",
    "gev_sent_bytes_total": "Bytes written to connections",
    "gev_received_messages_total": "Messages handed to the handler",
    "gev_sent_messages_total": "Replies and sends framed for writing",
    "gev_backpressure_pauses_total": "Times a connection stopped reading: unsent output above"
    " high_water",
    "gev_handler_errors_total": "Exceptions raised by handler or protocol code",
    "gev_loop_busy_seconds_total": "Seconds the event loops spent outside their poll wait"
    " (handling events, timers and tasks)",
}
_BUSY = "gev_loop_busy_seconds_total"


def protocol_label(server: Any) -> str:
    """The ``protocol`` label of a server's metrics: its protocol's name, or the names of the
    protocols one listener serves joined with ``+`` (``"websocket+protobuf"``)."""
    protocol = server.protocol
    names = getattr(protocol, "candidates", None)
    if isinstance(names, list) and names:
        return "+".join(map(str, names))
    return str(getattr(protocol, "name", "") or type(protocol).__name__)


class _Families:
    def __init__(self, registry: CollectorRegistry | None) -> None:
        def counter(name: str, doc: str, labels: Sequence[str] = _LABELS) -> Counter:
            # prometheus_client appends _total itself.
            return Counter(name.removesuffix("_total"), doc, labels, registry=registry)

        self.counters = {name: counter(name, doc) for name, doc in _HELP.items()}
        self.closed = counter(
            "gev_connections_closed_total", "Connections closed, by reason", (*_LABELS, "reason")
        )
        self.open = Gauge(
            "gev_connections_open",
            "Connections open",
            _LABELS,
            registry=registry,
            multiprocess_mode="livesum",
        )
        self.lag = Histogram(
            "gev_loop_lag_seconds",
            "How late a task queued to the event loop ran (sampled)",
            (*_LABELS, "loop"),
            registry=registry,
            buckets=LAG_BUCKETS,
        )


class ServerMetrics:
    """The metrics of one :class:`~gev_core.Server`, fed from its loops.

    :param server: the server (its loops exist already).
    :param registry: where the families are registered; ``None`` in a worker under
        prometheus_client's multiprocess mode, where values go to the shared directory and the
        supervisor exports them.
    :param worker: the ``worker`` label.
    :param interval: seconds between samples of the loops (counters, loop lag); ``0``: no
        sampling thread, only :meth:`sync` calls.

    Built while the server is being configured; the protocol label is read at the first
    sample, once the server knows its protocol.
    """

    def __init__(
        self,
        server: Any,
        *,
        registry: CollectorRegistry | None,
        worker: str = "0",
        interval: float = 1.0,
    ) -> None:
        self.server = server
        self.interval = interval
        self.worker = worker
        self._labels: dict[str, str] | None = None
        self._families = _Families(registry)
        self._last: dict[tuple[int, str], int] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._inc: dict[str, Callable[[float], None]] = {}

    @property
    def labels(self) -> dict[str, str]:
        """The ``protocol`` and ``worker`` labels of this server's series."""
        if self._labels is None:
            self._labels = {"protocol": protocol_label(self.server), "worker": self.worker}
        return self._labels

    # ------------------------------------------------------------------ sampling

    def _counter(self, family: str, reason: str | None = None) -> Callable[[float], None]:
        key = family if reason is None else f"{family}:{reason}"
        inc = self._inc.get(key)
        if inc is None:
            if reason is None:
                inc = self._families.counters[family].labels(**self.labels).inc
            else:
                inc = self._families.closed.labels(**self.labels, reason=reason).inc
            self._inc[key] = inc
        return inc

    def _add(self, loop: int, field: str, value: int, inc: Callable[[float], None]) -> None:
        last = self._last.get((loop, field), 0)
        if value > last:
            inc(value - last)
        self._last[loop, field] = value

    def sync(self) -> None:
        """Read every loop's counters and add what changed since the last call. Any thread."""
        loops = getattr(self.server, "loops", None)
        if loops is None:  # scraped while the server is still being built
            return
        with self._lock:
            open_now = 0
            for loop in loops:
                index = loop.index
                open_now += loop.connection_count
                stats = loop.stats
                for field, family in COUNTER_FIELDS.items():
                    value = getattr(stats, field, None)
                    if isinstance(value, int):
                        self._add(index, field, value, self._counter(family))
                busy = getattr(stats, BUSY_FIELD, None)
                if isinstance(busy, int):
                    last = self._last.get((index, BUSY_FIELD), 0)
                    inc = self._counter(_BUSY)  # the series exists from the first sample
                    if busy > last:
                        inc((busy - last) / 1e9)
                    self._last[index, BUSY_FIELD] = busy
                for reason in CLOSE_REASONS:
                    value = getattr(stats, "closed_" + reason, None)
                    if isinstance(value, int):
                        self._add(
                            index,
                            "closed_" + reason,
                            value,
                            self._counter("gev_connections_closed_total", reason),
                        )
            self._families.open.labels(**self.labels).set(open_now)

    def probe_lag(self) -> None:
        """Queue a task to each loop that records how late it ran (``gev_loop_lag_seconds``)."""
        for loop in self.server.loops:
            observe = self._families.lag.labels(**self.labels, loop=str(loop.index)).observe
            loop.call_soon_threadsafe(_lag_done, observe, time.monotonic())

    # ------------------------------------------------------------------ the sampling thread

    def start(self) -> None:
        """Start sampling every ``interval`` seconds (a daemon thread)."""
        if self.interval <= 0 or self._thread is not None:
            return
        self._thread = threading.Thread(target=self._run, name="gev-metrics-sampler", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.sync()
                if self.server.ready:
                    self.probe_lag()
            except Exception:
                logger.exception("sampling the loops failed")

    def stop(self) -> None:
        """Stop the sampling thread and take a last sample (the loops have stopped)."""
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(self.interval + 5)
        self.sync()


def _lag_done(observe: Callable[[float], None], queued: float) -> None:
    observe(time.monotonic() - queued)
