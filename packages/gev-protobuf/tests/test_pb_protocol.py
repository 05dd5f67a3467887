"""ProtobufProtocol over real loopback sockets (gev_core.testing.serve), plus its pieces.

Hostile input must close the connection that sent it, with the reason logged, and leave every
other connection of the server alone.
"""

from __future__ import annotations

import logging
import queue
import random
import socket
import threading
import time
from collections.abc import Callable, Iterator
from itertools import pairwise
from types import ModuleType
from typing import Any

import gev_protobuf
import pytest
from gev_core import NEED_MORE_DATA, Config, Handler, ProtocolError
from gev_core.testing import connect, feed, recv_exactly, serve
from gev_protobuf import (
    DEFAULT_MAX_FRAME_SIZE,
    MAX_FRAME_LENGTH,
    FrameDecoder,
    FrameError,
    MessageRegistry,
    ProtobufProtocol,
    _compiled,
    _protocol,
    pack_message,
)
from gev_ringbuffer import RingBuffer
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

GOLDEN_FRAME = bytes.fromhex("00000008 0004 6d736731 0801")  # gev's PackMessage("msg1", 08 01)


class Recorder(Handler):
    """Records (type name, payload) and answers with ``reply(ctx, data)``."""

    def __init__(self, reply: Callable[[Any, Any], Any] | None = None) -> None:
        self.messages: queue.Queue[tuple[Any, Any]] = queue.Queue()
        self.connections: queue.Queue[Any] = queue.Queue()
        self._reply = reply

    def on_connect(self, conn: Any) -> None:
        self.connections.put(conn)

    def on_message(self, conn: Any, ctx: Any, data: Any) -> Any:
        self.messages.put((ctx, data))
        return None if self._reply is None else self._reply(ctx, data)


def echo(ctx: Any, data: Any) -> Any:
    return ctx, data


def feed_echo(conn: Any, ctx: Any, data: Any) -> Any:
    return ctx, data


def read_frames(sock: socket.socket, count: int, timeout: float = 10.0) -> list[tuple[str, bytes]]:
    decoder = FrameDecoder()
    frames: list[tuple[str, bytes]] = []
    deadline = time.monotonic() + timeout
    while len(frames) < count:
        sock.settimeout(max(0.01, deadline - time.monotonic()))
        chunk = sock.recv(65536)
        if not chunk:
            raise EOFError(f"server closed after {len(frames)} of {count} frames")
        decoder.feed(chunk)
        frames.extend(decoder)
    assert decoder.buffered == 0
    return frames


def assert_closed_by_server(sock: socket.socket) -> None:
    sock.settimeout(10)
    try:
        while sock.recv(65536):
            pass  # replies to frames handled before the bad one
    except ConnectionResetError:
        pass  # closed with unread input: the kernel answers with RST instead of FIN


def assert_echoes(sock: socket.socket, name: str = "ping", payload: bytes = b"\x08\x2a") -> None:
    sock.sendall(pack_message(name, payload))
    assert read_frames(sock, 1) == [(name, payload)]


def closing_reasons(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "gev" and "closing" in r.msg]


# ---------------------------------------------------------------------------- echo


def test_golden_vector_at_the_socket() -> None:
    handler = Recorder(echo)
    with serve(handler, protocol=ProtobufProtocol()) as server, connect(server) as sock:
        sock.sendall(GOLDEN_FRAME)
        assert recv_exactly(sock, len(GOLDEN_FRAME)) == GOLDEN_FRAME
    assert handler.messages.get(timeout=5) == ("msg1", b"\x08\x01")


def test_messages_are_counted_on_both_read_paths() -> None:
    # One frame per read takes receive's shortcut; several frames in one read go through
    # scan_frames. Both report to the loop's counters (count_traffic); a None reply is a
    # message in but none out.
    handler = Recorder(lambda ctx, data: None if ctx == "quiet" else (ctx, data))

    def totals(server: Any) -> tuple[int, int]:
        return (
            sum(s.messages_in for s in server.stats),
            sum(s.messages_out for s in server.stats),
        )

    with (
        serve(handler, protocol=ProtobufProtocol(), count_traffic=True) as server,
        connect(server) as sock,
    ):
        for i in range(3):
            assert_echoes(sock, payload=bytes([i]))
        sock.sendall(pack_message("a", b"1") + pack_message("quiet", b"") + pack_message("b", b"2"))
        assert read_frames(sock, 2) == [("a", b"1"), ("b", b"2")]
        sock.sendall(pack_message("quiet", b""))
        assert_echoes(sock)
        deadline = time.monotonic() + 10
        while totals(server) != (8, 6):
            assert time.monotonic() < deadline, f"counted {totals(server)}, expected (8, 6)"
            time.sleep(0.01)


