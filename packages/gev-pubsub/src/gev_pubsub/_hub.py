"""Topics and fan-out inside one process.

Theory of operation. A :class:`PubSub` keeps, for every event loop that has subscribers, one
:class:`_LoopFanout`: the topics of that loop's connections and a queue of published messages.
``publish`` (any thread) appends the message to the queue of every such loop and, if that queue
was empty, schedules one flush with the loop's ``call_soon_threadsafe`` -- one wake-up per batch
however many messages arrive before the loop gets to it. The flush runs on the loop thread,
after the I/O events of the current iteration, and:

* frames each message once per *shared packer* (``Protocol.shared_packer``): every connection
  whose protocol answers with the same function gets the very same bytes object; connections
  whose framing is per-connection state (a compression context) are packed one by one with
  their protocol's ``pack``, still on their loop thread;
* writes each subscriber's share of the batch with one ``conn.write``: the frames of all the
  batch's messages it subscribes to, joined in publish order (when a batch carries one topic,
  that join too is done once per packer, not per subscriber);
* skips, or closes with a logged reason, a subscriber whose unsent output is above its
  topic's water mark (:class:`TopicPolicy`), so a slow reader costs bounded memory.

Ordering: a loop's queue is appended under its lock in publish order and drained in that order,
so messages from one publisher reach every subscriber in the order they were published (from
several publishers, in the order the loop received them). Subscribing from another thread is
queued the same way, so a message published after ``subscribe`` returned reaches the new
subscriber.

Lifetime: the plugin's ``gev_connection_lost`` hook removes a closed connection from every
topic of every hub; a loop with no subscribers left is forgotten, so a stopped server leaves
nothing behind.
"""

from __future__ import annotations

import logging
import threading
import weakref
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from gev_core import ConnectionClosed, write_shared

if TYPE_CHECKING:
    from gev_core import Connection, EventLoop

__all__ = ["DEFAULT_WATER_MARK", "Bridge", "PubSub", "TopicPolicy"]

logger = logging.getLogger("gev.pubsub")

#: Unsent bytes above which a subscriber counts as slow (uWebSockets' default backpressure).
DEFAULT_WATER_MARK = 64 * 1024

_SLOW_POLICIES = ("drop", "close")
# Framing errors are logged once per (protocol class, message type): a wrong message type is
# a bug of the application, and logging it per subscriber per message would flood the log.
_MAX_LOGGED_ERRORS = 256

Packer = Callable[[Any], bytes]


@dataclass(frozen=True)
class TopicPolicy:
    """What happens to a subscriber that does not keep up (see :meth:`PubSub.set_policy`).

    :param slow: ``"drop"`` -- the subscriber misses the messages published while its unsent
        output is above ``water_mark`` and gets the later ones once it has caught up -- or
        ``"close"`` -- it is closed at once (pending output discarded) with a WARNING naming
        the peer, the topic and the backlog.
    :param water_mark: unsent bytes (``conn.write_buffer_length``) above which the policy
        applies.
    """

    slow: str = "drop"
    water_mark: int = DEFAULT_WATER_MARK

    def __post_init__(self) -> None:
        if self.slow not in _SLOW_POLICIES:
            raise ValueError(f"slow must be 'drop' or 'close', not {self.slow!r}")
        if isinstance(self.water_mark, bool) or not isinstance(self.water_mark, int):
            raise TypeError("water_mark must be an int (bytes)")
        if self.water_mark < 0:
            raise ValueError("water_mark must be >= 0")


class Bridge(Protocol):
    """What carries messages between processes (:class:`~gev_pubsub.RedisBridge` is one).

    The hub calls ``start(deliver)`` once when the bridge is attached: the bridge calls
    ``deliver(topic, message)`` from any thread for each message published elsewhere.
    ``publish(topic, message)`` is called on the publisher's thread for every local publish; it
    must not block (queue and return) and may raise ``TypeError`` for a message it cannot
    carry. ``local_first`` tells whether this process's own messages go to its local
    subscribers directly (and the bridge does not deliver them again) or only through the
    bridge. ``close()`` stops it.
    """

    @property
    def local_first(self) -> bool: ...

    def start(self, deliver: Callable[[str, Any], None]) -> None: ...

    def publish(self, topic: str, message: Any) -> None: ...

    def close(self) -> None: ...


