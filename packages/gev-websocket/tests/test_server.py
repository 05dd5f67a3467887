"""WebSocketProtocol on a real gev server, over real sockets, against real clients."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from typing import Any, ClassVar

import gev_websocket
import pytest
import wsproto
from gev_core import (
    NEED_MORE_DATA,
    Connection,
    ConnectionClosed,
    get_plugin_manager,
    write_shared,
)
from gev_core.testing import connect, serve
from gev_websocket import (
    MessageType,
    Reject,
    Upgrader,
    WebSocketHandler,
    WebSocketProtocol,
    plugin,
)
from gev_websocket import testing as wst
from gev_websocket._session import FrameReader
from wsproto.events import (
    AcceptConnection,
    BytesMessage,
    CloseConnection,
    Event,
    Ping,
    Pong,
    RejectConnection,
    RejectData,
    Request,
    TextMessage,
)
from wsproto.extensions import PerMessageDeflate


class Echo(WebSocketHandler):
    def __init__(self) -> None:
        self.opened: list[Connection] = []
        self.closed = threading.Event()
        self.pongs: list[bytes] = []

    def on_open(self, conn: Connection) -> None:
        self.opened.append(conn)

    def on_message(self, conn: Connection, data: str | bytes) -> tuple[Any, Any] | None:
        if data == "boom":
            raise RuntimeError("handler failure on purpose")
        if data == "wrong type":
            return MessageType.TEXT, b"bytes for a text reply"
        if data == "silent":
            return None, None
        return (MessageType.TEXT if isinstance(data, str) else MessageType.BINARY), data

    def on_pong(self, conn: Connection, payload: bytes) -> None:
        self.pongs.append(payload)

    def on_close(self, conn: Connection) -> None:
        self.closed.set()


@pytest.fixture
def echo() -> Echo:
    return Echo()


@pytest.fixture
def server(echo: Echo) -> Iterator[Any]:
    with serve(echo, protocol=WebSocketProtocol(max_message_size=64 * 1024)) as srv:
        yield srv


def url(srv: Any, path: str = "/") -> str:
    return f"ws://127.0.0.1:{srv.port}{path}"


# -- a raw wsproto client ------------------------------------------------------------------


class RawClient:
    def __init__(self, srv: Any, *, extensions: list[Any] | None = None, **request: Any) -> None:
        self.sock = connect(srv)
        self.ws = wsproto.WSConnection(wsproto.ConnectionType.CLIENT)
        self.events: list[Event] = []
        request.setdefault("host", "127.0.0.1")
        request.setdefault("target", "/")
        self.sock.sendall(self.ws.send(Request(extensions=extensions or [], **request)))

    def next_event(self, timeout: float = 10.0) -> Event | None:
        """The next event, or None once the server closed the TCP connection."""
        deadline = time.monotonic() + timeout
        while not self.events:
            self.sock.settimeout(max(0.01, deadline - time.monotonic()))
            data = self.sock.recv(65536)
            if not data:
                return None  # (wsproto would report the EOF as a 1006 close)
            self.ws.receive_data(data)
            self.events.extend(self.ws.events())
        return self.events.pop(0)

    def expect(self, kind: type[Event]) -> Any:
        event = self.next_event()
        assert isinstance(event, kind), f"expected {kind.__name__}, got {event!r}"
        return event

    def open(self) -> RawClient:
        self.expect(AcceptConnection)
        return self

    def send(self, event: Event) -> None:
        self.sock.sendall(self.ws.send(event))

    def wait_eof(self, timeout: float = 10.0) -> None:
        self.sock.settimeout(timeout)
        while self.sock.recv(65536):
            pass

    def close(self) -> None:
        self.sock.close()


def test_echo_text_and_binary_with_websockets(server: Any) -> None:
    sync = pytest.importorskip("websockets.sync.client")
    with sync.connect(url(server), open_timeout=10, close_timeout=5) as ws:
        ws.send("héllo")
        assert ws.recv(timeout=10) == "héllo"
        ws.send(b"\x00\x01\x02" * 1000)
        assert ws.recv(timeout=10) == b"\x00\x01\x02" * 1000
        ws.send(["frag", "mented"])  # one message in three frames
        assert ws.recv(timeout=10) == "fragmented"
        ws.send([b"a" * 60000, b"b"])  # 16-bit length header, fragmented
        assert ws.recv(timeout=10) == b"a" * 60000 + b"b"
        pong = ws.ping(b"are you there")
        assert pong.wait(10)


class PlainKinds(WebSocketHandler):
    # Kinds as plain ints: the fast path tells MessageType members by identity and hands these
    # to the protocol's conversion, which accepts them alike.
    def on_message(self, conn: Connection, data: str | bytes) -> tuple[Any, Any] | None:
        return (1 if isinstance(data, str) else 2), data


def test_replies_typed_with_plain_ints() -> None:
    sync = pytest.importorskip("websockets.sync.client")
    with (
        serve(PlainKinds(), protocol=WebSocketProtocol()) as srv,
        sync.connect(url(srv), open_timeout=10, compression=None) as ws,
    ):
        ws.send("text")
        assert ws.recv(timeout=10) == "text"
        ws.send(b"\x00" * 300)
        assert ws.recv(timeout=10) == b"\x00" * 300
        ws.send(["frag", "mented"])  # through wsproto
        assert ws.recv(timeout=10) == "fragmented"


def test_echo_with_raw_wsproto_client_and_clean_close(server: Any, echo: Echo) -> None:
    client = RawClient(server).open()
    client.send(TextMessage(data="hi"))
    assert client.expect(TextMessage).data == "hi"
    client.send(BytesMessage(data=b"bin"))
    assert client.expect(BytesMessage).data == b"bin"
    client.send(TextMessage(data="one ", message_finished=False))
    client.send(TextMessage(data="two"))
    assert client.expect(TextMessage).data == "one two"
    client.send(Ping(payload=b"p"))
    assert client.expect(Pong).payload == b"p"
    client.send(TextMessage(data="silent"))
    client.send(CloseConnection(code=1000, reason="bye"))
    close = client.expect(CloseConnection)
    assert (close.code, close.reason) == (1000, "bye")
    assert client.next_event() is None  # the server closed the TCP connection
    client.close()
    assert echo.closed.wait(5)


def test_oversized_message_closes_with_1009(server: Any) -> None:
    client = RawClient(server).open()
    client.send(BytesMessage(data=b"x" * (64 * 1024 + 1)))
    assert client.expect(CloseConnection).code == 1009
    client.close()


def test_invalid_utf8_closes_with_1007(server: Any) -> None:
    client = RawClient(server).open()
    client.sock.sendall(wst.frame(wst.TEXT, b"ok \xff\xfe"))
    assert client.expect(CloseConnection).code == 1007
    client.wait_eof()
    client.close()


def test_replies_to_a_slow_reader_arrive_whole_and_in_order(echo: Echo) -> None:
    # Large replies leave as header + payload in one writev (no copy); what the kernel does not
    # take is buffered and must follow in order, between replies framed in one piece.
    sizes = [10, 200, 600, 4096, 70_000, 1 << 20, 5, 4096, 1 << 20, 3000, 125, 126, 511, 512]
    messages: list[str | bytes] = [bytes([i]) * n for i, n in enumerate(sizes)]
    messages[3:3] = ["é" * 400]  # a text reply: one piece
    protocol = WebSocketProtocol(max_message_size=2 << 20)
    with serve(echo, protocol=protocol) as srv:
        client = RawClient(srv).open()

        def send_all() -> None:
            for m in messages:
                if isinstance(m, str):
                    client.sock.sendall(wst.frame(wst.TEXT, m.encode()))
                else:
                    client.sock.sendall(wst.frame(wst.BINARY, m))

        sender = threading.Thread(target=send_all)
        sender.start()
        time.sleep(0.3)  # not reading meanwhile: the server's replies back up
        got: list[str | bytes] = []
        for m in messages:  # wsproto hands a large message over in parts
            parts = [client.expect(TextMessage if isinstance(m, str) else BytesMessage)]
            while not parts[-1].message_finished:
                parts.append(client.expect(type(parts[0])))
            got.append(type(m)().join(p.data for p in parts))
        sender.join(10)
        assert got == messages
        client.send(CloseConnection(code=1000))
        assert client.expect(CloseConnection).code == 1000
        client.close()


def test_close_frame_survives_unread_input(server: Any) -> None:
    # A protocol error with more input already sent: without the lingering close the kernel
    # would answer the unread bytes with RST, and the close frame could be lost.
    client = RawClient(server).open()
    client.sock.sendall(wst.frame(wst.TEXT, b"x", rsv=1) + wst.frame(wst.BINARY, b"y" * 60000) * 8)
    assert client.expect(CloseConnection).code == 1002
    client.wait_eof()
    client.close()


def test_server_initiated_close_reaches_the_peer(echo: Echo) -> None:
    class Closer(Echo):
        def on_message(self, conn: Connection, data: str | bytes) -> tuple[Any, Any] | None:
            gev_websocket.close(conn, 4001, "go away")
            return None

    with serve(Closer(), protocol=WebSocketProtocol()) as srv:
        client = RawClient(srv).open()
        client.send(TextMessage(data="close me"))
        close = client.expect(CloseConnection)
        assert (close.code, close.reason) == (4001, "go away")
        client.send(close.response())
        assert client.next_event() is None
        client.close()


def test_direct_session_close_unpins_the_shared_packer() -> None:
    # conn.state.close() (the session's own close, not gev_websocket.close): its close frame
    # is the last frame, so fan-out must not go on writing data frames with the packer the
    # protocol pinned at the opening handshake.
    fanned: list[tuple[int, int]] = []

    class DirectCloser(Echo):
        def on_message(self, conn: Connection, data: str | bytes) -> tuple[Any, Any] | None:
            conn.write(conn.state.close(4002, "direct"))

            def publish() -> None:
                written, _, unshared = write_shared([conn], lambda pack: pack("late"), 1 << 20)
                fanned.append((written, len(unshared)))

            conn.loop.call_soon(publish)
            return None

    with serve(DirectCloser(), protocol=WebSocketProtocol()) as srv:
        client = RawClient(srv).open()
        client.send(TextMessage(data="close me"))
        close = client.expect(CloseConnection)
        assert (close.code, close.reason) == (4002, "direct")
        deadline = time.monotonic() + 5
        while not fanned and time.monotonic() < deadline:
            time.sleep(0.01)
        # Not written: the connection asked shared_packer again, which says None after a close.
        assert fanned == [(0, 1)]
        client.send(close.response())
        assert client.next_event() is None  # no "late" data frame after the close frame
        client.close()


def test_frame_reader_serves_reads_like_the_protocol(caplog: pytest.LogCaptureFixture) -> None:
    # Compiled, the protocol's receive is FrameReader's (one call per read, no interpreted
    # frame); installed by hand here, so that the pure run checks it too: echo, a handler
    # failure (1011), a protocol error (1007, logged) and the close handshake.
    protocol = WebSocketProtocol(max_message_size=64 * 1024)
    if gev_websocket.COMPILED:
        assert type(protocol.receive.__self__) is FrameReader  # type: ignore[attr-defined]
    protocol.receive = FrameReader(protocol).receive  # type: ignore[method-assign]

    class Own(WebSocketProtocol):
        def receive(self, conn: Connection, data: bytes | memoryview, out: list[Any]) -> int:
            return super().receive(conn, data, out)

    assert not isinstance(getattr(Own().receive, "__self__", None), FrameReader)
    caplog.set_level(logging.WARNING)
    with serve(Echo(), protocol=protocol) as srv:
        client = RawClient(srv).open()
        client.send(BytesMessage(data=b"x" * 300))
        assert client.expect(BytesMessage).data == b"x" * 300
        client.send(TextMessage(data="bye"))
        assert client.expect(TextMessage).data == "bye"
        client.send(CloseConnection(code=1000))
        assert client.expect(CloseConnection).code == 1000
        assert client.next_event() is None
        client.close()
        bad = RawClient(srv).open()
        bad.send(TextMessage(data="boom"))
        assert bad.expect(CloseConnection).code == 1011
        bad.wait_eof()
        bad.close()
        invalid = RawClient(srv).open()
        invalid.sock.sendall(wst.frame(wst.TEXT, b"\xff"))
        assert invalid.expect(CloseConnection).code == 1007
        invalid.wait_eof()
        invalid.close()
    assert "handler failure on purpose" in caplog.text
    assert "closed with 1007" in caplog.text


def test_close_timeout_drops_a_silent_peer() -> None:
    class Closer(Echo):
        def on_open(self, conn: Connection) -> None:
            gev_websocket.close(conn)

    handler = Closer()
    with serve(handler, protocol=WebSocketProtocol(close_timeout=0.2, linger_timeout=0.2)) as srv:
        client = RawClient(srv).open()
        assert client.expect(CloseConnection).code == 1000
        # The client never answers: the server gives up after close + linger timeouts.
        client.wait_eof(timeout=5)
        assert handler.closed.wait(5)
        client.close()


def test_handler_exception_and_wrong_reply_type_close_only_that_connection(
    server: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR)
    good = RawClient(server).open()
    for trigger in ("boom", "wrong type"):
        bad = RawClient(server).open()
        bad.send(TextMessage(data=trigger))
        assert bad.expect(CloseConnection).code == 1011
        bad.wait_eof()
        bad.close()
    good.send(TextMessage(data="still here"))
    assert good.expect(TextMessage).data == "still here"
    good.close()
    assert "handler failure on purpose" in caplog.text
    assert "(MessageType.TEXT, str)" in caplog.text


class Auth(Echo):
    def on_request(self, conn: Connection, request: Request) -> Any:
        headers = dict(request.extra_headers)
        if request.target == "/forbidden":
            return Reject(403, body=b"no")
        if headers.get(b"authorization") != b"Bearer good":
            return Reject(401, [("WWW-Authenticate", "Bearer")], b"who are you?")
        return None


@pytest.mark.parametrize(
    ("target", "token", "status"),
    [("/", None, 401), ("/", "bad", 401), ("/forbidden", "good", 403)],
)
def test_handshake_rejected_by_on_request(target: str, token: str | None, status: int) -> None:
    headers = [] if token is None else [(b"Authorization", f"Bearer {token}".encode())]
    with serve(Auth(), protocol=WebSocketProtocol()) as srv:
        client = RawClient(srv, target=target, extra_headers=headers)
        assert client.expect(RejectConnection).status_code == status
        body = b""
        while (event := client.next_event()) is not None:
            assert isinstance(event, RejectData)
            body += event.data
        assert body in (b"no", b"who are you?")
        client.close()
        ok = RawClient(srv, extra_headers=[(b"Authorization", b"Bearer good")]).open()
        ok.send(TextMessage(data="in"))
        assert ok.expect(TextMessage).data == "in"
        ok.close()


def test_upgrader_on_request_hook_rejects() -> None:
    upgrader = Upgrader(on_request=lambda req: Reject(401) if req.target != "/ok" else None)
    with serve(Echo(), protocol=WebSocketProtocol(upgrader)) as srv:
        assert RawClient(srv).expect(RejectConnection).status_code == 401
        RawClient(srv, target="/ok").open().close()


def test_browser_style_connection_header(server: Any) -> None:
    key = b"dGhlIHNhbXBsZSBub25jZQ=="
    with connect(server) as sock:
        sock.sendall(
            b"GET /chat HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: keep-alive, Upgrade\r\n"
            b"Upgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: "
            + key
            + b"\r\nOrigin: http://127.0.0.1\r\n\r\n"
        )
        head = b""
        while b"\r\n\r\n" not in head:
            head += sock.recv(4096)
        assert head.startswith(b"HTTP/1.1 101")
        assert b"s3pPLMBiTxaQ9kYGzzhZRbK+xOo=" in head


def test_subprotocol_negotiation() -> None:
    upgrader = Upgrader(subprotocols=["chat.v2", "chat.v1"])
    with serve(Echo(), protocol=WebSocketProtocol(upgrader)) as srv:
        client = RawClient(srv, subprotocols=["chat.v1", "other"])
        assert client.expect(AcceptConnection).subprotocol == "chat.v1"
        client.close()
        client = RawClient(srv, subprotocols=["other"])
        assert client.expect(AcceptConnection).subprotocol is None
        client.close()


def test_permessage_deflate_round_trip() -> None:
    with serve(Echo(), protocol=WebSocketProtocol()) as srv:
        client = RawClient(srv, extensions=[PerMessageDeflate()])
        accept = client.expect(AcceptConnection)
        assert [e.name for e in accept.extensions] == ["permessage-deflate"]
        text = "compress me " * 500
        for _ in range(3):  # context takeover across messages
            client.send(TextMessage(data=text))
            assert client.expect(TextMessage).data == text
        client.close()
    with serve(Echo(), protocol=WebSocketProtocol(Upgrader(compression=False))) as srv:
        client = RawClient(srv, extensions=[PerMessageDeflate()])
        assert client.expect(AcceptConnection).extensions == []
        client.close()


def test_send_ping_close_from_another_thread(echo: Echo) -> None:
    with serve(echo, protocol=WebSocketProtocol(), num_loops=2) as srv:
        client = RawClient(srv).open()
        deadline = time.monotonic() + 5
        while not echo.opened and time.monotonic() < deadline:
            time.sleep(0.01)
        (conn,) = echo.opened
        errors: list[BaseException] = []

        def push() -> None:
            try:
                gev_websocket.send_text(conn, "pushed")
                gev_websocket.send_binary(conn, bytearray(b"raw"))
                gev_websocket.send(conn, MessageType.TEXT, "typed")
                gev_websocket.ping(conn, b"hb")
                gev_websocket.close(conn, 1001, "shutting down")
            except BaseException as exc:
                errors.append(exc)

        thread = threading.Thread(target=push)
        thread.start()
        thread.join(5)
        assert not errors
        assert client.expect(TextMessage).data == "pushed"
        assert client.expect(BytesMessage).data == b"raw"
        assert client.expect(TextMessage).data == "typed"
        assert client.expect(Ping).payload == b"hb"
        close = client.expect(CloseConnection)
        assert (close.code, close.reason) == (1001, "shutting down")
        client.send(close.response())
        assert client.next_event() is None
        client.close()
        assert echo.closed.wait(5)
        with pytest.raises(ConnectionClosed):
            gev_websocket.send_text(conn, "too late")


def test_pong_reaches_the_handler(echo: Echo, server: Any) -> None:
    client = RawClient(server).open()
    deadline = time.monotonic() + 5
    while not echo.opened and time.monotonic() < deadline:
        time.sleep(0.01)
    gev_websocket.ping(echo.opened[0], b"beat")
    assert client.expect(Ping).payload == b"beat"
    client.send(Pong(payload=b"beat"))
    client.send(TextMessage(data="sync"))
    assert client.expect(TextMessage).data == "sync"
    assert echo.pongs == [b"beat"]
    client.close()


def test_slow_handshake_times_out(echo: Echo) -> None:
    upgrader = Upgrader(handshake_timeout=0.3)
    with serve(echo, protocol=WebSocketProtocol(upgrader)) as srv, connect(srv) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n")  # and then nothing
        started = time.monotonic()
        sock.settimeout(5)
        assert sock.recv(100) == b""
        assert time.monotonic() - started < 4
        assert echo.closed.wait(5)


def test_messages_before_open_handshake_completes_are_not_sent(echo: Echo) -> None:
    class Early(Echo):
        def on_connect(self, conn: Connection) -> None:
            gev_websocket.send_text(conn, "too early")  # dropped: not OPEN yet

    with serve(Early(), protocol=WebSocketProtocol()) as srv:
        client = RawClient(srv).open()
        client.send(TextMessage(data="first"))
        assert client.expect(TextMessage).data == "first"
        client.close()


def test_core_style_handler_and_plugin_protocol_name() -> None:
    class CoreEcho:
        def on_message(self, conn: Any, ctx: Any, data: Any) -> Any:
            assert ctx is None
            return data

    pm = get_plugin_manager(autoload=False)
    pm.register(plugin, name="websocket")
    with serve(CoreEcho(), protocol="websocket", plugins=pm) as srv:
        client = RawClient(srv).open()
        client.send(TextMessage(data="t"))
        assert client.expect(TextMessage).data == "t"
        client.send(BytesMessage(data=b"b"))
        assert client.expect(BytesMessage).data == b"b"
        client.close()


def test_from_config_reads_ws_options() -> None:
    class Cfg:
        options: ClassVar[dict[str, Any]] = {
            "ws_max_message_size": 1000,
            "ws_compression": False,
            "ws_subprotocols": ["a"],
            "ws_handshake_timeout": 0,
            "ws_close_timeout": 1.5,
            "ws_work_per_turn": 4096,
        }

    proto = WebSocketProtocol.from_config(Cfg())
    assert proto.max_message_size == 1000
    assert proto.upgrader.compression is False
    assert proto.upgrader.subprotocols == ("a",)
    assert proto.upgrader.handshake_timeout is None
    assert proto.close_timeout == 1.5
    assert proto.work_per_turn == 4096


@pytest.mark.parametrize(
    ("data", "answer"),
    [
        (b"GET / HTTP/1.1\r\n", "websocket"),
        (b"GE", NEED_MORE_DATA),
        (b"", NEED_MORE_DATA),
        (b"POST", None),
        (b"\x00\x00", None),
    ],
)
def test_select_protocol(data: bytes, answer: str | None) -> None:
    assert plugin.gev_select_protocol(None, data, ["websocket", "line"]) == answer
    assert plugin.gev_select_protocol(None, data, ["line"]) is None


def test_api_argument_checks() -> None:
    conn: Any = object()
    with pytest.raises(TypeError):
        gev_websocket.send_text(conn, b"bytes")
    with pytest.raises(TypeError):
        gev_websocket.send_binary(conn, "str")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        gev_websocket.ping(conn, b"x" * 126)
    with pytest.raises(ValueError):
        gev_websocket.close(conn, 1005)
    with pytest.raises(ValueError):
        gev_websocket.send(conn, 9, "x")


def test_addoption_parses() -> None:
    import argparse

    parser = argparse.ArgumentParser()
    plugin.gev_addoption(parser)
    args = parser.parse_args(
        ["--ws-max-message-size", "10", "--no-ws-compression", "--ws-work-per-turn", "2048"]
    )
    assert args.ws_max_message_size == 10
    assert args.ws_compression is False
    assert args.ws_work_per_turn == 2048
