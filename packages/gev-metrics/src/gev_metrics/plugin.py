"""The ``gev`` entry point of gev-metrics: hook implementations only.

``gev serve --metrics-address HOST:PORT`` (or ``Server(options={"metrics_address": ...})``):

* one process: the server's metrics and its readiness on that address;
* ``--workers N``: the supervisor serves the address; each worker writes its metrics into a
  directory of the supervisor's (prometheus_client's multiprocess mode), so one scrape gives
  every worker's series, labelled ``worker="0"`` to ``"N-1"``, and ``/readyz`` is the
  supervisor's readiness. See :mod:`gev_metrics` for why.
"""

from __future__ import annotations

import argparse
from typing import Any

from gev_core import hookimpl

from ._runtime import (
    configure_server,
    server_started,
    server_stopped,
    supervisor_started,
    supervisor_stopped,
    worker_exited,
)

__all__ = [
    "gev_addoption",
    "gev_configure",
    "gev_server_started",
    "gev_server_stopped",
    "gev_supervisor_started",
    "gev_supervisor_stopped",
    "gev_worker_exited",
]


def _interval(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid number of seconds: {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be > 0, not {text}")
    return value


@hookimpl
def gev_addoption(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("metrics (gev-metrics)")
    group.add_argument(
        "--metrics-address",
        default=None,
        metavar="HOST:PORT",
        help="serve Prometheus metrics (/metrics) and health probes (/healthz, /readyz) here;"
        " with --workers the supervisor serves one scrape for all workers",
    )
    group.add_argument(
        "--metrics-interval",
        type=_interval,
        default=None,
        metavar="SECONDS",
        help="how often the event loops' counters and lag are sampled (default 1)",
    )


@hookimpl
def gev_configure(config: Any) -> None:
    configure_server(config)


@hookimpl
def gev_server_started(server: Any) -> None:
    server_started(server)


@hookimpl
def gev_server_stopped(server: Any) -> None:
    server_stopped(server)


@hookimpl
def gev_supervisor_started(supervisor: Any) -> None:
    supervisor_started(supervisor)


@hookimpl
def gev_worker_exited(supervisor: Any, pid: int) -> None:
    worker_exited(supervisor, pid)


@hookimpl
def gev_supervisor_stopped(supervisor: Any) -> None:
    supervisor_stopped(supervisor)
