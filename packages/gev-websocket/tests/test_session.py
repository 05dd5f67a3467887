"""WebSocketSession: handshake, data, control frames, closing, limits."""

from __future__ import annotations

import struct
from typing import Any

import pytest
from gev_websocket import Accept, Reject, WebSocketSession
from gev_websocket.testing import (
    ACCEPT,
    BINARY,
    CLOSE,
    CONT,
    PING,
    PONG,
    TEXT,
    client_events,
    close_payload,
    connect,
    frame,
    open_session,
    parse_response,
    request_bytes,
    wsproto_client,
)
from wsproto.connection import ConnectionState
from wsproto.events import (
    BytesMessage,
    CloseConnection,
    Ping,
    Pong,
    Request,
    TextMessage,
)


def refused(request: bytes, **kwargs: Any) -> tuple[WebSocketSession, int, dict[bytes, bytes]]:
    session = WebSocketSession(**kwargs)
    out: list[bytes] = []
    assert session.receive(request, out) is True
    status, headers, _ = parse_response(b"".join(out))
    return session, status, headers


def close_frame_of(raw: bytes) -> tuple[int | None, bytes]:
    """Code and reason of an unmasked server close frame."""
    assert raw[0] == 0x88
    n = raw[1]
    payload = raw[2 : 2 + n]
    if not payload:
        return None, b""
    return struct.unpack("!H", payload[:2])[0], payload[2:]


# -- handshake ---------------------------------------------------------------------------


def test_handshake_with_wsproto_client() -> None:
    client, request = wsproto_client()
    session = WebSocketSession()
    accept = connect(session, client, request)
    assert accept.subprotocol is None
    assert session.state is ConnectionState.OPEN
    assert session.request is not None and session.request.target == "/chat"


def test_handshake_response_bytes() -> None:
    _, out = open_session()
    assert len(out) == 1
    # wsproto 1.2 writes "101 \r\nUpgrade: WebSocket", 1.3 "101 Switching Protocols ...".
    lines = out[0].lower().split(b"\r\n")
    assert lines[0].startswith(b"http/1.1 101")
    assert lines[1:] == [
        b"upgrade: websocket",
        b"connection: upgrade",
        b"sec-websocket-accept: " + ACCEPT.lower(),
        b"",
        b"",
    ]


@pytest.mark.parametrize(
    ("connection", "upgrade"),
    [
        ("keep-alive, Upgrade", "websocket"),
        ("Keep-Alive,upgrade", "WebSocket"),
        ("UPGRADE", "WEBSOCKET"),
    ],
)
def test_handshake_tokens_case_insensitive(connection: str, upgrade: str) -> None:
    open_session(request_bytes(connection=connection, upgrade=upgrade))


def test_handshake_bare_lf_and_byte_by_byte() -> None:
    request = request_bytes(eol=b"\n")
    session = WebSocketSession()
    out: list[bytes] = []
    for i in range(len(request)):
        session.receive(request[i : i + 1], out)
    assert len(out) == 1 and out[0].startswith(b"HTTP/1.1 101 ")


def test_frames_pipelined_with_the_handshake() -> None:
    data = request_bytes() + frame(BINARY, b"early") + frame(TEXT, b"bird")
    session, _out = open_session(data)
    assert session.messages == [b"early", "bird"]


