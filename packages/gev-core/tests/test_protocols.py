"""Framers: sans-IO through ``feed`` (split, merged, oversized) and over real sockets."""

from __future__ import annotations

import logging
import struct
import time
from typing import Any

import pytest
from gev_core import (
    DefaultProtocol,
    Handler,
    LengthFieldProtocol,
    LineProtocol,
    Protocol,
    ProtocolError,
)
from gev_core.testing import FakeConnection, connect, feed, recv_exactly, serve
from gev_ringbuffer import RingBuffer
from hypothesis import given, settings
from hypothesis import strategies as st


def echo(conn, ctx, data):
    return data


def frame(body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + body


def split_every(data: bytes, size: int) -> list[bytes]:
    return [data[i : i + size] for i in range(0, len(data), size)] or [b""]


# ---------------------------------------------------------------------------- length field


def test_length_field_merged_frames_in_one_chunk():
    msgs, out = feed(LengthFieldProtocol(), [frame(b"a") + frame(b"") + frame(b"ccc")], echo)
    assert [m for _, m in msgs] == [b"a", b"", b"ccc"]
    assert out == frame(b"a") + frame(b"") + frame(b"ccc")


@pytest.mark.parametrize("size", [1, 2, 3, 5, 7])
def test_length_field_split_at_every_size(size):
    stream = frame(b"hello") + frame(b"x" * 300) + frame(b"!")
    msgs, out = feed(LengthFieldProtocol(), split_every(stream, size), echo)
    assert [m for _, m in msgs] == [b"hello", b"x" * 300, b"!"]
    assert out == stream


@given(st.lists(st.binary(max_size=300), max_size=8), st.integers(1, 64))
@settings(max_examples=200, deadline=None)
def test_length_field_any_chunking_round_trips(bodies, size):
    stream = b"".join(frame(b) for b in bodies)
    msgs, out = feed(LengthFieldProtocol(), split_every(stream, size), echo)
    assert [m for _, m in msgs] == bodies
    assert out == stream


def test_length_field_oversize_is_refused_from_the_header_alone():
    proto = LengthFieldProtocol(max_frame_size=1024)
    with pytest.raises(ProtocolError, match="exceeds max_frame_size 1024"):
        feed(proto, [struct.pack(">I", 0xFFFFFFFF)])


@pytest.mark.parametrize("header_size,byteorder", [(1, "big"), (2, "little"), (8, "big")])
def test_length_field_header_variants(header_size, byteorder):
    proto = LengthFieldProtocol(header_size=header_size, byteorder=byteorder)
    packed = proto.pack(None, b"abc")
    assert packed == (3).to_bytes(header_size, byteorder) + b"abc"
    msgs, _out = feed(proto, [packed, packed[:2], packed[2:]], echo)
    assert [m for _, m in msgs] == [b"abc", b"abc"]


def test_length_field_unpack_path_matches_receive():
    proto = LengthFieldProtocol()
    buf = RingBuffer()
    buf.write(frame(b"one") + frame(b"tw"))
    assert proto.unpack(None, buf) == (None, b"one")
    assert proto.unpack(None, buf) == (None, b"tw")
    assert proto.unpack(None, buf) is None
    buf.write(frame(b"three")[:5])
    assert proto.unpack(None, buf) is None
    assert len(buf) == 5  # reverted, nothing lost


# ---------------------------------------------------------------------------- lines


def test_lines_split_merged_and_crlf():
    msgs, out = feed(LineProtocol(), [b"he", b"llo\r\nwor", b"ld\n\nlast"], echo)
    assert [m for _, m in msgs] == [b"hello", b"world", b""]
    assert out == b"hello\nworld\n\n"


def test_lines_without_delimiter_are_bounded():
    with pytest.raises(ProtocolError, match="max_line_length 16"):
        feed(LineProtocol(max_line_length=16), [b"x" * 10, b"y" * 10])


def test_line_longer_than_limit_with_delimiter_is_refused():
    with pytest.raises(ProtocolError, match="exceeds max_line_length"):
        feed(LineProtocol(max_line_length=4), [b"toolong\n"])


def test_custom_delimiter_and_str_replies():
    proto = LineProtocol(delimiter=b"\x00")
    _msgs, out = feed(proto, [b"a\x00b\x00"], lambda c, x, d: d.decode().upper())
    assert out == b"A\x00B\x00"


# ---------------------------------------------------------------------------- gev-style unpack


class TLV(Protocol):
    """A gev-style protocol: 1-byte type, 2-byte length, body -- written with the virtual cursor."""

    name = "tlv"

    def unpack(self, conn, buffer):
        if buffer.virtual_length < 3:
            return None
        header = buffer.virtual_read(3)
        kind, length = header[0], int.from_bytes(header[1:], "big")
        if buffer.virtual_length < length:
            buffer.virtual_revert()
            return None
        body = buffer.virtual_read(length)
        buffer.virtual_flush()
        return kind, body

    def pack(self, conn, data):
        kind, body = data
        return bytes([kind]) + len(body).to_bytes(2, "big") + body


def tlv(kind, body):
    return bytes([kind]) + len(body).to_bytes(2, "big") + body


def test_gev_style_unpack_protocol_through_the_default_receive():
    stream = tlv(1, b"abc") + tlv(2, b"") + tlv(3, b"z" * 40)
    for size in (1, 2, 4, 100):
        msgs, out = feed(TLV(), split_every(stream, size), lambda c, k, b: (k + 10, b))
        assert msgs == [(1, b"abc"), (2, b""), (3, b"z" * 40)]
        assert out == tlv(11, b"abc") + tlv(12, b"") + tlv(13, b"z" * 40)


def test_default_protocol_unpack_takes_everything():
    buf = RingBuffer()
    buf.write(b"34ab")
    assert DefaultProtocol().unpack(None, buf) == (None, b"34ab")
    assert DefaultProtocol().unpack(None, buf) is None


# ---------------------------------------------------------------------------- over sockets


class Upper(Handler):
    def on_message(self, conn, ctx, data):
        return data.upper()


def test_length_field_over_sockets_split_and_merged():
    with serve(Upper(), protocol=LengthFieldProtocol()) as server, connect(server) as sock:
        big = b"m" * 200_000
        stream = frame(b"ab") + frame(b"cd") + frame(big)
        for i in range(0, len(stream), 7001):  # split mid-header and mid-body
            sock.sendall(stream[i : i + 7001])
        expected = frame(b"AB") + frame(b"CD") + frame(big.upper())
        assert recv_exactly(sock, len(expected)) == expected


def test_oversized_frame_closes_only_that_connection(caplog):
    caplog.set_level(logging.WARNING, logger="gev")
    proto = LengthFieldProtocol(max_frame_size=1000)
    with serve(Upper(), protocol=proto) as server, connect(server) as good, connect(server) as bad:
        bad.sendall(struct.pack(">I", 1001))
        assert bad.recv(10) == b""
        good.sendall(frame(b"fine"))
        assert recv_exactly(good, 8) == frame(b"FINE")
    reasons = [r.getMessage() for r in caplog.records]
    assert any("frame length 1001 exceeds max_frame_size 1000" in r for r in reasons)


def test_lines_over_sockets():
    with serve(Upper(), protocol=LineProtocol) as server, connect(server) as sock:
        sock.sendall(b"one\ntw")
        assert recv_exactly(sock, 4) == b"ONE\n"
        sock.sendall(b"o\r\n")
        assert recv_exactly(sock, 4) == b"TWO\n"


def test_custom_unpack_protocol_over_sockets():
    class H(Handler):
        def on_message(self, conn, kind, body):
            return (kind, body[::-1])

    with serve(H(), protocol=TLV()) as server, connect(server) as sock:
        sock.sendall(tlv(7, b"abc")[:2])
        sock.sendall(tlv(7, b"abc")[2:] + tlv(8, b"xy"))
        assert recv_exactly(sock, 11) == tlv(7, b"cba") + tlv(8, b"yx")


def test_unparsed_input_is_capped(caplog):
    class Never(Protocol):
        name = "never"

        def unpack(self, conn, buffer):
            return None

    caplog.set_level(logging.WARNING, logger="gev")
    with (
        serve(Upper(), protocol=Never(), max_read_buffer=64 * 1024) as server,
        connect(server) as sock,
    ):
        try:
            for _ in range(100):
                sock.sendall(b"n" * 4096)
        except OSError:
            pass
        try:
            assert sock.recv(10) == b""
        except ConnectionResetError:
            pass  # closed with our unread bytes still queued: the kernel sends RST
    assert any("exceed max_read_buffer 65536" in r.getMessage() for r in caplog.records)


# ---------------------------------------------------------------------------- direct read path


class Recording(Protocol):
    """Two-byte-length frames; records the type of every ``data`` the reactor hands over."""

    name = "recording"

    def __init__(self, accepts_bytes: bool) -> None:
        self.accepts_bytes = accepts_bytes  # type: ignore[misc]
        self.seen: list[type] = []

    def receive(self, conn, data, out):
        self.seen.append(type(data))
        pos = 0
        while len(data) - pos >= 2:
            (n,) = struct.unpack_from(">H", data, pos)
            if len(data) - pos - 2 < n:
                break
            body = bytes(data[pos + 2 : pos + 2 + n])
            if body == b"boom":
                raise ProtocolError("boom frame")
            if body == b"crash":
                raise RuntimeError("handler bug")
            if body == b"text":
                out.append("not bytes")  # a reply the reactor cannot write
                pos += 2 + n
                continue
            out.append(data[pos : pos + 2 + n])
            pos += 2 + n
        return pos


@pytest.mark.parametrize("accepts_bytes", [True, False])
def test_read_path_hands_bytes_only_to_protocols_that_accept_them(accepts_bytes):
    proto = Recording(accepts_bytes)
    msg = struct.pack(">H", 3) + b"abc"
    with serve(Handler(), protocol=proto) as server, connect(server) as sock:
        sock.sendall(msg)
        assert recv_exactly(sock, 5) == msg
        sock.sendall(msg[:3])  # a cut frame: the tail waits in the ring buffer
        time.sleep(0.05)
        sock.sendall(msg[3:])
        assert recv_exactly(sock, 5) == msg
        sock.sendall(msg)  # nothing left over again: back on the direct path
        assert recv_exactly(sock, 5) == msg
    first, *_, last = proto.seen
    if accepts_bytes:
        assert first is bytes and last is bytes
        assert memoryview in proto.seen  # the read that completed the cut frame
    else:
        assert set(proto.seen) == {memoryview}


@pytest.mark.parametrize("body", [b"boom", b"crash"])
def test_direct_path_errors_close_only_that_connection(caplog, body):
    caplog.set_level(logging.WARNING, logger="gev")
    proto = Recording(accepts_bytes=True)
    ok = struct.pack(">H", 2) + b"ok"
    with (
        serve(Handler(), protocol=proto) as server,
        connect(server) as good,
        connect(server) as bad,
    ):
        bad.sendall(ok + struct.pack(">H", len(body)) + body)
        got = b""
        try:
            while chunk := bad.recv(100):
                got += chunk
        except ConnectionResetError:
            pass
        # Closed; the reply to the good frame is dropped with the connection when both frames
        # came in one read (they were sent in one write, so nearly always).
        assert got in (b"", ok)
        good.sendall(ok)
        assert recv_exactly(good, 4) == ok
    messages = [r.getMessage() for r in caplog.records]
    if body == b"boom":
        assert any("boom frame" in m for m in messages)
    else:
        assert any("protocol or handler failed" in m for m in messages)
        assert any(r.exc_info and "handler bug" in str(r.exc_info[1]) for r in caplog.records)


class StrReply(Handler):
    def on_message(self, conn, ctx, data):
        return "not bytes" if data == b"text" else data


@pytest.mark.parametrize("path", ["default", "direct", "general"])
def test_reply_that_is_not_bytes_closes_only_that_connection(caplog, path):
    # A str where bytes belong must cost that connection, logged, and never the loop.
    caplog.set_level(logging.WARNING, logger="gev")
    if path == "default":
        kwargs, bad_msg, ok = {}, b"text", b"ok"
    else:
        ok = struct.pack(">H", 2) + b"ok"
        bad_msg = struct.pack(">H", 4) + b"text"
        kwargs = {"protocol": Recording(accepts_bytes=path == "direct")}
    with (
        serve(StrReply(), **kwargs) as server,
        connect(server) as good,
        connect(server) as bad,
    ):
        bad.sendall(bad_msg)
        try:
            assert bad.recv(100) == b""
        except ConnectionResetError:
            pass
        good.sendall(ok)
        assert recv_exactly(good, len(ok)) == ok
        assert server.loops[0]._running
    assert any(r.exc_info and isinstance(r.exc_info[1], TypeError) for r in caplog.records), [
        r.getMessage() for r in caplog.records
    ]


# ----------------------------------------------------------------------- shared packers


def test_built_in_protocols_share_frames_equal_to_pack() -> None:

    conn: Any = FakeConnection()
    for protocol, message in (
        (DefaultProtocol(), b"raw bytes"),
        (LengthFieldProtocol(header_size=2), b"payload"),
        (LineProtocol(), "text line"),
        (LineProtocol(delimiter=b"\r\n"), b"crlf"),
    ):
        packer = protocol.shared_packer(conn)
        assert packer is not None
        assert protocol.shared_packer(conn) is packer  # one object for every connection
        assert packer(message) == bytes(protocol.pack(conn, message))
    assert DefaultProtocol().shared_packer(conn)(bytearray(b"x")) == b"x"  # type: ignore[misc]


def test_a_protocol_that_overrides_pack_shares_nothing_by_default() -> None:

    class Numbered(LineProtocol):
        def pack(self, conn: Any, data: Any) -> bytes:
            return b"1 " + super().pack(conn, data)

    class Custom(Protocol):
        pass

    conn: Any = FakeConnection()
    assert Numbered().shared_packer(conn) is None
    assert Custom().shared_packer(conn) is None