def test_messages_are_counted_from_when_counting_is_turned_on() -> None:
    # Protocol.counting: receive skips count_messages until a loop that counts serves the
    # protocol; turned on while connected, that connection's next frames count, on both paths.
    protocol = ProtobufProtocol()
    with serve(Recorder(echo), protocol=protocol) as server, connect(server) as sock:
        assert_echoes(sock)
        assert protocol.counting is False
        assert [(s.messages_in, s.messages_out) for s in server.stats] == [(0, 0)]
        server.count_traffic = True
        assert_echoes(sock)
        sock.sendall(pack_message("a", b"1") + pack_message("b", b"2"))
        assert read_frames(sock, 2) == [("a", b"1"), ("b", b"2")]
        deadline = time.monotonic() + 10
        while [(s.messages_in, s.messages_out) for s in server.stats] != [(3, 3)]:
            assert time.monotonic() < deadline, "not counted"
            time.sleep(0.01)
        assert protocol.counting is True


def test_minimal_six_byte_frame_is_delivered_at_once() -> None:
    # Go gev waits for a 7th byte (`Length() > 6`); nothing else is sent here.
    handler = Recorder(echo)
    with serve(handler, protocol=ProtobufProtocol()) as server, connect(server) as sock:
        sock.sendall(b"\x00\x00\x00\x02\x00\x00")
        assert recv_exactly(sock, 6) == b"\x00\x00\x00\x02\x00\x00"
    assert handler.messages.get(timeout=5) == ("", b"")


def _random_frames(rng: random.Random, count: int) -> list[tuple[str, bytes]]:
    names = ["msg1", "msg2", "gevtest.Response", "", "\u00e9v\u00e9nement", "x" * 300]
    frames = []
    for _ in range(count):
        size = rng.choice([0, 1, 2, 64, 300, 4096, rng.randrange(70_000)])
        frames.append((rng.choice(names), rng.randbytes(size)))
    return frames


def test_echo_of_frames_split_and_merged_at_random_boundaries() -> None:
    rng = random.Random(1833)
    frames = _random_frames(rng, 400)
    stream = b"".join(pack_message(name, payload) for name, payload in frames)
    handler = Recorder(echo)
    with serve(handler, protocol=ProtobufProtocol()) as server, connect(server) as sock:

        def send() -> None:
            pos = 0
            while pos < len(stream):
                size = rng.choice([1, 2, 5, 6, 7, 100, 1500, 65536, 200_000])
                sock.sendall(stream[pos : pos + size])
                pos += size
                if rng.random() < 0.05:
                    time.sleep(0.001)  # let a partial frame reach the server on its own

        sender = threading.Thread(target=send)
        sender.start()
        try:
            received = read_frames(sock, len(frames), timeout=60)
        finally:
            sender.join()
    assert received == frames


def test_frames_dispatched_in_order_through_feed_at_every_split() -> None:
    # No sockets: every split point of a three-frame stream, both sides of every boundary.
    frames = [("a", b""), ("msg1", b"\x08\x01"), ("", b"xyz")]
    stream = b"".join(pack_message(n, p) for n, p in frames)
    for cut in range(len(stream) + 1):
        for second in range(cut, len(stream) + 1):
            chunks = [stream[:cut], stream[cut:second], stream[second:]]
            messages, out = feed(ProtobufProtocol(), chunks, reply=feed_echo)
            assert messages == frames
            assert out == stream


# ---------------------------------------------------------------------------- hostile input

