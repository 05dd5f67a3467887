"""Fan-out inside one process, over real sockets: framing once, batching, order, policies,
lifetime."""

from __future__ import annotations

import gc
import logging
import struct
import threading
import time
import weakref
from collections.abc import Callable, Iterator
from typing import Any

import gev_pubsub
import pytest
from gev_core import (
    Connection,
    ConnectionClosed,
    DefaultProtocol,
    Handler,
    LengthFieldProtocol,
    LineProtocol,
    Protocol,
    get_plugin_manager,
)
from gev_core.testing import connect, serve
from gev_pubsub import PubSub, TopicPolicy
from pubsub_support import DEADLINE, LineReader, Subscribing, subscriber, wait_for


@pytest.fixture
def hub() -> Iterator[PubSub]:
    h = PubSub()
    yield h
    h.close()


def test_every_subscriber_gets_every_message_in_order(hub: PubSub) -> None:
    with serve(Subscribing(hub), protocol=LineProtocol()) as server:
        readers = [subscriber(server, "news") for _ in range(20)]
        other = subscriber(server, "sport")
        assert hub.subscriber_count("news") == 20
        for i in range(500):
            hub.publish("news", b"n%d" % i)
        for r in readers:
            assert r.lines(500) == [b"n%d" % i for i in range(500)]
        assert other.nothing_more()
        assert hub.topics() == {"news", "sport"}


def test_one_write_per_subscriber_per_batch(hub: PubSub) -> None:
    """Messages published while the loop is busy go out together: one write each."""
    gate = threading.Event()

    class Blocking(Subscribing):
        def on_message(self, conn: Connection, ctx: Any, data: bytes) -> Any:
            if data == b"block":
                gate.wait(DEADLINE)  # holds the loop while the test publishes
                return None
            return super().on_message(conn, ctx, data)

    with serve(Blocking(hub), protocol=LineProtocol()) as server:
        readers = [subscriber(server, "t") for _ in range(10)]
        before = hub.stats()["writes"]
        readers[0].sock.sendall(b"block\n")
        time.sleep(0.2)
        for i in range(100):
            hub.publish("t", b"%d" % i)
        gate.set()
        for r in readers:
            assert r.lines(100) == [b"%d" % i for i in range(100)]
        # Counted on the loop once its writes are done, which the clients may see first.
        wait_for(lambda: hub.stats()["deliveries"] == 1000, what="the counters")
        assert hub.stats()["writes"] - before == 10


class CountingLines(LineProtocol):
    """A line protocol whose shared packer counts its calls."""

    def __init__(self) -> None:
        super().__init__()
        self.calls = 0
        self.threads: set[int] = set()
        self._counting = self._count

    def _count(self, data: Any) -> bytes:
        self.calls += 1
        return self.pack(None, data)

    def shared_packer(self, conn: Connection) -> Callable[[Any], bytes] | None:
        return self._counting


def test_each_message_is_framed_once_across_loops(hub: PubSub) -> None:
    protocol = CountingLines()
    with serve(Subscribing(hub), protocol=protocol, num_loops=3) as server:
        readers = [subscriber(server, "t") for _ in range(12)]
        for i in range(50):
            hub.publish("t", b"%d" % i)
        for r in readers:
            assert r.lines(50) == [b"%d" % i for i in range(50)]
        assert len(hub._fanouts) == 3  # subscribers on every loop
        assert protocol.calls == 50


