"""The process-wide default hub behind the module-level functions, and its Redis bridge
configured from ``gev serve --pubsub-redis`` / ``Server(options={"pubsub_redis": ...})``."""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any

from ._hub import PubSub

if TYPE_CHECKING:
    from gev_core import Connection

__all__ = ["default_hub", "publish", "subscribe", "unsubscribe", "unsubscribe_all"]

_lock = threading.Lock()
_hub: PubSub | None = None
# Servers whose configuration asked for the default hub's bridge; it closes with the last one.
_bridge_users: set[int] = set()


def default_hub() -> PubSub:
    """The hub used by :func:`subscribe`, :func:`publish` and ``gev serve --pubsub-redis``."""
    global _hub
    hub = _hub
    if hub is None:
        with _lock:
            if _hub is None:
                _hub = PubSub()
            hub = _hub
    return hub


def subscribe(conn: Connection, topic: str) -> None:
    """``default_hub().subscribe(conn, topic)``: add ``conn`` to ``topic``. Any thread."""
    default_hub().subscribe(conn, topic)


def unsubscribe(conn: Connection, topic: str) -> None:
    """``default_hub().unsubscribe(conn, topic)``. Any thread."""
    default_hub().unsubscribe(conn, topic)


def unsubscribe_all(conn: Connection) -> None:
    """``default_hub().unsubscribe_all(conn)``. Any thread."""
    default_hub().unsubscribe_all(conn)


def publish(topic: str, message: Any) -> None:
    """``default_hub().publish(topic, message)``: send to every subscriber. Any thread."""
    default_hub().publish(topic, message)


def configure_redis(server: Any, url: str, stream: str) -> None:
    """Bridge the default hub to Redis for ``server`` (from the plugin's ``gev_configure``)."""
    from ._redis import RedisBridge

    hub = default_hub()
    with _lock:
        bridge = hub.bridge
        if bridge is None:
            hub.set_bridge(RedisBridge(url, stream=stream))
        elif (getattr(bridge, "url", None), getattr(bridge, "stream", None)) != (url, stream):
            raise ValueError(
                f"the default gev-pubsub hub is already bridged to {bridge!r}; one process"
                " bridges it to one Redis stream"
            )
        _bridge_users.add(id(server))


def release_redis(server: Any) -> None:
    """``server`` is stopping: close the default hub's bridge if no other server uses it."""
    with _lock:
        if id(server) not in _bridge_users:
            return
        _bridge_users.discard(id(server))
        last = not _bridge_users
    if last:
        default_hub().set_bridge(None)