HOSTILE = [
    pytest.param(b"\xff\xff\xff\xff", "declares length 4294967295", id="length-0xFFFFFFFF"),
    pytest.param(b"\x00\x00\x00\x01\x00", "smaller than the 2-byte type-name length", id="len<2"),
    pytest.param(b"\x00\x00\x00\x00", "declares length 0", id="length-0"),
    pytest.param(
        b"\x00\x00\x00\x04\x00\x05abcd", "declares type-name length 5", id="type-len-beyond"
    ),
    pytest.param(b"\x00\x00\x00\x04\x00\x02\xff\xfe", "is not valid UTF-8", id="bad-utf8-name"),
    pytest.param(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", "exceeds max_frame_size", id="http"),
    pytest.param(
        bytes.fromhex("0000 0010 dead beef cafe babe 0123 4567 89ab cdef"),
        "declares type-name length 57005",
        id="garbage",
    ),
    # A valid frame, then an oversized claim: the offset says which frame was refused.
    pytest.param(
        GOLDEN_FRAME + b"\x7f\xff\xff\xff",
        "frame at offset 12 declares length 2147483647",
        id="second-frame",
    ),
]


@pytest.mark.parametrize(("data", "reason"), HOSTILE)
def test_hostile_input_closes_only_that_connection(
    data: bytes, reason: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="gev")
    with (
        serve(Recorder(echo), protocol=ProtobufProtocol()) as server,
        connect(server) as good,
        connect(server) as bad,
    ):
        assert_echoes(good)
        bad.sendall(data)
        assert_closed_by_server(bad)
        assert_echoes(good)
        assert_echoes(good, "after", b"")
    reasons = closing_reasons(caplog)
    assert len(reasons) == 1, reasons
    assert "protobuf: " in reasons[0] and reason in reasons[0]
    # The peer's fault: the reason only, no traceback.
    assert not any(r.exc_info for r in caplog.records if r.name == "gev")


def test_oversized_length_is_refused_from_the_header_alone(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="gev")
    limit = 1024
    with serve(Recorder(echo), protocol=ProtobufProtocol(max_frame_size=limit)) as server:
        with connect(server) as sock:
            sock.sendall((limit + 1).to_bytes(4, "big"))  # no body follows
            assert_closed_by_server(sock)
        with connect(server) as sock:  # the limit itself is fine
            sock.sendall(pack_message("big", b"x" * (limit - 5)))
            assert read_frames(sock, 1) == [("big", b"x" * (limit - 5))]
    assert any("exceeds max_frame_size 1024" in r for r in closing_reasons(caplog))


def test_unknown_type_with_a_strict_registry(
    echo_pb2: ModuleType, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="gev")
    registry = MessageRegistry()
    registry.register(echo_pb2.Msg1, "msg1")
    with (
        serve(Recorder(echo), protocol=ProtobufProtocol(registry=registry)) as server,
        connect(server) as good,
        connect(server) as bad,
    ):
        bad.sendall(pack_message("msg9", b""))
        assert_closed_by_server(bad)
        good.sendall(registry.pack(echo_pb2.Msg1(name="still", id=1)))
        assert read_frames(good, 1) == [
            ("msg1", echo_pb2.Msg1(name="still", id=1).SerializeToString())
        ]
    (reason,) = closing_reasons(caplog)
    assert "no message class is registered for frame type 'msg9'" in reason


def test_payload_that_does_not_parse_closes_the_connection(
    echo_pb2: ModuleType, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="gev")
    registry = MessageRegistry()
    registry.register(echo_pb2.Msg1, "msg1")
    with (
        serve(Recorder(echo), protocol=ProtobufProtocol(registry=registry)) as server,
        connect(server) as sock,
    ):
        sock.sendall(pack_message("msg1", b"\x0a\x05ab"))  # string field longer than payload
        assert_closed_by_server(sock)
    (reason,) = closing_reasons(caplog)
    assert "payload of frame type 'msg1' does not parse as" in reason


# ---------------------------------------------------------------------------- registry


def test_registry_round_trip(echo_pb2: ModuleType) -> None:
    registry = MessageRegistry()
    registry.register(echo_pb2.Msg1, "msg1")
    registry.register(echo_pb2.Response, "response")

    class Greeter(Handler):
        def on_message(self, conn: Any, ctx: Any, data: Any) -> Any:
            assert ctx == "msg1" and isinstance(data, echo_pb2.Msg1)
            return echo_pb2.Response(content=f"hello {data.name} #{data.id}")

    with (
        serve(Greeter(), protocol=ProtobufProtocol(registry=registry)) as server,
        connect(server) as sock,
    ):
        sock.sendall(
            b"".join(registry.pack(echo_pb2.Msg1(name=n, id=i)) for i, n in enumerate("ab"))
        )
        replies = [registry.parse(name, payload) for name, payload in read_frames(sock, 2)]
    assert replies == [
        echo_pb2.Response(content="hello a #0"),
        echo_pb2.Response(content="hello b #1"),
    ]


def test_lenient_registry_hands_unknown_types_over_raw(echo_pb2: ModuleType) -> None:
    registry = MessageRegistry(strict=False)
    registry.register(echo_pb2.Msg1, "msg1")
    handler = Recorder()
    with (
        serve(handler, protocol=ProtobufProtocol(registry=registry)) as server,
        connect(server) as sock,
    ):
        sock.sendall(pack_message("other", b"\x01\x02") + pack_message("msg1", b"\x10\x07"))
        assert handler.messages.get(timeout=5) == ("other", b"\x01\x02")
        assert handler.messages.get(timeout=5) == ("msg1", echo_pb2.Msg1(id=7))


# ---------------------------------------------------------------------------- replies


def test_reply_forms(echo_pb2: ModuleType) -> None:
    replies: dict[str, Any] = {
        "tuple": ("t", b"\x01"),
        "tuple-bytearray": ("t", bytearray(b"\x02")),
        "tuple-message": ("short", echo_pb2.Msg1(id=3)),
        "message": echo_pb2.Response(content="r"),
        "none": None,
    }

    class Replier(Handler):
        def on_message(self, conn: Any, ctx: Any, data: Any) -> Any:
            return replies[ctx]

    with serve(Replier(), protocol=ProtobufProtocol()) as server, connect(server) as sock:
        for name in replies:
            sock.sendall(pack_message(name, b""))
        sock.sendall(pack_message("tuple", b""))  # so "none" is seen to have sent nothing
        frames = read_frames(sock, 5)
    assert frames == [
        ("t", b"\x01"),
        ("t", b"\x02"),
        ("short", b"\x10\x03"),
        ("gevtest.Response", b"\x0a\x01r"),
        ("t", b"\x01"),
    ]


@pytest.mark.parametrize("bad_reply", [b"raw bytes", "text", 42, ("a", b"b", b"c")])
def test_a_reply_that_is_not_framable_is_an_application_error(
    bad_reply: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="gev")

    class Wrong(Handler):
        def on_message(self, conn: Any, ctx: Any, data: Any) -> Any:
            return bad_reply

    with (
        serve(Wrong(), protocol=ProtobufProtocol()) as server,
        connect(server) as sock,
        connect(server) as other,
    ):
        sock.sendall(GOLDEN_FRAME)
        assert_closed_by_server(sock)
        other.sendall(GOLDEN_FRAME)  # same bug, its own connection
        assert_closed_by_server(other)
    failures = [r for r in caplog.records if r.name == "gev" and r.exc_info]
    assert len(failures) == 2  # logged with the traceback: our bug, not the peer's
    assert isinstance(failures[0].exc_info[1], TypeError)  # type: ignore[index]


def test_pack_refuses_bytes_with_advice() -> None:
    with pytest.raises(TypeError, match=r"bytes is not a valid protobuf reply.*conn\.write"):
        ProtobufProtocol().pack(None, b"framed?")  # type: ignore[arg-type]


def test_pack_with_registry_uses_registered_names(echo_pb2: ModuleType) -> None:
    registry = MessageRegistry()
    registry.register(echo_pb2.Response, "resp")
    protocol = ProtobufProtocol(registry=registry)
    assert protocol.pack(None, echo_pb2.Response(content="x")) == pack_message(  # type: ignore[arg-type]
        "resp", b"\x0a\x01x"
    )
    with pytest.raises(TypeError, match="Msg2 is not registered"):
        protocol.pack(None, echo_pb2.Msg2())  # type: ignore[arg-type]


def test_reply_larger_than_max_frame_size_is_sent() -> None:
    # max_frame_size guards what the peer sends; replies are bounded by the format only.
    with (
        serve(
            Recorder(lambda c, d: ("big", b"x" * 5000)), protocol=ProtobufProtocol(100)
        ) as server,
        connect(server) as sock,
    ):
        sock.sendall(GOLDEN_FRAME)
        assert read_frames(sock, 1) == [("big", b"x" * 5000)]


def test_send_a_message_object_from_another_thread(echo_pb2: ModuleType) -> None:
    handler = Recorder()
    with serve(handler, protocol=ProtobufProtocol()) as server, connect(server) as sock:
        conn = handler.connections.get(timeout=5)
        results: list[BaseException | None] = []

        def push() -> None:
            try:
                for i in range(3):
                    conn.send(echo_pb2.Response(content=f"push {i}"))
                conn.send(("msg1", b"\x08\x01"))
                results.append(None)
            except BaseException as exc:
                results.append(exc)

        pusher = threading.Thread(target=push)
        pusher.start()
        pusher.join(10)
        assert results == [None]
        frames = read_frames(sock, 4)
    assert frames[:3] == [
        ("gevtest.Response", echo_pb2.Response(content=f"push {i}").SerializeToString())
        for i in range(3)
    ]
    assert frames[3] == ("msg1", b"\x08\x01")


# ---------------------------------------------------------------------------- fast path = long way

frame_lists = st.lists(
    st.tuples(st.sampled_from(["msg1", "", "\u00e9", "gevtest.Msg1"]), st.binary(max_size=40)),
    max_size=6,
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(frames=frame_lists, data=st.data())
def test_receive_matches_frame_decoder_for_any_chunking(
    frames: list[tuple[str, bytes]], data: st.DataObject
) -> None:
    stream = b"".join(pack_message(n, p) for n, p in frames)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=8)))
    chunks = [stream[a:b] for a, b in pairwise([0, *cuts, len(stream)])]
    messages, out = feed(ProtobufProtocol(), chunks, reply=feed_echo)
    assert messages == frames
    assert out == stream