def test_publish_from_many_threads_keeps_each_publishers_order(hub: PubSub) -> None:
    with serve(Subscribing(hub), protocol=LineProtocol(), num_loops=2) as server:
        readers = [subscriber(server, "t") for _ in range(6)]
        n, publishers = 300, 4

        def publish(p: int) -> None:
            for i in range(n):
                hub.publish("t", b"%d:%d" % (p, i))

        threads = [threading.Thread(target=publish, args=(p,)) for p in range(publishers)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        for r in readers:
            got = r.lines(n * publishers)
            for p in range(publishers):
                mine = [line for line in got if line.startswith(b"%d:" % p)]
                assert mine == [b"%d:%d" % (p, i) for i in range(n)]


def test_a_connection_on_several_topics_gets_them_interleaved_in_publish_order(
    hub: PubSub,
) -> None:
    gate = threading.Event()

    class Blocking(Subscribing):
        def on_message(self, conn: Connection, ctx: Any, data: bytes) -> Any:
            if data == b"block":
                gate.wait(DEADLINE)
                return None
            return super().on_message(conn, ctx, data)

    with serve(Blocking(hub), protocol=LineProtocol()) as server:
        both = subscriber(server, "a", "b")
        only_a = subscriber(server, "a")
        only_b = subscriber(server, "b")
        neither = subscriber(server, "c")
        before = hub.stats()["writes"]
        both.sock.sendall(b"block\n")
        time.sleep(0.2)
        sent = []
        for i in range(40):
            topic = "ab"[i % 3 == 0]
            hub.publish(topic, b"%s%d" % (topic.encode(), i))
            sent.append((topic, b"%s%d" % (topic.encode(), i)))
        gate.set()
        assert both.lines(40) == [m for _, m in sent]
        a = [m for t, m in sent if t == "a"]
        b = [m for t, m in sent if t == "b"]
        assert only_a.lines(len(a)) == a
        assert only_b.lines(len(b)) == b
        assert neither.nothing_more()
        wait_for(lambda: hub.stats()["writes"] - before >= 3, what="the counters")
        assert hub.stats()["writes"] - before == 3  # one per subscriber


def test_subscribe_from_another_thread_then_publish_is_delivered(hub: PubSub) -> None:
    class Quiet(Handler):
        def __init__(self) -> None:
            self.conns: list[Connection] = []

        def on_connect(self, conn: Connection) -> None:
            self.conns.append(conn)

        def on_message(self, conn: Connection, ctx: Any, data: bytes) -> None:
            return None

    handler = Quiet()
    with serve(handler, protocol=LineProtocol()) as server:
        readers = [LineReader(connect(server)) for _ in range(5)]
        wait_for(lambda: len(handler.conns) == 5, what="connections")
        for round_ in range(20):
            for conn in handler.conns:
                hub.subscribe(conn, f"r{round_}")
            hub.publish(f"r{round_}", b"x%d" % round_)
        for r in readers:
            assert r.lines(20) == [b"x%d" % i for i in range(20)]
        for conn in handler.conns:
            hub.unsubscribe_all(conn)
        wait_for(lambda: hub.stats()["subscriptions"] == 0, what="unsubscribe_all")


def test_unsubscribe(hub: PubSub) -> None:
    class Unsub(Subscribing):
        def on_message(self, conn: Connection, ctx: Any, data: bytes) -> Any:
            if data.startswith(b"unsub "):
                self.hub.unsubscribe(conn, data[6:].decode())
                return b"ok"
            return super().on_message(conn, ctx, data)

    with serve(Unsub(hub), protocol=LineProtocol()) as server:
        r = subscriber(server, "a", "b")
        r.sock.sendall(b"unsub a\n")
        assert r.lines(1) == [b"ok"]
        hub.publish("a", b"1")
        hub.publish("b", b"2")
        assert r.lines(1) == [b"2"]
        assert r.nothing_more()
        assert hub.subscriber_count("a") == 0


def test_subscribing_a_closed_connection_raises(hub: PubSub) -> None:
    got: list[BaseException] = []

    class Late(Handler):
        def on_message(self, conn: Connection, ctx: Any, data: bytes) -> None:
            hub.subscribe(conn, "t")  # left again when it closes
            conn.close()

        def on_close(self, conn: Connection) -> None:
            # After the close hook: subscribing now would never be undone.
            try:
                hub.subscribe(conn, "t")
            except ConnectionClosed as exc:
                got.append(exc)

    with serve(Late(), protocol=LineProtocol()) as server:
        s = connect(server)
        s.sendall(b"hi\n")
        wait_for(lambda: got, what="ConnectionClosed")
        s.close()
        assert hub.stats()["subscriptions"] == 0


def test_closed_subscribers_leave_their_topics_and_are_freed(hub: PubSub) -> None:
    handler = Subscribing(hub)
    with serve(handler, protocol=LineProtocol(), num_loops=2) as server:
        readers = [subscriber(server, "a", "b", f"own{i}") for i in range(50)]
        assert hub.stats()["subscriptions"] == 150
        refs = [weakref.ref(c) for c in handler.conns]
        handler.conns.clear()
        for r in readers:
            r.sock.close()
        wait_for(lambda: hub.stats()["subscriptions"] == 0, what="subscriptions to go")
        assert hub.topics() == set()
        assert hub._fanouts == () and hub._loops == {}
        hub.publish("a", b"nobody")  # no loop to go to
    # After the stop: a loop's frame may still reference the last connection it served.
    gc.collect()
    assert [r for r in refs if r() is not None] == []


def test_stopping_the_server_leaves_nothing_behind(hub: PubSub) -> None:
    handler = Subscribing(hub)
    with serve(handler, protocol=LineProtocol()) as server:
        readers = [subscriber(server, "a") for _ in range(10)]
    for r in readers:
        r.sock.close()
    assert hub.stats()["subscriptions"] == 0
    assert hub._fanouts == ()


def test_slow_subscriber_misses_messages_with_drop_and_catches_up(hub: PubSub) -> None:
    hub.set_policy("t", TopicPolicy(slow="drop", water_mark=64 * 1024))
    handler = Subscribing(hub)
    with serve(handler, protocol=LineProtocol(max_line_length=1 << 20)) as server:
        fast = subscriber(server, "t")
        slow = subscriber(server, "t", rcvbuf=4096)
        big = b"x" * 16 * 1024
        total = 800  # ~13 MB: more than the kernel buffers hold for a reader that waits
        received = []
        done = threading.Event()

        def read_fast() -> None:
            received.extend(fast.lines(total + 1))
            done.set()

        reader = threading.Thread(target=read_fast)
        reader.start()
        for i in range(total):
            hub.publish("t", b"%d " % i + big)
            time.sleep(0.0005)
        hub.publish("t", b"last")
        reader.join(DEADLINE)
        assert done.is_set()
        assert received[-1] == b"last" and len(received) == total + 1
        slow_conn = handler.conns[1]
        wait_for(lambda: hub.stats()["dropped"] > 0, what="drops")
        # Bounded: the water mark plus at most one batch above it.
        assert slow_conn.write_buffer_length < 64 * 1024 + total * len(big) // 4
        assert not slow_conn.closing
        # The slow one reads what it was given until nothing more is owed to it...
        got: list[bytes] = []
        deadline = time.monotonic() + DEADLINE
        while time.monotonic() < deadline:
            try:
                got += slow.lines(1, timeout=0.5)
            except AssertionError:
                if slow_conn.write_buffer_length == 0:
                    break
        # ...then gets what is published next.
        hub.publish("t", b"again")
        while got[-1:] != [b"again"]:
            got += slow.lines(1)
        numbers = [int(line.split(b" ")[0]) for line in got[:-1] if line != b"last"]
        assert numbers == sorted(numbers)  # never reordered
        assert len(numbers) < total  # a gap: the drops


def test_slow_subscriber_is_closed_with_a_logged_reason(
    hub: PubSub, caplog: pytest.LogCaptureFixture
) -> None:
    hub.set_policy("t", TopicPolicy(slow="close", water_mark=32 * 1024))
    assert hub.policy("t").slow == "close" and hub.policy("other").slow == "drop"
    handler = Subscribing(hub)
    caplog.set_level(logging.WARNING, logger="gev.pubsub")
    with serve(handler, protocol=LineProtocol(max_line_length=1 << 20)) as server:
        slow = subscriber(server, "t", rcvbuf=4096)  # and never reads
        conn = handler.conns[0]
        big = b"y" * 32 * 1024
        for i in range(400):
            hub.publish("t", b"%d " % i + big)
            if conn.closing:
                break
            time.sleep(0.001)
        wait_for(lambda: conn.closing, what="the slow subscriber to be closed")
        slow.sock.close()
        wait_for(lambda: hub.stats()["subscriptions"] == 0, what="it to leave its topic")
        wait_for(lambda: hub.stats()["evicted"] == 1, what="the counter")
    assert any(
        "slow subscriber of topic 't'" in r.getMessage() and r.levelno == logging.WARNING
        for r in caplog.records
    )


def test_policy_validation() -> None:
    with pytest.raises(ValueError):
        TopicPolicy(slow="block")
    with pytest.raises(ValueError):
        TopicPolicy(water_mark=-1)
    with pytest.raises(TypeError):
        TopicPolicy(water_mark=1.5)  # type: ignore[arg-type]


def test_bad_topics_and_messages_are_refused_or_logged_once(
    hub: PubSub, caplog: pytest.LogCaptureFixture
) -> None:
    with pytest.raises(TypeError):
        hub.publish(b"t", b"x")  # type: ignore[arg-type]
    handler = Subscribing(hub)
    caplog.set_level(logging.ERROR, logger="gev.pubsub")
    with serve(handler, protocol=LengthFieldProtocol()) as server:
        s = connect(server)
        s.sendall(struct.pack(">I", 5) + b"sub t")
        assert s.recv(16) == struct.pack(">I", 2) + b"ok"
        for _ in range(3):
            hub.publish("t", 12345)  # a length-field frame needs bytes
        hub.publish("t", bytearray(b"fine"))
        s.settimeout(DEADLINE)
        assert s.recv(16) == struct.pack(">I", 4) + b"fine"
        assert not handler.conns[0].closing
    errors = [r for r in caplog.records if "cannot frame a int" in r.getMessage()]
    assert len(errors) == 1 and errors[0].exc_info is not None


class Sequenced(Protocol):
    """A protocol whose frames carry a per-connection sequence number: never shareable."""

    name = "sequenced"

    def connection_made(self, conn: Connection) -> None:
        conn.state = {"seq": 0, "threads": set()}

    def unpack(self, conn: Connection, buffer: Any) -> Any:
        return DefaultProtocol().unpack(conn, buffer)

    def pack(self, conn: Connection, data: Any) -> bytes:
        state = conn.state
        state["seq"] += 1
        state["threads"].add(threading.get_ident())
        return b"%d:%s\n" % (state["seq"], data)


def test_per_connection_framing_runs_on_the_loop_in_order(hub: PubSub) -> None:
    conns: list[Connection] = []

    class Sub(Handler):
        def on_connect(self, conn: Connection) -> None:
            hub.subscribe(conn, "t")
            conns.append(conn)

        def on_message(self, conn: Connection, ctx: Any, data: bytes) -> None:
            return None

    with serve(Sub(), protocol=Sequenced()) as server:
        readers = [LineReader(connect(server)) for _ in range(3)]
        wait_for(lambda: len(conns) == 3, what="connections")
        for i in range(100):
            hub.publish("t", b"m%d" % i)
        for r in readers:
            assert r.lines(100) == [b"%d:m%d" % (i + 1, i) for i in range(100)]
        loop_threads = {c.state["threads"].pop() for c in conns}
        assert threading.get_ident() not in loop_threads


def test_module_level_functions_use_the_default_hub() -> None:
    class Sub(Handler):
        def on_connect(self, conn: Connection) -> None:
            gev_pubsub.subscribe(conn, "default-hub-topic")

        def on_message(self, conn: Connection, ctx: Any, data: bytes) -> None:
            gev_pubsub.publish("default-hub-topic", data)

    with serve(Sub(), protocol=LineProtocol()) as server:
        readers = [LineReader(connect(server)) for _ in range(3)]
        wait_for(
            lambda: gev_pubsub.default_hub().subscriber_count("default-hub-topic") == 3,
            what="subscriptions",
        )
        readers[0].sock.sendall(b"hello\n")
        for r in readers:
            assert r.lines(1) == [b"hello"]
    assert gev_pubsub.default_hub() is gev_pubsub.default_hub()


def test_a_server_without_the_plugin_is_refused(hub: PubSub) -> None:
    errors: list[BaseException] = []

    class Sub(Handler):
        def on_connect(self, conn: Connection) -> None:
            try:
                hub.subscribe(conn, "t")
            except RuntimeError as exc:
                errors.append(exc)

        def on_message(self, conn: Connection, ctx: Any, data: bytes) -> None:
            return None

    pm = get_plugin_manager()
    pm.unregister(name="pubsub")
    with serve(Sub(), plugins=pm) as server:
        s = connect(server)
        wait_for(lambda: errors, what="the refusal")
        s.close()
    assert "closed connections would never leave their topics" in str(errors[0])
