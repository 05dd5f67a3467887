"""What the plugin sets up: per server (one process, or a worker) and per supervisor.

One process: the server's families live in a registry of their own (several servers may run in
one process), exported with the process's default registry (``process_*`` metrics and the
application's own prometheus_client metrics) at ``--metrics-address``.

``--workers N``: the supervisor makes a fresh directory, hands it to the workers as
``PROMETHEUS_MULTIPROC_DIR`` and exports the directory's aggregate (prometheus_client's
``MultiProcessCollector``); a worker that exits is marked dead, so its ``livesum`` gauge
series leave the sums while its counters keep counting in the totals. Its counter and histogram
files are then folded into one ``<type>_retired.db`` per type and removed, so that a server
restarted many times (every SIGHUP replaces every worker) keeps a directory, and a scrape, of
constant size.
"""

from __future__ import annotations

import errno
import logging
import os
import shutil
import tempfile
import threading
from dataclasses import dataclass
from typing import Any

from prometheus_client import REGISTRY, CollectorRegistry
from prometheus_client.mmap_dict import MmapedDict
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead

from ._admin import AdminServer, parse_admin_address
from ._metrics import ServerMetrics

logger = logging.getLogger("gev.metrics")

#: prometheus_client's multiprocess directory variable; the supervisor sets it for workers.
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
#: Seconds between two samples of the loops (``--metrics-interval``).
DEFAULT_INTERVAL = 1.0


class _DefaultRegistry:
    """Exports the process's default registry too (``process_*``, the application's own)."""

    def collect(self) -> Any:
        return REGISTRY.collect()


@dataclass
class _ServerState:
    metrics: ServerMetrics
    admin: AdminServer | None


#: The file types whose values outlive their process, summed in the totals.
_FOLDED_TYPES = ("counter", "histogram", "summary")


class _Directory:
    """The workers' multiprocess directory, exported as prometheus_client's aggregate.

    Folding an exited worker's files into the retired ones and a scrape exclude each other:
    a scrape between the write of the sum and the removal of the worker's file would count
    its values twice.
    """

    def __init__(self, path: str) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._collector = MultiProcessCollector(None, path=path)  # type: ignore[no-untyped-call]

    def collect(self) -> Any:
        with self._lock:
            return list(self._collector.collect())  # type: ignore[no-untyped-call]

    def retire(self, pid: int) -> None:
        """Worker ``pid`` has exited: drop its live gauges, fold its counters and histograms."""
        with self._lock:
            mark_process_dead(pid, self.path)  # type: ignore[no-untyped-call]
            for kind in _FOLDED_TYPES:
                name = os.path.join(self.path, f"{kind}_{pid}.db")
                if not os.path.exists(name):
                    continue
                values = list(MmapedDict.read_all_values_from_file(name))  # type: ignore[no-untyped-call]
                retired = MmapedDict(os.path.join(self.path, f"{kind}_retired.db"))  # type: ignore[no-untyped-call]
                try:
                    for key, value, timestamp, _ in values:
                        total, _ = retired.read_value(key)  # type: ignore[no-untyped-call]
                        retired.write_value(key, total + value, timestamp)  # type: ignore[no-untyped-call]
                finally:
                    retired.close()  # type: ignore[no-untyped-call]
                os.remove(name)


@dataclass
class _SupervisorState:
    directory: _Directory
    admin: AdminServer
    own_directory: bool


_lock = threading.Lock()
_servers: dict[int, _ServerState] = {}
_supervisors: dict[int, _SupervisorState] = {}


def _settings(options: Any) -> tuple[str | None, float]:
    address = options.get("metrics_address")
    interval = options.get("metrics_interval")
    if not address:
        if interval is not None:
            raise ValueError("--metrics-interval needs --metrics-address (metrics_address)")
        return None, DEFAULT_INTERVAL
    if not isinstance(address, str):
        raise ValueError(f"metrics_address must be 'HOST:PORT', not {address!r}")
    parse_admin_address(address)
    interval = DEFAULT_INTERVAL if interval is None else float(interval)
    if not interval > 0:
        raise ValueError("metrics_interval must be > 0 seconds")
    return address, interval


def _bind_admin(address: str, registry: CollectorRegistry, **kwargs: Any) -> AdminServer:
    try:
        return AdminServer(address, registry, **kwargs)
    except OSError as exc:
        raise OSError(
            exc.errno or errno.EADDRINUSE, f"cannot serve metrics on {address}: {exc}"
        ) from None


def configure_server(config: Any) -> None:
    address, interval = _settings(config.options)
    server = config.server
    if address is None or server is None:
        return
    worker_index = config.options.get("worker_index")
    if worker_index is not None:
        if not os.environ.get(MULTIPROC_ENV):
            logger.warning(
                "worker %s: metrics requested but the supervisor gave no metrics directory"
                " (%s); this worker's metrics are not exported",
                worker_index,
                MULTIPROC_ENV,
            )
            return
        metrics = ServerMetrics(server, registry=None, worker=str(worker_index), interval=interval)
        admin = None
    else:
        registry = CollectorRegistry()
        registry.register(_DefaultRegistry())
        metrics = ServerMetrics(server, registry=registry, worker="0", interval=interval)
        admin = _bind_admin(
            address, registry, ready=lambda: bool(server.ready), before_scrape=metrics.sync
        )
    # The loops count bytes and messages only when asked: what it costs per message is paid
    # by servers that export metrics, never by the others.
    server.count_traffic = True
    with _lock:
        _servers[id(server)] = _ServerState(metrics, admin)


def server_started(server: Any) -> None:
    with _lock:
        state = _servers.get(id(server))
    if state is not None:
        state.metrics.start()


def server_stopped(server: Any) -> None:
    with _lock:
        state = _servers.pop(id(server), None)
    if state is None:
        return
    state.metrics.stop()  # the last sample: every connection has closed
    if state.admin is not None:
        state.admin.close()


def supervisor_started(supervisor: Any) -> None:
    address, _ = _settings(supervisor.config.options)
    if address is None:
        return
    directory = tempfile.mkdtemp(prefix="gev-metrics-")
    registry = CollectorRegistry()
    folder = _Directory(directory)
    registry.register(folder)
    try:
        admin = _bind_admin(address, registry, ready=lambda: bool(supervisor.ready))
    except BaseException:
        shutil.rmtree(directory, ignore_errors=True)
        raise
    supervisor.worker_env[MULTIPROC_ENV] = directory
    with _lock:
        _supervisors[id(supervisor)] = _SupervisorState(folder, admin, own_directory=True)


def worker_exited(supervisor: Any, pid: int) -> None:
    with _lock:
        state = _supervisors.get(id(supervisor))
    if state is not None:
        state.directory.retire(pid)


def supervisor_stopped(supervisor: Any) -> None:
    with _lock:
        state = _supervisors.pop(id(supervisor), None)
    if state is None:
        return
    state.admin.close()
    if state.own_directory:
        shutil.rmtree(state.directory.path, ignore_errors=True)