@settings(max_examples=500, deadline=None)
@given(raw=st.binary(max_size=60), limit=st.sampled_from([2, 10, 64, DEFAULT_MAX_FRAME_SIZE]))
def test_receive_accepts_and_rejects_exactly_what_frame_decoder_does(
    raw: bytes, limit: int
) -> None:
    decoder = FrameDecoder(limit)
    expected: list[tuple[str, bytes]] = []
    try:
        decoder.feed(raw)
        expected.extend(decoder)
        decoder_error = None
    except FrameError as exc:
        decoder_error = exc
    try:
        messages, _ = feed(ProtobufProtocol(limit), [raw], reply=feed_echo)
    except ProtocolError as exc:
        assert decoder_error is not None, f"receive refused what FrameDecoder accepts: {exc}"
        assert str(exc) == f"protobuf: {decoder_error}"
    else:
        assert decoder_error is None, f"receive accepted what FrameDecoder refuses: {decoder_error}"
        assert messages == expected


# ---------------------------------------------------------------------------- unpack (gev's way)


def _unpack_all(protocol: ProtobufProtocol, chunks: list[bytes]) -> Iterator[tuple[Any, Any]]:
    buffer = RingBuffer()
    for chunk in chunks:
        buffer.write(chunk)
        while (frame := protocol.unpack(None, buffer)) is not None:  # type: ignore[arg-type]
            yield frame