class _Message:
    """One published message, shared by the queues of every loop it goes to."""

    __slots__ = ("data", "frames", "topic")

    def __init__(self, topic: str, data: Any) -> None:
        self.topic = topic
        self.data = data
        # Shared packer -> frame; filled by whichever loop frames it first.
        self.frames: dict[Packer, bytes] | None = None


class _Control:
    """A subscription change asked for off the connection's loop thread, queued in order."""

    __slots__ = ("conn", "op", "topic")

    def __init__(self, op: str, conn: Connection, topic: str | None) -> None:
        self.op = op
        self.conn = conn
        self.topic = topic


def _check_topic(topic: Any) -> str:
    if type(topic) is not str:
        raise TypeError(f"a topic is a str, not {type(topic).__name__}")
    return topic


class PubSub:
    """Topics and publish, for the connections of any number of servers in this process.

    :param policy: the default :class:`TopicPolicy` for slow subscribers (drop above 64 KiB).
    :param bridge: carry messages to other processes and hosts (:class:`RedisBridge`); can
        also be attached later with :meth:`set_bridge`.

    ``subscribe``, ``unsubscribe`` and ``publish`` are safe from any thread. Messages are
    framed by each subscriber's protocol: ``str`` and ``bytes`` for WebSocket (text and binary
    messages), bytes for the default, line and length-field protocols, ``(type_name,
    payload)`` or a protobuf message for gev-protobuf. ``bytearray`` and ``memoryview`` are
    copied when published.
    """

    def __init__(self, *, policy: TopicPolicy | None = None, bridge: Bridge | None = None) -> None:
        self._lock = threading.Lock()
        self._loops: dict[EventLoop, _LoopFanout] = {}
        # Read without the lock by publishers: replaced, never mutated.
        self._fanouts: tuple[_LoopFanout, ...] = ()
        self._default_policy = policy if policy is not None else TopicPolicy()
        self._policies: dict[str, TopicPolicy] = {}
        self._bridge: Bridge | None = None
        self._logged: set[tuple[Any, ...]] = set()
        # Counters of fanouts that were forgotten (a loop with no subscribers left).
        self._retired = [0, 0, 0, 0]
        _register_hub(self)
        if bridge is not None:
            self.set_bridge(bridge)

    # ------------------------------------------------------------------ public API

    def subscribe(self, conn: Connection, topic: str) -> None:
        """Add ``conn`` to ``topic`` (idempotent). Safe from any thread.

        On the connection's loop thread it takes effect at once; from another thread it is
        queued to that loop, ahead of any message published afterwards.

        :raises ConnectionClosed: the connection is already closing or closed.
        """
        _check_topic(topic)
        if conn.closing:
            raise ConnectionClosed(f"{conn!r} is closed")
        loop = conn.loop
        if loop.in_loop_thread():
            self._fanout_for(loop).add(conn, topic)
        else:
            with self._lock:
                self._fanout_for_locked(loop).post(_Control("sub", conn, topic))

    def unsubscribe(self, conn: Connection, topic: str) -> None:
        """Remove ``conn`` from ``topic`` (no error if it was not subscribed). Any thread."""
        _check_topic(topic)
        self._change(conn, "unsub", topic)

    def unsubscribe_all(self, conn: Connection) -> None:
        """Remove ``conn`` from every topic. Any thread; closing a connection does this."""
        self._change(conn, "unsub_all", None)

    def publish(self, topic: str, message: Any) -> None:
        """Send ``message`` to every subscriber of ``topic``. Safe from any thread; never blocks.

        The message is framed once per kind of framing (see the module docs) and written on the
        subscribers' loop threads, in publish order. With a bridge, subscribers in other
        processes get it too. Errors of framing (a message the protocol cannot carry) are
        logged on the loop, once per protocol and message type.

        :raises TypeError: ``topic`` is not a ``str``, or the bridge cannot carry ``message``.
        """
        if type(topic) is not str:
            raise TypeError(f"a topic is a str, not {type(topic).__name__}")
        kind = type(message)
        if kind is not bytes and kind is not str and isinstance(message, (bytearray, memoryview)):
            message = bytes(message)
        bridge = self._bridge
        if bridge is not None:
            bridge.publish(topic, message)
            if not bridge.local_first:
                return
        msg = _Message(topic, message)
        for fanout in self._fanouts:
            fanout.post(msg)

    def set_policy(self, topic: str, policy: TopicPolicy | None) -> None:
        """Give ``topic`` its own slow-subscriber policy (``None``: back to the default)."""
        _check_topic(topic)
        with self._lock:
            if policy is None:
                self._policies.pop(topic, None)
            else:
                self._policies[topic] = policy

    def policy(self, topic: str) -> TopicPolicy:
        """The policy that applies to ``topic``."""
        return self._policies.get(topic, self._default_policy)

    def set_bridge(self, bridge: Bridge | None) -> None:
        """Attach a bridge to other processes (started here), or detach and close the current
        one with ``None``."""
        with self._lock:
            old, self._bridge = self._bridge, None
        if old is not None:
            old.close()
        if bridge is not None:
            bridge.start(self._deliver)
            self._bridge = bridge

    @property
    def bridge(self) -> Bridge | None:
        """The attached bridge, if any."""
        return self._bridge

    def subscriber_count(self, topic: str) -> int:
        """Subscribers of ``topic`` in this process (a snapshot; any thread)."""
        total = 0
        for fanout in self._fanouts:
            subs = fanout.subs.get(topic)
            if subs:
                total += len(subs)
        return total

    def topics(self) -> set[str]:
        """Topics with at least one subscriber in this process (a snapshot; any thread)."""
        found: set[str] = set()
        for fanout in self._fanouts:
            found.update(list(fanout.subs))
        return found

    def topics_of(self, conn: Connection) -> set[str]:
        """The topics ``conn`` is subscribed to (call it on the connection's loop thread)."""
        fanout = self._loops.get(conn.loop)
        if fanout is None:
            return set()
        return set(fanout.topics_of.get(conn, ()))

    def stats(self) -> dict[str, int]:
        """Counters since creation: ``deliveries`` (message copies written to subscribers),
        ``dropped`` (copies skipped for slow subscribers), ``evicted`` (slow subscribers
        closed), ``writes`` (``conn.write`` calls), ``subscriptions`` (current, all topics)."""
        delivered, dropped, evicted, writes = self._retired
        subs = 0
        for fanout in self._fanouts:
            delivered += fanout.delivered
            dropped += fanout.dropped
            evicted += fanout.evicted
            writes += fanout.writes
            subs += sum(len(s) for s in list(fanout.subs.values()))
        return {
            "deliveries": delivered,
            "dropped": dropped,
            "evicted": evicted,
            "writes": writes,
            "subscriptions": subs,
        }

    def close(self) -> None:
        """Close the bridge, if any. Subscriptions stay; local publishing keeps working."""
        self.set_bridge(None)

    def __repr__(self) -> str:
        return (
            f"<PubSub loops={len(self._fanouts)} topics={len(self.topics())}"
            f" bridge={self._bridge!r}>"
        )

    # ------------------------------------------------------------------ internals

    def _deliver(self, topic: str, message: Any) -> None:
        # A message from the bridge (another process, or this one with local_first off).
        msg = _Message(topic, message)
        for fanout in self._fanouts:
            fanout.post(msg)

    def _change(self, conn: Connection, op: str, topic: str | None) -> None:
        loop = conn.loop
        if loop.in_loop_thread():
            fanout = self._loops.get(loop)
            if fanout is not None:
                fanout.apply(_Control(op, conn, topic))
            return
        with self._lock:
            fanout = self._loops.get(loop)
            if fanout is not None:
                fanout.post(_Control(op, conn, topic))

    def _fanout_for(self, loop: EventLoop) -> _LoopFanout:
        fanout = self._loops.get(loop)
        if fanout is None:
            with self._lock:
                fanout = self._fanout_for_locked(loop)
        return fanout

    def _fanout_for_locked(self, loop: EventLoop) -> _LoopFanout:
        fanout = self._loops.get(loop)
        if fanout is None:
            _check_plugin(loop)
            fanout = _LoopFanout(self, loop)
            self._loops[loop] = fanout
            self._fanouts = (*self._fanouts, fanout)
        return fanout

    def _retire(self, fanout: _LoopFanout) -> None:
        # On the fanout's loop thread, once it has no subscribers left.
        with self._lock, fanout.lock:
            if fanout.pending or fanout.scheduled or fanout.topics_of:
                return  # something was queued meanwhile (a subscribe from another thread)
            if self._loops.get(fanout.loop) is not fanout:
                return
            del self._loops[fanout.loop]
            self._fanouts = tuple(f for f in self._fanouts if f is not fanout)
            retired = self._retired
            retired[0] += fanout.delivered
            retired[1] += fanout.dropped
            retired[2] += fanout.evicted
            retired[3] += fanout.writes

    def _connection_lost(self, conn: Connection) -> None:
        fanout = self._loops.get(conn.loop)
        if fanout is not None and conn in fanout.topics_of:
            fanout.drop(conn)

    def _log_once(self, key: tuple[Any, ...], message: str, *args: Any) -> None:
        # Called from an except block: the traceback goes with the first occurrence.
        if key in self._logged:
            return
        if len(self._logged) < _MAX_LOGGED_ERRORS:
            self._logged.add(key)
        logger.exception(message + " (logged once)", *args)


