"""Fan-out across processes and hosts through one Redis stream.

Why a stream (``XADD`` / ``XREAD``) and not Redis pub/sub: pub/sub delivers only to clients
connected at that instant, so whatever is published while a bridge reconnects is gone, and a
publisher that replays its backlog after an outage cannot know whether the other hosts have
resubscribed yet. A stream keeps the entries (bounded by ``MAXLEN ~``), and entry IDs grow with
time even across a Redis restart, so a reader resuming from its last ID gets everything added
since -- including the backlog publishers flush when Redis is back. The costs: one stream that
every host reads whole (no per-topic interest in Redis; filtering is a dict lookup here), and
Redis memory for ``maxlen`` entries.

Delivery is at most once per subscriber, in publish order per publisher:

* every entry carries its publisher's origin id and sequence number; a reader drops what it has
  seen (a batch resent after a broken connection) and counts and logs gaps (entries lost with
  a Redis that died before every host had read them);
* publishes never block or fail for Redis: while it is unreachable they queue in a bounded
  buffer (``max_pending`` messages, ``max_pending_bytes``), flushed in order once it is back;
  when the buffer is full, newer messages are not queued (counted as ``dropped`` and logged) --
  local subscribers still get them;
* both directions reconnect by themselves, with a capped exponential back-off.
"""

from __future__ import annotations

import collections
import logging
import os
import threading
import time
from collections.abc import Callable
from typing import Any

__all__ = ["RedisBridge"]

logger = logging.getLogger("gev.pubsub.redis")

_KIND_TEXT = b"s"
_KIND_BYTES = b"b"
_KIND_PAIR = b"p"
_SEEN_ORIGINS_MAX = 4096
_WRITE_BATCH = 512


def _encode(message: Any) -> tuple[bytes, bytes, bytes]:
    """``(kind, data, type name)`` of a message, or ``TypeError``."""
    if type(message) is str:
        return _KIND_TEXT, message.encode(), b""
    if isinstance(message, (bytes, bytearray, memoryview)):
        return _KIND_BYTES, bytes(message), b""
    if isinstance(message, tuple) and len(message) == 2 and isinstance(message[0], str):
        name, payload = message
        serialize = getattr(payload, "SerializeToString", None)
        if callable(serialize):  # a protobuf message
            payload = serialize()
        if isinstance(payload, (bytes, bytearray, memoryview)):
            return _KIND_PAIR, bytes(payload), name.encode()
    raise TypeError(
        f"the Redis bridge carries str, bytes-like and (type_name, bytes | protobuf message)"
        f" messages, not {type(message).__name__}"
    )


def _decode(kind: bytes, data: bytes, name: bytes) -> Any:
    if kind == _KIND_TEXT:
        return data.decode()
    if kind == _KIND_PAIR:
        return name.decode(), data
    return data


def _id_key(entry_id: bytes) -> tuple[int, int]:
    ms, _, seq = entry_id.partition(b"-")
    return int(ms), int(seq or 0)