def test_unpack_over_a_ring_buffer() -> None:
    frames = [("msg1", b"\x08\x01"), ("", b""), ("x" * 10, b"y" * 1000)]
    stream = b"".join(pack_message(n, p) for n, p in frames)
    chunks = [stream[i : i + 7] for i in range(0, len(stream), 7)]
    assert list(_unpack_all(ProtobufProtocol(), chunks)) == frames


def test_unpack_leaves_a_partial_frame_in_place() -> None:
    buffer = RingBuffer()
    buffer.write(GOLDEN_FRAME[:9])
    assert ProtobufProtocol().unpack(None, buffer) is None  # type: ignore[arg-type]
    assert len(buffer) == 9 and buffer.virtual_length == 9
    buffer.write(GOLDEN_FRAME[9:])
    assert ProtobufProtocol().unpack(None, buffer) == ("msg1", b"\x08\x01")  # type: ignore[arg-type]
    assert len(buffer) == 0


@pytest.mark.parametrize(
    ("head", "reason"),
    [
        (b"\x00\x01\x00\x01", "exceeds max_frame_size 100"),  # only the length has arrived
        (b"\x00\x00\x00\x01", "smaller than the 2-byte"),
        (b"\x00\x00\x00\x10\x00\x20", "declares type-name length 32"),  # body not here yet
        (b"\x00\x00\x00\x04\x00\x02\xc3\x28", "not valid UTF-8"),
    ],
)
def test_unpack_refuses_bad_headers_before_the_body(head: bytes, reason: str) -> None:
    buffer = RingBuffer()
    buffer.write(head)
    with pytest.raises(ProtocolError, match=reason):
        ProtobufProtocol(max_frame_size=100).unpack(None, buffer)  # type: ignore[arg-type]


