"""The Redis bridge against a real redis-server: across hubs (as across hosts), through a
restart, with a bounded buffer while Redis is away."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from typing import Any

import pytest
from gev_core import LineProtocol
from gev_core.testing import RedisServer, serve
from gev_pubsub import PubSub, RedisBridge
from pubsub_support import DEADLINE, LineReader, Subscribing, subscriber, wait_for

pytest.importorskip("redis")


@contextmanager
def host(url: str, **bridge_options: Any) -> Iterator[tuple[PubSub, Any]]:
    """One "host": a hub bridged to Redis and a line-protocol server using it."""
    bridge_options.setdefault("block", 0.2)
    bridge_options.setdefault("reconnect_max", 0.2)
    hub = PubSub(bridge=RedisBridge(url, **bridge_options))
    try:
        with serve(Subscribing(hub), protocol=LineProtocol()) as server:
            yield hub, server
    finally:
        hub.close()


def bridge_of(hub: PubSub) -> RedisBridge:
    bridge = hub.bridge
    assert isinstance(bridge, RedisBridge)
    return bridge


def wait_connected(*hubs: PubSub) -> None:
    wait_for(lambda: all(bridge_of(h).connected for h in hubs), what="the bridges to connect")


def test_a_publish_reaches_subscribers_on_every_host_once(redis_server: RedisServer) -> None:
    with ExitStack() as stack:
        hub_a, server_a = stack.enter_context(host(redis_server.url))
        hub_b, server_b = stack.enter_context(host(redis_server.url))
        wait_connected(hub_a, hub_b)
        local = subscriber(server_a, "t")
        remote = [subscriber(server_b, "t") for _ in range(3)]
        for i in range(300):
            hub_a.publish("t", b"a%d" % i)
        expected = [b"a%d" % i for i in range(300)]
        assert local.lines(300) == expected
        for r in remote:
            assert r.lines(300) == expected
        # And back: B publishes, A's subscriber gets it, B's own subscribers get it once.
        hub_b.publish("t", "from b")
        assert local.lines(1) == [b"from b"]
        for r in remote:
            assert r.lines(1) == [b"from b"]
        time.sleep(0.5)  # anything duplicated through Redis would have arrived by now
        assert local.nothing_more() and all(r.nothing_more() for r in remote)
        wait_for(lambda: bridge_of(hub_b).stats()["received"] == 300, what="B's counter")
        wait_for(lambda: bridge_of(hub_a).stats()["sent"] == 300, what="A's counter")


def test_without_local_first_every_message_takes_the_stream_order(
    redis_server: RedisServer,
) -> None:
    with ExitStack() as stack:
        hub_a, server_a = stack.enter_context(host(redis_server.url, local_first=False))
        hub_b, server_b = stack.enter_context(host(redis_server.url, local_first=False))
        wait_connected(hub_a, hub_b)
        on_a = subscriber(server_a, "t")
        on_b = subscriber(server_b, "t")

        def publish(hub: PubSub, name: bytes) -> None:
            for i in range(200):
                hub.publish("t", name + b"%d" % i)

        threads = [
            threading.Thread(target=publish, args=(hub_a, b"a")),
            threading.Thread(target=publish, args=(hub_b, b"b")),
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        seen_a = on_a.lines(400)
        seen_b = on_b.lines(400)
        assert seen_a == seen_b  # one order for everybody
        for name in (b"a", b"b"):
            assert [m for m in seen_a if m[:1] == name] == [name + b"%d" % i for i in range(200)]
        wait_for(lambda: bridge_of(hub_a).stats()["received"] == 400, what="the counter")


def test_redis_restart_in_the_middle_of_a_stream(redis_server: RedisServer) -> None:
    """Kill Redis (nothing persisted) while messages flow, start it again, and check what each
    side got: locally everything; remotely everything in order, without duplicates, with at
    most the entries that were in Redis, unread, when it died."""
    total = 1200
    with ExitStack() as stack:
        hub_a, server_a = stack.enter_context(host(redis_server.url))
        hub_b, server_b = stack.enter_context(host(redis_server.url))
        wait_connected(hub_a, hub_b)
        local = subscriber(server_a, "t")
        remote = subscriber(server_b, "t")
        killed_at = [total]  # first sequence number published after Redis was dead
        restarted = threading.Event()

        def publisher() -> None:
            for i in range(total):
                if i == 400:
                    redis_server.stop()
                    killed_at[0] = i
                    threading.Thread(target=restart, daemon=True).start()
                hub_a.publish("t", b"%d" % i)
                time.sleep(0.002)

        def restart() -> None:
            time.sleep(1.0)
            redis_server.start()
            restarted.set()

        thread = threading.Thread(target=publisher)
        thread.start()
        thread.join(DEADLINE * 2)
        assert restarted.wait(DEADLINE)
        # Local subscribers never depended on Redis.
        assert local.lines(total) == [b"%d" % i for i in range(total)]
        # The server and the bridges are still up; the last message gets through.
        got: list[int] = []
        while not got or got[-1] != total - 1:
            got += [int(m) for m in remote.lines(1)]
        assert got == sorted(set(got)), "reordered or duplicated"
        missing = sorted(set(range(total)) - set(got))
        # Everything published while Redis was down was queued and delivered after it came
        # back; only entries appended before the kill and not yet read could be lost.
        assert all(m < killed_at[0] for m in missing), missing
        assert len(missing) <= 50, missing
        stats_a, stats_b = bridge_of(hub_a).stats(), bridge_of(hub_b).stats()
        assert stats_a["reconnects"] >= 1 and stats_b["reconnects"] >= 1
        assert stats_a["dropped"] == 0
        assert stats_b["lost"] == len(missing)
        wait_connected(hub_a, hub_b)


def test_publishes_queue_in_a_bounded_buffer_while_redis_is_away(
    redis_server: RedisServer,
) -> None:
    with ExitStack() as stack:
        hub_a, server_a = stack.enter_context(host(redis_server.url, max_pending=20))
        hub_b, server_b = stack.enter_context(host(redis_server.url))
        wait_connected(hub_a, hub_b)
        local = subscriber(server_a, "t")
        remote = subscriber(server_b, "t")
        hub_a.publish("t", b"before")
        assert remote.lines(1) == [b"before"] and local.lines(1) == [b"before"]
        # Delivered, and acknowledged to the writer (which pops it only then).
        wait_for(lambda: bridge_of(hub_a).stats()["pending"] == 0, what="the first write")
        redis_server.stop()
        wait_for(lambda: not bridge_of(hub_b).connected, what="the bridge to notice")
        started = time.monotonic()
        for i in range(100):
            hub_a.publish("t", b"%d" % i)  # never blocks, never raises
        assert time.monotonic() - started < 2.0
        assert local.lines(100) == [b"%d" % i for i in range(100)]
        wait_for(lambda: bridge_of(hub_a).stats()["dropped"] == 80, what="80 drops")
        assert bridge_of(hub_a).stats()["pending"] <= 20
        redis_server.start()
        wait_connected(hub_a, hub_b)
        wait_for(lambda: bridge_of(hub_a).stats()["pending"] == 0, what="the buffer to flush")
        hub_a.publish("t", b"later")
        got = []
        while got[-1:] != [b"later"]:
            got += remote.lines(1)
        # The oldest 20 were kept (a prefix of the outage), in order.
        assert got == [b"%d" % i for i in range(20)] + [b"later"]
        assert local.lines(1) == [b"later"]


def test_messages_of_every_kind_cross_the_bridge(redis_server: RedisServer) -> None:
    received: list[tuple[str, Any]] = []
    done = threading.Event()
    a = PubSub(bridge=RedisBridge(redis_server.url, block=0.2))
    b_bridge = RedisBridge(redis_server.url, block=0.2)

    def deliver(topic: str, message: Any) -> None:
        received.append((topic, message))
        if len(received) == 3:
            done.set()

    b_bridge.start(deliver)
    try:
        wait_for(lambda: b_bridge.connected, what="the bridge")
        a.publish("x", "text é")
        a.publish("y", bytearray(b"\x00\xff"))
        a.publish("z", ("pkg.Msg", b"\x08\x01"))
        with pytest.raises(TypeError):
            a.publish("z", 42)
        assert done.wait(DEADLINE)
        assert received == [("x", "text é"), ("y", b"\x00\xff"), ("z", ("pkg.Msg", b"\x08\x01"))]
    finally:
        a.close()
        b_bridge.close()


def test_bridge_options_are_checked_and_credentials_never_logged() -> None:
    with pytest.raises(ValueError):
        RedisBridge(max_pending=-1)
    with pytest.raises(ValueError):
        RedisBridge(block=0)
    bridge = RedisBridge("redis://user:secret@127.0.0.1:1/0")
    assert "secret" not in repr(bridge)
    bridge.close()


def test_the_server_option_bridges_the_default_hub(redis_server: RedisServer) -> None:
    import gev_pubsub
    from gev_pubsub import _default

    with serve(
        Subscribing(gev_pubsub.default_hub()),
        protocol=LineProtocol(),
        options={"pubsub_redis": redis_server.url, "pubsub_stream": "test:option"},
    ) as server:
        bridge = gev_pubsub.default_hub().bridge
        assert isinstance(bridge, RedisBridge) and bridge.stream == "test:option"
        reader = LineReader.__new__(LineReader)
        del reader
        sub = subscriber(server, "opt")
        gev_pubsub.publish("opt", b"hi")
        assert sub.lines(1) == [b"hi"]
    # Closed with the server that asked for it.
    assert gev_pubsub.default_hub().bridge is None
    assert not _default._bridge_users