class _LoopFanout:
    """The subscribers of one hub on one loop, and that loop's queue of messages.

    Everything but :meth:`post` runs on the loop thread.
    """

    __slots__ = (
        "delivered",
        "dropped",
        "evicted",
        "hub",
        "lock",
        "loop",
        "pending",
        "scheduled",
        "snapshots",
        "subs",
        "topics_of",
        "writes",
    )

    def __init__(self, hub: PubSub, loop: EventLoop) -> None:
        self.hub = hub
        self.loop = loop
        self.lock = threading.Lock()
        self.pending: list[_Message | _Control] = []
        self.scheduled = False
        #: topic -> its subscribers on this loop, in subscription order (a dict as ordered set)
        self.subs: dict[str, dict[Connection, None]] = {}
        #: topic -> its subscribers as a tuple, made on the first delivery after a change: a
        #: delivery iterates a snapshot (a write that fails closes its connection, whose hook
        #: edits ``subs``), and copying 10,000 subscribers per published message would cost
        #: a share of every delivery.
        self.snapshots: dict[str, tuple[Connection, ...]] = {}
        #: connection -> its topics
        self.topics_of: dict[Connection, set[str]] = {}
        self.delivered = 0
        self.dropped = 0
        self.evicted = 0
        self.writes = 0

    def post(self, item: _Message | _Control) -> None:
        """Queue a message or a subscription change; any thread."""
        with self.lock:
            self.pending.append(item)
            if self.scheduled:
                return
            self.scheduled = True
        self.loop.call_soon_threadsafe(self.flush)

    # ------------------------------------------------------------------ subscriptions

    def add(self, conn: Connection, topic: str) -> None:
        if conn.closing:
            return  # closed before a queued subscribe got here: never hold it
        hub = self.hub
        if hub._loops.get(self.loop) is not self:
            # This fanout was retired (its last subscriber left earlier in this flush): the
            # subscription belongs to the one publishers see.
            target = hub._fanout_for(self.loop)
            if target is not self:
                target.add(conn, topic)
                return
        topics = self.topics_of.get(conn)
        if topics is None:
            topics = self.topics_of[conn] = set()
        topics.add(topic)
        subs = self.subs.get(topic)
        if subs is None:
            subs = self.subs[topic] = {}
        if conn not in subs:
            subs[conn] = None
            self.snapshots.pop(topic, None)

    def remove(self, conn: Connection, topic: str) -> None:
        topics = self.topics_of.get(conn)
        if topics is None or topic not in topics:
            return
        topics.discard(topic)
        if not topics:
            del self.topics_of[conn]
        self._remove_sub(conn, topic)
        if not self.topics_of:
            self.hub._retire(self)

    def drop(self, conn: Connection) -> None:
        topics = self.topics_of.pop(conn, None)
        if topics is None:
            return
        for topic in topics:
            self._remove_sub(conn, topic)
        if not self.topics_of:
            self.hub._retire(self)

    def _remove_sub(self, conn: Connection, topic: str) -> None:
        subs = self.subs.get(topic)
        if subs is not None and conn in subs:
            del subs[conn]
            self.snapshots.pop(topic, None)
            if not subs:
                del self.subs[topic]

    def apply(self, control: _Control) -> None:
        op = control.op
        if op == "sub":
            assert control.topic is not None
            self.add(control.conn, control.topic)
        elif op == "unsub":
            assert control.topic is not None
            self.remove(control.conn, control.topic)
        else:
            self.drop(control.conn)

    # ------------------------------------------------------------------ delivery

    def flush(self) -> None:
        with self.lock:
            batch = self.pending
            self.pending = []
            self.scheduled = False
        start = 0
        for i, item in enumerate(batch):
            if type(item) is _Control:
                if start < i:
                    self._deliver(batch[start:i])  # type: ignore[arg-type]
                self.apply(item)
                start = i + 1
        if start == 0:
            self._deliver(batch)  # type: ignore[arg-type]
        elif start < len(batch):
            self._deliver(batch[start:])  # type: ignore[arg-type]
        if not self.topics_of:
            self.hub._retire(self)

    def _deliver(self, msgs: list[_Message]) -> None:
        topic = msgs[0].topic
        if len(msgs) == 1 or all(m.topic == topic for m in msgs):
            snapshot = self.snapshots.get(topic)
            if snapshot is None:
                subs = self.subs.get(topic)
                if not subs:
                    return
                snapshot = self.snapshots[topic] = tuple(subs)
            self._send(topic, snapshot, msgs)
            return
        by_topic: dict[str, list[_Message]] = {}
        for m in msgs:
            group = by_topic.get(m.topic)
            if group is None:
                by_topic[m.topic] = [m]
            else:
                group.append(m)
        topics_of = self.topics_of
        merged: dict[Connection, list[str]] = {}
        for topic, group in by_topic.items():
            subs = self.subs.get(topic)
            if not subs:
                continue
            alone: list[Connection] = []
            for conn in subs:
                if len(topics_of[conn]) == 1:
                    alone.append(conn)
                else:
                    mine = merged.get(conn)
                    if mine is None:
                        merged[conn] = [topic]
                    else:
                        mine.append(topic)
            if alone:
                self._send(topic, alone, group)
        for conn, topics in merged.items():
            if len(topics) == 1:
                self._send(topics[0], (conn,), by_topic[topics[0]])
            else:
                wanted = set(topics)
                self._send_merged(conn, [m for m in msgs if m.topic in wanted])

    def _send(self, topic: str, conns: Iterable[Connection], msgs: list[_Message]) -> None:
        """Write ``msgs`` (all of ``topic``) to each of ``conns``: one write per connection."""
        hub = self.hub
        policy = hub._policies.get(topic, hub._default_policy)
        count = len(msgs)

        def frame(packer: Packer) -> bytes:
            return self._frame(packer, msgs)

        written, slow, unshared = write_shared(conns, frame, policy.water_mark)
        delivered = written * count
        writes = written
        for conn in unshared:
            try:
                data = self._pack_each(conn, msgs)
                if data:
                    conn.write(data)
                    writes += 1
                    delivered += count
            except ConnectionClosed:
                pass  # closing: the close hook takes it out of its topics
        if slow:
            if policy.slow == "close":
                for conn in slow:
                    self._evict(conn, topic, policy.water_mark)
            else:
                self.dropped += count * len(slow)
        self.delivered += delivered
        self.writes += writes

    def _send_merged(self, conn: Connection, msgs: list[_Message]) -> None:
        """One connection subscribed to several topics of this batch: its messages in order."""
        hub = self.hub
        policies = hub._policies
        default = hub._default_policy
        try:
            backlog = conn.write_buffer_length
            keep: list[_Message] = []
            for m in msgs:
                policy = policies.get(m.topic, default)
                if backlog > policy.water_mark:
                    if policy.slow == "close":
                        self._evict(conn, m.topic, policy.water_mark)
                        return
                    self.dropped += 1
                else:
                    keep.append(m)
            if not keep:
                return
            packer = conn.protocol.shared_packer(conn)
            data = self._pack_each(conn, keep) if packer is None else self._frame(packer, keep)
            if data:
                conn.write(data)
                self.writes += 1
                self.delivered += len(keep)
        except ConnectionClosed:
            pass

    def _frame(self, packer: Packer, msgs: list[_Message]) -> bytes:
        """The frames of ``msgs`` by a shared packer, joined; each framed once per process."""
        frames: list[bytes] = []
        for m in msgs:
            cache = m.frames
            if cache is None:
                cache = m.frames = {}
            frame = cache.get(packer)
            if frame is None:
                try:
                    frame = packer(m.data)
                    if type(frame) is not bytes:
                        frame = bytes(frame)
                except Exception:
                    self.hub._log_once(
                        (packer, type(m.data)),
                        "gev-pubsub: %s cannot frame a %s published to topic %r; not sent",
                        getattr(packer, "__qualname__", None) or repr(packer),
                        type(m.data).__name__,
                        m.topic,
                    )
                    frame = b""
                cache[packer] = frame
            frames.append(frame)
        return frames[0] if len(frames) == 1 else b"".join(frames)

    def _pack_each(self, conn: Connection, msgs: list[_Message]) -> bytes:
        """Per-connection framing (the protocol keeps state per connection), on its loop."""
        protocol = conn.protocol
        frames = []
        for m in msgs:
            try:
                frame = protocol.pack(conn, m.data)
            except ConnectionClosed:
                raise
            except Exception:
                self.hub._log_once(
                    (type(protocol), type(m.data)),
                    "gev-pubsub: %s cannot frame a %s published to topic %r; not sent",
                    type(protocol).__name__,
                    type(m.data).__name__,
                    m.topic,
                )
                continue
            if frame:
                frames.append(frame)
        if not frames:
            return b""
        return bytes(frames[0]) if len(frames) == 1 else b"".join(frames)

    def _evict(self, conn: Connection, topic: str, mark: int) -> None:
        logger.warning(
            "closing %r: slow subscriber of topic %r (%d bytes unsent, water mark %d)",
            conn,
            topic,
            conn.write_buffer_length,
            mark,
        )
        self.evicted += 1
        conn.abort()


