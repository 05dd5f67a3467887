"""Topics and publish for gev: each message framed once, across loops, workers and hosts.

:class:`PubSub` is a hub of topics: ``subscribe(conn, topic)``, ``unsubscribe(conn, topic)``
and ``publish(topic, message)``, safe from any thread. A published message is framed once per
kind of framing (``gev_core.Protocol.shared_packer``) and each subscriber gets one write per
batch, on its own loop thread. :class:`TopicPolicy` says what happens to subscribers that do
not keep up. :class:`RedisBridge` carries messages between processes and hosts. The
module-level functions use a process-wide default hub (:func:`default_hub`), which ``gev serve
--pubsub-redis URL`` bridges.
"""

from __future__ import annotations

# First: with GEV_PURE_PYTHON=1 the modules below are then loaded from their .py source.
from . import _compiled
from .__about__ import __version__
from ._default import default_hub, publish, subscribe, unsubscribe, unsubscribe_all
from ._hub import DEFAULT_WATER_MARK, Bridge, PubSub, TopicPolicy
from ._redis import RedisBridge

COMPILED: bool = _compiled.package_is_compiled(__name__)
"""True when this package runs compiled code (a wheel built with a C compiler, and
``GEV_PURE_PYTHON`` not set); False for the pure-Python source. See the docs' "Compiled
code" page."""

__all__ = [
    "COMPILED",
    "DEFAULT_WATER_MARK",
    "Bridge",
    "PubSub",
    "RedisBridge",
    "TopicPolicy",
    "__version__",
    "default_hub",
    "publish",
    "subscribe",
    "unsubscribe",
    "unsubscribe_all",
]
