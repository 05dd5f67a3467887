"""The ``gev`` entry point of gev-timers: hook implementations only."""

from __future__ import annotations

import argparse
from typing import Any

from gev_core import hookimpl

from ._service import TimerService


@hookimpl
def gev_addoption(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("gev-timers")
    group.add_argument(
        "--idle-time",
        type=float,
        default=None,
        metavar="SECONDS",
        help="close connections with no reads or writes for this long",
    )


@hookimpl
def gev_timer_service(server: Any) -> TimerService:
    idle_time = server.idle_time
    if idle_time is None:
        idle_time = server.config.options.get("idle_time")
    if idle_time is not None and not idle_time > 0:
        raise ValueError(f"idle_time must be a positive number of seconds, not {idle_time!r}")
    return TimerService(server, idle_time=idle_time)


@hookimpl
def gev_connection_made(connection: Any) -> None:
    service = connection.loop.server.timers
    if service.idle_time is not None:
        service.track(connection)


@hookimpl
def gev_connection_lost(connection: Any) -> None:
    service = connection.loop.server.timers
    if service.idle_time is not None:
        service.untrack(connection)