def test_unpack_with_a_registry(echo_pb2: ModuleType) -> None:
    registry = MessageRegistry()
    registry.register(echo_pb2.Msg1, "msg1")
    frames = list(
        _unpack_all(ProtobufProtocol(registry=registry), [GOLDEN_FRAME[:5], GOLDEN_FRAME[5:]])
    )
    assert frames == [("msg1", echo_pb2.Msg1.FromString(b"\x08\x01"))]
    buffer = RingBuffer()
    buffer.write(pack_message("nope", b""))
    with pytest.raises(ProtocolError, match="'nope'"):
        ProtobufProtocol(registry=registry).unpack(None, buffer)  # type: ignore[arg-type]


# ---------------------------------------------------------------------------- configuration


def test_options_and_validation(echo_pb2: ModuleType) -> None:
    registry = MessageRegistry()
    built = ProtobufProtocol.from_config(
        Config(None, {"protobuf_max_frame_size": 99, "protobuf_registry": registry})
    )
    assert built.max_frame_size == 99 and built.registry is registry
    default = ProtobufProtocol.from_config(Config(None, {"protobuf_max_frame_size": None}))
    assert default.max_frame_size == DEFAULT_MAX_FRAME_SIZE and default.registry is None
    with pytest.raises(ValueError, match="protobuf_max_frame_size must be between 2 and"):
        ProtobufProtocol.from_config(Config(None, {"protobuf_max_frame_size": 1}))
    with pytest.raises(TypeError, match="protobuf_registry must be a MessageRegistry"):
        ProtobufProtocol.from_config(Config(None, {"protobuf_registry": {}}))
    with pytest.raises(ValueError, match=str(MAX_FRAME_LENGTH)):
        ProtobufProtocol(MAX_FRAME_LENGTH + 1)
    # mypyc's wording where the protocol is compiled (it checks the annotation on entry)
    with pytest.raises(TypeError, match=r"must be an int|int object expected; got str"):
        ProtobufProtocol("1024")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="protobuf_max_frame_size must be an int, not str"):
        ProtobufProtocol.from_config(Config(None, {"protobuf_max_frame_size": "1024"}))
    assert (
        repr(ProtobufProtocol(64, registry))
        == "ProtobufProtocol(max_frame_size=64, registry=0 types)"
    )


# ---------------------------------------------------------------------------- first bytes


@pytest.mark.parametrize(
    ("data", "answer"),
    [
        (GOLDEN_FRAME, "protobuf"),
        (GOLDEN_FRAME[:6], "protobuf"),
        (GOLDEN_FRAME[:7], "protobuf"),
        (b"\x00\x00\x00\x02\x00\x00", "protobuf"),
        (b"\x00", NEED_MORE_DATA),
        (b"\x00\x00\x00\x08\x00", NEED_MORE_DATA),
        (b"", NEED_MORE_DATA),
        (b"G", None),  # GET: ruled out by the first byte
        (b"GET / HTTP/1.1\r\n", None),
        (b"\x16\x03\x01", None),  # TLS ClientHello
        (b"hello\n", None),
        (b"\x00\x00\x00\x01\x00\x00", None),  # length < 2
        (b"\x00\x00\x00\x00", None),
        (b"\x00\x00\x00\x04\x00\x05", None),  # type name longer than the frame
        (b"\x00\x00\x00\x08\x00\x04\xff", None),  # not UTF-8
        (b"\x00\x00\x00\x08\x00\x04m\xc3", "protobuf"),  # a character cut short: plausible
        (b"\x00\x00\x00\x08\x00\x02\xc3\x0a", None),  # complete name, invalid
        (b"\x00\x41", None),  # at least 0x00410000 > 4 MiB
    ],
)
def test_sniff(data: bytes, answer: str | None) -> None:
    assert ProtobufProtocol().sniff(data) == answer