# ---------------------------------------------------------------------- hubs of this process

_hubs_lock = threading.Lock()
_hubs: tuple[weakref.ref[PubSub], ...] = ()


def _register_hub(hub: PubSub) -> None:
    global _hubs
    with _hubs_lock:
        _hubs = (*(r for r in _hubs if r() is not None), weakref.ref(hub))


def connection_lost(conn: Connection) -> None:
    """Remove a closed connection from the topics of every hub (the plugin's hook calls it)."""
    for ref in _hubs:
        hub = ref()
        if hub is not None:
            hub._connection_lost(conn)


_checked: weakref.WeakKeyDictionary[Any, bool] = weakref.WeakKeyDictionary()


def _check_plugin(loop: EventLoop) -> None:
    """Refuse to hold subscribers of a server whose close notifications would not reach us."""
    server = loop.server
    ok = _checked.get(server)
    if ok is None:
        from . import plugin

        ok = _checked[server] = bool(server.pluginmanager.is_registered(plugin))
    if not ok:
        raise RuntimeError(
            "gev-pubsub's plugin (entry point 'pubsub', module gev_pubsub.plugin) is not"
            " registered with this server's plugin manager, so closed connections would never"
            " leave their topics; don't block it (GEV_DISABLED_PLUGINS) or register it"
            " yourself: pm.register(gev_pubsub.plugin)"
        )
