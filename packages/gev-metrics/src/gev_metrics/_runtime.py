"""What the plugin sets up: per server (one process, or a worker) and per supervisor.

One process: the server's families live in a registry of their own (several servers may run in
one process), exported with the process's default registry (``process_*`` metrics and the
application's own prometheus_client metrics) at ``--metrics-address``.

``--workers N``: the supervisor makes a fresh directory, hands it to the workers as
``PROMETHEUS_MULTIPROC_DIR`` and exports the directory's aggregate (prometheus_client's
``MultiProcessCollector``); a worker that exits is marked dead, so its ``livesum`` gauge
series leave the sums while its counters keep counting in the totals.
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


@dataclass
class _SupervisorState:
    directory: str
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
    MultiProcessCollector(registry, path=directory)  # type: ignore[no-untyped-call]
    try:
        admin = _bind_admin(address, registry, ready=lambda: bool(supervisor.ready))
    except BaseException:
        shutil.rmtree(directory, ignore_errors=True)
        raise
    supervisor.worker_env[MULTIPROC_ENV] = directory
    with _lock:
        _supervisors[id(supervisor)] = _SupervisorState(directory, admin, own_directory=True)


def worker_exited(supervisor: Any, pid: int) -> None:
    with _lock:
        state = _supervisors.get(id(supervisor))
    if state is not None:
        mark_process_dead(pid, state.directory)  # type: ignore[no-untyped-call]


def supervisor_stopped(supervisor: Any) -> None:
    with _lock:
        state = _supervisors.pop(id(supervisor), None)
    if state is None:
        return
    state.admin.close()
    if state.own_directory:
        shutil.rmtree(state.directory, ignore_errors=True)