def test_sniff_uses_the_instance_limit() -> None:
    frame = pack_message("m", b"x" * 200)
    assert ProtobufProtocol(100).sniff(frame) is None
    assert ProtobufProtocol(1000).sniff(frame) == "protobuf"
    # Text is ruled out by its first byte only while the limit is below that byte's weight.
    assert ProtobufProtocol(64 * 1024 * 1024).sniff(b"GET / HTTP/1.1\r\n") is None
    assert ProtobufProtocol(MAX_FRAME_LENGTH).sniff(b"GET / HTTP/1.1\r\n") == "protobuf"


def test_a_subclass_can_override_pack_whether_or_not_the_protocol_is_compiled() -> None:
    # ProtobufProtocol may be compiled with mypyc (allow_interpreted_subclasses): its own
    # calls to self.pack must still reach an override.
    class Tagged(ProtobufProtocol):
        name = "tagged"

        def pack(self, conn: Any, data: Any) -> bytes:
            return b"<" + super().pack(conn, data) + b">"

    frames = pack_message("a", b"1") + pack_message("b", b"2")
    messages, out = feed(Tagged(), [frames], reply=lambda conn, name, data: ("x", data))
    assert messages == [("a", b"1"), ("b", b"2")]
    assert out == b"<" + pack_message("x", b"1") + b"><" + pack_message("x", b"2") + b">"


def test_a_pack_override_also_frames_a_single_frame_reply() -> None:
    # One whole frame per read takes receive()'s shortcut, which frames (name, bytes) replies
    # itself: a subclass's pack must still see them.
    class Tagged(ProtobufProtocol):
        def pack(self, conn: Any, data: Any) -> bytes:
            return b"<" + super().pack(conn, data) + b">"

    messages, out = feed(
        Tagged(), [pack_message("a", b"1"), pack_message("a", b"2")], reply=echo_reply
    )
    assert messages == [("a", b"1"), ("a", b"2")]
    assert out == b"<" + pack_message("a", b"1") + b"><" + pack_message("a", b"2") + b">"


def echo_reply(conn: Any, name: Any, data: Any) -> Any:
    return name, data


def test_the_shortcut_strategy_follows_the_build() -> None:
    # receive()'s shortcut indexes the header and %-formats the reply where the module is
    # compiled, and unpacks and concatenates where it is interpreted: each suite (pure,
    # compiled) runs the other tests of this file through the strategy of its build.
    assert _protocol._NATIVE is gev_protobuf.COMPILED
    assert _protocol._NATIVE is _compiled.is_compiled(_protocol)


def test_single_frame_replies_of_every_length_class_are_framed_exactly() -> None:
    # The shortcut's u32 length fields: made once per small length and kept, made per frame
    # above that. Lengths around the boundary, twice each (the second from the kept one).
    protocol = ProtobufProtocol()
    for size in [0, 1, 63, 2032, 2033, 2034, 2035, 5000, 0, 2033, 2034, 70000]:
        frame = pack_message("pkg.Size", b"p" * size)
        messages, out = feed(protocol, [frame], reply=echo_reply)
        assert messages == [("pkg.Size", b"p" * size)]
        assert out == frame, size
        _, out = feed(protocol, [frame], reply=lambda conn, name, data: ("other.Name", data))
        assert out == pack_message("other.Name", b"p" * size)


