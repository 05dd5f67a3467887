"""MessageRegistry with classes protoc generated from tests/proto/echo_test.proto."""

from __future__ import annotations

from types import ModuleType

import pytest
from gev_protobuf import (
    FrameDecoder,
    FrameError,
    MessageDecodeError,
    MessageRegistry,
    UnknownMessageType,
    pack_message,
    scan_frames,
)


@pytest.fixture
def registry(echo_pb2: ModuleType) -> MessageRegistry:
    reg = MessageRegistry()
    reg.register(echo_pb2.Msg1)
    reg.register(echo_pb2.Msg2)
    reg.register(echo_pb2.Response)
    return reg


def test_default_name_is_full_name(registry: MessageRegistry, echo_pb2: ModuleType) -> None:
    assert registry.name_of(echo_pb2.Msg1) == "gevtest.Msg1"
    assert "gevtest.Msg2" in registry
    assert "gevtest.Response" in registry
    assert len(registry) == 3
    assert registry.class_for("gevtest.Msg1") is echo_pb2.Msg1
    assert registry.class_for("nope") is None


def test_pack_gev_style_short_name(echo_pb2: ModuleType) -> None:
    # gev's example names its types "msg1"/"msg2"; Msg1{id: 1} serializes to 10 01 (field 2).
    reg = MessageRegistry()
    assert reg.register(echo_pb2.Msg1, "msg1") is echo_pb2.Msg1
    assert reg.pack(echo_pb2.Msg1(id=1)) == bytes.fromhex("00000008 0004 6d736731 1001")


def test_pack_parse_round_trip(registry: MessageRegistry, echo_pb2: ModuleType) -> None:
    sent = [
        echo_pb2.Msg1(name="alice", id=1),
        echo_pb2.Msg2(name="bob", alias="b\u00f6b", id=-7),
        echo_pb2.Response(content=""),  # all defaults: empty payload
        echo_pb2.Response(content="x" * 5000),
    ]
    stream = b"".join(registry.pack(msg) for msg in sent)
    frames, consumed = scan_frames(stream)
    assert consumed == len(stream)
    assert [name for name, _ in frames] == [
        "gevtest.Msg1",
        "gevtest.Msg2",
        "gevtest.Response",
        "gevtest.Response",
    ]
    received = [registry.parse(name, payload) for name, payload in frames]
    assert received == sent
    assert [type(m) for m in received] == [type(m) for m in sent]


def test_pack_is_pack_message_of_serialized(
    registry: MessageRegistry, echo_pb2: ModuleType
) -> None:
    msg = echo_pb2.Msg2(name="n", alias="a", id=3)
    assert registry.pack(msg) == pack_message("gevtest.Msg2", msg.SerializeToString())


def test_aliases(echo_pb2: ModuleType) -> None:
    reg = MessageRegistry()
    reg.register(echo_pb2.Msg1, "msg1")
    reg.register(echo_pb2.Msg1)  # second name: parses too, pack keeps the first
    reg.register(echo_pb2.Msg1, "msg1")  # same pair again: no-op
    payload = echo_pb2.Msg1(name="x", id=2).SerializeToString()
    assert reg.parse("msg1", payload) == reg.parse("gevtest.Msg1", payload)
    assert reg.pack(echo_pb2.Msg1(id=1))[6:10] == b"msg1"
    assert len(reg) == 2


def test_name_conflict(echo_pb2: ModuleType) -> None:
    reg = MessageRegistry()
    reg.register(echo_pb2.Msg1, "m")
    with pytest.raises(ValueError, match="'m' is already registered to Msg1"):
        reg.register(echo_pb2.Msg2, "m")


def test_register_rejects_non_messages(echo_pb2: ModuleType) -> None:
    reg = MessageRegistry()
    with pytest.raises(TypeError, match="protobuf message class"):
        reg.register(dict)  # type: ignore[type-var]
    with pytest.raises(TypeError, match="protobuf message class"):
        reg.register(echo_pb2.Msg1())
    with pytest.raises(TypeError, match="name must be str"):
        reg.register(echo_pb2.Msg1, b"msg1")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="exceeds 65535 bytes"):
        reg.register(echo_pb2.Msg1, "x" * 65536)


def test_strict_unknown_type(registry: MessageRegistry) -> None:
    message = "no message class is registered for frame type 'msg9'"
    with pytest.raises(UnknownMessageType, match=message) as info:
        registry.parse("msg9", b"")
    assert info.value.type_name == "msg9"
    assert isinstance(info.value, FrameError)
    assert isinstance(info.value, LookupError)


def test_lenient_unknown_type_returns_payload(echo_pb2: ModuleType) -> None:
    reg = MessageRegistry(strict=False)
    reg.register(echo_pb2.Msg1, "msg1")
    assert reg.parse("other", b"\x01\x02") == b"\x01\x02"
    assert reg.parse("msg1", b"\x10\x01") == echo_pb2.Msg1(id=1)


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b"\x08", "truncated varint"),
        (b"\x0a\x05ab", "length-delimited field longer than the payload"),
        (b"\x0a\x01\xff", "invalid UTF-8 in a string field"),
        (b"\x0f", "invalid wire type"),
    ],
)
def test_decode_error_becomes_frame_error(
    registry: MessageRegistry, payload: bytes, reason: str
) -> None:
    message = r"payload of frame type 'gevtest\.Msg1' does not parse as .*\.Msg1: "
    with pytest.raises(MessageDecodeError, match=message) as info:
        registry.parse("gevtest.Msg1", payload)
    assert isinstance(info.value, FrameError), reason
    assert info.value.type_name == "gevtest.Msg1"
    assert info.value.__cause__ is not None


def test_pack_unregistered_class(registry: MessageRegistry, echo_pb2: ModuleType) -> None:
    reg = MessageRegistry()
    with pytest.raises(TypeError, match="Msg1 is not registered"):
        reg.pack(echo_pb2.Msg1())


def test_pack_respects_max_frame_size(registry: MessageRegistry, echo_pb2: ModuleType) -> None:
    msg = echo_pb2.Response(content="x" * 100)
    with pytest.raises(FrameError, match="exceeds the limit 64"):
        registry.pack(msg, max_frame_size=64)


def test_gev_example_exchange(echo_pb2: ModuleType) -> None:
    """The shape of gev's protobuf example: the client sends msg1/msg2, the server answers."""
    server = MessageRegistry()
    server.register(echo_pb2.Msg1, "msg1")
    server.register(echo_pb2.Msg2, "msg2")
    server.register(echo_pb2.Response, "response")

    requests = [echo_pb2.Msg1(name="hello", id=1), echo_pb2.Msg2(name="hi", alias="h", id=2)]
    wire = bytearray(b"".join(server.pack(r) for r in requests))

    # Server side: one read, scanned in place, one reply per request.
    frames, consumed = scan_frames(memoryview(wire))
    assert consumed == len(wire)
    replies = []
    for type_name, payload in frames:
        msg = server.parse(type_name, payload)
        replies.append(server.pack(echo_pb2.Response(content=f"{type_name}:{msg.name}")))

    # Client side: replies arrive in arbitrary pieces.
    client = FrameDecoder()
    answers: list[str] = []
    blob = b"".join(replies)
    for i in range(0, len(blob), 5):
        client.feed(blob[i : i + 5])
        answers.extend(server.parse(t, p).content for t, p in client)
    assert answers == ["msg1:hello", "msg2:hi"]
