"""The ``gev`` entry point of gev-pubsub: hook implementations only.

* ``gev_connection_lost``: a closed connection leaves every topic of every hub.
* ``gev serve --pubsub-redis URL [--pubsub-stream KEY]`` (or ``Server(options={"pubsub_redis":
  URL})``): bridge the default hub to Redis, so that ``gev_pubsub.publish`` on any worker of any
  host reaches the subscribers of all of them.
"""

from __future__ import annotations

import argparse
from typing import Any

from gev_core import hookimpl

from ._default import configure_redis, release_redis
from ._hub import connection_lost

__all__ = ["gev_addoption", "gev_configure", "gev_connection_lost", "gev_server_stopping"]

DEFAULT_STREAM = "gev:pubsub"


@hookimpl
def gev_addoption(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("pub/sub (gev-pubsub)")
    group.add_argument(
        "--pubsub-redis",
        default=None,
        metavar="URL",
        help="bridge gev_pubsub's default hub through this Redis (redis://host:port/db), so"
        " that a publish on any worker or host reaches the subscribers of all of them",
    )
    group.add_argument(
        "--pubsub-stream",
        default=None,
        metavar="KEY",
        help=f"the Redis stream the bridge uses (default {DEFAULT_STREAM})",
    )


@hookimpl
def gev_configure(config: Any) -> None:
    options = config.options
    url = options.get("pubsub_redis")
    if not url:
        return
    if not isinstance(url, str) or "://" not in url:
        raise ValueError(f"pubsub_redis must be a redis:// URL, not {url!r}")
    stream = options.get("pubsub_stream") or DEFAULT_STREAM
    if config.server is not None:
        configure_redis(config.server, url, stream)


@hookimpl
def gev_server_stopping(server: Any) -> None:
    release_redis(server)


@hookimpl
def gev_connection_lost(connection: Any) -> None:
    connection_lost(connection)