def test_the_shortcut_s_last_frame_never_stands_for_a_different_one() -> None:
    # receive() recognises a frame of the last one's length and name by comparing its first
    # bytes, and answers a reply of the request's name and size with the request's header.
    # Every way a frame or a reply can differ from the last must still be read and framed
    # exactly: same length other name, same name other length, an equal-length name that
    # differs in its last byte, a reply shorter or renamed, and payloads on both sides of
    # the size from which a reply goes out as header and payload (two chunks).
    from gev_core.testing import FakeConnection

    replies: list[Any] = []

    class Scripted(Handler):
        def on_message(self, conn: Any, ctx: Any, data: Any) -> Any:
            seen.append((ctx, data))
            return replies.pop(0)

    protocol = ProtobufProtocol()
    conn: Any = FakeConnection(Scripted(), protocol)
    seen: list[tuple[Any, Any]] = []
    big = bytes(range(256)) * 3
    script = [
        (("pkg.A", b"12345678"), ("pkg.A", b"abcdefgh")),  # same name and size
        (("pkg.A", b"12345679"), ("pkg.A", b"abcdefgh")),  # same shape, new content
        (("pkg.B", b"12345678"), ("pkg.B", b"xyz")),  # same length, other name; shorter
        (("pkg.A", b"12345678"), ("pkg.C", b"abcdefgh")),  # back to A; renamed reply
        (("pkg.A", b"123"), ("pkg.A", b"123")),  # same name, other length
        (("pkg.A", big), ("pkg.A", big[::-1])),  # gathered: header, then payload
        (("pkg.A", big), ("pkg.A", big + b"!")),  # gathered under a header of its own
        (("pkg.A", big), ("pkg.é", big)),  # renamed, gathered
        (("pkg.A", b""), None),
        (("pkg.A", b""), ("pkg.A", b"")),
    ]
    for (name, payload), reply in script:
        replies.append(reply)
        frame = pack_message(name, payload)
        # Packed first, which caches the reply's name: a name never packed before goes
        # through pack() in one piece.
        expected = b"" if reply is None else pack_message(*reply)
        out: list[Any] = []
        assert protocol.receive(conn, frame, out) == len(frame)
        assert seen.pop() == (name, payload)
        assert b"".join(out) == expected, (name, payload, reply)
        if reply is not None and len(reply[1]) >= 512:
            assert len(out) == 2 and out[1] is reply[1]  # the payload is not copied
        else:
            assert len(out) <= 1


def test_gathered_replies_reach_the_peer_whole() -> None:
    # Replies from 512 bytes on leave receive() as header and payload; the reactor writes
    # both with one writev, and whatever the kernel does not take is buffered in order.
    handler = Recorder(reply=lambda ctx, data: (ctx, data[::-1]))
    payloads = [bytes([i % 251]) * size for i, size in enumerate([511, 512, 4096, 300_000])]
    with serve(handler, protocol="protobuf") as server, connect(server.address) as sock:
        for payload in payloads:
            sock.sendall(pack_message("pkg.Big", payload))
            assert read_frames(sock, 1, timeout=30) == [("pkg.Big", payload[::-1])]


def test_each_frame_reaches_the_connection_s_current_handler() -> None:
    # The shortcut remembers the last handler's bound on_message: a connection whose handler
    # was replaced, or another connection with its own handler, must reach the right one.
    from gev_core.testing import FakeConnection

    class Named(Handler):
        def __init__(self, tag: str) -> None:
            self.tag = tag

        def on_message(self, conn: Any, ctx: Any, data: Any) -> Any:
            return ctx, self.tag.encode() + data

    protocol = ProtobufProtocol()
    first, second = Named("1"), Named("2")
    conn: Any = FakeConnection(first, protocol)
    other: Any = FakeConnection(second, protocol)
    frame = pack_message("m", b"x")
    for c, tag in [(conn, b"1"), (conn, b"1"), (other, b"2"), (conn, b"1")]:
        out: list[Any] = []
        assert protocol.receive(c, frame, out) == len(frame)
        assert out == [pack_message("m", tag + b"x")]
    conn.handler = second
    out = []
    protocol.receive(conn, frame, out)
    assert out == [pack_message("m", b"2x")]


def test_frames_are_shared_between_connections() -> None:
    from gev_core.testing import FakeConnection

    protocol = ProtobufProtocol()
    conn: Any = FakeConnection()
    packer = protocol.shared_packer(conn)
    assert packer is not None and protocol.shared_packer(conn) is packer
    assert packer(("pkg.Msg", b"\x08\x01")) == pack_message("pkg.Msg", b"\x08\x01")

    class PerConnection(ProtobufProtocol):
        def pack(self, conn: Any, data: Any) -> bytes:
            return super().pack(conn, data)

    assert PerConnection().shared_packer(conn) is None