@pytest.mark.parametrize(
    ("request_", "status"),
    [
        (request_bytes(connection="keep-alive"), 400),
        (request_bytes(upgrade="h2c"), 400),
        (request_bytes(method="POST"), 400),
        (request_bytes(key=b"short"), 400),
        (request_bytes(key=b"!!!!!!!!!!!!!!!!!!!!!!!!"), 400),
        (request_bytes(version="12"), 426),
        (b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", 400),
        (b"GARBAGE\r\n\r\n", 400),
        (b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03", 400),  # a TLS ClientHello
        (request_bytes(extra=[("Host", "a" * 70 + ".example")]), 400),
    ],
)
def test_bad_requests_get_an_error_and_close(request_: bytes, status: int) -> None:
    session, got, headers = refused(request_)
    assert got == status
    assert headers.get(b"connection") == b"close"
    assert session.closed
    if status == 426:
        assert headers[b"sec-websocket-version"] == b"13"
    out: list[bytes] = []
    assert session.receive(frame(BINARY, b"ignored"), out) is True and out == []


def test_request_head_too_large() -> None:
    big = request_bytes(extra=[("X-Filler", "y" * 20000)])
    _, status, _ = refused(big)
    assert status == 431
    # Also when the head never ends.
    _, status, _ = refused(b"GET / HTTP/1.1\r\nX: " + b"z" * 17000)
    assert status == 431
    # A larger limit lets it through, beyond h11's own 16 KiB default.
    open_session(big, max_handshake_size=32 * 1024)


def test_on_request_reject_writes_response_and_closes() -> None:
    def auth(request: Request) -> Reject | None:
        headers = dict(request.extra_headers)
        if headers.get(b"authorization") != b"Bearer ok":
            return Reject(401, [("WWW-Authenticate", "Bearer")], b"no entry")
        return None

    session, out = open_session(
        request_bytes(extra=[("Authorization", "Bearer ok")]), on_request=auth
    )
    session = WebSocketSession(on_request=auth)
    out = []
    assert session.receive(request_bytes(), out)
    status, headers, body = parse_response(b"".join(out))
    assert (status, headers[b"www-authenticate"], body) == (401, b"Bearer", b"no entry")
    assert headers[b"content-length"] == b"8"
    assert session.state is ConnectionState.CLOSED


def test_on_request_reject_by_path_without_body() -> None:
    def only_chat(request: Request) -> Reject | None:
        return None if request.target == "/chat" else Reject(404)

    _, status, headers = refused(request_bytes(target="/other"), on_request=only_chat)
    assert status == 404 and headers[b"content-length"] == b"0"
    open_session(request_bytes(target="/chat"), on_request=only_chat)


def test_subprotocol_selection() -> None:
    client, request = wsproto_client(subprotocols=["v2.chat", "v1.chat"])
    session = WebSocketSession(subprotocols=["v1.chat", "v2.chat"])
    assert connect(session, client, request).subprotocol == "v2.chat"
    assert session.subprotocol == "v2.chat"

    client, request = wsproto_client(subprotocols=["mqtt"])
    session = WebSocketSession(subprotocols=["v1.chat"])
    assert connect(session, client, request).subprotocol is None


def test_on_request_accept_picks_subprotocol_and_headers() -> None:
    def pick(request: Request) -> Accept:
        return Accept(subprotocol=request.subprotocols[-1], headers=[("Set-Cookie", "a=b")])

    client, request = wsproto_client(subprotocols=["one", "two"])
    session = WebSocketSession(on_request=pick)
    accept = connect(session, client, request)
    assert accept.subprotocol == "two"
    assert (b"set-cookie", b"a=b") in accept.extra_headers


def test_on_request_accept_with_unoffered_subprotocol_is_an_error() -> None:
    session = WebSocketSession(on_request=lambda r: Accept(subprotocol="nope"))
    out: list[bytes] = []
    with pytest.raises(ValueError, match="not offered"):
        session.receive(request_bytes(), out)
    assert session.closed and parse_response(b"".join(out))[0] == 500


def test_on_open_called_once_after_101() -> None:
    opened: list[Any] = []
    _session, _out = open_session(
        context="ctx", on_open=opened.append, on_message=lambda c, m: None
    )
    assert opened == ["ctx"]


# -- data --------------------------------------------------------------------------------


def test_echo_through_handler_reply() -> None:
    client, request = wsproto_client()
    session = WebSocketSession(lambda ctx, msg: msg)
    connect(session, client, request)
    out: list[bytes] = []
    session.receive(
        client.send(TextMessage(data="héllo")) + client.send(BytesMessage(data=b"\x00" * 300)),
        out,
    )
    events = client_events(client, out)
    assert [(type(e), e.data) for e in events] == [  # type: ignore[attr-defined]
        (TextMessage, "héllo"),
        (BytesMessage, b"\x00" * 300),
    ]


def test_fragmented_message_with_interleaved_control_frames() -> None:
    session, _ = open_session()
    data = (
        frame(TEXT, "κό".encode()[:3], fin=False)
        + frame(PING, b"p1")
        + frame(CONT, "κό".encode()[3:] + b"s", fin=False)
        + frame(PONG, b"unsolicited")
        + frame(CONT, b"me")
    )
    out: list[bytes] = []
    session.receive(data, out)
    assert session.messages == ["κόsme"]
    assert out == [b"\x8a\x02p1"]


def test_invalid_utf8_fails_fast_in_first_fragment() -> None:
    session, _ = open_session()
    out: list[bytes] = []
    # The first fragment is already invalid: close 1007 before the message is complete.
    session.receive(frame(TEXT, b"ok\xff", fin=False), out)
    assert session.closed and close_frame_of(out[0])[0] == 1007
    # And inside one frame that arrives in pieces.
    session, _ = open_session()
    whole = frame(TEXT, b"\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5\xed\xa0\x80edited")
    out = []
    session.receive(whole[:20], out)
    assert session.closed and close_frame_of(out[0])[0] == 1007


def test_invalid_utf8_in_single_frame() -> None:
    session, _ = open_session()
    out: list[bytes] = []
    session.receive(frame(TEXT, b"\xff"), out)
    assert close_frame_of(out[0])[0] == 1007 and session.close_code == 1007


def test_ping_answered_pong_not_answered() -> None:
    pongs: list[bytes] = []
    session, _ = open_session(on_pong=lambda ctx, payload: pongs.append(payload))
    out: list[bytes] = []
    session.receive(frame(PING, b"hello") + frame(PONG, b"x") + frame(PING, b""), out)
    assert out == [b"\x8a\x05hello", b"\x8a\x00"]
    assert pongs == [b"x"]


@pytest.mark.parametrize(
    "bad",
    [
        frame(BINARY, b"x", rsv=4),
        frame(BINARY, b"x", rsv=2),
        frame(PING, b"x", rsv=1),
        frame(3, b"x"),
        frame(0xB, b""),
        frame(BINARY, b"unmasked", mask=None),
        frame(CONT, b"orphan"),
        frame(PING, b"p" * 126),
        frame(PING, b"p", fin=False),
        frame(BINARY, b"x", length_bytes=2),
        frame(TEXT, b"a", fin=False) + frame(TEXT, b"b"),
        frame(CLOSE, b"\x03"),
    ],
)
def test_protocol_errors_close_1002(bad: bytes) -> None:
    session, _ = open_session()
    out: list[bytes] = []
    assert session.receive(bad, out) is True
    assert close_frame_of(out[-1])[0] == 1002
    assert session.close_code == 1002


# -- closing -----------------------------------------------------------------------------


@pytest.mark.parametrize("code", [1000, 1001, 1003, 1007, 1011, 1012, 3000, 4999])
def test_close_echoes_code(code: int) -> None:
    session, _ = open_session()
    out: list[bytes] = []
    assert session.receive(frame(CLOSE, close_payload(code, b"bye")), out) is True
    assert close_frame_of(out[0]) == (code, b"bye")
    assert session.close_code == code and session.state is ConnectionState.CLOSED


def test_empty_close_gets_empty_close() -> None:
    session, _ = open_session()
    out: list[bytes] = []
    session.receive(frame(CLOSE), out)
    assert out == [b"\x88\x00"] and session.close_code == 1005


@pytest.mark.parametrize("code", [0, 999, 1004, 1005, 1006, 1015, 1016, 2999, 5000, 65535])
def test_invalid_close_codes_1002(code: int) -> None:
    session, _ = open_session()
    out: list[bytes] = []
    session.receive(frame(CLOSE, close_payload(code)), out)
    assert close_frame_of(out[0])[0] == 1002


def test_close_reason_must_be_utf8() -> None:
    session, _ = open_session()
    out: list[bytes] = []
    session.receive(frame(CLOSE, close_payload(1000, b"\xce\xba\xff")), out)
    assert close_frame_of(out[0])[0] == 1007


def test_nothing_after_close_is_processed() -> None:
    session, _ = open_session()
    out: list[bytes] = []
    session.receive(frame(CLOSE, close_payload(1000)) + frame(PING, b"late"), out)
    assert out == [b"\x88\x02\x03\xe8"]
    assert session.receive(frame(BINARY, b"later"), out) is True
    assert session.messages == [] and len(out) == 1


def test_message_then_close_keeps_reply_order() -> None:
    session, _ = open_session(on_message=lambda ctx, msg: msg)
    out: list[bytes] = []
    session.receive(frame(TEXT, b"last words") + frame(CLOSE, close_payload(1000)), out)
    assert out == [b"\x81\x0alast words", b"\x88\x02\x03\xe8"]


def test_server_initiated_close_waits_for_reply() -> None:
    client, request = wsproto_client()
    session = WebSocketSession()
    connect(session, client, request)
    frame_out = session.close(1001, "going away")
    assert close_frame_of(frame_out) == (1001, b"going away")
    assert session.state is ConnectionState.LOCAL_CLOSING and not session.closed
    assert session.send_text("too late") == b"" and session.ping() == b""
    events = client_events(client, [frame_out])
    assert isinstance(events[0], CloseConnection) and events[0].code == 1001
    out: list[bytes] = []
    # Data sent by the peer before it saw our close is still delivered.
    data = frame(BINARY, b"in flight") + client.send(events[0].response())
    assert session.receive(data, out) is True
    assert out == [] and session.messages == [b"in flight"]
    assert session.state is ConnectionState.CLOSED and session.close_code == 1001


def test_eof_is_1006() -> None:
    session, _ = open_session()
    session.receive_eof()
    assert session.closed and session.close_code == 1006
    session = WebSocketSession()
    session.receive_eof()
    assert session.closed


def test_ping_api() -> None:
    client, request = wsproto_client()
    session = WebSocketSession()
    connect(session, client, request)
    assert client_events(client, [session.ping(b"abc")]) == [Ping(payload=b"abc")]
    with pytest.raises(ValueError):
        session.ping(b"x" * 126)
    out: list[bytes] = []
    session.receive(client.send(Pong(payload=b"abc")), out)
    assert out == []


# -- limits ------------------------------------------------------------------------------


def test_max_message_size_single_frame_fails_at_header() -> None:
    session, _ = open_session(max_message_size=1000)
    out: list[bytes] = []
    session.receive(frame(BINARY, b"x" * 1000), out)
    assert session.messages == [b"x" * 1000]
    # Only the header of the oversized frame: wsproto rejects before the payload arrives.
    session.receive(frame(BINARY, b"x" * 1001)[:8], out)
    assert session.closed and close_frame_of(out[0]) == (1009, b"message too big")


def test_max_message_size_across_fragments() -> None:
    session, _ = open_session(max_message_size=1000)
    out: list[bytes] = []
    data = frame(TEXT, b"a" * 600, fin=False) + frame(CONT, b"b" * 401)
    session.receive(data, out)
    assert session.messages == [] and close_frame_of(out[0])[0] == 1009


def test_max_frame_size() -> None:
    session, _ = open_session(max_message_size=1000, max_frame_size=100)
    out: list[bytes] = []
    session.receive(frame(BINARY, b"a" * 100, fin=False) + frame(CONT, b"b" * 100), out)
    assert session.messages == [b"a" * 100 + b"b" * 100]
    session.receive(frame(BINARY, b"c" * 101), out)
    assert close_frame_of(out[0])[0] == 1009


def test_limits_validated() -> None:
    with pytest.raises(ValueError):
        WebSocketSession(max_message_size=-1)
    with pytest.raises(ValueError):
        WebSocketSession(max_frame_size=1 << 63)


def test_memoryview_input_is_not_retained() -> None:
    session, _ = open_session()
    buf = bytearray(frame(BINARY, b"abc" * 50) + frame(BINARY, b"tail")[:5])
    out: list[bytes] = []
    session.receive(memoryview(buf), out)
    buf[:] = b"\x00" * len(buf)
    session.receive(frame(BINARY, b"tail")[5:], out)
    assert session.messages == [b"abc" * 50, b"tail"]