class RedisBridge:
    """Carries a :class:`~gev_pubsub.PubSub`'s messages to every process using the same stream.

    :param url: the Redis server, ``redis://host:port/db`` (anything ``redis.Redis.from_url``
        takes).
    :param stream: the stream key; hubs that share it share their topics.
    :param local_first: this process's subscribers get its own messages directly, without a
        round trip through Redis (the default). Messages of one publisher keep their order
        everywhere either way; with ``False`` every message, local or not, takes its place in
        the single order of the stream, so all hosts see messages of different publishers in
        the same order.
    :param max_pending: messages kept while Redis is unreachable; newer ones are dropped (for
        other processes only) once this many wait.
    :param max_pending_bytes: the same bound in payload bytes.
    :param maxlen: approximate length the stream is trimmed to (``XADD MAXLEN ~``): how far a
        reader may fall behind, or be away, and still catch up.
    :param block: seconds a read waits for new entries before asking again.
    :param reconnect_max: longest pause between two reconnection attempts, in seconds.
    :param redis_options: extra keyword arguments for ``redis.Redis.from_url``.

    Needs the ``redis`` package (``pip install "gev-pubsub[redis]"``).
    """

    def __init__(
        self,
        url: str = "redis://127.0.0.1:6379/0",
        *,
        stream: str = "gev:pubsub",
        local_first: bool = True,
        max_pending: int = 10_000,
        max_pending_bytes: int = 16 * 1024 * 1024,
        maxlen: int = 100_000,
        block: float = 1.0,
        reconnect_max: float = 5.0,
        redis_options: dict[str, Any] | None = None,
    ) -> None:
        try:
            import redis
        except ImportError:
            raise ImportError(
                'RedisBridge needs the redis package: pip install "gev-pubsub[redis]"'
            ) from None
        if max_pending < 0 or max_pending_bytes < 0 or maxlen < 1:
            raise ValueError("max_pending and max_pending_bytes must be >= 0, maxlen >= 1")
        if block <= 0 or reconnect_max <= 0:
            raise ValueError("block and reconnect_max must be > 0 seconds")
        self._redis = redis
        self.url = url
        self.stream = stream
        self._local_first = local_first
        self.max_pending = max_pending
        self.max_pending_bytes = max_pending_bytes
        self.maxlen = maxlen
        self.block = block
        self.reconnect_max = reconnect_max
        self._options = dict(redis_options or {})
        #: This bridge's identity in the stream (entries it wrote carry it).
        self.origin = os.urandom(8).hex().encode()
        self._cond = threading.Condition()
        self._pending: collections.deque[tuple[int, bytes, bytes, bytes, bytes]] = (
            collections.deque()
        )
        self._pending_bytes = 0
        self._seq = 0
        self._stop = threading.Event()
        self._deliver: Callable[[str, Any], None] | None = None
        self._threads: list[threading.Thread] = []
        self._reader_client: Any = None
        self._last_id: bytes | None = None
        self._seen: collections.OrderedDict[bytes, int] = collections.OrderedDict()
        # The writer connects on its first message: until a write fails, it counts as up.
        self._writer_up = True
        self._reader_up = False
        self._counters = {
            "sent": 0,
            "received": 0,
            "duplicates": 0,
            "lost": 0,
            "dropped": 0,
            "reconnects": 0,
        }
        self._dropping = False

    # ------------------------------------------------------------------ Bridge protocol

    @property
    def local_first(self) -> bool:
        """Whether this process's own messages reach its subscribers without Redis."""
        return self._local_first

    def start(self, deliver: Callable[[str, Any], None]) -> None:
        """Start the writer and reader threads; ``deliver(topic, message)`` gets what other
        processes (and, without ``local_first``, this one) publish. Called by the hub."""
        if self._deliver is not None:
            raise RuntimeError("a RedisBridge serves one hub and starts once")
        self._deliver = deliver
        for name, target in (("writer", self._write_loop), ("reader", self._read_loop)):
            thread = threading.Thread(target=target, name=f"gev-pubsub-redis-{name}", daemon=True)
            self._threads.append(thread)
            thread.start()

    def publish(self, topic: str, message: Any) -> None:
        """Queue ``message`` for the stream; never blocks, never fails for Redis's sake.

        :raises TypeError: a message the bridge cannot carry (see :func:`_encode`).
        """
        kind, data, name = _encode(message)
        size = len(data) + len(topic)
        with self._cond:
            if (
                len(self._pending) >= self.max_pending
                or self._pending_bytes + size > self.max_pending_bytes
            ):
                self._counters["dropped"] += 1
                if not self._dropping:
                    self._dropping = True
                    logger.warning(
                        "redis bridge to %s: %d messages wait for Redis; not queueing more"
                        " (other processes miss them; local subscribers still get them)",
                        self._where(),
                        len(self._pending),
                    )
                return
            self._seq += 1
            self._pending.append((self._seq, topic.encode(), kind, data, name))
            self._pending_bytes += size
            if len(self._pending) == 1:
                self._cond.notify()

    def close(self, timeout: float = 2.0) -> None:
        """Stop: send what is queued if Redis answers within ``timeout`` seconds, then end
        both threads."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while self._pending and self._writer_up and time.monotonic() < deadline:
                self._cond.wait(0.05)
            self._stop.set()
            self._cond.notify_all()
        client = self._reader_client
        if client is not None:
            try:
                # Interrupts the blocking XREAD (shutdown of its socket).
                client.connection_pool.disconnect()
            except Exception:
                pass
        for thread in self._threads:
            thread.join(max(0.1, deadline - time.monotonic()) + self.block + 1.0)

    # ------------------------------------------------------------------ public state

    @property
    def connected(self) -> bool:
        """The reader is connected to Redis and the last write (if any) went through."""
        return self._writer_up and self._reader_up

    def stats(self) -> dict[str, int]:
        """Counters: ``sent``/``received`` entries, ``duplicates`` skipped, ``lost`` (gaps seen
        in other publishers' sequences), ``dropped`` (not queued: buffer full),
        ``reconnects`` (of either direction), and ``pending`` (waiting for Redis now)."""
        with self._cond:
            return {**self._counters, "pending": len(self._pending)}

    def __repr__(self) -> str:
        state = "connected" if self.connected else "disconnected"
        return f"<RedisBridge {self._where()} stream={self.stream!r} {state}>"

    # ------------------------------------------------------------------ threads

    def _where(self) -> str:
        # The URL without credentials, for logs.
        url = self.url
        if "@" in url:
            scheme, _, rest = url.partition("://")
            url = f"{scheme}://***@{rest.rpartition('@')[2]}"
        return url

    def _client(self, read_timeout: float) -> Any:
        options = {
            "socket_connect_timeout": 2.0,
            "socket_timeout": read_timeout,
            "socket_keepalive": True,
            **self._options,
        }
        return self._redis.Redis.from_url(self.url, **options)

    def _pause(self, delay: float) -> float:
        self._stop.wait(delay)
        return min(delay * 2, self.reconnect_max)

    def _write_loop(self) -> None:
        # Anything the client raises counts as a broken connection (a parser confused by a
        # connection cut mid-reply raises ValueError or AttributeError): the bridge must
        # outlive every Redis failure.
        errors = Exception
        client = None
        delay = 0.1
        down_since: float | None = None
        while not self._stop.is_set():
            with self._cond:
                while not self._pending and not self._stop.is_set():
                    self._cond.wait()
                if self._stop.is_set():
                    return
                batch = [self._pending[i] for i in range(min(len(self._pending), _WRITE_BATCH))]
            try:
                if client is None:
                    client = self._client(10.0)
                pipe = client.pipeline(transaction=False)
                for seq, topic, kind, data, name in batch:
                    fields = {b"o": self.origin, b"n": seq, b"t": topic, b"k": kind, b"d": data}
                    if name:
                        fields[b"x"] = name
                    pipe.xadd(self.stream, fields, maxlen=self.maxlen, approximate=True)
                pipe.execute()
            except errors as exc:
                if self._stop.is_set():
                    return
                # What was sent may or may not have been appended: it is sent again, and
                # readers drop the duplicates by sequence number.
                if self._writer_up or down_since is None:
                    logger.warning(
                        "redis bridge to %s: cannot publish (%s); queueing up to %d messages"
                        " and reconnecting",
                        self._where(),
                        exc,
                        self.max_pending,
                        exc_info=not isinstance(exc, (self._redis.RedisError, OSError)),
                    )
                    down_since = time.monotonic()
                self._writer_up = False
                if client is not None:
                    try:
                        client.close()
                    except Exception:
                        pass
                    client = None
                delay = self._pause(delay)
                continue
            with self._cond:
                for _ in batch:
                    _, topic, _, data, _ = self._pending.popleft()
                    self._pending_bytes -= len(data) + len(topic)
                self._counters["sent"] += len(batch)
                if not self._writer_up:
                    self._writer_up = True
                    if down_since is not None:
                        self._counters["reconnects"] += 1
                        logger.info(
                            "redis bridge to %s: publishing again after %.1f s (%d dropped"
                            " while the buffer was full)",
                            self._where(),
                            time.monotonic() - down_since,
                            self._counters["dropped"],
                        )
                    down_since = None
                self._dropping = False
                self._cond.notify_all()  # close() may wait for the queue to drain
            delay = 0.1

    def _read_loop(self) -> None:
        errors = Exception  # as in _write_loop
        delay = 0.1
        block_ms = max(1, int(self.block * 1000))
        down_since: float | None = None
        while not self._stop.is_set():
            try:
                client = self._reader_client
                if client is None:
                    client = self._reader_client = self._client(self.block + 10.0)
                    self._resume_position(client)
                    self._reader_up = True
                    if down_since is not None:
                        with self._cond:
                            self._counters["reconnects"] += 1
                        logger.info(
                            "redis bridge to %s: receiving again after %.1f s",
                            self._where(),
                            time.monotonic() - down_since,
                        )
                        down_since = None
                assert self._last_id is not None
                reply = client.xread({self.stream: self._last_id}, count=1024, block=block_ms)
            except errors as exc:
                if self._stop.is_set():
                    return
                if self._reader_up or down_since is None:
                    logger.warning(
                        "redis bridge to %s: cannot read (%s); reconnecting",
                        self._where(),
                        exc,
                        exc_info=not isinstance(exc, (self._redis.RedisError, OSError)),
                    )
                    down_since = time.monotonic()
                self._reader_up = False
                old, self._reader_client = self._reader_client, None
                if old is not None:
                    try:
                        old.close()
                    except Exception:
                        pass
                delay = self._pause(delay)
                continue
            delay = 0.1
            if reply:
                self._dispatch(reply)

    def _resume_position(self, client: Any) -> None:
        """Where to read from: the end of the stream the first time, else where we stopped.

        A stream that is gone (Redis came back empty) or ends before our last entry (its
        clock behind ours) is read from its start: every entry in it is new to us, or a
        duplicate that the sequence numbers catch.
        """
        try:
            tail: bytes | None = client.xinfo_stream(self.stream)["last-generated-id"]
        except self._redis.ResponseError:  # no such key (yet, or any more)
            tail = None
        last = self._last_id
        if last is None:
            self._last_id = tail if tail is not None else b"0-0"
        elif tail is None:
            logger.info(
                "redis bridge to %s: stream %r is new (Redis restarted?); reading it from the"
                " start",
                self._where(),
                self.stream,
            )
            self._last_id = b"0-0"
        elif _id_key(tail) < _id_key(last):
            logger.warning(
                "redis bridge to %s: stream %r ends before the last entry read; reading it"
                " from the start",
                self._where(),
                self.stream,
            )
            self._last_id = b"0-0"

    def _dispatch(self, reply: Any) -> None:
        deliver = self._deliver
        assert deliver is not None
        entries = reply[0][1] if isinstance(reply, list) else next(iter(reply.values()))[0]
        seen = self._seen
        own = self.origin
        skip_own = self._local_first
        received = duplicates = lost = 0
        for entry_id, fields in entries:
            self._last_id = entry_id
            origin = fields.get(b"o", b"")
            try:
                seq = int(fields[b"n"])
                topic = fields[b"t"].decode()
                message = _decode(
                    fields.get(b"k", b""), fields.get(b"d", b""), fields.get(b"x", b"")
                )
            except (KeyError, ValueError, UnicodeDecodeError):
                logger.warning("redis bridge: skipping malformed entry %r", entry_id)
                continue
            if origin == own and skip_own:
                continue
            last = seen.get(origin)
            if last is not None:
                if seq <= last:
                    duplicates += 1
                    continue
                if seq > last + 1:
                    lost += seq - last - 1
                    logger.warning(
                        "redis bridge: %d messages of publisher %s never arrived (lost with"
                        " Redis, or trimmed from the stream before this reader got them)",
                        seq - last - 1,
                        origin.decode(errors="replace"),
                    )
                seen.move_to_end(origin)
            elif len(seen) >= _SEEN_ORIGINS_MAX:
                seen.popitem(last=False)
            seen[origin] = seq
            received += 1
            try:
                deliver(topic, message)
            except Exception:
                logger.exception("redis bridge: delivering an entry of %r failed", topic)
        with self._cond:
            self._counters["received"] += received
            self._counters["duplicates"] += duplicates
            self._counters["lost"] += lost
