"""gev-metrics: Prometheus metrics and health endpoints for gev servers.

``gev serve app:App --metrics-address 127.0.0.1:9100`` serves, on that address:

* ``/metrics`` -- the ``gev_*`` families (see :class:`ServerMetrics`: connections open, accepted and
  closed by reason -- idle reaps, hard-cap closes, protocol and handler errors among them; bytes
  and messages in and out; backpressure pauses; handler errors; event loop lag and busy
  time -- ``gev_loop_busy_seconds_total``, seconds outside the poll wait), labelled
  ``protocol`` and ``worker``, plus the process's default prometheus_client registry;
* ``/healthz`` -- 200 while the process is alive (a liveness probe);
* ``/readyz`` -- 200 while the server accepts connections, 503 from the moment a drain or a
  stop begins (a readiness probe, a load balancer's health check).

With ``--workers N`` one scrape gives every worker: the supervisor serves the address and
exports what the workers write into a directory of its own (prometheus_client's multiprocess
mode), each series labelled with its ``worker``; ``/readyz`` is the supervisor's readiness.
Why one endpoint rather than one per worker: a Kubernetes probe and a load balancer check one
port per pod or host; a rolling restart runs the old and the new worker of a slot side by side,
which per-worker ports would make collide; and the counters of a replaced worker stay in the
totals instead of resetting.

Nothing of it runs per message but the loops' own increments (``loop.stats``,
:class:`LoopStats`; the plugin turns ``Server.count_traffic`` on for bytes and messages), and a
sampler thread reads the counts every ``--metrics-interval`` seconds.
"""

from __future__ import annotations

# First: with GEV_PURE_PYTHON=1 the modules below are then loaded from their .py source.
from . import _compiled
from .__about__ import __version__
from ._admin import AdminServer, parse_admin_address
from ._metrics import LAG_BUCKETS, ServerMetrics, protocol_label
from ._runtime import DEFAULT_INTERVAL, MULTIPROC_ENV
from ._stats import CLOSE_REASONS, COUNTER_FIELDS, LoopStats

COMPILED: bool = _compiled.package_is_compiled(__name__)
"""True when this package runs compiled code (a wheel built with a C compiler, and
``GEV_PURE_PYTHON`` not set); False for the pure-Python source. See the docs' "Compiled
code" page."""

__all__ = [
    "CLOSE_REASONS",
    "COMPILED",
    "COUNTER_FIELDS",
    "DEFAULT_INTERVAL",
    "LAG_BUCKETS",
    "MULTIPROC_ENV",
    "AdminServer",
    "LoopStats",
    "ServerMetrics",
    "__version__",
    "parse_admin_address",
    "protocol_label",
]
